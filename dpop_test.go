package jtiguard_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/store"
)

// dpopClient is a client's DPoP key. Keys come from fixed bytes, so a
// fuzzing worker process has the same keys as the process that made the
// seed corpus.
type dpopClient struct {
	alg    string
	method jwt.SigningMethod
	priv   any    // ed25519.PrivateKey or *ecdsa.PrivateKey
	pub    any    // ed25519.PublicKey or *ecdsa.PublicKey
	jwk    string // the public JWK, as clients put it in the header
	jkt    string // its RFC 7638 thumbprint, computed here independently
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func thumb(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return b64u(sum[:])
}

func esClient(t testing.TB, seed byte) dpopClient {
	t.Helper()
	d := sha256.Sum256([]byte{'e', 's', seed})
	d[0] &= 0x7f // below the group order
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	require.NoError(t, err)
	raw, err := priv.PublicKey.Bytes()
	require.NoError(t, err)
	x, y := b64u(raw[1:33]), b64u(raw[33:])
	return dpopClient{
		alg: jtiguard.ES256, method: jwt.SigningMethodES256, priv: priv, pub: &priv.PublicKey,
		jwk: `{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}`,
		jkt: thumb(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`),
	}
}

func edClient(t testing.TB, seed byte) dpopClient {
	t.Helper()
	s := sha256.Sum256([]byte{'e', 'd', seed})
	priv := ed25519.NewKeyFromSeed(s[:])
	x := b64u(priv.Public().(ed25519.PublicKey))
	return dpopClient{
		alg: jtiguard.EdDSA, method: jwt.SigningMethodEdDSA, priv: priv, pub: priv.Public(),
		jwk: `{"kty":"OKP","crv":"Ed25519","x":"` + x + `"}`,
		jkt: thumb(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`),
	}
}

func (c dpopClient) header() string {
	return `{"typ":"dpop+jwt","alg":"` + c.alg + `","jwk":` + c.jwk + `}`
}

// sign signs header and payload as given, for proofs right and wrong.
func (c dpopClient) sign(t testing.TB, header, payload string) string {
	t.Helper()
	return signRaw(t, c.method, c.priv, header, payload)
}

// proof signs claims under the client's own header.
func (c dpopClient) proof(t testing.TB, claims string) string {
	t.Helper()
	return c.sign(t, c.header(), claims)
}

var jtiSeq atomic.Int64

// freshJTI returns a jti no other test proof has.
func freshJTI() string { return fmt.Sprintf("test-jti-%016d", jtiSeq.Add(1)) }

// claimsFor returns the claims of a proof for req issued at iat, with
// extra members appended.
func claimsFor(jti string, req jtiguard.DPoPRequest, iat time.Time, extra string) string {
	htu := req.URL
	if i := strings.IndexAny(htu, "?#"); i >= 0 {
		htu = htu[:i]
	}
	s := fmt.Sprintf(`{"jti":%q,"htm":%q,"htu":%q,"iat":%d`, jti, req.Method, htu, iat.Unix())
	if req.AccessToken != "" {
		s += `,"ath":"` + ath(req.AccessToken) + `"`
	}
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func ath(token string) string {
	sum := sha256.Sum256([]byte(token))
	return b64u(sum[:])
}

type dpopFixture struct {
	*fixture
	dv *jtiguard.DPoPVerifier
}

// newDPoPFixture builds a DPoPVerifier over the usual fixture, its clock
// moved a minute past the store's creation: a proof whose iat, less the
// leeway, predates the store's memory is refused.
func newDPoPFixture(t testing.TB, cfg jtiguard.DPoPConfig, vcfg ...func(*jtiguard.VerifierConfig)) *dpopFixture {
	t.Helper()
	f := newFixture(t, vcfg...)
	f.clock.Advance(time.Minute)
	dv, err := jtiguard.NewDPoPVerifier(f.ver, cfg)
	require.NoError(t, err)
	return &dpopFixture{fixture: f, dv: dv}
}

var (
	tokenRequest    = jtiguard.DPoPRequest{Method: "POST", URL: "https://server.example.com/token"}
	resourceRequest = jtiguard.DPoPRequest{Method: "GET", URL: "https://api.example.com/orders?id=7", AccessToken: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"}
)

// The two example proofs of RFC 9449 (sections 4.1 and 7.1), byte for
// byte, with the RFC's key, its access token and its thumbprint (section
// 6.1).
const (
	rfcTokenProof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik" +
		"VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR" +
		"nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE" +
		"QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIj" +
		"oiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwia" +
		"WF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg" +
		"4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
	rfcResourceProof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6Ik" +
		"VDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCR" +
		"nMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JE" +
		"QSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIj" +
		"oiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0Z" +
		"WRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNF" +
		"c05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71E" +
		"OptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
	rfcAccessToken = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
	rfcJKT         = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
	rfcTokenIAT    = 1562262616
)

// rfcVerifier is a DPoPVerifier whose clock stands at the RFC's examples,
// its store created a minute before them.
func rfcVerifier(t *testing.T, cfg jtiguard.DPoPConfig) (*clock, *jtiguard.DPoPVerifier) {
	t.Helper()
	clk := &clock{t: time.Unix(rfcTokenIAT-60, 0)}
	k, err := jtiguard.NewKey("k1", jtiguard.EdDSA, ed25519.NewKeyFromSeed(testSeed))
	require.NoError(t, err)
	keys, err := jtiguard.NewKeySet(k)
	require.NoError(t, err)
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Now: clk.Now, Logger: quiet, CacheSize: -1})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	dv, err := jtiguard.NewDPoPVerifier(ver, cfg)
	require.NoError(t, err)
	clk.Advance(60 * time.Second)
	return clk, dv
}

func TestDPoPRFC9449Examples(t *testing.T) {
	ctx := context.Background()
	clk, dv := rfcVerifier(t, jtiguard.DPoPConfig{})

	// Section 4.1: the token request.
	p, err := dv.VerifyProof(ctx, rfcTokenProof, jtiguard.DPoPRequest{Method: "POST", URL: "https://server.example.com/token"})
	require.NoError(t, err)
	assert.Equal(t, jtiguard.DPoPProof{JKT: rfcJKT, JTI: "-BwC3ESc6acc2lTc", IssuedAt: time.Unix(rfcTokenIAT, 0)}, p)

	// Section 7.1: the resource request, two seconds later, with ath.
	clk.Advance(2 * time.Second)
	req := jtiguard.DPoPRequest{Method: "GET", URL: "https://resource.example.org/protectedresource", AccessToken: rfcAccessToken}
	p, err = dv.VerifyProof(ctx, rfcResourceProof, req)
	require.NoError(t, err)
	assert.Equal(t, jtiguard.DPoPProof{JKT: rfcJKT, JTI: "e1j3V_bKic8-LAEB", IssuedAt: time.Unix(rfcTokenIAT+2, 0)}, p)

	// Each once.
	_, err = dv.VerifyProof(ctx, rfcTokenProof, jtiguard.DPoPRequest{Method: "POST", URL: "https://server.example.com/token"})
	require.ErrorIs(t, err, jtiguard.ErrDPoPReplayed)
	_, err = dv.VerifyProof(ctx, rfcResourceProof, req)
	require.ErrorIs(t, err, jtiguard.ErrDPoPReplayed)

	// The resource proof on another verifier, behind a proxy: the request
	// URI as the server received it, with a query, and the external
	// origin. Its clock is at the token request: the proof's iat, 2 s
	// ahead, is within the leeway.
	_, dv2 := rfcVerifier(t, jtiguard.DPoPConfig{ExternalURL: "HTTPS://Resource.Example.ORG:443"})
	p, err = dv2.VerifyProof(ctx, rfcResourceProof, jtiguard.DPoPRequest{Method: "GET", URL: "/protectedresource?page=2", AccessToken: rfcAccessToken})
	require.NoError(t, err)
	assert.Equal(t, rfcJKT, p.JKT)
	// Without the token, or with another, it is refused.
	_, dv3 := rfcVerifier(t, jtiguard.DPoPConfig{})
	_, err = dv3.VerifyProof(ctx, rfcResourceProof, jtiguard.DPoPRequest{Method: "GET", URL: "https://resource.example.org/protectedresource"})
	requireRefused(t, err, rStrayATH, rfcResourceProof)
	_, err = dv3.VerifyProof(ctx, rfcResourceProof, jtiguard.DPoPRequest{Method: "GET", URL: "https://resource.example.org/protectedresource", AccessToken: rfcAccessToken + "x"})
	requireRefused(t, err, rATH, rfcResourceProof)
}

func TestDPoPAcceptsBothAlgorithms(t *testing.T) {
	ctx := context.Background()
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	for _, c := range []dpopClient{esClient(t, 1), edClient(t, 1)} {
		for _, req := range []jtiguard.DPoPRequest{tokenRequest, resourceRequest} {
			jti := freshJTI()
			p, err := f.dv.VerifyProof(ctx, c.proof(t, claimsFor(jti, req, f.clock.Now(), "")), req)
			require.NoError(t, err, c.alg)
			assert.Equal(t, jtiguard.DPoPProof{JKT: c.jkt, JTI: jti, IssuedAt: time.Unix(f.clock.Now().Unix(), 0)}, p, c.alg)
		}
	}
}

// refusal is the *Error a refused proof must yield: its sentinel and the
// check's description.
type refusal struct {
	kind error
	desc string
}

var (
	rTooLarge  = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof too large"}
	rMalformed = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof is not a compact JWS"}
	rHeader    = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof header must hold exactly typ, alg and jwk"}
	rTyp       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof typ is not dpop+jwt"}
	rAlg       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof alg not allowed (ES256 EdDSA)"}
	rPrivate   = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof jwk holds private or secret key members"}
	rJWK       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof jwk is not an acceptable public key"}
	rKeyAlg    = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof jwk does not match its alg"}
	rSignature = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof signature invalid"}
	rClaims    = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof claims malformed"}
	rMissing   = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof lacks jti, htm, htu or iat"}
	rJTI       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof jti must be 16 to 128 printable ASCII characters"}
	rHTM       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof htm does not match the request method"}
	rHTU       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof htu does not match the request URI"}
	rOld       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof iat too old"}
	rFuture    = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof iat in the future"}
	rATH       = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof ath missing or not the access token's hash"}
	rStrayATH  = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof ath given without an access token"}
	rLost      = refusal{jtiguard.ErrInvalidDPoPProof, "DPoP proof predates the replay store's memory"}
	rReplayed  = refusal{jtiguard.ErrDPoPReplayed, "DPoP proof already used"}
	rNonceNone = refusal{jtiguard.ErrUseDPoPNonce, "DPoP nonce required"}
	rNonceOld  = refusal{jtiguard.ErrUseDPoPNonce, "DPoP nonce stale or unknown"}
)

// requireRefused checks that err is the 401 *Error of want, and that it
// quotes nothing of the proof.
func requireRefused(t *testing.T, err error, want refusal, proof string, msg ...any) {
	t.Helper()
	var e *jtiguard.Error
	require.ErrorAs(t, err, &e, msg...)
	assert.Equal(t, 401, e.Status, msg...)
	assert.Equal(t, want.desc, e.Description, msg...)
	require.ErrorIs(t, err, want.kind, msg...)
	assert.NotErrorIs(t, err, jtiguard.ErrInvalidToken, msg...)
	if errors.Is(want.kind, jtiguard.ErrUseDPoPNonce) {
		assert.Equal(t, "use_dpop_nonce", e.Code, msg...)
		assert.NotErrorIs(t, err, jtiguard.ErrInvalidDPoPProof, msg...)
	} else {
		assert.Equal(t, "invalid_dpop_proof", e.Code, msg...)
		assert.NotErrorIs(t, err, jtiguard.ErrUseDPoPNonce, msg...)
	}
	for _, part := range strings.Split(proof, ".") {
		if len(part) >= 8 {
			assert.NotContains(t, err.Error()+e.Description, part, msg...)
		}
	}
}

func TestDPoPRefusesBadProofs(t *testing.T) {
	ctx := context.Background()
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	es, ed, other := esClient(t, 1), edClient(t, 1), esClient(t, 2)
	now := f.clock.Now()
	esPriv := es.priv.(*ecdsa.PrivateKey)
	d := b64u(must(esPriv.Bytes()))
	hdr := func(alg, jwk string) string {
		return `{"typ":"dpop+jwt","alg":"` + alg + `","jwk":` + jwk + `}`
	}
	esJWK := strings.TrimSuffix(es.jwk, "}")
	good := func(req jtiguard.DPoPRequest) string { return claimsFor(freshJTI(), req, now, "") }
	tokReq, resReq := tokenRequest, resourceRequest

	type tc struct {
		name  string
		proof func() string
		req   jtiguard.DPoPRequest
		want  refusal
	}
	cases := []tc{
		// Encoding and size.
		{"too large", func() string { return strings.Repeat("A", jtiguard.DefaultMaxProofSize+1) }, tokReq, rTooLarge},
		{"two parts", func() string { h, p, _ := segments(es.proof(t, good(tokReq))); return h + "." + p }, tokReq, rMalformed},
		{"four parts", func() string { return es.proof(t, good(tokReq)) + ".AAAA" }, tokReq, rMalformed},
		{"padding", func() string { h, p, s := segments(es.proof(t, good(tokReq))); return h + "=." + p + "." + s }, tokReq, rMalformed},
		{"line break", func() string {
			h, p, s := segments(es.proof(t, good(tokReq)))
			return h + "." + p[:4] + "\n" + p[4:] + "." + s
		}, tokReq, rMalformed},
		{"empty signature", func() string { h, p, _ := segments(es.proof(t, good(tokReq))); return h + "." + p + "." }, tokReq, rMalformed},
		// Header.
		{"typ JWT", func() string { return es.sign(t, `{"typ":"JWT","alg":"ES256","jwk":`+es.jwk+`}`, good(tokReq)) }, tokReq, rTyp},
		{"typ with application/", func() string {
			return es.sign(t, `{"typ":"application/dpop+jwt","alg":"ES256","jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rTyp},
		{"typ in upper case", func() string { return es.sign(t, `{"typ":"DPOP+JWT","alg":"ES256","jwk":`+es.jwk+`}`, good(tokReq)) }, tokReq, rTyp},
		{"typ at+jwt", func() string { return es.sign(t, `{"typ":"at+jwt","alg":"ES256","jwk":`+es.jwk+`}`, good(tokReq)) }, tokReq, rTyp},
		{"typ missing", func() string { return es.sign(t, `{"alg":"ES256","jwk":`+es.jwk+`}`, good(tokReq)) }, tokReq, rHeader},
		{"jwk missing", func() string { return es.sign(t, `{"typ":"dpop+jwt","alg":"ES256"}`, good(tokReq)) }, tokReq, rHeader},
		{"jwk not an object", func() string { return es.sign(t, `{"typ":"dpop+jwt","alg":"ES256","jwk":"x"}`, good(tokReq)) }, tokReq, rHeader},
		{"alg none", func() string {
			return enc(`{"typ":"dpop+jwt","alg":"none","jwk":`+es.jwk+`}`) + "." + enc(good(tokReq)) + ".AAAA"
		}, tokReq, rAlg},
		{"alg HS256 keyed with the public jwk", func() string {
			return signRaw(t, jwt.SigningMethodHS256, []byte(es.jwk), `{"typ":"dpop+jwt","alg":"HS256","jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rAlg},
		{"alg RS256", func() string { return es.sign(t, hdr("RS256", es.jwk), good(tokReq)) }, tokReq, rAlg},
		{"alg ES384", func() string { return es.sign(t, hdr("ES384", es.jwk), good(tokReq)) }, tokReq, rAlg},
		{"alg es256", func() string { return es.sign(t, hdr("es256", es.jwk), good(tokReq)) }, tokReq, rAlg},
		{"kid in header", func() string {
			return es.sign(t, `{"typ":"dpop+jwt","alg":"ES256","kid":"k1","jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rHeader},
		{"jku in header", func() string {
			return es.sign(t, `{"typ":"dpop+jwt","alg":"ES256","jku":"https://evil.example/jwks","jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rHeader},
		{"crit in header", func() string {
			return es.sign(t, `{"typ":"dpop+jwt","alg":"ES256","crit":["exp"],"jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rHeader},
		{"alg twice", func() string {
			return es.sign(t, `{"typ":"dpop+jwt","alg":"none","alg":"ES256","jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rHeader},
		{"Alg case variant", func() string {
			return es.sign(t, `{"typ":"dpop+jwt","alg":"ES256","Alg":"none","jwk":`+es.jwk+`}`, good(tokReq))
		}, tokReq, rHeader},
		{"header trailing data", func() string { return es.sign(t, es.header()+"{}", good(tokReq)) }, tokReq, rHeader},
		// The key.
		{"private EC key", func() string { return es.sign(t, hdr("ES256", esJWK+`,"d":"`+d+`"}`), good(tokReq)) }, tokReq, rPrivate},
		{"private Ed25519 key", func() string {
			seed := ed.priv.(ed25519.PrivateKey).Seed()
			return ed.sign(t, hdr("EdDSA", strings.TrimSuffix(ed.jwk, "}")+`,"d":"`+b64u(seed)+`"}`), good(tokReq))
		}, tokReq, rPrivate},
		{"symmetric key", func() string {
			return es.sign(t, hdr("ES256", `{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI"}`), good(tokReq))
		}, tokReq, rPrivate},
		{"ES256 with an Ed25519 key", func() string { return es.sign(t, hdr("ES256", ed.jwk), good(tokReq)) }, tokReq, rKeyAlg},
		{"EdDSA with an EC key", func() string { return ed.sign(t, hdr("EdDSA", es.jwk), good(tokReq)) }, tokReq, rKeyAlg},
		{"jwk alg differs", func() string { return es.sign(t, hdr("ES256", esJWK+`,"alg":"EdDSA"}`), good(tokReq)) }, tokReq, rKeyAlg},
		{"P-384 key", func() string {
			return es.sign(t, hdr("ES256", strings.Replace(es.jwk, "P-256", "P-384", 1)), good(tokReq))
		}, tokReq, rKeyAlg},
		{"RSA key", func() string { return es.sign(t, hdr("ES256", `{"kty":"RSA","n":"AQAB","e":"AQAB"}`), good(tokReq)) }, tokReq, rKeyAlg},
		{"point off the curve", func() string {
			return es.sign(t, hdr("ES256", `{"kty":"EC","crv":"P-256","x":"`+b64u(make([]byte, 32))+`","y":"`+b64u(make([]byte, 32))+`"}`), good(tokReq))
		}, tokReq, rJWK},
		{"x5c member", func() string { return es.sign(t, hdr("ES256", esJWK+`,"x5c":["MIIB"]}`), good(tokReq)) }, tokReq, rJWK},
		{"Crv case variant", func() string { return es.sign(t, hdr("ES256", esJWK+`,"Crv":"P-256"}`), good(tokReq)) }, tokReq, rJWK},
		{"jwk member twice", func() string { return es.sign(t, hdr("ES256", esJWK+`,"crv":"P-256"}`), good(tokReq)) }, tokReq, rJWK},
		{"use enc", func() string { return es.sign(t, hdr("ES256", esJWK+`,"use":"enc"}`), good(tokReq)) }, tokReq, rJWK},
		{"key_ops sign", func() string { return es.sign(t, hdr("ES256", esJWK+`,"key_ops":["sign"]}`), good(tokReq)) }, tokReq, rJWK},
		{"x with padding", func() string {
			return es.sign(t, hdr("ES256", strings.Replace(es.jwk, `","y"`, `=","y"`, 1)), good(tokReq))
		}, tokReq, rJWK},
		{"ext not a boolean", func() string { return es.sign(t, hdr("ES256", esJWK+`,"ext":1}`), good(tokReq)) }, tokReq, rJWK},
		// The signature.
		{"signature altered", func() string {
			h, p, s := segments(es.proof(t, good(tokReq)))
			sig, _ := base64.RawURLEncoding.DecodeString(s)
			sig[10] ^= 1
			return h + "." + p + "." + b64u(sig)
		}, tokReq, rSignature},
		{"signed by another key", func() string { return other.sign(t, es.header(), good(tokReq)) }, tokReq, rSignature},
		{"EdDSA signature altered", func() string {
			h, p, s := segments(ed.proof(t, good(tokReq)))
			sig, _ := base64.RawURLEncoding.DecodeString(s)
			sig[0] ^= 1
			return h + "." + p + "." + b64u(sig)
		}, tokReq, rSignature},
		{"ES256 zero signature", func() string {
			h, p, _ := segments(es.proof(t, good(tokReq)))
			return h + "." + p + "." + b64u(make([]byte, 64))
		}, tokReq, rSignature},
		// Claims.
		{"claims not an object", func() string { return es.proof(t, `null`) }, tokReq, rClaims},
		{"claims trailing data", func() string { return es.proof(t, good(tokReq)+"x") }, tokReq, rClaims},
		{"jti missing", func() string {
			return es.proof(t, fmt.Sprintf(`{"htm":"POST","htu":"https://server.example.com/token","iat":%d}`, now.Unix()))
		}, tokReq, rMissing},
		{"htm missing", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":%q,"htu":"https://server.example.com/token","iat":%d}`, freshJTI(), now.Unix()))
		}, tokReq, rMissing},
		{"htu missing", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":%q,"htm":"POST","iat":%d}`, freshJTI(), now.Unix()))
		}, tokReq, rMissing},
		{"iat missing", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":%q,"htm":"POST","htu":"https://server.example.com/token"}`, freshJTI()))
		}, tokReq, rMissing},
		{"jti twice", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now, `"jti":"`+freshJTI()+`"`)) }, tokReq, rClaims},
		{"JTI case variant", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now, `"JTI":"`+freshJTI()+`"`)) }, tokReq, rClaims},
		{"Htu case variant", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now, `"Htu":"https://evil.example/"`)) }, tokReq, rClaims},
		{"iat twice", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now, `"iat":1`)) }, tokReq, rClaims},
		{"iat a string", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":%q,"htm":"POST","htu":"https://server.example.com/token","iat":"%d"}`, freshJTI(), now.Unix()))
		}, tokReq, rClaims},
		{"iat a fraction", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":%q,"htm":"POST","htu":"https://server.example.com/token","iat":%d.5}`, freshJTI(), now.Unix()))
		}, tokReq, rClaims},
		{"iat negative", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":%q,"htm":"POST","htu":"https://server.example.com/token","iat":-%d}`, freshJTI(), now.Unix()))
		}, tokReq, rClaims},
		{"jti a number", func() string {
			return es.proof(t, fmt.Sprintf(`{"jti":1234567890123456789,"htm":"POST","htu":"https://server.example.com/token","iat":%d}`, now.Unix()))
		}, tokReq, rClaims},
		{"nonce a number", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now, `"nonce":1`)) }, tokReq, rClaims},
		{"jti empty", func() string { return es.proof(t, claimsFor("", tokReq, now, "")) }, tokReq, rJTI},
		{"jti too short", func() string { return es.proof(t, claimsFor("0123456789abcde", tokReq, now, "")) }, tokReq, rJTI},
		{"jti too long", func() string { return es.proof(t, claimsFor(strings.Repeat("j", 129), tokReq, now, "")) }, tokReq, rJTI},
		{"jti with a space", func() string { return es.proof(t, claimsFor("0123456789 abcdef", tokReq, now, "")) }, tokReq, rJTI},
		{"jti with a line break", func() string { return es.proof(t, claimsFor("0123456789\nabcdef", tokReq, now, "")) }, tokReq, rJTI},
		{"jti not ASCII", func() string { return es.proof(t, claimsFor("0123456789abcdéf", tokReq, now, "")) }, tokReq, rJTI},
		// The request.
		{"htm of another method", func() string { return es.proof(t, good(jtiguard.DPoPRequest{Method: "GET", URL: tokReq.URL})) }, tokReq, rHTM},
		{"htm in lower case", func() string { return es.proof(t, good(jtiguard.DPoPRequest{Method: "post", URL: tokReq.URL})) }, tokReq, rHTM},
		{"htu of another server", func() string {
			return es.proof(t, good(jtiguard.DPoPRequest{Method: "POST", URL: "https://evil.example.com/token"}))
		}, tokReq, rHTU},
		// iat.
		{"iat too old", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now.Add(-61*time.Second), "")) }, tokReq, rOld},
		{"iat too new", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now.Add(6*time.Second), "")) }, tokReq, rFuture},
		{"iat zero", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, time.Unix(0, 0), "")) }, tokReq, rOld},
		// ath.
		{"ath of another token", func() string {
			return es.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "GET", URL: resReq.URL, AccessToken: "another.token.x"}, now, ""))
		}, resReq, rATH},
		{"ath missing", func() string {
			return es.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "GET", URL: resReq.URL}, now, ""))
		}, resReq, rATH},
		{"ath of the token in upper case", func() string {
			return es.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "GET", URL: resReq.URL}, now, `"ath":"`+strings.ToUpper(ath(resReq.AccessToken))+`"`))
		}, resReq, rATH},
		{"ath padded", func() string {
			return es.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "GET", URL: resReq.URL}, now, `"ath":"`+ath(resReq.AccessToken)+`="`))
		}, resReq, rATH},
		{"ath without a token", func() string { return es.proof(t, claimsFor(freshJTI(), tokReq, now, `"ath":"`+ath("x")+`"`)) }, tokReq, rStrayATH},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proof := c.proof()
			_, err := f.dv.VerifyProof(ctx, proof, c.req)
			requireRefused(t, err, c.want, proof)
		})
	}
}

