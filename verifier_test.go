package jtiguard_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

const goodHeader = `{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`

// payload returns a valid access-token claims object at the fixture's time,
// with extra members appended and named members left out.
func payload(t testing.TB, extra string, omit ...string) string {
	t.Helper()
	// The jti is derived from the arguments, so that every process (the
	// fuzzing engine's workers too) builds the same tokens.
	sum := sha256.Sum256([]byte(extra + "|" + strings.Join(omit, ",")))
	id, err := store.NewJTI(bytes.NewReader(sum[:16]))
	require.NoError(t, err)
	now := t0.Unix()
	members := []string{
		`"iss":"` + testIssuer + `"`,
		`"sub":"alice"`,
		`"aud":"` + testAudience + `"`,
		fmt.Sprintf(`"exp":%d`, now+300),
		fmt.Sprintf(`"iat":%d`, now),
		`"jti":"` + id.String() + `"`,
	}
	var kept []string
	for _, m := range members {
		name := strings.Trim(strings.SplitN(m, ":", 2)[0], `"`)
		omitted := false
		for _, o := range omit {
			omitted = omitted || o == name
		}
		if !omitted {
			kept = append(kept, m)
		}
	}
	if extra != "" {
		kept = append(kept, extra)
	}
	return "{" + strings.Join(kept, ",") + "}"
}

func TestVerifyAcceptsIssuedToken(t *testing.T) {
	f := newFixture(t)
	tok, issued := f.access(t)
	for range 2 { // cold, then from the cache
		c, err := f.ver.Verify(context.Background(), tok)
		require.NoError(t, err)
		assert.Equal(t, "alice", c.Subject)
		assert.Equal(t, issued.ID, c.ID)
		assert.Equal(t, jtiguard.TypeAccess, c.Type)
		assert.Equal(t, "k1", c.KeyID)
		assert.True(t, c.HasScope("write"))
		assert.False(t, c.HasScope("admin"))
		assert.Equal(t, t0.Add(jtiguard.DefaultAccessTTL).Unix(), c.ExpiresAt.Unix())
	}
	// The hand-signed valid payload verifies too, so the rejections below
	// are caused by what each case changes.
	c, err := f.ver.Verify(context.Background(), signRaw(t, jwt.SigningMethodEdDSA, f.priv, goodHeader, payload(t, `"x-custom":{"a":[1,2.5e3,null,true]}`)))
	require.NoError(t, err)
	assert.JSONEq(t, `{"a":[1,2.5e3,null,true]}`, string(c.Extra["x-custom"]))
}

type forgedCase struct {
	name  string
	token string
	want  error
}

