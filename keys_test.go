package jtiguard_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

func TestNewKeyPolicy(t *testing.T) {
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)

	cases := []struct {
		name     string
		kid, alg string
		material any
		want     error // nil: accepted
	}{
		{"Ed25519 private", "a", jtiguard.EdDSA, edPriv, nil},
		{"Ed25519 public", "a", jtiguard.EdDSA, edPub, nil},
		{"P-256 private", "a", jtiguard.ES256, ec, nil},
		{"P-256 public", "a", jtiguard.ES256, &ec.PublicKey, nil},
		{"RSA 2048", "a", jtiguard.RS256, rsa2048, nil},
		{"HMAC 32 bytes", "a", jtiguard.HS256, make([]byte, 32), nil},
		{"HMAC 31 bytes", "a", jtiguard.HS256, make([]byte, 31), jtiguard.ErrWeakKey},
		{"HMAC empty", "a", jtiguard.HS256, []byte{}, jtiguard.ErrWeakKey},
		{"RSA 1024", "a", jtiguard.RS256, rsa1024, jtiguard.ErrWeakKey},
		{"RSA 1024 public", "a", jtiguard.RS256, &rsa1024.PublicKey, jtiguard.ErrWeakKey},
		{"RSA exponent 1", "a", jtiguard.RS256, &rsa.PublicKey{N: rsa2048.N, E: 1}, jtiguard.ErrWeakKey},
		{"P-384 for ES256", "a", jtiguard.ES256, ec384, jtiguard.ErrInvalidKey},
		{"HMAC secret for EdDSA", "a", jtiguard.EdDSA, make([]byte, 64), jtiguard.ErrInvalidKey},
		{"Ed25519 public key for HS256", "a", jtiguard.HS256, edPub, jtiguard.ErrInvalidKey},
		{"RSA key for ES256", "a", jtiguard.ES256, rsa2048, jtiguard.ErrInvalidKey},
		{"alg none", "a", "none", edPriv, jtiguard.ErrUnsupportedAlgorithm},
		{"alg RS512", "a", "RS512", rsa2048, jtiguard.ErrUnsupportedAlgorithm},
		{"kid with quote", `a"b`, jtiguard.EdDSA, edPriv, jtiguard.ErrInvalidKey},
		{"kid with space", "a b", jtiguard.EdDSA, edPriv, jtiguard.ErrInvalidKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := jtiguard.NewKey(tc.kid, tc.alg, tc.material)
			if tc.want == nil {
				require.NoError(t, err)
				assert.Equal(t, tc.alg, k.Alg())
				assert.Equal(t, tc.kid, k.KID())
				return
			}
			assert.ErrorIs(t, err, tc.want)
			assert.Nil(t, k)
		})
	}
}

func TestKeySetPolicy(t *testing.T) {
	ed1, err := jtiguard.GenerateKey("ed1", jtiguard.EdDSA)
	require.NoError(t, err)
	ed1b, err := jtiguard.GenerateKey("ed1", jtiguard.EdDSA)
	require.NoError(t, err)
	hs, err := jtiguard.GenerateKey("hs", jtiguard.HS256)
	require.NoError(t, err)
	es, err := jtiguard.GenerateKey("es", jtiguard.ES256)
	require.NoError(t, err)

	_, err = jtiguard.NewKeySet(ed1, ed1b)
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "duplicate kid")
	_, err = jtiguard.NewKeySet(ed1, hs)
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "HMAC beside asymmetric keys")

	set, err := jtiguard.NewKeySet(ed1.Public(), es)
	require.NoError(t, err)
	assert.Equal(t, es, set.Signer(), "the first key that can sign is the signer")
	assert.ErrorIs(t, set.Add(hs), jtiguard.ErrInvalidKey)
	assert.ErrorIs(t, set.Rotate("ed1"), jtiguard.ErrInvalidKey, "a verify-only key cannot become the signer")
	assert.ErrorIs(t, set.Retire("es"), jtiguard.ErrInvalidKey, "the signer cannot be retired")
	assert.ErrorIs(t, set.Retire("nope"), jtiguard.ErrInvalidKey)
	require.NoError(t, set.Retire("ed1"))
	_, ok := set.Key("ed1")
	assert.False(t, ok)

	_, err = jtiguard.NewIssuer(mustSet(t, ed1.Public()), jtiguard.IssuerConfig{Issuer: testIssuer})
	assert.ErrorIs(t, err, jtiguard.ErrConfig, "an issuer needs a signing key")
}

