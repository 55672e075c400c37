package jtiguard_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// must returns v, or panics (failing the test) on an error no test can go
// on after: a key that could not be generated or encoded.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestPEMRoundTrip: every asymmetric key written by MarshalPEM reads back
// as the same key, private or public, named by its thumbprint; so do the
// other common encodings (SEC 1, PKCS #1, openssl's EC PARAMETERS prefix).
func TestPEMRoundTrip(t *testing.T) {
	for _, alg := range []string{jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256} {
		t.Run(alg, func(t *testing.T) {
			k := must(jtiguard.GenerateKey("", alg))
			priv := must(k.MarshalPEM(true))
			assert.True(t, bytes.HasPrefix(priv, []byte("-----BEGIN PRIVATE KEY-----\n")))
			back := must(jtiguard.ParsePEM(priv))
			assert.True(t, back.CanSign())
			assert.Equal(t, k.KID(), back.KID())
			assert.Equal(t, alg, back.Alg())
			assert.Equal(t, priv, must(back.MarshalPEM(true)))

			pub := must(k.MarshalPEM(false))
			assert.True(t, bytes.HasPrefix(pub, []byte("-----BEGIN PUBLIC KEY-----\n")))
			back = must(jtiguard.ParsePEM(pub))
			assert.False(t, back.CanSign())
			assert.Equal(t, k.KID(), back.KID())
			assert.Equal(t, pub, must(k.Public().MarshalPEM(false)))
			_, err := k.Public().MarshalPEM(true)
			assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "a verify-only key has no private key")

			// A key with a chosen kid comes back from PEM under its thumbprint.
			named := must(jtiguard.GenerateKey("2026-11", alg))
			assert.NotEqual(t, "2026-11", must(jtiguard.ParsePEM(must(named.MarshalPEM(true)))).KID())
		})
	}
	hs := must(jtiguard.GenerateKey("", jtiguard.HS256))
	_, err := hs.MarshalPEM(true)
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "an HMAC secret has no PEM form")

	ec := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	rs := must(rsa.GenerateKey(rand.Reader, 2048))
	sec1 := pemBlock("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ec)))
	ecKID := must(jtiguard.NewKey("", jtiguard.ES256, ec)).KID()
	rsKID := must(jtiguard.NewKey("", jtiguard.RS256, rs)).KID()
	for name, tc := range map[string]struct {
		pem     []byte
		kid     string
		canSign bool
	}{
		"SEC 1":                   {sec1, ecKID, true},
		"openssl ecparam -genkey": {append(pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}), sec1...), ecKID, true},
		"PKCS #1 private":         {pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rs)), rsKID, true},
		"PKCS #1 public":          {pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rs.PublicKey)), rsKID, false},
		"CRLF and blank lines":    {append([]byte("\r\n\n"), bytes.ReplaceAll(sec1, []byte("\n"), []byte("\r\n"))...), ecKID, true},
	} {
		k, err := jtiguard.ParsePEM(tc.pem)
		if assert.NoError(t, err, name) {
			assert.Equal(t, tc.kid, k.KID(), name)
			assert.Equal(t, tc.canSign, k.CanSign(), name)
		}
	}
}

// rocaModulus returns an odd 2048-bit number with the ROCA fingerprint: 1
// modulo each small prime is 65537^0.
func rocaModulus() *big.Int {
	m := big.NewInt(1)
	for _, p := range []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167} {
		m.Mul(m, big.NewInt(p))
	}
	k := new(big.Int).Div(new(big.Int).Lsh(big.NewInt(1), 2047), m)
	k.Add(k, big.NewInt(2))
	k.SetBit(k, 0, 0) // m is odd, so an even k makes k*m+1 odd
	return k.Mul(k, m).Add(k, big.NewInt(1))
}

