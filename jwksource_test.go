package jtiguard_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// jwksServer is an issuer's key set endpoint: it serves the JWKS of keys,
// or whatever a test puts in its place, and counts the requests. It runs
// outside the synctest bubbles (a goroutine waiting in Accept would keep a
// bubble's clock from moving), so it shares no channel with them.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu      sync.Mutex
	keys    *jtiguard.KeySet
	body    string // served instead of the keys' JWKS, if set
	status  int
	header  http.Header
	chunked bool // no Content-Length
}

func newJWKSServer(t *testing.T, keys *jtiguard.KeySet) *jwksServer {
	s := &jwksServer{keys: keys, status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(w http.ResponseWriter, _ *http.Request) {
	s.hits.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	body := s.body
	if body == "" {
		doc, err := s.keys.JWKS()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body = string(doc)
	}
	for name, v := range s.header {
		w.Header()[name] = v
	}
	if !s.chunked {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(s.status)
	if s.chunked {
		// Two writes with a flush between: the length is not known ahead.
		half := len(body) / 2
		_, _ = w.Write([]byte(body[:half]))
		w.(http.Flusher).Flush()
		body = body[half:]
	}
	_, _ = w.Write([]byte(body))
}

// set changes what the server answers from the next request on.
func (s *jwksServer) set(f func(s *jwksServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// bubbleClient is a client for use inside a synctest bubble: without
// keep-alive, no connection outlives its request (a goroutine reading an
// idle connection would keep the bubble's clock from moving).
func bubbleClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

// eventLog records the events a RemoteKeys reports.
type eventLog struct {
	mu     sync.Mutex
	events []jtiguard.Event
}

func (l *eventLog) on(_ context.Context, e jtiguard.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) all() []jtiguard.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]jtiguard.Event(nil), l.events...)
}

func (l *eventLog) count(kind jtiguard.EventKind) int {
	n := 0
	for _, e := range l.all() {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// remote is a RemoteKeys on srv with a verifier over its keys, for use
// inside a bubble.
type remote struct {
	rk     *jtiguard.RemoteKeys
	ver    *jtiguard.Verifier
	events *eventLog
}

func newRemote(t *testing.T, srv *jwksServer, cfg jtiguard.RemoteKeysConfig) *remote {
	t.Helper()
	r := &remote{events: &eventLog{}}
	if cfg.Client == nil {
		cfg.Client = bubbleClient()
	}
	cfg.Logger, cfg.OnEvent = quiet, r.events.on
	var err error
	r.rk, err = jtiguard.NewRemoteKeys(context.Background(), srv.URL, cfg)
	require.NoError(t, err)
	t.Cleanup(r.rk.Close)
	r.ver, err = jtiguard.NewVerifier(r.rk.Keys(), jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(r.ver.Close)
	return r
}

func (r *remote) verify(tok string) error {
	_, err := r.ver.Verify(context.Background(), tok)
	return err
}

// mint returns an access token signed by keys' signer.
func mint(t *testing.T, keys *jtiguard.KeySet) string {
	t.Helper()
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer})
	require.NoError(t, err)
	tok, _, err := iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	return tok
}

// randomKIDToken is a token whose kid no one published: the verifier
// looks the kid up before it checks anything else.
func randomKIDToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return enc(`{"alg":"EdDSA","kid":"`+hex.EncodeToString(b[:])+`","typ":"at+jwt"}`) + "." + enc(`{}`) + "." +
		base64.RawURLEncoding.EncodeToString(make([]byte, 64))
}

func signingSet(t *testing.T, kid string) (*jtiguard.Key, *jtiguard.KeySet) {
	k := must(jtiguard.GenerateKey(kid, jtiguard.EdDSA))
	return k, mustSet(t, k)
}

// TestRemoteKeysRotation: the issuer adds a key and signs with it at once:
// the first token with the new kid makes the verifier fetch again (once
// the 10 s since the last fetch have passed). The issuer retires the old
// key: the next scheduled fetch drops it, and its tokens, cached ones
// included, are refused from then on. A key that stays keeps its *Key.
func TestRemoteKeysRotation(t *testing.T) {
	_, issKeys := signingSet(t, "a")
	srv := newJWKSServer(t, issKeys)
	srv.set(func(s *jwksServer) { s.header.Set("Cache-Control", "public, max-age=120") })
	synctest.Test(t, func(t *testing.T) {
		r := newRemote(t, srv, jtiguard.RemoteKeysConfig{})
		byA := mint(t, issKeys)
		require.NoError(t, r.verify(byA)) // now cached
		keyA, ok := r.rk.Keys().Key("a")
		require.True(t, ok)
		assert.Nil(t, r.rk.Keys().Signer())

		require.NoError(t, issKeys.Add(must(jtiguard.GenerateKey("b", jtiguard.EdDSA))))
		require.NoError(t, issKeys.Rotate("b"))
		byB := mint(t, issKeys)
		assert.ErrorIs(t, r.verify(byB), jtiguard.ErrUnknownKey, "within 10 s of the last fetch: refused at once")
		assert.EqualValues(t, 1, srv.hits.Load())

		time.Sleep(10 * time.Second)
		start := time.Now()
		assert.NoError(t, r.verify(byB), "the unknown kid made it fetch")
		assert.Zero(t, time.Since(start), "the fetch takes no time on the bubble's clock")
		assert.EqualValues(t, 2, srv.hits.Load())
		same, _ := r.rk.Keys().Key("a")
		assert.Same(t, keyA, same, "an unchanged key keeps its *Key, and the cache its tokens")
		assert.NoError(t, r.verify(byA), "the previous key still verifies")

		// Retire: the next scheduled fetch is 120 s after the last one.
		require.NoError(t, issKeys.Retire("a"))
		time.Sleep(120*time.Second - time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 2, srv.hits.Load())
		assert.NoError(t, r.verify(byA), "not fetched yet")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 3, srv.hits.Load())
		assert.ErrorIs(t, r.verify(byA), jtiguard.ErrUnknownKey, "a retired key's cached token is refused")
		_, ok = r.rk.Keys().Key("a")
		assert.False(t, ok)
		assert.NoError(t, r.verify(byB))
		assert.Empty(t, r.events.all())
	})
}

// TestRemoteKeysUnknownKIDFlood: 10,000 concurrent tokens with made-up
// kids cost the issuer one request; a steady flood costs it one per 10 s;
// none of them waits; a good token verifies throughout.
func TestRemoteKeysUnknownKIDFlood(t *testing.T) {
	_, issKeys := signingSet(t, "a")
	srv := newJWKSServer(t, issKeys)
	srv.set(func(s *jwksServer) { s.header.Set("Cache-Control", "max-age=3600") })
	synctest.Test(t, func(t *testing.T) {
		r := newRemote(t, srv, jtiguard.RemoteKeysConfig{})
		good := mint(t, issKeys)
		flood := func(n int) (refused int64, slowest time.Duration) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			var count atomic.Int64
			for range n {
				wg.Go(func() {
					start := time.Now()
					if errors.Is(r.verify(randomKIDToken()), jtiguard.ErrUnknownKey) {
						count.Add(1)
					}
					mu.Lock()
					slowest = max(slowest, time.Since(start))
					mu.Unlock()
				})
			}
			wg.Wait()
			return count.Load(), slowest
		}

		// A burst, all at once, as soon as a fetch may start.
		time.Sleep(10 * time.Second)
		refused, slowest := flood(10_000)
		assert.EqualValues(t, 10_000, refused)
		assert.Zero(t, slowest, "no request waits past the shared fetch")
		burst := srv.hits.Load() - 1
		assert.EqualValues(t, 1, burst, "the burst shares one fetch")
		assert.NoError(t, r.verify(good))

		// A steady flood: 100 tokens a second for 100 s.
		for range 100 {
			time.Sleep(time.Second)
			refused, _ := flood(100)
			require.EqualValues(t, 100, refused)
			require.NoError(t, r.verify(good))
		}
		steady := srv.hits.Load() - 1 - burst
		assert.LessOrEqual(t, steady, int64(10), "at most one fetch per 10 s")
		t.Logf("flood: 10,000 concurrent unknown kids -> %d fetch(es); 10,000 more over 100 s -> %d fetches; slowest wait %v (bubble clock)", burst, steady, slowest)
	})
}

