package jtiguard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/store"
)

// recorder is an Observer that keeps everything it is told.
type recorder struct {
	mu      sync.Mutex
	ver     []jtiguard.Verification
	calls   []jtiguard.StoreCall
	events  []jtiguard.Event
	fetches []jtiguard.KeysFetch
}

func (r *recorder) observer() *jtiguard.Observer {
	return &jtiguard.Observer{
		Verified: func(_ context.Context, v jtiguard.Verification) { r.mu.Lock(); r.ver = append(r.ver, v); r.mu.Unlock() },
		Store: func(_ context.Context, c jtiguard.StoreCall) {
			r.mu.Lock()
			r.calls = append(r.calls, c)
			r.mu.Unlock()
		},
		Event: func(_ context.Context, e jtiguard.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() },
		KeysFetched: func(_ context.Context, f jtiguard.KeysFetch) {
			r.mu.Lock()
			r.fetches = append(r.fetches, f)
			r.mu.Unlock()
		},
	}
}

func (r *recorder) kinds() []jtiguard.EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []jtiguard.EventKind
	for _, e := range r.events {
		ks = append(ks, e.Kind)
	}
	return ks
}

func (r *recorder) ops() []jtiguard.StoreOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []jtiguard.StoreOp
	for _, c := range r.calls {
		ops = append(ops, c.Op)
	}
	return ops
}

// texts renders everything the recorder holds, errors included, as a
// hook's author might log it.
func (r *recorder) texts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	for _, v := range r.ver {
		out = append(out, fmt.Sprintf("%+v %s", v, errText(v.Err)))
	}
	for _, c := range r.calls {
		out = append(out, fmt.Sprintf("%+v %s", c, errText(c.Err)))
	}
	for _, e := range r.events {
		out = append(out, fmt.Sprintf("%+v %s", e, errText(e.Err)))
	}
	for _, f := range r.fetches {
		out = append(out, fmt.Sprintf("%+v %s", f, errText(f.Err)))
	}
	return out
}

// faultStore is a MemoryStore whose Check and Consume can be made to
// answer a status or fail.
type faultStore struct {
	*jtiguard.MemoryStore
	mu     sync.Mutex
	status store.Status // when not Live, Check and Consume answer it
	err    error
}

func (s *faultStore) set(st store.Status, err error) {
	s.mu.Lock()
	s.status, s.err = st, err
	s.mu.Unlock()
}

func (s *faultStore) fault() (store.Status, error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.err, s.status != store.Live || s.err != nil
}

func (s *faultStore) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	if st, err, ok := s.fault(); ok {
		return st, err
	}
	return s.MemoryStore.Check(ctx, t)
}

func (s *faultStore) Consume(ctx context.Context, t store.TokenRef, nonce uint64) (store.Status, error) {
	if st, err, ok := s.fault(); ok {
		return st, err
	}
	return s.MemoryStore.Consume(ctx, t, nonce)
}

// obsFixture is a fixture whose Verifier reports to a recorder and logs
// to a buffer, with Sessions and two DPoPVerifiers (the second with
// server nonces) on it, and the token texts it has seen.
type obsFixture struct {
	*fixture
	rec     *recorder
	faults  *faultStore
	logs    *bytes.Buffer
	sess    *jtiguard.Sessions
	dv      *jtiguard.DPoPVerifier
	dvNonce *jtiguard.DPoPVerifier
	mu      sync.Mutex
	tokens  []string
}

func newObsFixture(t *testing.T) *obsFixture {
	t.Helper()
	o := &obsFixture{rec: &recorder{}, logs: &bytes.Buffer{}}
	o.fixture = newFixture(t, func(c *jtiguard.VerifierConfig) {
		o.faults = &faultStore{MemoryStore: c.Store.(*jtiguard.MemoryStore)}
		c.Store = o.faults
		c.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: o.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.Observer = o.rec.observer()
	})
	o.clock.Advance(time.Minute) // DPoP proofs must postdate the store
	var err error
	o.sess, err = jtiguard.NewSessions(o.issuer, o.ver, jtiguard.SessionConfig{})
	require.NoError(t, err)
	o.dv, err = jtiguard.NewDPoPVerifier(o.ver, jtiguard.DPoPConfig{})
	require.NoError(t, err)
	o.dvNonce, err = jtiguard.NewDPoPVerifier(o.ver, jtiguard.DPoPConfig{NonceSecret: []byte("a nonce secret of 32 bytes or so")})
	require.NoError(t, err)
	return o
}

