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
		{"empty kid", "", jtiguard.EdDSA, edPriv, jtiguard.ErrInvalidKey},
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
		"no alg":        `{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"use enc":       `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"key_ops":       `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","key_ops":["encrypt"],"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"alg vs kty":    `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"ES256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"padded x":      `{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="}`,
		"short oct":     `{"kty":"oct","kid":"a","alg":"HS256","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg"}`,
		"no kid":        `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"not json":      `{`,
		"unknown kty":   `{"kty":"XYZ","kid":"a","alg":"EdDSA"}`,
		"wrong curve":   `{"kty":"OKP","crv":"X25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		"empty key set": ``,
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