// gatedTransport holds requests while closed, as an issuer that does not
// answer; it honours the request's context. It counts requests.
type gatedTransport struct {
	base  http.RoundTripper
	calls atomic.Int64
	mu    sync.Mutex
	gate  chan struct{} // nil: open
}

func (g *gatedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	g.calls.Add(1)
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return g.base.RoundTrip(req)
}

func (g *gatedTransport) hold() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedTransport) release() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

// TestRemoteKeysUnknownKIDWait: when the issuer is slow, a token with an
// unknown kid waits 1 s and is refused; tokens arriving meanwhile share the
// fetch; once it lands, the new key verifies. A fetch is abandoned after
// 10 s, whatever the client, and Close ends one under way.
func TestRemoteKeysUnknownKIDWait(t *testing.T) {
	_, issKeys := signingSet(t, "a")
	srv := newJWKSServer(t, issKeys)
	synctest.Test(t, func(t *testing.T) {
		gt := &gatedTransport{base: &http.Transport{DisableKeepAlives: true}}
		r := newRemote(t, srv, jtiguard.RemoteKeysConfig{Client: &http.Client{Transport: gt}})
		require.NoError(t, issKeys.Add(must(jtiguard.GenerateKey("b", jtiguard.EdDSA))))
		require.NoError(t, issKeys.Rotate("b"))
		byB := mint(t, issKeys)

		time.Sleep(10 * time.Second)
		gt.hold()
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				start := time.Now()
				assert.ErrorIs(t, r.verify(byB), jtiguard.ErrUnknownKey)
				assert.Equal(t, time.Second, time.Since(start), "waited exactly the bound")
			})
		}
		// A request with a shorter deadline waits no longer than it.
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := r.ver.Verify(ctx, byB)
			assert.ErrorIs(t, err, jtiguard.ErrUnknownKey)
			assert.Equal(t, 100*time.Millisecond, time.Since(start), "waited until its own deadline")
		})
		wg.Wait()
		assert.EqualValues(t, 2, gt.calls.Load(), "one shared fetch")
		gt.release()
		synctest.Wait()
		assert.NoError(t, r.verify(byB), "the fetch landed")
		assert.EqualValues(t, 2, gt.calls.Load())
		assert.EqualValues(t, 2, srv.hits.Load(), "every request went through the injected client")

		// A fetch that hangs is abandoned after 10 s and reported.
		time.Sleep(10 * time.Second)
		gt.hold()
		assert.ErrorIs(t, r.verify(randomKIDToken()), jtiguard.ErrUnknownKey)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		ev := r.events.all()
		require.Len(t, ev, 1)
		assert.Equal(t, jtiguard.EventKeysFetchFailed, ev[0].Kind)
		assert.ErrorIs(t, ev[0].Err, context.DeadlineExceeded)

		// Close ends a fetch under way (and reports nothing for it).
		time.Sleep(10 * time.Second)
		assert.ErrorIs(t, r.verify(randomKIDToken()), jtiguard.ErrUnknownKey)
		r.rk.Close()
		assert.Len(t, r.events.all(), 1)
		assert.NoError(t, r.verify(byB), "the set keeps its keys after Close")
		calls := gt.calls.Load()
		time.Sleep(24 * time.Hour)
		assert.ErrorIs(t, r.verify(randomKIDToken()), jtiguard.ErrUnknownKey)
		assert.Equal(t, calls, gt.calls.Load(), "no fetch after Close")
	})
}