// TestDPoPAcceptsOptionalMembers: what real clients add is accepted:
// WebCrypto's ext and key_ops, a kid and alg in the jwk, use "sig", claims
// of their own, a nonce when nonces are off.
func TestDPoPAcceptsOptionalMembers(t *testing.T) {
	ctx := context.Background()
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	es := esClient(t, 3)
	jwk := strings.TrimSuffix(es.jwk, "}") + `,"ext":true,"key_ops":["verify"],"kid":"my key","alg":"ES256","use":"sig"}`
	for name, p := range map[string]string{
		"jwk members": es.sign(t, `{"typ":"dpop+jwt","alg":"ES256","jwk":`+jwk+`}`, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), "")),
		"claims":      es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), `"nonce":"n","exp":0,"x":{"a":[1,null]}`)),
		"whitespace":  es.sign(t, " {\"typ\" : \"dpop+jwt\",\n\"alg\":\"ES256\",\"jwk\":"+es.jwk+"}\n", " "+claimsFor(freshJTI(), tokenRequest, f.clock.Now(), "")),
	} {
		r, err := f.dv.VerifyProof(ctx, p, tokenRequest)
		require.NoError(t, err, name)
		assert.Equal(t, es.jkt, r.JKT, "kid and members beside the key's own do not change the thumbprint")
	}
}