// TestParsePEMRefuses: weak keys match ErrWeakKey; garbage, ambiguous
// files (two blocks, text around the block), encrypted keys, certificates
// and mismatched keys match ErrInvalidKey.
func TestParsePEMRefuses(t *testing.T) {
	rsa1024 := must(rsa.GenerateKey(rand.Reader, 1024))
	rsa2048 := must(rsa.GenerateKey(rand.Reader, 2048))
	ec := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ec2 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ec384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	x25519 := must(ecdh.X25519().GenerateKey(rand.Reader))
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	pkcs8 := func(k any) []byte { return must(x509.MarshalPKCS8PrivateKey(k)) }
	pkix := func(k any) []byte { return must(x509.MarshalPKIXPublicKey(k)) }
	edPEM := pemBlock("PRIVATE KEY", pkcs8(ed))
	ecPEM := pemBlock("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ec)))
	// A SEC 1 key whose stored public key is another key's: the x509
	// parser ignores the copy, ParsePEM compares it. The public key is the
	// last 65 bytes of the DER.
	mixed := must(x509.MarshalECPrivateKey(ec))
	other := must(x509.MarshalECPrivateKey(ec2))
	copy(mixed[len(mixed)-65:], other[len(other)-65:])
	badD := *rsa2048
	badD.D = new(big.Int).Add(rsa2048.D, big.NewInt(2))
	badD.Precomputed = rsa.PrecomputedValues{}

	cases := []struct {
		name string
		pem  []byte
		want error
	}{
		{"RSA 1024 PKCS #8", pemBlock("PRIVATE KEY", pkcs8(rsa1024)), jtiguard.ErrWeakKey},
		{"RSA 1024 PKCS #1", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa1024)), jtiguard.ErrWeakKey},
		{"RSA 1024 public", pemBlock("PUBLIC KEY", pkix(&rsa1024.PublicKey)), jtiguard.ErrWeakKey},
		{"RSA exponent 1", pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsa.PublicKey{N: rsa2048.N, E: 1})), jtiguard.ErrWeakKey},
		{"ROCA fingerprint", pemBlock("PUBLIC KEY", pkix(&rsa.PublicKey{N: rocaModulus(), E: 65537})), jtiguard.ErrWeakKey},
		{"empty", nil, jtiguard.ErrInvalidKey},
		{"not PEM", []byte("hello"), jtiguard.ErrInvalidKey},
		{"a JWK", []byte(`{"kty":"OKP"}`), jtiguard.ErrInvalidKey},
		{"truncated", edPEM[:len(edPEM)-10], jtiguard.ErrInvalidKey},
		{"garbage body", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), jtiguard.ErrInvalidKey},
		{"two keys", append(append([]byte{}, edPEM...), ecPEM...), jtiguard.ErrInvalidKey},
		{"the same key twice", append(append([]byte{}, edPEM...), edPEM...), jtiguard.ErrInvalidKey},
		{"key and certificate", append(append([]byte{}, edPEM...), pemBlock("CERTIFICATE", []byte{0x30, 0})...), jtiguard.ErrInvalidKey},
		{"text after", append(append([]byte{}, edPEM...), "trailing"...), jtiguard.ErrInvalidKey},
		{"text before", append([]byte("Bag Attributes\n"), edPEM...), jtiguard.ErrInvalidKey},
		{"broken block before", append([]byte("-----BEGIN PRIVATE KEY-----\n"), edPEM...), jtiguard.ErrInvalidKey},
		{"certificate", pemBlock("CERTIFICATE", []byte{0x30, 0}), jtiguard.ErrInvalidKey},
		{"encrypted PKCS #8", pemBlock("ENCRYPTED PRIVATE KEY", []byte{0x30, 0}), jtiguard.ErrInvalidKey},
		{"legacy encrypted", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{0x30, 0}}), jtiguard.ErrInvalidKey},
		{"label says EC, DER is PKCS #8", pemBlock("EC PRIVATE KEY", pkcs8(ec)), jtiguard.ErrInvalidKey},
		{"label says public, DER is private", pemBlock("PUBLIC KEY", pkcs8(ed)), jtiguard.ErrInvalidKey},
		{"SEC 1 with another key's public key", pemBlock("EC PRIVATE KEY", mixed), jtiguard.ErrInvalidKey},
		{"RSA d does not match", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(&badD)), jtiguard.ErrInvalidKey},
		{"P-384", pemBlock("PRIVATE KEY", pkcs8(ec384)), jtiguard.ErrInvalidKey},
		{"EC PARAMETERS of P-384", append(pemBlock("EC PARAMETERS", []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}), pemBlock("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ec384)))...), jtiguard.ErrInvalidKey},
		{"EC PARAMETERS alone", pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}), jtiguard.ErrInvalidKey},
		{"X25519", pemBlock("PRIVATE KEY", pkcs8(x25519)), jtiguard.ErrInvalidKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := jtiguard.ParsePEM(tc.pem)
			assert.ErrorIs(t, err, tc.want)
			assert.Nil(t, k)
			if err != nil {
				assert.True(t, strings.HasPrefix(err.Error(), "jtiguard: "), err.Error())
			}
		})
	}
}