// TestRemoteKeysIssuerDown: while the issuer fails, the last good keys
// verify, each failed attempt (once a minute) is an event, and the events
// carry no token. StaleLimit after the keys were due for a refresh, they
// are dropped and every token refused: fail closed. When the issuer
// answers again, the keys come back.
func TestRemoteKeysIssuerDown(t *testing.T) {
	_, issKeys := signingSet(t, "a")
	srv := newJWKSServer(t, issKeys)
	srv.set(func(s *jwksServer) { s.header.Set("Cache-Control", "max-age=60") })
	synctest.Test(t, func(t *testing.T) {
		r := newRemote(t, srv, jtiguard.RemoteKeysConfig{})
		keyA, _ := r.rk.Keys().Key("a")
		srv.set(func(s *jwksServer) { s.status = http.StatusServiceUnavailable })

		time.Sleep(time.Minute)
		synctest.Wait()
		ev := r.events.all()
		require.Len(t, ev, 1)
		assert.Equal(t, jtiguard.Event{Kind: jtiguard.EventKeysFetchFailed, Err: ev[0].Err}, ev[0], "nothing but the kind and the cause")
		assert.ErrorContains(t, ev[0].Err, "status 503")
		kept, _ := r.rk.Keys().Key("a")
		assert.Same(t, keyA, kept, "the last good keys are kept")

		// Due at 60 s; dropped at 60 s + 24 h.
		time.Sleep(24*time.Hour - time.Millisecond)
		synctest.Wait()
		tok := mint(t, issKeys)
		assert.NoError(t, r.verify(tok), "still within the stale limit")
		assert.Zero(t, r.events.count(jtiguard.EventKeysExpired))
		assert.EqualValues(t, 24*60, r.events.count(jtiguard.EventKeysFetchFailed), "one attempt a minute")

		time.Sleep(time.Millisecond)
		synctest.Wait()
		assert.ErrorIs(t, r.verify(tok), jtiguard.ErrUnknownKey, "past the stale limit: fail closed")
		assert.Equal(t, `{"keys":[]}`, string(must(r.rk.Keys().JWKS())))
		require.Equal(t, 1, r.events.count(jtiguard.EventKeysExpired))
		for _, e := range r.events.all() {
			if e.Kind == jtiguard.EventKeysExpired {
				assert.ErrorContains(t, e.Err, "status 503", "the expiry names the last failure")
			}
			assert.Empty(t, e.Subject+e.Session+e.JTI+e.ClientID)
		}

		// Back up: the next attempt, a minute later at most, restores the keys.
		srv.set(func(s *jwksServer) { s.status = http.StatusOK })
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.NoError(t, r.verify(mint(t, issKeys)))
	})
}

