package jtiguard_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// The Wycheproof vectors ship with the repository, with their license and
// source (testdata/wycheproof/README.md). A missing file fails the test: it
// never skips, so no clone or CI run passes without them.
const vectorsDir = "testdata/wycheproof"

func loadVectors(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorsDir, name))
	require.NoError(t, err, "Wycheproof vectors: %s must be in the repository", name)
	require.NoError(t, json.Unmarshal(data, v))
}

type jwsVectors struct {
	TestGroups []struct {
		Comment string          `json:"comment"`
		Private json.RawMessage `json:"private"`
		Public  json.RawMessage `json:"public"`
		Tests   []struct {
			TcID    int    `json:"tcId"`
			Comment string `json:"comment"`
			JWS     string `json:"jws"`
			Result  string `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

// Vectors testdata/wycheproof/README.md lists as defective, with the result a
// strict, key-pinned verifier must give.
var jwsCorrected = map[int]string{
	367: "valid",   // byte-identical to valid tcId 357
	370: "valid",   // byte-identical to valid tcId 357
	372: "invalid", // MAC does not cover the inserted character
	373: "invalid", // MAC does not cover the inserted character
	346: "invalid", // valid only when the key's own alg is ignored
	347: "invalid",
	350: "invalid",
	351: "invalid",
}

func TestWycheproofJWS(t *testing.T) {
	var v jwsVectors
	loadVectors(t, "json_web_signature_test.json", &v)
	var rejected, accepted, refusedValid int
	for _, g := range v.TestGroups {
		raw := g.Public
		if len(raw) == 0 {
			raw = g.Private
		}
		key, keyErr := jtiguard.ParseJWK(raw)
		var keys *jtiguard.KeySet
		if keyErr == nil {
			var err error
			keys, err = jtiguard.NewKeySet(key)
			require.NoError(t, err)
		}
		for _, tc := range g.Tests {
			want := tc.Result
			if c, ok := jwsCorrected[tc.TcID]; ok {
				want = c
			}
			if keyErr != nil {
				// A key our policy refuses (unsupported algorithm such as
				// PS256 or ES512, an encryption key) rejects every vector.
				if want == "valid" {
					require.ErrorIs(t, keyErr, jtiguard.ErrUnsupportedAlgorithm, "tcId %d: only an unsupported algorithm may refuse a valid vector's key", tc.TcID)
					refusedValid++
				}
				rejected++
				continue
			}
			err := jtiguard.VerifyJWS(keys, tc.JWS)
			switch want {
			case "valid":
				assert.NoError(t, err, "tcId %d %s (%s)", tc.TcID, tc.Comment, g.Comment)
				accepted++
			case "invalid":
				assert.Error(t, err, "tcId %d %s (%s) must be rejected", tc.TcID, tc.Comment, g.Comment)
				rejected++
			}
		}
	}
	t.Logf("JWS vectors: %d accepted, %d rejected (%d valid vectors use keys our policy refuses: PS*, RS384/512, ES512)", accepted, rejected, refusedValid)
	assert.Positive(t, accepted)
}

func TestWycheproofJWK(t *testing.T) {
	var v jwsVectors
	loadVectors(t, "json_web_key_test.json", &v)
	for _, g := range v.TestGroups {
		raw := g.Public
		if len(raw) == 0 {
			raw = g.Private
		}
		keys, loadErr := jtiguard.ParseJWKS(raw)
		for _, tc := range g.Tests {
			if loadErr != nil {
				if tc.Result == "valid" {
					assert.ErrorIs(t, loadErr, jtiguard.ErrUnsupportedAlgorithm, "tcId %d %s: only an unsupported algorithm may refuse a valid vector's key", tc.TcID, tc.Comment)
				}
				continue
			}
			err := jtiguard.VerifyJWS(keys, tc.JWS)
			if tc.Result == "valid" {
				assert.NoError(t, err, "tcId %d %s", tc.TcID, tc.Comment)
			} else {
				assert.Error(t, err, "tcId %d %s must be rejected", tc.TcID, tc.Comment)
			}
		}
		// Every invalid policy case in this file concerns the key itself,
		// so it must be refused at load, not merely fail to verify.
		for _, tc := range g.Tests {
			if tc.Result == "invalid" && tc.Comment != "rejectsModifiedSignature" {
				assert.Error(t, loadErr, "tcId %d %s: key must be refused at load", tc.TcID, tc.Comment)
			}
		}
	}
}

type primitiveVectors struct {
	TestGroups []struct {
		KeySize   json.Number `json:"keySize"`
		TagSize   int         `json:"tagSize"`
		PublicKey struct {
			Uncompressed string `json:"uncompressed"`
			PK           string `json:"pk"`
		} `json:"publicKey"`
		KeyJwk json.RawMessage `json:"keyJwk"`
		Tests  []struct {
			TcID   int    `json:"tcId"`
			Key    string `json:"key"`
			Msg    string `json:"msg"`
			Sig    string `json:"sig"`
			Tag    string `json:"tag"`
			Result string `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

func unhex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

// TestWycheproofPrimitives runs the raw signature vectors through the key
// policy (NewKey, ParseJWK) and the same signature layer the Verifier uses.
func TestWycheproofPrimitives(t *testing.T) {
	files := []struct {
		file string
		key  func(t *testing.T, g int, v *primitiveVectors, tc int) (*jtiguard.Key, error)
	}{
		{"hmac_sha256_test.json", func(t *testing.T, g int, v *primitiveVectors, tc int) (*jtiguard.Key, error) {
			return jtiguard.NewKey("h", jtiguard.HS256, unhex(t, v.TestGroups[g].Tests[tc].Key))
		}},
		{"ecdsa_secp256r1_sha256_p1363_test.json", func(t *testing.T, g int, v *primitiveVectors, _ int) (*jtiguard.Key, error) {
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), unhex(t, v.TestGroups[g].PublicKey.Uncompressed))
			if err != nil {
				return nil, err
			}
			return jtiguard.NewKey("e", jtiguard.ES256, pub)
		}},
		{"rsa_signature_2048_sha256_test.json", func(t *testing.T, g int, v *primitiveVectors, _ int) (*jtiguard.Key, error) {
			return jtiguard.ParseJWK(v.TestGroups[g].KeyJwk)
		}},
		{"ed25519_test.json", func(t *testing.T, g int, v *primitiveVectors, _ int) (*jtiguard.Key, error) {
			return jtiguard.NewKey("ed", jtiguard.EdDSA, ed25519.PublicKey(unhex(t, v.TestGroups[g].PublicKey.PK)))
		}},
	}
	for _, f := range files {
		t.Run(f.file, func(t *testing.T) {
			var v primitiveVectors
			loadVectors(t, f.file, &v)
			var accepted, rejected, refusedKeys int
			for g := range v.TestGroups {
				for i, tc := range v.TestGroups[g].Tests {
					k, err := f.key(t, g, &v, i)
					if err != nil {
						// Only weak keys may be refused: 128-bit HMAC keys.
						require.ErrorIs(t, err, jtiguard.ErrWeakKey, "tcId %d", tc.TcID)
						refusedKeys++
						continue
					}
					sig := tc.Sig
					if sig == "" {
						sig = tc.Tag
					}
					err = jtiguard.VerifySignature(k, string(unhex(t, tc.Msg)), unhex(t, sig))
					want := tc.Result
					if ts := v.TestGroups[g].TagSize; ts != 0 && ts < 256 {
						want = "invalid" // a truncated HMAC tag is never a JWS signature
					}
					switch want {
					case "valid":
						assert.NoError(t, err, "tcId %d", tc.TcID)
						accepted++
					case "invalid":
						assert.Error(t, err, "tcId %d must be rejected", tc.TcID)
						rejected++
					}
				}
			}
			t.Logf("%d accepted, %d rejected, %d refused at key load", accepted, rejected, refusedKeys)
		})
	}
}