func TestDPoPHTU(t *testing.T) {
	ctx := context.Background()
	es := esClient(t, 4)
	cases := []struct {
		htu, url, external string
		ok                 bool
	}{
		{"https://server.example.com/token", "https://server.example.com/token", "", true},
		{"https://server.example.com/token", "https://server.example.com/token?grant=x#frag", "", true},
		{"HTTPS://SERVER.Example.COM/token", "https://server.example.com/token", "", true},
		{"https://server.example.com/token", "HTTPS://SERVER.EXAMPLE.COM/token", "", true},
		{"https://server.example.com:443/token", "https://server.example.com/token", "", true},
		{"https://server.example.com:/token", "https://server.example.com/token", "", true},
		{"https://server.example.com:0443/token", "https://server.example.com/token", "", true},
		{"http://server.example.com:80/token", "http://server.example.com/token", "", true},
		{"https://server.example.com", "https://server.example.com/", "", true},
		{"https://server.example.com/", "https://server.example.com", "", true},
		{"https://server.example.com/a/../token", "https://server.example.com/token", "", true},
		{"https://server.example.com/./token", "https://server.example.com/token", "", true},
		{"https://server.example.com/%74oken", "https://server.example.com/token", "", true},
		{"https://server.example.com/a%2fb", "https://server.example.com/a%2Fb", "", true},
		{"https://[2001:DB8::1]:8443/token", "https://[2001:db8::1]:8443/token", "", true},
		{"https://api.example.com/orders", "/orders?id=7", "https://api.example.com", true},
		{"https://api.example.com/orders", "http://10.0.0.7:8080/orders?id=7", "https://API.example.com:443", true},
		{"https://api.example.com/", "/", "https://api.example.com", true},

		{"https://server.example.com/token?grant=x", "https://server.example.com/token?grant=x", "", false},
		{"https://server.example.com/token#frag", "https://server.example.com/token", "", false},
		{"https://server.example.com/token?", "https://server.example.com/token", "", false},
		{"https://server.example.com/Token", "https://server.example.com/token", "", false},
		{"https://server.example.com/token/", "https://server.example.com/token", "", false},
		{"https://server.example.com/token.", "https://server.example.com/token", "", false},
		{"https://server.example.com/token/.", "https://server.example.com/token", "", false},
		{"https://server.example.com./token", "https://server.example.com/token", "", false},
		{"https://server.example.com/token", "https://server.example.com./token", "", false},
		{"https://server.example.com:8443/token", "https://server.example.com/token", "", false},
		{"https://server.example.com/token", "https://server.example.com:8443/token", "", false},
		{"https://server.example.com:80/token", "https://server.example.com/token", "", false},
		{"http://server.example.com/token", "https://server.example.com/token", "", false},
		{"https://server.example.com/a%2Fb", "https://server.example.com/a/b", "", false},
		{"https://user@server.example.com/token", "https://server.example.com/token", "", false},
		{"https://server.example.com:99999/token", "https://server.example.com/token", "", false},
		{"https://server.example.com:-443/token", "https://server.example.com/token", "", false},
		{"https://server.example.com:+443/token", "https://server.example.com/token", "", false},
		{"https://server.example.com:-0/token", "https://server.example.com:0/token", "", false},
		{"https://server.example.com:000443/token", "https://server.example.com/token", "", false},
		{"https://server.example.com/to ken", "https://server.example.com/to ken", "", false},
		{"https://server.example.com/%7", "https://server.example.com/%7", "", false},
		{"ftp://server.example.com/token", "ftp://server.example.com/token", "", false},
		{"//server.example.com/token", "https://server.example.com/token", "", false},
		{"/token", "https://server.example.com/token", "", false},
		{"https:///token", "https:///token", "", false},
		{"https://server.example.com/token", "https://other.example.com/token", "", false},
		{"https://api.example.com/orders", "/orders", "https://other.example.com", false},
		{"http://api.example.com/orders", "/orders", "https://api.example.com", false},
	}
	for _, c := range cases {
		f := newDPoPFixture(t, jtiguard.DPoPConfig{ExternalURL: c.external})
		req := jtiguard.DPoPRequest{Method: "POST", URL: c.url}
		proof := es.proof(t, fmt.Sprintf(`{"jti":%q,"htm":"POST","htu":%q,"iat":%d}`, freshJTI(), c.htu, f.clock.Now().Unix()))
		_, err := f.dv.VerifyProof(ctx, proof, req)
		if c.ok {
			assert.NoError(t, err, "htu %q, request %q, external %q", c.htu, c.url, c.external)
		} else {
			requireRefused(t, err, rHTU, proof, "htu %q, request %q, external %q", c.htu, c.url, c.external)
		}
	}

	// A relative request URL without ExternalURL is the server's mistake.
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	_, err := f.dv.VerifyProof(ctx, es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), "")), jtiguard.DPoPRequest{Method: "POST", URL: "/token"})
	require.ErrorIs(t, err, jtiguard.ErrConfig)
}