// TestRemoteKeysCacheControl: the refresh interval is max-age less Age,
// within [1 min, MaxRefresh]; 5 min without max-age.
func TestRemoteKeysCacheControl(t *testing.T) {
	cases := []struct {
		cacheControl []string
		age          string
		maxRefresh   time.Duration
		want         time.Duration
	}{
		{nil, "", 0, 5 * time.Minute},
		{nil, "", 2 * time.Minute, 2 * time.Minute},
		{[]string{"max-age=600"}, "", 0, 10 * time.Minute},
		{[]string{"public, max-age=120, must-revalidate"}, "", 0, 2 * time.Minute},
		{[]string{"max-age=5"}, "", 0, time.Minute},
		{[]string{"max-age=0"}, "", 0, time.Minute},
		{[]string{"no-store"}, "", 0, time.Minute},
		{[]string{"no-cache, max-age=600"}, "", 0, time.Minute},
		{[]string{"max-age=86400"}, "", 0, time.Hour},
		{[]string{"max-age=99999999999999999999999"}, "", 0, time.Hour},
		{[]string{"max-age=86400"}, "", 10 * time.Minute, 10 * time.Minute},
		{[]string{"max-age=600"}, "300", 0, 5 * time.Minute},
		{[]string{"max-age=600"}, "590", 0, time.Minute},
		{[]string{"max-age=600", "max-age=300"}, "", 0, 5 * time.Minute},
		{[]string{"s-maxage=60, max-age=900"}, "", 0, 15 * time.Minute},
		{[]string{"max-age=-5"}, "", 0, 5 * time.Minute},
		{[]string{"max-age=ten"}, "", 0, 5 * time.Minute},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("%q age %q max %v", tc.cacheControl, tc.age, tc.maxRefresh)
		t.Run(name, func(t *testing.T) {
			_, issKeys := signingSet(t, "a")
			srv := newJWKSServer(t, issKeys)
			srv.set(func(s *jwksServer) {
				s.header["Cache-Control"] = tc.cacheControl
				if tc.age != "" {
					s.header.Set("Age", tc.age)
				}
			})
			synctest.Test(t, func(t *testing.T) {
				newRemote(t, srv, jtiguard.RemoteKeysConfig{MaxRefresh: tc.maxRefresh})
				time.Sleep(tc.want - time.Millisecond)
				synctest.Wait()
				assert.EqualValues(t, 1, srv.hits.Load(), "not before the interval")
				time.Sleep(time.Millisecond)
				synctest.Wait()
				assert.EqualValues(t, 2, srv.hits.Load(), "at the interval")
				time.Sleep(tc.want)
				synctest.Wait()
				assert.EqualValues(t, 3, srv.hits.Load(), "and again")
			})
		})
	}
}