// forgedCases are tokens the fixture's verifier must reject, each with the
// reason; they also seed FuzzVerify. good is the validly signed token most
// of them are made from.
func forgedCases(t testing.TB, f *fixture) (cases []forgedCase, good string) {
	ed := func(h, p string) string { return signRaw(t, jwt.SigningMethodEdDSA, f.priv, h, p) }
	good = ed(goodHeader, payload(t, ""))
	gh, gp, gs := segments(good)
	now := t0.Unix()
	oneTime, _ := f.oneTime(t, "confirm")

	// The last signature character of an Ed25519 signature carries 4 unused
	// bits: changing them keeps the bytes but breaks canonical encoding.
	last := gs[len(gs)-1]
	alt := map[byte]byte{'A': 'B', 'Q': 'R', 'g': 'h', 'w': 'x'}[last]
	if alt == 0 {
		t.Fatalf("unexpected last signature char %q", last)
	}

	big := strings.Repeat("A", 1<<20)

	return []forgedCase{
		{"empty", "", jtiguard.ErrMalformed},
		{"two parts", gh + "." + gp, jtiguard.ErrMalformed},
		{"four parts", good + ".x", jtiguard.ErrMalformed},
		{"empty signature", gh + "." + gp + ".", jtiguard.ErrMalformed},
		{"alg none", enc(`{"alg":"none","kid":"k1","typ":"at+jwt"}`) + "." + gp + "." + gs, jtiguard.ErrAlgorithm},
		{"alg None", enc(`{"alg":"None","kid":"k1","typ":"at+jwt"}`) + "." + gp + "." + gs, jtiguard.ErrAlgorithm},
		{"alg NONE", enc(`{"alg":"NONE","kid":"k1","typ":"at+jwt"}`) + "." + gp + "." + gs, jtiguard.ErrAlgorithm},
		{"alg nOnE", enc(`{"alg":"nOnE","kid":"k1","typ":"at+jwt"}`) + "." + gp + "." + gs, jtiguard.ErrAlgorithm},
		{"alg none no sig", enc(`{"alg":"none","kid":"k1","typ":"at+jwt"}`) + "." + gp + ".", jtiguard.ErrMalformed},
		{"HS256 with the public key", signRaw(t, jwt.SigningMethodHS256, []byte(f.priv.Public().(ed25519.PublicKey)), `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, gpDecoded(gp)), jtiguard.ErrAlgorithm},
		{"unknown kid", ed(`{"alg":"EdDSA","kid":"k2","typ":"at+jwt"}`, payload(t, "")), jtiguard.ErrUnknownKey},
		{"no kid", ed(`{"alg":"EdDSA","typ":"at+jwt"}`, payload(t, "")), jtiguard.ErrUnknownKey},
		{"embedded jwk", ed(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}`, payload(t, "")), jtiguard.ErrMalformed},
		{"jku", ed(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jku":"https://evil.example/jwks"}`, payload(t, "")), jtiguard.ErrMalformed},
		{"x5u", ed(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x5u":"https://evil.example/cert"}`, payload(t, "")), jtiguard.ErrMalformed},
		{"x5c", ed(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x5c":["AAAA"]}`, payload(t, "")), jtiguard.ErrMalformed},
		{"crit", ed(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":["exp"]}`, payload(t, "")), jtiguard.ErrMalformed},
		{"duplicate alg", ed(`{"alg":"EdDSA","alg":"EdDSA","kid":"k1","typ":"at+jwt"}`, payload(t, "")), jtiguard.ErrMalformed},
		{"typ missing", ed(`{"alg":"EdDSA","kid":"k1"}`, payload(t, "")), jtiguard.ErrWrongTokenType},
		{"typ JWT", ed(`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`, payload(t, "")), jtiguard.ErrWrongTokenType},
		{"typ AT+JWT", ed(`{"alg":"EdDSA","kid":"k1","typ":"AT+JWT"}`, payload(t, "")), jtiguard.ErrWrongTokenType},
		{"typ refresh", ed(`{"alg":"EdDSA","kid":"k1","typ":"refresh+jwt"}`, payload(t, "")), jtiguard.ErrWrongTokenType},
		{"one-time token as access", oneTime, jtiguard.ErrWrongTokenType},
		{"tampered header", enc(`{"alg":"EdDSA","kid":"k1","typ":"at+jwt" }`) + "." + gp + "." + gs, jtiguard.ErrSignature},
		{"tampered payload", gh + "." + enc(strings.Replace(gpDecoded(gp), "alice", "admin", 1)) + "." + gs, jtiguard.ErrSignature},
		{"tampered signature", gh + "." + gp + "." + flipFirst(gs), jtiguard.ErrSignature},
		{"CRLF inserted", gh + "." + gp[:10] + "\r\n" + gp[10:] + "." + gs, jtiguard.ErrMalformed},
		{"LF in signature", gh + "." + gp + "." + gs[:10] + "\n" + gs[10:], jtiguard.ErrMalformed},
		{"space inserted", gh + "." + gp[:10] + " " + gp[10:] + "." + gs, jtiguard.ErrMalformed},
		{"padding added", gh + "." + gp + "." + gs + "==", jtiguard.ErrMalformed},
		{"padding on payload", gh + "." + gp + "=." + gs, jtiguard.ErrMalformed},
		{"standard base64 alphabet", gh + "." + gp + "." + strings.NewReplacer("-", "+", "_", "/").Replace(gs) + "+", jtiguard.ErrMalformed},
		{"last signature char changed", gh + "." + gp + "." + gs[:len(gs)-1] + string(alt), jtiguard.ErrMalformed},
		{"exp as string", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":"%d"`, now+300), "exp")), jtiguard.ErrInvalidClaims},
		{"EXP beside exp", ed(goodHeader, payload(t, fmt.Sprintf(`"EXP":%d`, now+9999))), jtiguard.ErrInvalidClaims},
		{"Exp beside exp", ed(goodHeader, payload(t, fmt.Sprintf(`"Exp":%d`, now+9999))), jtiguard.ErrInvalidClaims},
		{"duplicate exp", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":%d`, now+9999))), jtiguard.ErrInvalidClaims},
		{"escaped duplicate exp", ed(goodHeader, payload(t, fmt.Sprintf(`"\u0065xp":%d`, now+9999))), jtiguard.ErrInvalidClaims},
		{"exp as float", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":%d.5`, now+300), "exp")), jtiguard.ErrInvalidClaims},
		{"exp null", ed(goodHeader, payload(t, `"exp":null`, "exp")), jtiguard.ErrInvalidClaims},
		{"exp zero", ed(goodHeader, payload(t, `"exp":0`, "exp")), jtiguard.ErrLifetime},
		{"payload null", ed(goodHeader, `null`), jtiguard.ErrMalformed},
		{"payload array", ed(goodHeader, `[]`), jtiguard.ErrMalformed},
		{"payload trailing data", ed(goodHeader, payload(t, "")+`{}`), jtiguard.ErrMalformed},
		{"payload invalid UTF-8", ed(goodHeader, payload(t, "\"x\":\"\xff\"")), jtiguard.ErrMalformed},
		{"exp in year 10000", ed(goodHeader, payload(t, `"exp":253402300800`, "exp")), jtiguard.ErrLifetime},
		{"exp-iat over the cap", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":%d`, now+3601), "exp")), jtiguard.ErrLifetime},
		{"exp before iat", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":%d,"iat":%d`, now+10, now+20), "exp", "iat")), jtiguard.ErrLifetime},
		{"expired", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":%d,"iat":%d`, now, now-60), "exp", "iat")), jtiguard.ErrExpired},
		{"iat in the future", ed(goodHeader, payload(t, fmt.Sprintf(`"exp":%d,"iat":%d`, now+400, now+60), "exp", "iat")), jtiguard.ErrIssuedInFuture},
		{"nbf in the future", ed(goodHeader, payload(t, fmt.Sprintf(`"nbf":%d`, now+60))), jtiguard.ErrNotYetValid},
		{"missing iss", ed(goodHeader, payload(t, "", "iss")), jtiguard.ErrMissingClaim},
		{"missing sub", ed(goodHeader, payload(t, "", "sub")), jtiguard.ErrMissingClaim},
		{"missing aud", ed(goodHeader, payload(t, "", "aud")), jtiguard.ErrMissingClaim},
		{"missing exp", ed(goodHeader, payload(t, "", "exp")), jtiguard.ErrMissingClaim},
		{"missing iat", ed(goodHeader, payload(t, "", "iat")), jtiguard.ErrMissingClaim},
		{"missing jti", ed(goodHeader, payload(t, "", "jti")), jtiguard.ErrMissingClaim},
		{"wrong issuer", ed(goodHeader, payload(t, `"iss":"https://evil.example"`, "iss")), jtiguard.ErrInvalidIssuer},
		{"wrong audience", ed(goodHeader, payload(t, `"aud":["https://other.example"]`, "aud")), jtiguard.ErrInvalidAudience},
		{"aud as number", ed(goodHeader, payload(t, `"aud":1`, "aud")), jtiguard.ErrInvalidClaims},
		{"jti of 1 byte", ed(goodHeader, payload(t, `"jti":"A"`, "jti")), jtiguard.ErrInvalidJTI},
		{"jti of 1 KB", ed(goodHeader, payload(t, `"jti":"`+strings.Repeat("A", 1<<10)+`"`, "jti")), jtiguard.ErrInvalidJTI},
		{"jti of 10 KB", ed(goodHeader, payload(t, `"jti":"`+strings.Repeat("A", 10<<10)+`"`, "jti")), jtiguard.ErrTokenTooLarge},
		{"jti with other alphabet", ed(goodHeader, payload(t, `"jti":"AAAAAAAAAAAAAAAAAAAA+/"`, "jti")), jtiguard.ErrInvalidJTI},
		{"jti with non-zero trailing bits", ed(goodHeader, payload(t, `"jti":"AAAAAAAAAAAAAAAAAAAAAB"`, "jti")), jtiguard.ErrInvalidJTI},
		{"token of 1 MB", big + "." + big + "." + big, jtiguard.ErrTokenTooLarge},
		// Claims of another class re-signed by a key holder under at+jwt.
		{"one-time claims as access", ed(goodHeader, payload(t, `"purpose":"confirm"`)), jtiguard.ErrInvalidClaims},
		{"empty purpose on access", ed(goodHeader, payload(t, `"purpose":""`)), jtiguard.ErrInvalidClaims},
	}, good
}

// TestClassClaims: each class carries only its own claims, so a key
// holder's token of one class re-signed under another typ is refused.
func TestClassClaims(t *testing.T) {
	f := newFixture(t)
	ed := func(typ, p string) string {
		return signRaw(t, jwt.SigningMethodEdDSA, f.priv, `{"alg":"EdDSA","kid":"k1","typ":"`+typ+`"}`, p)
	}
	sid := `"sid":"AAAAAAAAAAAAAAAAAAAAAA","gen":1`
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"one-time without purpose", ed("once+jwt", payload(t, "")), jtiguard.ErrMissingClaim},
		{"one-time with a session", ed("once+jwt", payload(t, `"purpose":"p",`+sid)), jtiguard.ErrInvalidClaims},
		{"one-time with an empty purpose", ed("once+jwt", payload(t, `"purpose":""`)), jtiguard.ErrWrongPurpose},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.ver.Consume(context.Background(), tc.token, "")
			assert.ErrorIs(t, err, tc.want)
		})
	}
	access, _ := f.access(t)
	_, err := f.ver.Consume(context.Background(), access, "")
	assert.ErrorIs(t, err, jtiguard.ErrWrongTokenType)
}

func TestVerifyRejectsForgedAndMalformed(t *testing.T) {
	f := newFixture(t)
	cases, good := forgedCases(t, f)
	_, err := f.ver.Verify(context.Background(), good)
	require.NoError(t, err, "the token the cases are made from is valid: each case fails for what it changes")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.ver.Verify(context.Background(), tc.token)
			require.Error(t, err)
			assert.Zero(t, c)
			assert.ErrorIs(t, err, tc.want)
			assert.ErrorIs(t, err, jtiguard.ErrInvalidToken)
			var e *jtiguard.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, http.StatusUnauthorized, e.Status)
			assert.Equal(t, "invalid_token", e.Code)
			if len(tc.token) > 20 {
				assert.NotContains(t, err.Error(), tc.token[:20], "error text must not echo the token")
			}
		})
	}
}

func gpDecoded(p string) string {
	b, err := jwtDecode(p)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func jwtDecode(s string) ([]byte, error) { return jwt.NewParser().DecodeSegment(s) }

func flipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestVerifyRejectsHugeTokenWithoutDecoding(t *testing.T) {
	f := newFixture(t)
	huge := strings.Repeat("A", 1<<20) + "." + strings.Repeat("A", 1<<20) + "." + strings.Repeat("A", 1<<20)
	var err error
	allocs := testing.AllocsPerRun(10, func() {
		_, err = f.ver.Verify(context.Background(), huge)
	})
	require.ErrorIs(t, err, jtiguard.ErrTokenTooLarge)
	assert.Zero(t, allocs, "a token over the size cap must be refused before any decoding")
}

func TestVerifyRejectsES256ZeroSignature(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	k, err := jtiguard.NewKey("ec", jtiguard.ES256, priv)
	require.NoError(t, err)
	keys, err := jtiguard.NewKeySet(k)
	require.NoError(t, err)
	clk := newClock()
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Now: clk.Now})
	require.NoError(t, err)
	defer ver.Close()
	good := signRaw(t, jwt.SigningMethodES256, priv, `{"alg":"ES256","kid":"ec","typ":"at+jwt"}`, payload(t, ""))
	_, err = ver.Verify(context.Background(), good)
	require.NoError(t, err)

	h, p, _ := segments(good)
	for name, sig := range map[string][]byte{
		"r=s=0":       make([]byte, 64),
		"short":       make([]byte, 63),
		"r=s=0 (DER)": {0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00},
	} {
		_, err := ver.Verify(context.Background(), h+"."+p+"."+enc(string(sig)))
		assert.ErrorIs(t, err, jtiguard.ErrSignature, name)
	}
}

func TestVerifyClassesNeverStandIn(t *testing.T) {
	f := newFixture(t)
	access, _ := f.access(t)
	once, _ := f.oneTime(t, "confirm-transfer")
	ctx := context.Background()

	_, err := f.ver.Consume(ctx, access, "confirm-transfer")
	assert.ErrorIs(t, err, jtiguard.ErrWrongTokenType, "an access token is not a one-time token")
	_, err = f.ver.Verify(ctx, once)
	assert.ErrorIs(t, err, jtiguard.ErrWrongTokenType, "a one-time token is not an access token")
	_, err = f.ver.Consume(ctx, once, "delete-account")
	assert.ErrorIs(t, err, jtiguard.ErrWrongPurpose, "a one-time token serves its purpose only")
	_, err = f.ver.Consume(ctx, once, "confirm-transfer")
	assert.NoError(t, err)
}

func TestVerifyCacheHonoursExpiryAndRetirement(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, _ := f.access(t)
	_, err := f.ver.Verify(ctx, tok)
	require.NoError(t, err)

	// Rotate to a new key and retire the old one: the cached token dies.
	k2, err := jtiguard.GenerateKey("k2", jtiguard.EdDSA)
	require.NoError(t, err)
	require.NoError(t, f.keys.Add(k2))
	require.NoError(t, f.keys.Rotate("k2"))
	_, err = f.ver.Verify(ctx, tok)
	require.NoError(t, err, "a rotated-out key still verifies until retired")
	require.NoError(t, f.keys.Retire("k1"))
	_, err = f.ver.Verify(ctx, tok)
	assert.ErrorIs(t, err, jtiguard.ErrUnknownKey)

	tok2, c2 := f.access(t)
	assert.Equal(t, "k2", c2.KeyID)
	_, err = f.ver.Verify(ctx, tok2)
	require.NoError(t, err)
	f.clock.Advance(jtiguard.DefaultAccessTTL)
	_, err = f.ver.Verify(ctx, tok2)
	assert.ErrorIs(t, err, jtiguard.ErrExpired, "a cached token expires on time")
}

func TestRevokedUntilExpiry(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, c := f.access(t)
	_, err := f.ver.Verify(ctx, tok) // cached now
	require.NoError(t, err)
	require.NoError(t, f.ver.Revoke(ctx, tok))
	_, err = f.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)

	// A second verifier sharing the store sees the revocation.
	other, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: f.store, Now: f.clock.Now, Logger: quiet})
	require.NoError(t, err)
	defer other.Close()
	_, err = other.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)

	f.clock.Advance(c.ExpiresAt.Sub(f.clock.Now()) - time.Second)
	_, err = f.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrRevoked, "revoked until the last second")
	f.clock.Advance(time.Second)
	_, err = f.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrExpired)
	require.Equal(t, 1, f.store.Len())
	f.clock.Advance(jtiguard.DefaultLeeway)
	assert.Equal(t, 0, f.store.Sweep(), "the entry is dropped once no clock can accept the token")

	// Revoking an expired or forged token stores nothing.
	require.NoError(t, f.ver.Revoke(ctx, tok))
	assert.Error(t, f.ver.Revoke(ctx, "not.a.token"))
	assert.Equal(t, 0, f.store.Len())
}