func TestDPoPIssuedAtWindow(t *testing.T) {
	ctx := context.Background()
	es := esClient(t, 5)
	for _, c := range []struct {
		window time.Duration
		offset time.Duration
		want   *refusal
	}{
		{0, -60 * time.Second, nil},
		{0, -61 * time.Second, &rOld},
		{0, 5 * time.Second, nil},
		{0, 6 * time.Second, &rFuture},
		{0, 0, nil},
		{10 * time.Second, -10 * time.Second, nil},
		{10 * time.Second, -11 * time.Second, &rOld},
		{jtiguard.MaxDPoPWindow, -jtiguard.MaxDPoPWindow + time.Minute, nil},
	} {
		f := newDPoPFixture(t, jtiguard.DPoPConfig{Window: c.window})
		f.clock.Advance(jtiguard.MaxDPoPWindow)
		proof := es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now().Add(c.offset), ""))
		_, err := f.dv.VerifyProof(ctx, proof, tokenRequest)
		if c.want == nil {
			assert.NoError(t, err, "window %v, iat %v", c.window, c.offset)
		} else {
			requireRefused(t, err, *c.want, proof, "window %v, iat %v", c.window, c.offset)
		}
	}
}

func TestDPoPReplay(t *testing.T) {
	ctx := context.Background()
	var events []jtiguard.Event
	f := newDPoPFixture(t, jtiguard.DPoPConfig{}, func(vc *jtiguard.VerifierConfig) {
		vc.OnEvent = func(_ context.Context, e jtiguard.Event) { events = append(events, e) }
	})
	es, ed := esClient(t, 6), edClient(t, 6)
	jti := freshJTI()
	claims := claimsFor(jti, tokenRequest, f.clock.Now(), "")
	proof := es.proof(t, claims)

	// A refused presentation consumes nothing.
	_, err := f.dv.VerifyProof(ctx, proof, jtiguard.DPoPRequest{Method: "GET", URL: tokenRequest.URL})
	requireRefused(t, err, rHTM, proof)
	_, err = f.dv.VerifyProof(ctx, proof, tokenRequest)
	require.NoError(t, err)

	// Again: refused, and reported by jti.
	_, err = f.dv.VerifyProof(ctx, proof, tokenRequest)
	requireRefused(t, err, rReplayed, proof)
	require.Len(t, events, 1)
	assert.Equal(t, jtiguard.Event{Kind: jtiguard.EventDPoPReplayRefused, JTI: jti}, events[0])

	// Re-signed (ES256 signatures are randomized) or re-encoded (s -> n-s):
	// the same jti with the same key is the same proof.
	_, err = f.dv.VerifyProof(ctx, es.proof(t, claims), tokenRequest)
	requireRefused(t, err, rReplayed, proof)
	h, p, s := segments(proof)
	sig, _ := base64.RawURLEncoding.DecodeString(s)
	ns := new(big.Int).Sub(elliptic.P256().Params().N, new(big.Int).SetBytes(sig[32:]))
	malleated := h + "." + p + "." + b64u(append(sig[:32:32], ns.FillBytes(make([]byte, 32))...))
	require.NotEqual(t, proof, malleated)
	_, err = f.dv.VerifyProof(ctx, malleated, tokenRequest)
	requireRefused(t, err, rReplayed, malleated)

	// Another key may use the same jti: jtis are per key.
	_, err = f.dv.VerifyProof(ctx, ed.proof(t, claims), tokenRequest)
	require.NoError(t, err)

	// Another verifier sharing the store refuses it too.
	other, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: f.store, Now: f.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(other.Close)
	dv2, err := jtiguard.NewDPoPVerifier(other, jtiguard.DPoPConfig{})
	require.NoError(t, err)
	_, err = dv2.VerifyProof(ctx, proof, tokenRequest)
	requireRefused(t, err, rReplayed, proof)

	// Past the window, the proof is too old, whatever the store forgot.
	f.clock.Advance(jtiguard.DefaultDPoPWindow + time.Second)
	_, err = f.dv.VerifyProof(ctx, proof, tokenRequest)
	requireRefused(t, err, rOld, proof)
}