// weakRSAJWK is a public RSA key of 1024 bits.
func weakRSAJWK(t *testing.T) string {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	return fmt.Sprintf(`{"kty":"RSA","kid":"weak","alg":"RS256","n":"%s","e":"%s"}`,
		base64.RawURLEncoding.EncodeToString(k.N.Bytes()), base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()))
}

// TestRemoteKeysRefusesDocuments: a document that fails the key policy, a
// response that is not a 200 with a JSON type, and a body over 1 MiB fail
// the first fetch, and fail a later one without touching the last good
// keys.
func TestRemoteKeysRefusesDocuments(t *testing.T) {
	ed := must(jtiguard.GenerateKey("ed", jtiguard.EdDSA))
	edPub := string(must(ed.MarshalJWK(false)))
	edPriv := string(must(ed.MarshalJWK(true)))
	hs := string(must(must(jtiguard.GenerateKey("hs", jtiguard.HS256)).MarshalJWK(true)))
	weakHS := `{"kty":"oct","kid":"w","alg":"HS256","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg"}`
	other := string(must(must(jtiguard.GenerateKey("ed", jtiguard.EdDSA)).MarshalJWK(false)))
	oversize := `{"keys":[` + edPub + `]}` + strings.Repeat(" ", 1<<20)
	cases := []struct {
		name  string
		serve func(s *jwksServer)
		msg   string
		key   bool // the error matches ErrInvalidKey
	}{
		{"weak RSA key", func(s *jwksServer) { s.body = `{"keys":[` + weakRSAJWK(t) + `]}` }, "RSA modulus of 1024 bits", true},
		{"weak HMAC secret", func(s *jwksServer) { s.body = `{"keys":[` + weakHS + `]}` }, "HMAC secret of 31 bytes", true},
		{"private key", func(s *jwksServer) { s.body = `{"keys":[` + edPriv + `]}` }, "must not hold private keys", true},
		{"one kid twice", func(s *jwksServer) { s.body = `{"keys":[` + edPub + `,` + other + `]}` }, "duplicate kid", true},
		{"HMAC beside asymmetric", func(s *jwksServer) { s.body = `{"keys":[` + edPub + `,` + hs + `]}` }, "cannot mix HMAC", true},
		{"ambiguous member", func(s *jwksServer) { s.body = `{"keys":[{"kty":"OKP","crv":"Ed25519","Kty":"RSA"}]}` }, "case variant", true},
		{"empty set", func(s *jwksServer) { s.body = `{"keys":[]}` }, "empty key set", true},
		{"not JSON", func(s *jwksServer) { s.body = `<html>login</html>` }, "keys array", true},
		{"status 404", func(s *jwksServer) { s.status = http.StatusNotFound }, "status 404, want 200", false},
		{"status 204", func(s *jwksServer) { s.status = http.StatusNoContent }, "status 204, want 200", false},
		{"HTML", func(s *jwksServer) { s.header.Set("Content-Type", "text/html; charset=utf-8") }, `Content-Type "text/html; charset=utf-8"`, false},
		{"no Content-Type", func(s *jwksServer) { s.header.Set("Content-Type", "") }, `Content-Type ""`, false},
		{"over 1 MiB, announced", func(s *jwksServer) { s.body = oversize }, "more than 1024 KiB", false},
		{"over 1 MiB, chunked", func(s *jwksServer) { s.body = oversize; s.chunked = true }, "more than 1024 KiB", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, issKeys := signingSet(t, "a")
			srv := newJWKSServer(t, issKeys)
			synctest.Test(t, func(t *testing.T) {
				r := newRemote(t, srv, jtiguard.RemoteKeysConfig{})
				keyA, _ := r.rk.Keys().Key("a")
				srv.set(tc.serve)

				time.Sleep(5 * time.Minute)
				synctest.Wait()
				ev := r.events.all()
				require.Len(t, ev, 1)
				assert.Equal(t, jtiguard.EventKeysFetchFailed, ev[0].Kind)
				assert.ErrorContains(t, ev[0].Err, tc.msg)
				assert.ErrorContains(t, ev[0].Err, srv.URL)
				if tc.key {
					assert.ErrorIs(t, ev[0].Err, jtiguard.ErrInvalidKey)
				}
				kept, _ := r.rk.Keys().Key("a")
				assert.Same(t, keyA, kept, "the last good keys are kept")
				assert.NoError(t, r.verify(mint(t, issKeys)))

				_, err := jtiguard.NewRemoteKeys(context.Background(), srv.URL, jtiguard.RemoteKeysConfig{Client: bubbleClient(), Logger: quiet})
				assert.ErrorContains(t, err, tc.msg, "the first fetch must succeed")
			})
		})
	}

	// The limit is 1 MiB exactly; other JSON types pass.
	doc := `{"keys":[` + edPub + `]}`
	ok := []func(s *jwksServer){
		func(s *jwksServer) { s.body = doc + strings.Repeat(" ", 1<<20-len(doc)); s.chunked = true },
		func(s *jwksServer) { s.body = doc; s.header.Set("Content-Type", "application/jwk-set+json") },
		func(s *jwksServer) { s.body = doc; s.header.Set("Content-Type", "Application/JSON; charset=utf-8") },
	}
	for _, serve := range ok {
		srv := newJWKSServer(t, nil)
		srv.set(serve)
		rk, err := jtiguard.NewRemoteKeys(context.Background(), srv.URL, jtiguard.RemoteKeysConfig{Logger: quiet})
		require.NoError(t, err)
		_, found := rk.Keys().Key("ed")
		assert.True(t, found)
		rk.Close()
	}
}