// TestKeyFiles: WriteKeyFile writes private keys readable by their owner
// only, never replaces a file, and ReadKeyFile reads back both formats.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		alg, kid, file string
	}{
		{jtiguard.EdDSA, "", "ed.pem"},
		{jtiguard.ES256, "", "es.pem"},
		{jtiguard.RS256, "", "rs.pem"},
		{jtiguard.EdDSA, "2026-11", "ed.jwk"},
		{jtiguard.HS256, "hs", "hs.jwk"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			k := must(jtiguard.GenerateKey(tc.kid, tc.alg))
			require.NoError(t, jtiguard.WriteKeyFile(path, k))
			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Zero(t, info.Mode().Perm()&0o077, "mode %v: readable by others", info.Mode().Perm())
			back, err := jtiguard.ReadKeyFile(path)
			require.NoError(t, err)
			assert.Equal(t, k.KID(), back.KID())
			assert.True(t, back.CanSign())

			before, err := os.ReadFile(path)
			require.NoError(t, err)
			other := must(jtiguard.GenerateKey(tc.kid, tc.alg))
			assert.ErrorIs(t, jtiguard.WriteKeyFile(path, other), fs.ErrExist, "an existing key file is never replaced")
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, before, after)
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 5, "no temporary file left behind")

	named := must(jtiguard.GenerateKey("2026-11", jtiguard.EdDSA))
	assert.ErrorIs(t, jtiguard.WriteKeyFile(filepath.Join(dir, "named.pem"), named), jtiguard.ErrInvalidKey, "PEM would lose the kid")
	hs := must(jtiguard.GenerateKey("", jtiguard.HS256))
	assert.ErrorIs(t, jtiguard.WriteKeyFile(filepath.Join(dir, "hs.pem"), hs), jtiguard.ErrInvalidKey, "no PEM form")

	_, err = jtiguard.ReadKeyFile(filepath.Join(dir, "missing.pem"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	big := filepath.Join(dir, "big.pem")
	require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte{' '}, 65<<10), 0o600))
	_, err = jtiguard.ReadKeyFile(big)
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey)
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("x"), 0o600))
	_, err = jtiguard.ReadKeyFile(garbage)
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey)
	assert.Contains(t, err.Error(), garbage, "the error names the file")
}

// keyDir is a key directory under test.
type keyDir struct {
	t   testing.TB
	dir string
}

func newKeyDir(t testing.TB) *keyDir { return &keyDir{t: t, dir: t.TempDir()} }

// add writes a new signing key to name and returns it.
func (d *keyDir) add(name, alg string) *jtiguard.Key {
	d.t.Helper()
	k := must(jtiguard.GenerateKey("", alg))
	require.NoError(d.t, jtiguard.WriteKeyFile(filepath.Join(d.dir, name), k))
	return k
}

func (d *keyDir) write(name, content string) {
	d.t.Helper()
	require.NoError(d.t, os.WriteFile(filepath.Join(d.dir, name), []byte(content), 0o600))
}