func TestStoreFailureFailsClosed(t *testing.T) {
	// A request whose context is done, and a store at capacity: neither
	// may read as a pass.
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"canceled", canceled, context.Canceled}, {"deadline", expired, context.DeadlineExceeded}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tok, _ := f.access(t)
			once, _ := f.oneTime(t, "p")
			for _, call := range []func() error{
				func() error { _, err := f.ver.Verify(tc.ctx, tok); return err },
				func() error { _, err := f.ver.Consume(tc.ctx, once, "p"); return err },
				func() error { return f.ver.Revoke(tc.ctx, tok) },
			} {
				assertUnavailable(t, call(), tc.want)
			}
		})
	}
	t.Run("full", func(t *testing.T) {
		f := newFixture(t)
		small, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 1, Now: f.clock.Now})
		require.NoError(t, err)
		ver, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: small, Now: f.clock.Now, Logger: quiet})
		require.NoError(t, err)
		defer ver.Close()
		first, _ := f.oneTime(t, "p")
		second, _ := f.oneTime(t, "p")
		access, _ := f.access(t)
		_, err = ver.Consume(context.Background(), first, "p")
		require.NoError(t, err)
		_, err = ver.Consume(context.Background(), second, "p")
		assertUnavailable(t, err, jtiguard.ErrStoreFull)
		require.NoError(t, ver.Revoke(context.Background(), access), "a revocation is never refused for capacity")
		_, err = ver.Verify(context.Background(), access)
		assert.ErrorIs(t, err, jtiguard.ErrRevoked)
		_, err = ver.Consume(context.Background(), first, "p")
		assert.ErrorIs(t, err, jtiguard.ErrReplayed, "a full store still remembers what it holds")
	})
}

func assertUnavailable(t *testing.T, err, cause error) {
	t.Helper()
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	require.ErrorIs(t, err, cause)
	assert.NotErrorIs(t, err, jtiguard.ErrInvalidToken)
	var e *jtiguard.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusServiceUnavailable, e.Status)
	assert.Equal(t, "temporarily_unavailable", e.Code)
}

func TestVerifierConfigRefusesNonsense(t *testing.T) {
	f := newFixture(t)
	for name, cfg := range map[string]jtiguard.VerifierConfig{
		"no issuer":       {Audience: testAudience},
		"no audience":     {Issuer: testIssuer},
		"leeway too long": {Issuer: testIssuer, Audience: testAudience, Leeway: time.Minute},
		"lifetime > cap":  {Issuer: testIssuer, Audience: testAudience, MaxLifetime: 2 * time.Hour},
		"tiny size cap":   {Issuer: testIssuer, Audience: testAudience, MaxTokenSize: 10},
	} {
		_, err := jtiguard.NewVerifier(f.keys, cfg)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, name)
	}
}