func mustSet(t *testing.T, keys ...*jtiguard.Key) *jtiguard.KeySet {
	t.Helper()
	s, err := jtiguard.NewKeySet(keys...)
	require.NoError(t, err)
	return s
}

// TestJWKSRoundTrip: a resource server that knows only the published JWKS
// verifies the issuer's tokens, for each asymmetric algorithm; HMAC secrets
// are never published.
func TestJWKSRoundTrip(t *testing.T) {
	for _, alg := range []string{jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256} {
		t.Run(alg, func(t *testing.T) {
			k, err := jtiguard.GenerateKey("kid-"+alg, alg)
			require.NoError(t, err)
			keys := mustSet(t, k)
			doc, err := keys.JWKS()
			require.NoError(t, err)
			assert.NotContains(t, string(doc), `"d"`, "no private member is published")

			published, err := jtiguard.ParseJWKS(doc)
			require.NoError(t, err)
			assert.Nil(t, published.Signer())
			// The verifier (and its store) first: a token of no session
			// issued before the store's memory begins is Lost.
			ver, err := jtiguard.NewVerifier(published, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience})
			require.NoError(t, err)
			defer ver.Close()
			iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer})
			require.NoError(t, err)
			tok, _, err := iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
			require.NoError(t, err)
			_, err = ver.Verify(context.Background(), tok)
			require.NoError(t, err)
		})
	}
	hs, err := jtiguard.GenerateKey("hs", jtiguard.HS256)
	require.NoError(t, err)
	doc, err := mustSet(t, hs).JWKS()
	require.NoError(t, err)
	var parsed struct{ Keys []any }
	require.NoError(t, json.Unmarshal(doc, &parsed))
	assert.Empty(t, parsed.Keys)
}