func (d *keyDir) remove(name string) {
	d.t.Helper()
	require.NoError(d.t, os.Remove(filepath.Join(d.dir, name)))
}

func kids(set *jtiguard.KeySet, keys ...*jtiguard.Key) []string {
	var out []string
	for _, k := range keys {
		if _, ok := set.Key(k.KID()); ok {
			out = append(out, k.KID())
		}
	}
	return out
}

// TestKeyDirSchedule walks the rotation schedule on a directory, reading it
// by hand (no goroutine): add, rotate, retire. Tokens of the retired key
// are rejected from that read on, including ones the Verifier had cached.
func TestKeyDirSchedule(t *testing.T) {
	d := newKeyDir(t)
	a := d.add("a.pem", jtiguard.EdDSA)
	kd, err := jtiguard.OpenKeyDir(d.dir, jtiguard.KeyDirConfig{Interval: -1, Logger: quiet})
	require.NoError(t, err)
	defer kd.Close()
	keys := kd.Keys()
	require.NotNil(t, keys.Signer())
	assert.Equal(t, a.KID(), keys.Signer().KID(), "the only signing key signs")

	store := must(jtiguard.NewMemoryStore(jtiguard.MemoryConfig{}))
	ver := must(jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: store, Logger: quiet}))
	defer ver.Close()
	iss := must(jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer}))
	mint := func() string {
		tok, _, err := iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
		require.NoError(t, err)
		return tok
	}
	byA := mint()
	_, err = ver.Verify(context.Background(), byA)
	require.NoError(t, err) // now cached

	// Add: published, not signing.
	d.write("active", "a.pem\n")
	b := d.add("b.es.pem", jtiguard.ES256)
	pa, _ := keys.Key(a.KID())
	require.NoError(t, kd.Reload())
	assert.Equal(t, []string{a.KID(), b.KID()}, kids(keys, a, b))
	assert.Equal(t, a.KID(), keys.Signer().KID())
	same, _ := keys.Key(a.KID())
	assert.Same(t, pa, same, "an unchanged file keeps its *Key, and the cache its tokens")
	jwks := string(must(keys.JWKS()))
	assert.Contains(t, jwks, b.KID())

	// Rotate.
	d.write("active", "b.es.pem")
	require.NoError(t, kd.Reload())
	assert.Equal(t, b.KID(), keys.Signer().KID())
	byB := mint()
	_, err = ver.Verify(context.Background(), byA)
	assert.NoError(t, err, "the previous key still verifies")

	// Retire.
	d.remove("a.pem")
	require.NoError(t, kd.Reload())
	assert.Equal(t, []string{b.KID()}, kids(keys, a, b))
	_, err = ver.Verify(context.Background(), byA)
	assert.ErrorIs(t, err, jtiguard.ErrUnknownKey, "a retired key's cached token is rejected")
	_, err = ver.Verify(context.Background(), byB)
	assert.NoError(t, err)
	require.NoError(t, kd.Reload(), "reading an unchanged directory again")
}