// seen records token texts that must never show in what is reported.
func (o *obsFixture) seen(toks ...string) {
	o.mu.Lock()
	o.tokens = append(o.tokens, toks...)
	o.mu.Unlock()
}

func (o *obsFixture) access(t *testing.T, c jtiguard.Claims) string {
	t.Helper()
	if c.Subject == "" {
		c.Subject = "alice"
	}
	c.Audience = []string{testAudience}
	tok, _, err := o.issuer.Access(c)
	require.NoError(t, err)
	o.seen(tok)
	return tok
}

func (o *obsFixture) oneTime(t *testing.T) string {
	t.Helper()
	tok, _ := o.fixture.oneTime(t, "confirm")
	o.seen(tok)
	return tok
}

func (o *obsFixture) login(t *testing.T) *jtiguard.TokenPair {
	t.Helper()
	p, err := o.sess.Login(context.Background(), jtiguard.Login{Subject: "alice", ClientID: "demo-client", ACR: "pwd"})
	require.NoError(t, err)
	o.seen(p.AccessToken, p.RefreshToken)
	return p
}

func (o *obsFixture) raw(t *testing.T, header, payload string) string {
	t.Helper()
	tok := signRaw(t, jwt.SigningMethodEdDSA, o.priv, header, payload)
	o.seen(tok)
	return tok
}

func (o *obsFixture) verify(tok string) error {
	o.seen(tok)
	_, err := o.ver.Verify(context.Background(), tok)
	return err
}

// proof is a DPoP proof of c for a GET of the API with tok.
func (o *obsFixture) proof(t *testing.T, c dpopClient, tok string) string {
	t.Helper()
	p := c.proof(t, claimsFor(freshJTI(), dpopGet(tok), o.clock.Now(), ""))
	o.seen(p)
	return p
}

func dpopGet(tok string) jtiguard.DPoPRequest {
	return jtiguard.DPoPRequest{Method: "GET", URL: "https://api.example.com/orders", AccessToken: tok}
}