func TestDPoPConcurrentPresentationsAcceptOne(t *testing.T) {
	ctx := context.Background()
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	for _, c := range []dpopClient{esClient(t, 7), edClient(t, 7)} {
		proof := c.proof(t, claimsFor(freshJTI(), resourceRequest, f.clock.Now(), ""))
		const n = 1000
		var wg sync.WaitGroup
		var accepted, replayed atomic.Int64
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				_, err := f.dv.VerifyProof(ctx, proof, resourceRequest)
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, jtiguard.ErrDPoPReplayed):
					replayed.Add(1)
				default:
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		assert.Equal(t, int64(1), accepted.Load(), c.alg)
		assert.Equal(t, int64(n-1), replayed.Load(), c.alg)
	}
}

func TestDPoPHugeProofRefusedWithoutDecoding(t *testing.T) {
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	es := esClient(t, 8)
	valid := es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), `"pad":"`+strings.Repeat("x", 1<<20)+`"`))
	for name, huge := range map[string]string{
		"garbage":             strings.Repeat("A", 1<<20),
		"three parts":         strings.Repeat("A", 1<<19) + "." + strings.Repeat("A", 1<<19) + ".AAAA",
		"validly signed 1 MB": valid,
	} {
		var err error
		allocs := testing.AllocsPerRun(20, func() {
			_, err = f.dv.VerifyProof(context.Background(), huge, tokenRequest)
		})
		requireRefused(t, err, rTooLarge, "", name)
		assert.Zero(t, allocs, "%s: a proof over the size cap must be refused before any decoding", name)
	}
	// The cap can be raised, to 16 KiB at most.
	_, err := jtiguard.NewDPoPVerifier(f.ver, jtiguard.DPoPConfig{MaxProofSize: 2 << 20})
	require.ErrorIs(t, err, jtiguard.ErrConfig)
}