// TestKeyDirKeepsLastGoodKeys: a read that fails changes nothing (same
// keys, same signer, same *Key), and the next good read goes through.
func TestKeyDirKeepsLastGoodKeys(t *testing.T) {
	hs := must(jtiguard.GenerateKey("hs", jtiguard.HS256))
	hsJWK := string(must(hs.MarshalJWK(true)))
	weak := `{"kty":"oct","kid":"w","alg":"HS256","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg"}`
	pubPEM := string(must(must(jtiguard.GenerateKey("", jtiguard.EdDSA)).MarshalPEM(false)))
	cases := []struct {
		name     string
		breakDir func(d *keyDir, aPEM string)
		fix      func(d *keyDir, aPEM string)
		msg      string // the refusal's reason
	}{
		{"garbage key file",
			func(d *keyDir, _ string) { d.write("c.pem", "garbage") },
			func(d *keyDir, _ string) { d.remove("c.pem") }, "c.pem"},
		{"half-written key file",
			func(d *keyDir, aPEM string) { d.write("c.pem", aPEM[:40]) },
			func(d *keyDir, _ string) { d.remove("c.pem") }, "malformed PEM"},
		{"weak key",
			func(d *keyDir, _ string) { d.write("c.jwk", weak) },
			func(d *keyDir, _ string) { d.remove("c.jwk") }, "HMAC secret of 31 bytes"},
		{"HMAC beside asymmetric keys",
			func(d *keyDir, _ string) { d.write("c.jwk", hsJWK) },
			func(d *keyDir, _ string) { d.remove("c.jwk") }, "cannot mix HMAC"},
		{"one key twice",
			func(d *keyDir, aPEM string) { d.write("copy.pem", aPEM) },
			func(d *keyDir, _ string) { d.remove("copy.pem") }, "duplicate kid"},
		{"active names no file",
			func(d *keyDir, _ string) { d.write("active", "nope.pem") },
			func(d *keyDir, _ string) { d.write("active", "a.pem") }, `"nope.pem", which is no signing key's file`},
		{"active names a public key",
			func(d *keyDir, _ string) { d.write("pub.pem", pubPEM); d.write("active", "pub.pem") },
			func(d *keyDir, _ string) { d.write("active", "a.pem") }, `"pub.pem", which is no signing key's file`},
		{"two signers, no active",
			func(d *keyDir, _ string) { d.remove("active"); d.add("c.pem", jtiguard.EdDSA) },
			func(d *keyDir, _ string) { d.write("active", "a.pem") }, "2 keys in"},
		{"signer lost",
			func(d *keyDir, _ string) { d.remove("active"); d.remove("a.pem"); d.write("pub.pem", pubPEM) },
			func(d *keyDir, aPEM string) { d.write("a.pem", aPEM) }, "would lose its signer"},
		{"empty directory",
			func(d *keyDir, _ string) { d.remove("active"); d.remove("a.pem") },
			func(d *keyDir, aPEM string) { d.write("a.pem", aPEM) }, "cannot become empty"},
		{"directory gone",
			func(d *keyDir, _ string) { require.NoError(t, os.Rename(d.dir, d.dir+".moved")) },
			func(d *keyDir, _ string) { require.NoError(t, os.Rename(d.dir+".moved", d.dir)) }, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newKeyDir(t)
			a := d.add("a.pem", jtiguard.EdDSA)
			d.write("active", "a.pem")
			aPEM, err := os.ReadFile(filepath.Join(d.dir, "a.pem"))
			require.NoError(t, err)
			kd, err := jtiguard.OpenKeyDir(d.dir, jtiguard.KeyDirConfig{Interval: -1, Logger: quiet})
			require.NoError(t, err)
			defer kd.Close()
			keys := kd.Keys()
			before, _ := keys.Key(a.KID())
			retiredBefore := string(must(keys.JWKS()))

			tc.breakDir(d, string(aPEM))
			err = kd.Reload()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
			if tc.name == "directory gone" {
				assert.ErrorIs(t, err, fs.ErrNotExist)
			} else {
				assert.ErrorIs(t, err, jtiguard.ErrInvalidKey)
			}
			after, ok := keys.Key(a.KID())
			assert.True(t, ok)
			assert.Same(t, before, after)
			assert.Same(t, before, keys.Signer())
			assert.Equal(t, retiredBefore, string(must(keys.JWKS())), "the set is unchanged")

			tc.fix(d, string(aPEM))
			require.NoError(t, kd.Reload())
			assert.Equal(t, a.KID(), keys.Signer().KID())
		})
	}

	// The first read must succeed.
	_, err := jtiguard.OpenKeyDir(t.TempDir(), jtiguard.KeyDirConfig{Interval: -1, Logger: quiet})
	assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, "no keys")
}