func TestParseJWKRefusesAmbiguousKeys(t *testing.T) {
	for name, doc := range map[string]string{
		"duplicate x":       `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"case variant d":    `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","D":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}`,
		"foreign member":    `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}`,
		"text after":        `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"} {}`,
		"d of another x":    `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}`,
		"kid not printable": `{"kty":"OKP","crv":"Ed25519","kid":"a b","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"no alg":            `{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"use enc":           `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"key_ops":           `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","key_ops":["encrypt"],"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"alg vs kty":        `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"ES256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"padded x":          `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="}`,
		"short oct":         `{"kty":"oct","kid":"a","alg":"HS256","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg"}`,
		"not json":          `{`,
		"unknown kty":       `{"kty":"XYZ","kid":"a","alg":"EdDSA"}`,
		"wrong curve":       `{"kty":"OKP","crv":"X25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"empty key set":     ``,
	} {
		if name == "empty key set" {
			_, err := jtiguard.ParseJWKS([]byte(`{"keys":[]}`))
			assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, name)
			continue
		}
		_, err := jtiguard.ParseJWK([]byte(doc))
		assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, name)
	}
	_, err := jtiguard.ParseJWK([]byte(`{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	assert.NoError(t, err, "RFC 8037 appendix A.2 public key")
}

// TestThumbprintKID: without a kid, a key is named by its RFC 7638
// thumbprint, checked against the RFCs' own examples.
func TestThumbprintKID(t *testing.T) {
	const rfc7638n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	cases := []struct {
		name, jwk, want string
	}{
		{"RFC 7638 section 3.1, RSA", `{"kty":"RSA","n":"` + rfc7638n + `","e":"AQAB","alg":"RS256"}`, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"},
		{"RFC 8037 appendix A.3, Ed25519", `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},
		{"RFC 8037 A.3 with its private key", `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},
		{"a given kid wins", `{"kty":"RSA","n":"` + rfc7638n + `","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`, "2011-04-29"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := jtiguard.ParseJWK([]byte(tc.jwk))
			require.NoError(t, err)
			assert.Equal(t, tc.want, k.KID())
		})
	}

	// NewKey and GenerateKey name a key the same way.
	seed := make([]byte, ed25519.SeedSize)
	k, err := jtiguard.NewKey("", jtiguard.EdDSA, ed25519.NewKeyFromSeed(seed))
	require.NoError(t, err)
	pub, err := jtiguard.NewKey("", jtiguard.EdDSA, ed25519.NewKeyFromSeed(seed).Public())
	require.NoError(t, err)
	assert.Equal(t, k.KID(), pub.KID(), "private and public halves share one thumbprint")
	assert.Len(t, k.KID(), 43, "base64url of SHA-256")
	for _, alg := range []string{jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256, jtiguard.HS256} {
		g, err := jtiguard.GenerateKey("", alg)
		require.NoError(t, err)
		assert.Len(t, g.KID(), 43, alg)
	}
}

// TestJWKRoundTrip: every key written by MarshalJWK reads back as the same
// key, private or public; what has no such form is refused.
func TestJWKRoundTrip(t *testing.T) {
	for _, alg := range []string{jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256, jtiguard.HS256} {
		for _, kid := range []string{"", "2026-11"} {
			t.Run(alg+"/kid="+kid, func(t *testing.T) {
				k, err := jtiguard.GenerateKey(kid, alg)
				require.NoError(t, err)

				priv, err := k.MarshalJWK(true)
				require.NoError(t, err)
				back, err := jtiguard.ParseJWK(priv)
				require.NoError(t, err)
				assert.True(t, back.CanSign())
				assert.Equal(t, k.KID(), back.KID())
				assert.Equal(t, alg, back.Alg())
				again, err := back.MarshalJWK(true)
				require.NoError(t, err)
				assert.JSONEq(t, string(priv), string(again))

				_, err = k.Public().MarshalJWK(true)
				assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "a verify-only key has no private members")

				pub, err := k.MarshalJWK(false)
				if alg == jtiguard.HS256 {
					assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "an HMAC secret has no public form")
					return
				}
				require.NoError(t, err)
				assert.NotContains(t, string(pub), `"d"`)
				back, err = jtiguard.ParseJWK(pub)
				require.NoError(t, err)
				assert.False(t, back.CanSign())
				assert.Equal(t, k.KID(), back.KID())
			})
		}
	}
}

// TestParseJWKSRefusesPrivateKeys: a published set that carries private
// members has leaked them; ParseJWKS refuses it. HMAC sets still load (an
// HS256 verifier needs the secret).
func TestParseJWKSRefusesPrivateKeys(t *testing.T) {
	for _, alg := range []string{jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256} {
		k, err := jtiguard.GenerateKey("", alg)
		require.NoError(t, err)
		priv, err := k.MarshalJWK(true)
		require.NoError(t, err)
		_, err = jtiguard.ParseJWKS([]byte(`{"keys":[` + string(priv) + `]}`))
		assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, alg)
	}
	hs, err := jtiguard.GenerateKey("hs", jtiguard.HS256)
	require.NoError(t, err)
	secret, err := hs.MarshalJWK(true)
	require.NoError(t, err)
	set, err := jtiguard.ParseJWKS([]byte(`{"keys":[` + string(secret) + `]}`))
	require.NoError(t, err)
	_, ok := set.Key("hs")
	assert.True(t, ok)

	for name, doc := range map[string]string{
		"two keys members": `{"keys":[],"keys":[` + string(secret) + `]}`,
		"keys not objects": `{"keys":["a"]}`,
		"text after":       `{"keys":[` + string(secret) + `]}x`,
		"no keys":          `{}`,
	} {
		_, err := jtiguard.ParseJWKS([]byte(doc))
		assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, name)
	}
}

// TestParseJWKRSAPrivate: an RSA JWK's optional CRT members must agree with
// d, p and q (wrong ones make faulty signatures, which leak the key).
func TestParseJWKRSAPrivate(t *testing.T) {
	k, err := jtiguard.GenerateKey("r", jtiguard.RS256)
	require.NoError(t, err)
	doc, err := k.MarshalJWK(true)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(doc, &m))
	edit := func(f func(map[string]any)) []byte {
		c := make(map[string]any, len(m))
		for name, v := range m {
			c[name] = v
		}
		f(c)
		b, err := json.Marshal(c)
		require.NoError(t, err)
		return b
	}
	_, err = jtiguard.ParseJWK(edit(func(c map[string]any) { delete(c, "dp"); delete(c, "dq"); delete(c, "qi") }))
	assert.NoError(t, err, "CRT members are optional")
	_, err = jtiguard.ParseJWK(edit(func(c map[string]any) { c["dp"] = c["dq"] }))
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "wrong dp")
	_, err = jtiguard.ParseJWK(edit(func(c map[string]any) { delete(c, "q") }))
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "no q")
	_, err = jtiguard.ParseJWK(edit(func(c map[string]any) { delete(c, "d") }))
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "p and q without d")
	_, err = jtiguard.ParseJWK(edit(func(c map[string]any) { c["p"], c["q"] = c["q"], c["p"] }))
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "p and q swapped: qi no longer matches")
}