func TestDPoPNonces(t *testing.T) {
	ctx := context.Background()
	secret := []byte("dpop nonce secret of 32 bytes!!!")
	cfg := jtiguard.DPoPConfig{NonceSecret: secret, NonceSlot: time.Minute}
	f := newDPoPFixture(t, cfg)
	es := esClient(t, 9)
	proofWith := func(extra string) string {
		return es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), extra))
	}
	nonce := f.dv.Nonce()
	require.Len(t, nonce, 22)

	// Missing: use_dpop_nonce, not invalid_dpop_proof, and nothing consumed.
	p := proofWith("")
	_, err := f.dv.VerifyProof(ctx, p, tokenRequest)
	requireRefused(t, err, rNonceNone, p)
	// A proof wrong in another way is refused for that, nonce or not.
	p = es.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "GET", URL: tokenRequest.URL}, f.clock.Now(), ""))
	_, err = f.dv.VerifyProof(ctx, p, tokenRequest)
	requireRefused(t, err, rHTM, p)

	// Current: accepted.
	_, err = f.dv.VerifyProof(ctx, proofWith(`"nonce":"`+nonce+`"`), tokenRequest)
	require.NoError(t, err)

	// Every replica with the secret issues and accepts the same nonce; a
	// deployment with another secret does not.
	g := newDPoPFixture(t, cfg)
	assert.Equal(t, nonce, g.dv.Nonce())
	h := newDPoPFixture(t, jtiguard.DPoPConfig{NonceSecret: []byte("another secret, 32 bytes or more"), NonceSlot: time.Minute})
	assert.NotEqual(t, nonce, h.dv.Nonce())
	p = proofWith(`"nonce":"` + h.dv.Nonce() + `"`)
	_, err = f.dv.VerifyProof(ctx, p, tokenRequest)
	requireRefused(t, err, rNonceOld, p)

	// Forged or altered: refused.
	for _, bad := range []string{"", "x", strings.ToUpper(nonce), nonce[:21] + "A", nonce + "A"} {
		if bad == nonce {
			continue
		}
		p = proofWith(`"nonce":"` + bad + `"`)
		_, err = f.dv.VerifyProof(ctx, p, tokenRequest)
		requireRefused(t, err, rNonceOld, p, "nonce %q", bad)
	}

	// The next slot: a new nonce, the previous still accepted.
	f.clock.Advance(time.Minute)
	assert.NotEqual(t, nonce, f.dv.Nonce())
	_, err = f.dv.VerifyProof(ctx, proofWith(`"nonce":"`+nonce+`"`), tokenRequest)
	require.NoError(t, err, "a nonce lives through the next slot")
	// Two slots on: stale.
	f.clock.Advance(time.Minute)
	p = proofWith(`"nonce":"` + nonce + `"`)
	_, err = f.dv.VerifyProof(ctx, p, tokenRequest)
	requireRefused(t, err, rNonceOld, p)
	_, err = f.dv.VerifyProof(ctx, proofWith(`"nonce":"`+f.dv.Nonce()+`"`), tokenRequest)
	require.NoError(t, err)

	// A replica whose clock is ahead (within the leeway) already issues
	// the next slot's nonce: accepted; further ahead, not.
	next := f.dv.Nonce()
	f.clock.Advance(-3 * time.Second) // now 3 s before that slot began
	_, err = f.dv.VerifyProof(ctx, proofWith(`"nonce":"`+next+`"`), tokenRequest)
	require.NoError(t, err)
	f.clock.Advance(-3 * time.Second) // 6 s before: beyond the 5 s leeway
	p = proofWith(`"nonce":"` + next + `"`)
	_, err = f.dv.VerifyProof(ctx, p, tokenRequest)
	requireRefused(t, err, rNonceOld, p)

	// Nonces off: no nonce to send.
	assert.Empty(t, newDPoPFixture(t, jtiguard.DPoPConfig{}).dv.Nonce())
}