// observedOutcomes runs one outcome of each kind a verification can have
// through a Verifier with an Observer, table-driven over the sentinels.
func TestObserverOutcomes(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Minute).Unix()
	header := `{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`
	es, ed := esClient(t, 40), edClient(t, 41)
	type outcome struct {
		name   string
		run    func(t *testing.T, o *obsFixture) error
		class  jtiguard.TokenType
		want   error // nil: success
		reason string
		cache  jtiguard.CacheResult
		events []jtiguard.EventKind // every event the case reports, setup included
	}
	withClaims := func(extra string, omit ...string) func(t *testing.T, o *obsFixture) error {
		return func(t *testing.T, o *obsFixture) error {
			return o.verify(o.raw(t, header, payload(t, extra, omit...)))
		}
	}
	cases := []outcome{
		{name: "ok", class: jtiguard.TypeAccess, reason: "ok", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error { return o.verify(o.access(t, jtiguard.Claims{})) }},
		{name: "ok from the cache", class: jtiguard.TypeAccess, reason: "ok", cache: jtiguard.CacheHit,
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{})
				require.NoError(t, o.verify(tok))
				return o.verify(tok)
			}},
		{name: "too large", class: jtiguard.TypeAccess, want: jtiguard.ErrTokenTooLarge, reason: "token_too_large", cache: jtiguard.CacheNone,
			run: func(t *testing.T, o *obsFixture) error {
				return o.verify(o.access(t, jtiguard.Claims{}) + strings.Repeat("A", 9000))
			}},
		{name: "malformed", class: jtiguard.TypeAccess, want: jtiguard.ErrMalformed, reason: "malformed", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				h, p, _ := segments(o.access(t, jtiguard.Claims{}))
				return o.verify(h + "." + p + ".")
			}},
		{name: "wrong type", class: jtiguard.TypeAccess, want: jtiguard.ErrWrongTokenType, reason: "wrong_token_type", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error { return o.verify(o.oneTime(t)) }},
		{name: "unknown key", class: jtiguard.TypeAccess, want: jtiguard.ErrUnknownKey, reason: "unknown_key", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				return o.verify(o.raw(t, `{"alg":"EdDSA","kid":"k9","typ":"at+jwt"}`, payload(t, "")))
			}},
		{name: "algorithm", class: jtiguard.TypeAccess, want: jtiguard.ErrAlgorithm, reason: "algorithm", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				tok := signRaw(t, jwt.SigningMethodHS256, []byte("a secret of thirty-two bytes, ok"), `{"alg":"HS256","kid":"k1","typ":"at+jwt"}`, payload(t, ""))
				return o.verify(tok)
			}},
		{name: "signature", class: jtiguard.TypeAccess, want: jtiguard.ErrSignature, reason: "signature", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				h, p, _ := segments(o.access(t, jtiguard.Claims{}))
				_, _, s := segments(o.access(t, jtiguard.Claims{Subject: "bob"}))
				return o.verify(h + "." + p + "." + s)
			}},
		{name: "invalid claims", class: jtiguard.TypeAccess, want: jtiguard.ErrInvalidClaims, reason: "invalid_claims", cache: jtiguard.CacheMiss,
			run: withClaims(fmt.Sprintf(`"EXP":%d`, now+300))},
		{name: "missing claim", class: jtiguard.TypeAccess, want: jtiguard.ErrMissingClaim, reason: "missing_claim", cache: jtiguard.CacheMiss,
			run: withClaims("", "jti")},
		{name: "invalid jti", class: jtiguard.TypeAccess, want: jtiguard.ErrInvalidJTI, reason: "invalid_jti", cache: jtiguard.CacheMiss,
			run: withClaims(`"jti":"short"`, "jti")},
		{name: "invalid issuer", class: jtiguard.TypeAccess, want: jtiguard.ErrInvalidIssuer, reason: "invalid_issuer", cache: jtiguard.CacheMiss,
			run: withClaims(`"iss":"https://evil.example"`, "iss")},
		{name: "invalid audience", class: jtiguard.TypeAccess, want: jtiguard.ErrInvalidAudience, reason: "invalid_audience", cache: jtiguard.CacheMiss,
			run: withClaims(`"aud":"https://other.example"`, "aud")},
		{name: "expired", class: jtiguard.TypeAccess, want: jtiguard.ErrExpired, reason: "expired", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{})
				o.clock.Advance(time.Hour)
				return o.verify(tok)
			}},
		{name: "not yet valid", class: jtiguard.TypeAccess, want: jtiguard.ErrNotYetValid, reason: "not_yet_valid", cache: jtiguard.CacheMiss,
			run: withClaims(fmt.Sprintf(`"nbf":%d`, now+120))},
		{name: "issued in the future", class: jtiguard.TypeAccess, want: jtiguard.ErrIssuedInFuture, reason: "issued_in_future", cache: jtiguard.CacheMiss,
			run: withClaims(fmt.Sprintf(`"iat":%d`, now+120), "iat")},
		{name: "lifetime", class: jtiguard.TypeAccess, want: jtiguard.ErrLifetime, reason: "lifetime", cache: jtiguard.CacheMiss,
			run: withClaims(fmt.Sprintf(`"exp":%d`, now+3*3600), "exp")},
		{name: "revoked", class: jtiguard.TypeAccess, want: jtiguard.ErrRevoked, reason: "revoked", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventRevoke},
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{})
				require.NoError(t, o.ver.Revoke(ctx, tok))
				return o.verify(tok)
			}},
		{name: "session ended", class: jtiguard.TypeAccess, want: jtiguard.ErrSessionEnded, reason: "session_ended", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventLogin, jtiguard.EventLogout},
			run: func(t *testing.T, o *obsFixture) error {
				p := o.login(t)
				require.NoError(t, o.sess.Logout(ctx, p.RefreshToken))
				return o.verify(p.AccessToken)
			}},
		{name: "superseded", class: jtiguard.TypeAccess, want: jtiguard.ErrSuperseded, reason: "superseded", cache: jtiguard.CacheHit,
			events: []jtiguard.EventKind{jtiguard.EventLogin, jtiguard.EventRenew},
			run: func(t *testing.T, o *obsFixture) error {
				p := o.login(t)
				np, err := o.sess.Renew(ctx, p.AccessToken, jtiguard.Change{ACR: "mfa"})
				require.NoError(t, err)
				o.seen(np.AccessToken, np.RefreshToken)
				return o.verify(p.AccessToken)
			}},
		{name: "refresh reused", class: jtiguard.TypeRefresh, want: jtiguard.ErrRefreshReused, reason: "refresh_reused", cache: jtiguard.CacheNone,
			events: []jtiguard.EventKind{jtiguard.EventLogin, jtiguard.EventRefresh, jtiguard.EventRefreshReused, jtiguard.EventFamilyRevoked},
			run: func(t *testing.T, o *obsFixture) error {
				p := o.login(t)
				np, err := o.sess.Refresh(ctx, p.RefreshToken)
				require.NoError(t, err)
				o.seen(np.AccessToken, np.RefreshToken)
				o.clock.Advance(jtiguard.DefaultRefreshGrace + time.Second)
				_, err = o.sess.Refresh(ctx, p.RefreshToken)
				return err
			}},
		{name: "access token of a reused family", class: jtiguard.TypeAccess, want: jtiguard.ErrRefreshReused, reason: "refresh_reused", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventLogin, jtiguard.EventRefresh, jtiguard.EventRefreshReused, jtiguard.EventFamilyRevoked},
			run: func(t *testing.T, o *obsFixture) error {
				p := o.login(t)
				np, err := o.sess.Refresh(ctx, p.RefreshToken)
				require.NoError(t, err)
				o.seen(np.AccessToken, np.RefreshToken)
				o.clock.Advance(jtiguard.DefaultRefreshGrace + time.Second)
				_, err = o.sess.Refresh(ctx, p.RefreshToken)
				require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
				return o.verify(np.AccessToken)
			}},
		{name: "state lost", class: jtiguard.TypeAccess, want: jtiguard.ErrStateLost, reason: "state_lost", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventStateLost},
			run: func(t *testing.T, o *obsFixture) error {
				o.faults.set(store.Lost, nil)
				return o.verify(o.access(t, jtiguard.Claims{}))
			}},
		{name: "foreign session", class: jtiguard.TypeAccess, want: jtiguard.ErrForeignSession, reason: "foreign_session", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				o.faults.set(store.Foreign, nil)
				return o.verify(o.access(t, jtiguard.Claims{}))
			}},
		{name: "store unavailable", class: jtiguard.TypeAccess, want: jtiguard.ErrStoreUnavailable, reason: "store_unavailable", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventStoreUnavailable},
			run: func(t *testing.T, o *obsFixture) error {
				o.faults.set(store.Live, errDown)
				return o.verify(o.access(t, jtiguard.Claims{}))
			}},
		{name: "store full", class: jtiguard.TypeOneTime, want: jtiguard.ErrStoreFull, reason: "store_full", cache: jtiguard.CacheNone,
			events: []jtiguard.EventKind{jtiguard.EventStoreUnavailable},
			run: func(t *testing.T, o *obsFixture) error {
				o.faults.set(store.Live, fmt.Errorf("shard at capacity: %w", jtiguard.ErrStoreFull))
				_, err := o.ver.Consume(ctx, o.oneTime(t), "confirm")
				return err
			}},
		{name: "dpop required", class: jtiguard.TypeAccess, want: jtiguard.ErrDPoPRequired, reason: "dpop_required", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventDPoPBindingRefused},
			run:    func(t *testing.T, o *obsFixture) error { return o.verify(o.access(t, jtiguard.Claims{JKT: es.jkt})) }},
		{name: "consume ok", class: jtiguard.TypeOneTime, reason: "ok", cache: jtiguard.CacheNone,
			run: func(t *testing.T, o *obsFixture) error {
				_, err := o.ver.Consume(ctx, o.oneTime(t), "confirm")
				return err
			}},
		{name: "replayed", class: jtiguard.TypeOneTime, want: jtiguard.ErrReplayed, reason: "replayed", cache: jtiguard.CacheNone,
			events: []jtiguard.EventKind{jtiguard.EventReplayRefused},
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.oneTime(t)
				_, err := o.ver.Consume(ctx, tok, "confirm")
				require.NoError(t, err)
				_, err = o.ver.Consume(ctx, tok, "confirm")
				return err
			}},
		{name: "wrong purpose", class: jtiguard.TypeOneTime, want: jtiguard.ErrWrongPurpose, reason: "wrong_purpose", cache: jtiguard.CacheNone,
			run: func(t *testing.T, o *obsFixture) error {
				_, err := o.ver.Consume(ctx, o.oneTime(t), "transfer")
				return err
			}},
		{name: "refresh ok", class: jtiguard.TypeRefresh, reason: "ok", cache: jtiguard.CacheNone,
			events: []jtiguard.EventKind{jtiguard.EventLogin, jtiguard.EventRefresh},
			run: func(t *testing.T, o *obsFixture) error {
				np, err := o.sess.Refresh(ctx, o.login(t).RefreshToken)
				if np != nil {
					o.seen(np.AccessToken, np.RefreshToken)
				}
				return err
			}},
		{name: "access token as refresh", class: jtiguard.TypeRefresh, want: jtiguard.ErrWrongTokenType, reason: "wrong_token_type", cache: jtiguard.CacheNone,
			events: []jtiguard.EventKind{jtiguard.EventLogin},
			run: func(t *testing.T, o *obsFixture) error {
				_, err := o.sess.Refresh(ctx, o.login(t).AccessToken)
				return err
			}},
		{name: "renew ok", class: jtiguard.TypeAccess, reason: "ok", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventLogin, jtiguard.EventRenew},
			run: func(t *testing.T, o *obsFixture) error {
				np, err := o.sess.Renew(ctx, o.login(t).AccessToken, jtiguard.Change{ACR: "mfa"})
				if np != nil {
					o.seen(np.AccessToken, np.RefreshToken)
				}
				return err
			}},
		{name: "step", class: jtiguard.TypeStep, reason: "ok", cache: jtiguard.CacheNone,
			events: []jtiguard.EventKind{jtiguard.EventLogin},
			run: func(t *testing.T, o *obsFixture) error {
				step, _, err := o.issuer.Step(jtiguard.Claims{Subject: "alice", Purpose: "mfa"})
				require.NoError(t, err)
				o.seen(step)
				p, err := o.sess.CompleteStep(ctx, step, "mfa", jtiguard.Login{})
				if p != nil {
					o.seen(p.AccessToken, p.RefreshToken)
				}
				return err
			}},
		{name: "dpop ok", class: jtiguard.TypeAccess, reason: "ok", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{JKT: es.jkt})
				_, err := o.dv.Verify(ctx, tok, o.proof(t, es, tok), dpopGet(tok))
				return err
			}},
		{name: "not dpop bound", class: jtiguard.TypeAccess, want: jtiguard.ErrNotDPoPBound, reason: "not_dpop_bound", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{})
				_, err := o.dv.Verify(ctx, tok, o.proof(t, es, tok), dpopGet(tok))
				return err
			}},
		{name: "dpop key mismatch", class: jtiguard.TypeAccess, want: jtiguard.ErrDPoPKeyMismatch, reason: "dpop_key_mismatch", cache: jtiguard.CacheMiss,
			events: []jtiguard.EventKind{jtiguard.EventDPoPBindingRefused},
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{JKT: es.jkt})
				_, err := o.dv.Verify(ctx, tok, o.proof(t, ed, tok), dpopGet(tok))
				return err
			}},
		{name: "dpop replayed", class: jtiguard.TypeAccess, want: jtiguard.ErrDPoPReplayed, reason: "dpop_replayed", cache: jtiguard.CacheHit,
			events: []jtiguard.EventKind{jtiguard.EventDPoPReplayRefused},
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{JKT: es.jkt})
				p := o.proof(t, es, tok)
				_, err := o.dv.Verify(ctx, tok, p, dpopGet(tok))
				require.NoError(t, err)
				_, err = o.dv.Verify(ctx, tok, p, dpopGet(tok))
				return err
			}},
		{name: "invalid dpop proof", class: jtiguard.TypeAccess, want: jtiguard.ErrInvalidDPoPProof, reason: "invalid_dpop_proof", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{JKT: es.jkt})
				p := es.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "POST", URL: "https://api.example.com/orders", AccessToken: tok}, o.clock.Now(), ""))
				o.seen(p)
				_, err := o.dv.Verify(ctx, tok, p, dpopGet(tok))
				return err
			}},
		{name: "use dpop nonce", class: jtiguard.TypeAccess, want: jtiguard.ErrUseDPoPNonce, reason: "use_dpop_nonce", cache: jtiguard.CacheMiss,
			run: func(t *testing.T, o *obsFixture) error {
				tok := o.access(t, jtiguard.Claims{JKT: es.jkt})
				_, err := o.dvNonce.Verify(ctx, tok, o.proof(t, es, tok), dpopGet(tok))
				return err
			}},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newObsFixture(t)
			err := tc.run(t, o)
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
			require.NotEmpty(t, o.rec.ver, "a verification is reported")
			v := o.rec.ver[len(o.rec.ver)-1]
			assert.Equal(t, tc.class, v.Class)
			assert.Equal(t, tc.reason, v.Reason)
			assert.Equal(t, jtiguard.Reason(err), v.Reason, "the reason of the error returned")
			assert.Equal(t, err, v.Err)
			assert.Equal(t, tc.cache, v.Cache)
			assert.False(t, v.Start.IsZero())
			assert.GreaterOrEqual(t, v.Duration, time.Duration(0))
			assert.Equal(t, tc.events, o.rec.kinds())
			assertLogged(t, o.logs.String(), o.rec.events)
			for _, c := range o.rec.calls {
				assert.False(t, c.Start.IsZero())
				assert.Contains(t, []jtiguard.StoreOp{jtiguard.StoreCheck, jtiguard.StoreConsume, jtiguard.StoreCheckConsume, jtiguard.StoreRevoke, jtiguard.StoreBegin, jtiguard.StoreRotate, jtiguard.StoreEnd}, c.Op)
			}
			assertNoToken(t, o)
			covered[v.Reason] = true
		})
	}
	t.Run("every reason of a verification is covered", func(t *testing.T) {
		// Reasons only a Guard, an endpoint or a configuration can give.
		notHere := map[string]bool{
			"wrong_client": true, "insufficient_user_authentication": true, "insufficient_scope": true,
			"invalid_request": true, "invalid_client": true, "invalid_grant": true, "unauthorized_client": true,
			"unsupported_grant_type": true, "invalid_scope": true, "invalid_token": true, "config": true,
			"invalid_key": true, "other": true,
		}
		for _, r := range jtiguard.Reasons() {
			if !notHere[r] {
				assert.True(t, covered[r], "reason %q has no case", r)
			}
		}
	})
}