// TestKeyDirFiles: which files a directory read takes, and who signs.
func TestKeyDirFiles(t *testing.T) {
	d := newKeyDir(t)
	a := d.add("a.pem", jtiguard.EdDSA)
	b := d.add("b.jwk", jtiguard.ES256)
	pub := must(jtiguard.GenerateKey("", jtiguard.ES256))
	d.write("pub.pem", string(must(pub.MarshalPEM(false))))
	d.write("README", "ignored")
	d.write(".hidden.pem", "ignored")
	d.write("a.pem.bak", "ignored")
	require.NoError(t, os.Mkdir(filepath.Join(d.dir, "..data"), 0o700))
	d.write("active", " b.jwk \n")

	kd, err := jtiguard.OpenKeyDir(d.dir, jtiguard.KeyDirConfig{Interval: -1, Logger: quiet})
	require.NoError(t, err)
	defer kd.Close()
	keys := kd.Keys()
	assert.Equal(t, []string{a.KID(), b.KID(), pub.KID()}, kids(keys, a, b, pub))
	assert.Equal(t, b.KID(), keys.Signer().KID(), "active names the signer's file")

	// A verifier's directory: public keys only, no signer.
	v := newKeyDir(t)
	v.write("a.pem", string(must(a.MarshalPEM(false))))
	vd, err := jtiguard.OpenKeyDir(v.dir, jtiguard.KeyDirConfig{Interval: -1, Logger: quiet})
	require.NoError(t, err)
	defer vd.Close()
	assert.Nil(t, vd.Keys().Signer())
	_, ok := vd.Keys().Key(a.KID())
	assert.True(t, ok)
}

// syncBuffer is a log destination the test reads while the poller writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKeyDirPolls: the KeyDir reads its directory every Interval on its
// own, and logs a read that fails instead of dropping keys.
func TestKeyDirPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newKeyDir(t)
		a := d.add("a.pem", jtiguard.EdDSA)
		d.write("active", "a.pem")
		var logs syncBuffer
		kd, err := jtiguard.OpenKeyDir(d.dir, jtiguard.KeyDirConfig{Interval: time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err)
		defer kd.Close()
		keys := kd.Keys()

		b := d.add("b.pem", jtiguard.EdDSA)
		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		assert.Equal(t, []string{a.KID()}, kids(keys, a, b), "not read before Interval")
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, []string{a.KID(), b.KID()}, kids(keys, a, b), "added")

		d.write("active", "b.pem")
		d.remove("a.pem")
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, []string{b.KID()}, kids(keys, a, b), "retired")
		assert.Equal(t, b.KID(), keys.Signer().KID(), "rotated")

		d.write("c.pem", "garbage")
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, []string{b.KID()}, kids(keys, a, b))
		assert.Contains(t, logs.String(), "level=WARN msg=\"jtiguard: key directory not reloaded")
		assert.Contains(t, logs.String(), "c.pem")
	})
}

// FuzzParsePEM: PEM loading never panics, refuses with ErrInvalidKey, and
// what it accepts is a key of a supported algorithm that reads back from
// its own PEM under the same kid.
func FuzzParsePEM(f *testing.F) {
	for _, alg := range []string{jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256} {
		k, err := jtiguard.GenerateKey("", alg)
		if err != nil {
			f.Fatal(err)
		}
		for _, private := range []bool{true, false} {
			p, err := k.MarshalPEM(private)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p)
		}
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	f.Add(append(pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}), pemBlock("EC PRIVATE KEY", sec1)...))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := jtiguard.ParsePEM(data)
		if err != nil {
			if !errors.Is(err, jtiguard.ErrInvalidKey) {
				t.Fatalf("refusal does not match ErrInvalidKey: %v", err)
			}
			return
		}
		switch k.Alg() {
		case jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256:
		default:
			t.Fatalf("accepted a key for %q", k.Alg())
		}
		again, err := k.MarshalPEM(k.CanSign())
		if err != nil {
			t.Fatalf("accepted key cannot be written back: %v", err)
		}
		back, err := jtiguard.ParsePEM(again)
		if err != nil || back.KID() != k.KID() || back.CanSign() != k.CanSign() {
			t.Fatalf("accepted key does not read back: %v", err)
		}
	})
}