// countingTransport counts the requests that go through it.
type countingTransport struct {
	base  http.RoundTripper
	calls atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.base.RoundTrip(req)
}

// TestRemoteKeysClient: the injected client makes the requests (here the
// only one that trusts the test server's certificate); URLs in the clear
// to other hosts than loopback are refused, and so are redirects to them;
// credentials in the URL stay out of errors.
func TestRemoteKeysClient(t *testing.T) {
	_, issKeys := signingSet(t, "a")
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(must(issKeys.JWKS()))
	}))
	defer tlsSrv.Close()

	_, err := jtiguard.NewRemoteKeys(context.Background(), tlsSrv.URL, jtiguard.RemoteKeysConfig{Logger: quiet})
	assert.ErrorContains(t, err, "certificate", "the default client does not trust the test server")

	ct := &countingTransport{base: tlsSrv.Client().Transport}
	rk, err := jtiguard.NewRemoteKeys(context.Background(), tlsSrv.URL, jtiguard.RemoteKeysConfig{Client: &http.Client{Transport: ct}, Logger: quiet})
	require.NoError(t, err)
	defer rk.Close()
	assert.EqualValues(t, 1, ct.calls.Load())
	_, ok := rk.Keys().Key("a")
	assert.True(t, ok)

	// The first fetch runs within the caller's context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = jtiguard.NewRemoteKeys(ctx, tlsSrv.URL, jtiguard.RemoteKeysConfig{Client: tlsSrv.Client(), Logger: quiet})
	assert.ErrorIs(t, err, context.Canceled)

	for _, u := range []string{
		"http://issuer.example/jwks", "http://10.0.0.1/jwks", "ftp://issuer.example/jwks",
		"/jwks", "https://", "https:issuer.example", "://", "http://localhost.example.com/jwks",
	} {
		_, err := jtiguard.NewRemoteKeys(context.Background(), u, jtiguard.RemoteKeysConfig{Logger: quiet})
		assert.ErrorIs(t, err, jtiguard.ErrConfig, u)
	}
	for _, cfg := range []jtiguard.RemoteKeysConfig{{MaxRefresh: 59 * time.Second}, {StaleLimit: -time.Second}} {
		_, err := jtiguard.NewRemoteKeys(context.Background(), "https://issuer.example/jwks", cfg)
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
	}

	// An https URL that redirects to http: refused before the request in
	// the clear. The client sends every host to the test servers.
	plain := newJWKSServer(t, issKeys)
	redirector := httptest.NewTLSServer(http.RedirectHandler("http://keys.example.com/jwks", http.StatusFound))
	defer redirector.Close()
	transport := redirector.Client().Transport.(*http.Transport).Clone()
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		to := plain.Listener.Addr().String()
		if strings.HasSuffix(addr, ":443") {
			to = redirector.Listener.Addr().String()
		}
		return (&net.Dialer{}).DialContext(ctx, network, to)
	}
	everyHost := &http.Client{Transport: transport}
	_, err = jtiguard.NewRemoteKeys(context.Background(), "https://issuer.example.com/jwks", jtiguard.RemoteKeysConfig{Client: everyHost, Logger: quiet})
	assert.ErrorContains(t, err, `redirect to "http://keys.example.com/jwks" refused`)
	assert.Zero(t, plain.hits.Load())
	rk, err = jtiguard.NewRemoteKeys(context.Background(), "http://127.0.0.1/jwks", jtiguard.RemoteKeysConfig{Client: everyHost, Logger: quiet})
	require.NoError(t, err, "the same client reaches the plain server, on loopback")
	rk.Close()
	assert.EqualValues(t, 1, plain.hits.Load())

	srv := newJWKSServer(t, issKeys)
	srv.set(func(s *jwksServer) { s.status = http.StatusInternalServerError })
	withCreds := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1)
	_, err = jtiguard.NewRemoteKeys(context.Background(), withCreds, jtiguard.RemoteKeysConfig{Logger: quiet})
	require.ErrorContains(t, err, "status 500")
	assert.NotContains(t, err.Error(), "hunter2")
	srv.Close()
	_, err = jtiguard.NewRemoteKeys(context.Background(), withCreds, jtiguard.RemoteKeysConfig{Logger: quiet})
	require.Error(t, err, "connection refused")
	assert.NotContains(t, err.Error(), "hunter2")
}