// assertLogged checks that each event was logged once at its kind's level.
func assertLogged(t *testing.T, logs string, events []jtiguard.Event) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for _, e := range events {
		level := "level=" + e.Kind.Level().String()
		n := 0
		for _, l := range lines {
			if strings.Contains(l, "event="+string(e.Kind)+" ") || strings.HasSuffix(l, "event="+string(e.Kind)) {
				assert.Contains(t, l, level, "event %s", e.Kind)
				n++
			}
		}
		assert.Positive(t, n, "event %s logged", e.Kind)
	}
}

// assertNoToken checks that no token the fixture saw, nor its signature or
// payload, shows in its logs or anything its observer was given.
func assertNoToken(t *testing.T, o *obsFixture) {
	t.Helper()
	texts := append(o.rec.texts(), o.logs.String())
	o.mu.Lock()
	defer o.mu.Unlock()
	require.NotEmpty(t, o.tokens)
	for _, tok := range o.tokens {
		parts := strings.Split(tok, ".")
		needles := []string{tok}
		if len(parts) == 3 {
			needles = append(needles, parts[1], parts[2])
		}
		for _, s := range texts {
			for _, n := range needles {
				if len(n) >= 16 && strings.Contains(s, n) {
					t.Errorf("token text %.20q... reported: %.200q", n, s)
				}
			}
		}
	}
}

func TestReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{jtiguard.ErrExpired, "expired"},
		{fmt.Errorf("wrapped: %w", jtiguard.ErrRevoked), "revoked"},
		{jtiguard.ErrStoreFull, "store_full"},
		{fmt.Errorf("redis: %w", jtiguard.ErrStoreFull), "store_full"},
		{jtiguard.ErrStoreUnavailable, "store_unavailable"},
		{jtiguard.ErrDPoPReplayed, "dpop_replayed"},
		{jtiguard.OAuthError("invalid_grant", "no"), "invalid_grant"},
		{jtiguard.ErrWeakKey, "invalid_key"},
		{fmt.Errorf("%w: bad", jtiguard.ErrConfig), "config"},
		{context.Canceled, "other"},
		{errors.New("jtiguard: a made-up error"), "other"},
	} {
		assert.Equal(t, tc.want, jtiguard.Reason(tc.err), "%v", tc.err)
	}
	rs := jtiguard.Reasons()
	assert.Equal(t, "ok", rs[0])
	assert.Equal(t, "other", rs[len(rs)-1])
	seen := map[string]bool{}
	for _, r := range rs {
		assert.False(t, seen[r], "reason %q twice", r)
		seen[r] = true
		assert.Regexp(t, `^[a-z_]+$`, r)
	}
}