// failingStore fails every call, as an unreachable store does.
type failingStore struct{}

var errDown = errors.New("store down")

func (failingStore) Check(context.Context, store.TokenRef) (store.Status, error) {
	return 0, errDown
}
func (failingStore) Consume(context.Context, store.TokenRef, uint64) (store.Status, error) {
	return 0, errDown
}
func (failingStore) Revoke(context.Context, store.TokenRef) error { return errDown }

func TestDPoPFailsClosed(t *testing.T) {
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	es := esClient(t, 10)
	dv, err := jtiguard.NewDPoPVerifier(f.ver, jtiguard.DPoPConfig{Store: failingStore{}})
	require.NoError(t, err)
	_, err = dv.VerifyProof(context.Background(), es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), "")), tokenRequest)
	var e *jtiguard.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 503, e.Status)
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	require.ErrorIs(t, err, errDown)
	assert.NotErrorIs(t, err, jtiguard.ErrInvalidDPoPProof)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.dv.VerifyProof(ctx, es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), "")), tokenRequest)
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
}

// TestDPoPStoreLossRefusesEarlierProofs: a proof accepted before the store
// lost its memory is not accepted again after, even when its iat is ahead
// of the verifier's clock (a client clock within the leeway ahead).
func TestDPoPStoreLossRefusesEarlierProofs(t *testing.T) {
	ctx := context.Background()
	f := newDPoPFixture(t, jtiguard.DPoPConfig{})
	es := esClient(t, 11)
	ahead := es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now().Add(jtiguard.DefaultLeeway), ""))
	_, err := f.dv.VerifyProof(ctx, ahead, tokenRequest)
	require.NoError(t, err)

	// The process restarts a second later, with an empty store.
	f.clock.Advance(time.Second)
	restarted, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: f.clock.Now})
	require.NoError(t, err)
	dv, err := jtiguard.NewDPoPVerifier(f.ver, jtiguard.DPoPConfig{Store: restarted})
	require.NoError(t, err)
	f.clock.Advance(time.Second)
	_, err = dv.VerifyProof(ctx, ahead, tokenRequest)
	requireRefused(t, err, rLost, ahead)

	// The cost: fresh proofs are refused for the leeway after the restart,
	// then accepted.
	fresh := es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), ""))
	_, err = dv.VerifyProof(ctx, fresh, tokenRequest)
	requireRefused(t, err, rLost, fresh)
	f.clock.Advance(jtiguard.DefaultLeeway)
	_, err = dv.VerifyProof(ctx, es.proof(t, claimsFor(freshJTI(), tokenRequest, f.clock.Now(), "")), tokenRequest)
	require.NoError(t, err)
}

func TestDPoPConfigRefusesNonsense(t *testing.T) {
	f := newFixture(t)
	is, err := jtiguard.NewIntrospectionStore("https://auth.example.com/introspect", jtiguard.IntrospectionConfig{ClientID: "rs", ClientSecret: "secret"})
	require.NoError(t, err)
	t.Cleanup(is.Close)
	otherClock := &clock{t: t0.Add(time.Hour)}
	skewed, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: otherClock.Now})
	require.NoError(t, err)
	for name, cfg := range map[string]jtiguard.DPoPConfig{
		"short window":            {Window: time.Second},
		"long window":             {Window: time.Hour},
		"negative window":         {Window: -time.Minute},
		"small cap":               {MaxProofSize: 100},
		"huge cap":                {MaxProofSize: 1 << 20},
		"short nonce secret":      {NonceSecret: []byte("short")},
		"slot without secret":     {NonceSlot: time.Minute},
		"short slot":              {NonceSecret: make([]byte, 32), NonceSlot: time.Second},
		"long slot":               {NonceSecret: make([]byte, 32), NonceSlot: 2 * time.Hour},
		"fractional slot":         {NonceSecret: make([]byte, 32), NonceSlot: 15500 * time.Millisecond},
		"external with path":      {ExternalURL: "https://api.example.com/v1"},
		"external with query":     {ExternalURL: "https://api.example.com/?a"},
		"external with userinfo":  {ExternalURL: "https://u@api.example.com"},
		"external not http":       {ExternalURL: "wss://api.example.com"},
		"external relative":       {ExternalURL: "api.example.com"},
		"introspection store":     {Store: is},
		"store on another clock":  {Store: skewed},
		"external with fragment":  {ExternalURL: "https://api.example.com#x"},
		"external with bad port":  {ExternalURL: "https://api.example.com:x"},
		"external with bad host":  {ExternalURL: "https://api example.com"},
		"external without a host": {ExternalURL: "https://"},
	} {
		_, err := jtiguard.NewDPoPVerifier(f.ver, cfg)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, name)
	}
	_, err = jtiguard.NewDPoPVerifier(nil, jtiguard.DPoPConfig{})
	assert.ErrorIs(t, err, jtiguard.ErrConfig)
	for _, ok := range []string{"https://api.example.com", "https://api.example.com/", "http://localhost:8080", "https://[::1]:8443"} {
		_, err := jtiguard.NewDPoPVerifier(f.ver, jtiguard.DPoPConfig{ExternalURL: ok})
		assert.NoError(t, err, ok)
	}
}

