package jtiguard_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// t0 is the fixed start of every test clock.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// clock is a manual clock: the only fake these tests use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lockedReader makes a deterministic random source safe for concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

const (
	testIssuer   = "https://auth.example.com"
	testAudience = "https://api.example.com"
)

// testSeed makes the Ed25519 key of the fixtures reproducible.
var testSeed = []byte("jtiguard test key seed 32 bytes!")

type fixture struct {
	clock  *clock
	priv   ed25519.PrivateKey
	keys   *jtiguard.KeySet
	store  *jtiguard.MemoryStore
	issuer *jtiguard.Issuer
	ver    *jtiguard.Verifier
}

// newFixture builds keys (Ed25519, kid "k1"), a store, an issuer and a
// verifier on one manual clock. cfg tweaks the verifier configuration.
func newFixture(t testing.TB, cfg ...func(*jtiguard.VerifierConfig)) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), priv: ed25519.NewKeyFromSeed(testSeed)}
	k, err := jtiguard.NewKey("k1", jtiguard.EdDSA, f.priv)
	require.NoError(t, err)
	f.keys, err = jtiguard.NewKeySet(k)
	require.NoError(t, err)
	f.store, err = jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: f.clock.Now})
	require.NoError(t, err)
	// A seeded jti source makes the fixture's tokens the same in every
	// process, as the fuzzing engine's workers need.
	f.issuer, err = jtiguard.NewIssuer(f.keys, jtiguard.IssuerConfig{Issuer: testIssuer, Now: f.clock.Now, Rand: &lockedReader{r: rand.NewChaCha8([32]byte{1})}})
	require.NoError(t, err)
	vc := jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: f.store, Now: f.clock.Now, Logger: quiet}
	for _, c := range cfg {
		c(&vc)
	}
	f.ver, err = jtiguard.NewVerifier(f.keys, vc)
	require.NoError(t, err)
	t.Cleanup(f.ver.Close)
	return f
}

func (f *fixture) access(t testing.TB) (string, *jtiguard.Claims) {
	t.Helper()
	tok, c, err := f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Scope: "read write"})
	require.NoError(t, err)
	return tok, c
}

func (f *fixture) oneTime(t testing.TB, purpose string) (string, *jtiguard.Claims) {
	t.Helper()
	tok, c, err := f.issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: purpose})
	require.NoError(t, err)
	return tok, c
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signRaw signs an arbitrary header and payload, for forged tokens.
func signRaw(t testing.TB, method jwt.SigningMethod, key any, header, payload string) string {
	t.Helper()
	in := enc(header) + "." + enc(payload)
	sig, err := method.Sign(in, key)
	require.NoError(t, err)
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// segments splits a token into its three parts.
func segments(tok string) (h, p, s string) {
	parts := strings.Split(tok, ".")
	return parts[0], parts[1], parts[2]
}

// quiet is the logger of verifiers whose security events the tests do not
// read.
var quiet = slog.New(slog.DiscardHandler)