// TestRemoteKeysObserver: each fetch, the first one included, reaches
// KeysFetched with its outcome and key count, and a failed one reaches the
// Observer's Event hook as well as OnEvent.
func TestRemoteKeysObserver(t *testing.T) {
	_, issKeys := signingSet(t, "a")
	srv := newJWKSServer(t, issKeys)
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		r := newRemote(t, srv, jtiguard.RemoteKeysConfig{Observer: rec.observer()})
		require.Len(t, rec.fetches, 1)
		f := rec.fetches[0]
		assert.Equal(t, srv.URL, f.URL)
		assert.Equal(t, 1, f.Keys)
		assert.True(t, f.Changed)
		assert.NoError(t, f.Err)
		assert.False(t, f.Start.IsZero())

		srv.set(func(s *jwksServer) { s.status = http.StatusServiceUnavailable })
		time.Sleep(5 * time.Minute) // the default refresh, without Cache-Control
		synctest.Wait()
		rec.mu.Lock()
		require.Len(t, rec.fetches, 2)
		f = rec.fetches[1]
		rec.mu.Unlock()
		assert.ErrorContains(t, f.Err, "status 503")
		assert.Equal(t, 1, f.Keys, "the last good keys are kept")
		assert.False(t, f.Changed)
		assert.Equal(t, []jtiguard.EventKind{jtiguard.EventKeysFetchFailed}, rec.kinds())
		assert.Equal(t, 1, r.events.count(jtiguard.EventKeysFetchFailed))
		assert.Empty(t, rec.ver, "a RemoteKeys verifies nothing")
	})
}