func TestObserverStoreCalls(t *testing.T) {
	ctx := context.Background()
	o := newObsFixture(t)
	p := o.login(t)
	np, err := o.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	o.seen(np.AccessToken, np.RefreshToken)
	_, err = o.ver.Verify(ctx, np.AccessToken)
	require.NoError(t, err)
	require.NoError(t, o.ver.Revoke(ctx, np.AccessToken))
	_, err = o.ver.Consume(ctx, o.oneTime(t), "confirm")
	require.NoError(t, err)
	require.NoError(t, o.sess.Logout(ctx, np.RefreshToken))
	n, err := o.sess.LogoutAll(ctx, "alice")
	require.NoError(t, err)
	assert.Zero(t, n)
	es := esClient(t, 42)
	tok := o.access(t, jtiguard.Claims{JKT: es.jkt})
	_, err = o.dv.Verify(ctx, tok, o.proof(t, es, tok), dpopGet(tok))
	require.NoError(t, err)
	assert.Equal(t, []jtiguard.StoreOp{
		jtiguard.StoreBegin, jtiguard.StoreRotate, jtiguard.StoreCheck, jtiguard.StoreRevoke, jtiguard.StoreConsume,
		jtiguard.StoreEnd, jtiguard.StoreEndSubject, jtiguard.StoreCheckConsume,
	}, o.rec.ops())
	for _, c := range o.rec.calls {
		assert.NoError(t, c.Err)
	}
	last := o.rec.events[len(o.rec.events)-1]
	assert.Equal(t, jtiguard.Event{Kind: jtiguard.EventLogoutAll, Subject: "alice"}, last)

	o.faults.set(store.Live, errDown)
	_, err = o.ver.Verify(ctx, o.access(t, jtiguard.Claims{}))
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	c := o.rec.calls[len(o.rec.calls)-1]
	assert.Equal(t, jtiguard.StoreCheck, c.Op)
	assert.ErrorIs(t, c.Err, errDown)
	assertNoToken(t, o)
}