// FuzzDPoPProof feeds arbitrary proofs to a DPoPVerifier. It must never
// panic, must answer every refusal with a 401 *Error matching
// ErrInvalidDPoPProof, and must accept nothing but what the test's keys
// signed: the header and claims of an accepted proof are those of a seed
// signed here (its signature may differ: ES256 signatures are randomized
// and malleable, which is why proofs are keyed on their jti).
func FuzzDPoPProof(f *testing.F) {
	fx := newDPoPFixture(f, jtiguard.DPoPConfig{})
	signed := map[string]bool{}
	add := func(p string) {
		h, c, _ := segments(p)
		signed[h+"."+c] = true
		f.Add(p)
	}
	es, ed := esClient(f, 1), edClient(f, 1)
	now := fx.clock.Now()
	for i, c := range []dpopClient{es, ed} {
		for j, req := range []jtiguard.DPoPRequest{tokenRequest, resourceRequest} {
			add(c.proof(f, claimsFor(fmt.Sprintf("fuzz-seed-jti-%d-%d", i, j), req, now, "")))
		}
		add(c.proof(f, claimsFor(fmt.Sprintf("fuzz-seed-jti-%d-x", i), tokenRequest, now, `"nonce":"n","x":[1,{"y":null}]`)))
	}
	// Signed but wrong: refused however the fuzzer changes them, unless
	// it finds a signature (which the property would catch).
	f.Add(es.sign(f, `{"typ":"dpop+jwt","alg":"ES256","kid":"x","jwk":`+es.jwk+`}`, claimsFor("fuzz-seed-jti-bad-1", tokenRequest, now, "")))
	f.Add(es.proof(f, claimsFor("fuzz-seed-jti-bad-2", tokenRequest, now.Add(-time.Hour), "")))
	f.Add(rfcTokenProof)
	f.Add(strings.Repeat("A", 5000))
	f.Fuzz(func(t *testing.T, proof string) {
		for _, req := range []jtiguard.DPoPRequest{tokenRequest, resourceRequest} {
			p, err := fx.dv.VerifyProof(context.Background(), proof, req)
			if err == nil {
				h, c, _ := segments(proof)
				if !signed[h+"."+c] {
					t.Fatalf("accepted a proof the test never signed: %q (jkt %s)", proof, p.JKT)
				}
				continue
			}
			var e *jtiguard.Error
			if !errors.As(err, &e) || e.Status != 401 || !errors.Is(err, jtiguard.ErrInvalidDPoPProof) {
				t.Fatalf("refusal is not a 401 invalid_dpop_proof *Error: %v", err)
			}
		}
	})
}

// BenchmarkDPoPProof measures a resource request's proof verification
// (size, parse, key, signature, claims, ath, htu, the MemoryStore's
// consume) against the bare signature verification of the same proofs
// with a parsed key (SHA-256 and ecdsa.Verify, or ed25519.Verify), and
// reports the ratio as x-signature. Each iteration needs a proof of its
// own (a second presentation is a replay), signed before the timer
// starts, so this loops over b.N rather than b.Loop.
func BenchmarkDPoPProof(b *testing.B) {
	for _, alg := range []string{jtiguard.ES256, jtiguard.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			f := newDPoPFixture(b, jtiguard.DPoPConfig{})
			c := esClient(b, 1)
			if alg == jtiguard.EdDSA {
				c = edClient(b, 1)
			}
			req := jtiguard.DPoPRequest{Method: "GET", URL: "https://api.example.com/orders/12345?expand=items", AccessToken: strings.Repeat("t", 600)}
			proofs := make([]string, b.N)
			inputs := make([][]byte, b.N)
			sigs := make([][]byte, b.N)
			for i := range proofs {
				proofs[i] = c.proof(b, claimsFor(fmt.Sprintf("bench-%s-%012d", alg, i), req, f.clock.Now(), ""))
				h, p, s := segments(proofs[i])
				inputs[i] = []byte(h + "." + p)
				sigs[i], _ = base64.RawURLEncoding.DecodeString(s)
			}
			start := time.Now()
			for i := range b.N {
				if !bareVerify(c.pub, inputs[i], sigs[i]) {
					b.Fatal("bare verification failed")
				}
			}
			bare := time.Since(start)

			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := f.dv.VerifyProof(ctx, proofs[i], req); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(bare.Nanoseconds())/float64(b.N), "signature-ns/op")
			b.ReportMetric(float64(b.Elapsed())/float64(bare), "x-signature")
		})
	}
}

func bareVerify(pub any, input, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, input, sig)
	case *ecdsa.PublicKey:
		h := sha256.Sum256(input)
		return ecdsa.Verify(k, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	return false
}

// BenchmarkDPoPRequest: a DPoP-protected request as the Guard checks it
// (the access token warm in the verified-token cache, a fresh proof, one
// store operation for both), against a warm Bearer verification plus one
// bare signature verification of the proof's algorithm: the budget
// is 1.10x of that sum.
func BenchmarkDPoPRequest(b *testing.B) {
	for _, alg := range []string{jtiguard.ES256, jtiguard.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			f := newDPoPFixture(b, jtiguard.DPoPConfig{ExternalURL: "https://api.example.com"})
			c := esClient(b, 1)
			if alg == jtiguard.EdDSA {
				c = edClient(b, 1)
			}
			bound, _, err := f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: c.jkt})
			require.NoError(b, err)
			bearer, _, err := f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
			require.NoError(b, err)
			req := jtiguard.DPoPRequest{Method: "GET", URL: "/orders/12345?expand=items", AccessToken: bound}
			proofs := make([]string, b.N)
			inputs := make([][]byte, b.N)
			sigs := make([][]byte, b.N)
			for i := range proofs {
				proofs[i] = c.proof(b, claimsFor(fmt.Sprintf("req-%s-%012d", alg, i), jtiguard.DPoPRequest{Method: "GET", URL: "https://api.example.com/orders/12345", AccessToken: bound}, f.clock.Now(), ""))
				h, p, s := segments(proofs[i])
				inputs[i] = []byte(h + "." + p)
				sigs[i], _ = base64.RawURLEncoding.DecodeString(s)
			}
			ctx := context.Background()
			// Warm both tokens, then time the baseline: warm Bearer verify +
			// one bare signature check.
			_, err = f.ver.Verify(ctx, bearer)
			require.NoError(b, err)
			_, err = f.dv.Verify(ctx, bound, c.proof(b, claimsFor("warm-up-proof-0000", jtiguard.DPoPRequest{Method: "GET", URL: "https://api.example.com/orders/12345", AccessToken: bound}, f.clock.Now(), "")), req)
			require.NoError(b, err)
			start := time.Now()
			for i := range b.N {
				if _, err := f.ver.Verify(ctx, bearer); err != nil {
					b.Fatal(err)
				}
				if !bareVerify(c.pub, inputs[i], sigs[i]) {
					b.Fatal("bare verification failed")
				}
			}
			base := time.Since(start)

			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := f.dv.Verify(ctx, bound, proofs[i], req); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "baseline-ns/op")
			b.ReportMetric(float64(b.Elapsed())/float64(base), "x-baseline")
		})
	}
}