func TestAuditEventFields(t *testing.T) {
	ctx := context.Background()
	o := newObsFixture(t)
	p := o.login(t)
	np, err := o.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	o.seen(np.AccessToken, np.RefreshToken)
	o.clock.Advance(jtiguard.DefaultRefreshGrace + time.Second)
	_, err = o.sess.Refresh(ctx, p.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
	sid := p.Access.Session
	base := jtiguard.Event{Subject: "alice", Session: sid, ClientID: "demo-client"}
	want := []jtiguard.Event{base, base, base, base}
	want[0].Kind, want[0].Next = jtiguard.EventLogin, p.Refresh.ID.String()
	want[1].Kind, want[1].JTI, want[1].Next = jtiguard.EventRefresh, p.Refresh.ID.String(), np.Refresh.ID.String()
	// Reuse names the token presented (the superseded one) and its family.
	want[2].Kind, want[2].JTI = jtiguard.EventRefreshReused, p.Refresh.ID.String()
	want[3].Kind, want[3].JTI = jtiguard.EventFamilyRevoked, p.Refresh.ID.String()
	assert.Equal(t, want, o.rec.events)
	assertNoToken(t, o)

	for kind, level := range map[jtiguard.EventKind]slog.Level{
		jtiguard.EventLogin: slog.LevelInfo, jtiguard.EventRefresh: slog.LevelInfo, jtiguard.EventRenew: slog.LevelInfo,
		jtiguard.EventLogout: slog.LevelInfo, jtiguard.EventLogoutAll: slog.LevelInfo, jtiguard.EventRevoke: slog.LevelInfo,
		jtiguard.EventSessionEnded:  slog.LevelInfo,
		jtiguard.EventRefreshReused: slog.LevelWarn, jtiguard.EventFamilyRevoked: slog.LevelWarn, jtiguard.EventReplayRefused: slog.LevelWarn,
		jtiguard.EventDPoPReplayRefused: slog.LevelWarn, jtiguard.EventDPoPBindingRefused: slog.LevelWarn,
		jtiguard.EventStoreUnavailable: slog.LevelWarn, jtiguard.EventStateLost: slog.LevelWarn,
		jtiguard.EventKeysFetchFailed: slog.LevelWarn, jtiguard.EventKeysExpired: slog.LevelWarn,
		"made_up": slog.LevelWarn,
	} {
		assert.Equal(t, level, kind.Level(), kind)
	}
}

// OnEvent and the Observer's Event hook see the same events, and a Logger
// at Warn gets the security events only.
func TestEventHooksAndLevels(t *testing.T) {
	ctx := context.Background()
	var onEvent []jtiguard.EventKind
	var logs bytes.Buffer
	rec := &recorder{}
	f := newFixture(t, func(c *jtiguard.VerifierConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.OnEvent = func(_ context.Context, e jtiguard.Event) { onEvent = append(onEvent, e.Kind) }
		c.Observer = rec.observer()
	})
	tok, _ := f.oneTime(t, "p")
	_, err := f.ver.Consume(ctx, tok, "p")
	require.NoError(t, err)
	_, err = f.ver.Consume(ctx, tok, "p")
	require.ErrorIs(t, err, jtiguard.ErrReplayed)
	access, _ := f.access(t)
	require.NoError(t, f.ver.Revoke(ctx, access))
	assert.Equal(t, []jtiguard.EventKind{jtiguard.EventReplayRefused, jtiguard.EventRevoke}, onEvent)
	assert.Equal(t, onEvent, rec.kinds())
	assert.Contains(t, logs.String(), "event=replay_refused")
	assert.NotContains(t, logs.String(), "event=revoke", "an audit event is below Warn")
}

func TestJoinObservers(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	j := jtiguard.JoinObservers(a.observer(), nil, &jtiguard.Observer{}, b.observer())
	j.Verified(context.Background(), jtiguard.Verification{Reason: "ok"})
	j.Event(context.Background(), jtiguard.Event{Kind: jtiguard.EventLogin})
	assert.Len(t, a.ver, 1)
	assert.Len(t, b.ver, 1)
	assert.Equal(t, a.kinds(), b.kinds())
	only := jtiguard.JoinObservers(&jtiguard.Observer{Event: func(context.Context, jtiguard.Event) {}})
	assert.Nil(t, only.Verified, "a hook no observer has stays nil")
	assert.Nil(t, only.Store)
	assert.NotNil(t, only.Event)
}

func TestCacheResultAndLabels(t *testing.T) {
	assert.Equal(t, "none", jtiguard.CacheNone.String())
	assert.Equal(t, "miss", jtiguard.CacheMiss.String())
	assert.Equal(t, "hit", jtiguard.CacheHit.String())
	assert.Equal(t, "access", jtiguard.TypeAccess.Label())
	assert.Equal(t, "one_time", jtiguard.TypeOneTime.Label())
	assert.Equal(t, "refresh", jtiguard.TypeRefresh.Label())
	assert.Equal(t, "step", jtiguard.TypeStep.Label())
	assert.Equal(t, "invalid", jtiguard.TokenType(0).Label())
}

// A Verifier without an Observer reads no clock for it: its hot path
// allocates nothing more than before.
func TestNoObserverAllocatesNothing(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.access(t)
	ctx := context.Background()
	_, err := f.ver.Verify(ctx, tok)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() { _, _ = f.ver.Verify(ctx, tok) })
	assert.Zero(t, allocs)
}
