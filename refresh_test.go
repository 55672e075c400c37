package jtiguard_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/store"
)

// sessionFixture is a fixture with Sessions on its store, and the security
// events it reported.
type sessionFixture struct {
	*fixture
	sess   *jtiguard.Sessions
	mu     sync.Mutex
	events []jtiguard.Event
	logs   *bytes.Buffer
}

func newSessions(t *testing.T, cfg jtiguard.SessionConfig, vcfg ...func(*jtiguard.VerifierConfig)) *sessionFixture {
	t.Helper()
	sf := &sessionFixture{logs: &bytes.Buffer{}}
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: sf.logs}, nil))
	vcfg = append(vcfg, func(c *jtiguard.VerifierConfig) {
		c.Logger = logger
		c.OnEvent = func(_ context.Context, e jtiguard.Event) {
			sf.mu.Lock()
			sf.events = append(sf.events, e)
			sf.mu.Unlock()
		}
	})
	sf.fixture = newFixture(t, vcfg...)
	var err error
	sf.sess, err = jtiguard.NewSessions(sf.issuer, sf.ver, cfg)
	require.NoError(t, err)
	return sf
}

// securityKinds returns the kinds of the security events reported: those
// logged at warning level.
func (sf *sessionFixture) securityKinds() []jtiguard.EventKind {
	var kinds []jtiguard.EventKind
	for _, k := range sf.eventKinds() {
		if k.Level() >= slog.LevelWarn {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

func (sf *sessionFixture) eventKinds() []jtiguard.EventKind {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	var kinds []jtiguard.EventKind
	for _, e := range sf.events {
		kinds = append(kinds, e.Kind)
	}
	return kinds
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (sf *sessionFixture) login(t *testing.T, subject string) *jtiguard.TokenPair {
	t.Helper()
	p, err := sf.sess.Login(context.Background(), jtiguard.Login{Subject: subject, ClientID: "demo-client", Scope: "read", ACR: "pwd", AMR: []string{"pwd"}})
	require.NoError(t, err)
	return p
}

func TestLoginRefreshVerify(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	p := sf.login(t, "alice")
	c, err := sf.ver.Verify(ctx, p.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, "alice", c.Subject)
	assert.Equal(t, p.Access.Session, c.Session)
	assert.EqualValues(t, 1, c.Generation)
	assert.Equal(t, "pwd", c.ACR)
	assert.Equal(t, []string{testIssuer}, p.Refresh.Audience, "a refresh token's audience is the issuer itself")

	sf.clock.Advance(time.Minute)
	p2, err := sf.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	assert.Equal(t, p.Access.Session, p2.Access.Session, "rotation keeps the family")
	assert.NotEqual(t, p.Refresh.ID, p2.Refresh.ID)
	_, err = sf.ver.Verify(ctx, p2.AccessToken)
	require.NoError(t, err)
	_, err = sf.ver.Verify(ctx, p.AccessToken)
	require.NoError(t, err, "rotation alone does not kill the family's earlier access tokens")
	assert.NotContains(t, sf.logs.String(), p.RefreshToken)
}

func TestConcurrentRefreshWithoutGrace(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{RefreshGrace: -1})
	ctx := context.Background()
	p := sf.login(t, "alice")
	const n = 100
	var mu sync.Mutex
	var wins []*jtiguard.TokenPair
	reused, other := 0, 0
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			np, err := sf.sess.Refresh(ctx, p.RefreshToken)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, np)
			case assert.ErrorIs(t, err, jtiguard.ErrRefreshReused):
				reused++
			default:
				other++
			}
		})
	}
	close(start)
	wg.Wait()
	require.Len(t, wins, 1, "exactly one refresh wins")
	assert.Equal(t, n-1, reused)
	assert.Zero(t, other)

	// The family is dead for all 100 clients, the winner included.
	for _, tok := range []string{p.AccessToken, wins[0].AccessToken} {
		_, err := sf.ver.Verify(ctx, tok)
		assert.ErrorIs(t, err, jtiguard.ErrRefreshReused)
	}
	_, err := sf.sess.Refresh(ctx, wins[0].RefreshToken)
	assert.ErrorIs(t, err, jtiguard.ErrRefreshReused)
	assert.Contains(t, sf.eventKinds(), jtiguard.EventRefreshReused)
	assert.Contains(t, sf.eventKinds(), jtiguard.EventFamilyRevoked)
	assert.NotContains(t, sf.logs.String(), p.RefreshToken, "logs never hold a token")
	assert.Contains(t, sf.logs.String(), p.Access.Session, "logs name the sid")
}

func TestConcurrentRefreshWithGrace(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{RefreshGrace: 30 * time.Second})
	ctx := context.Background()
	p := sf.login(t, "alice")
	const n = 100
	results := make([]*jtiguard.TokenPair, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			np, err := sf.sess.Refresh(ctx, p.RefreshToken)
			if assert.NoError(t, err) {
				results[i] = np
			}
		})
	}
	close(start)
	wg.Wait()
	for _, r := range results {
		require.NotNil(t, r)
		assert.Equal(t, results[0].RefreshToken, r.RefreshToken, "within grace every client gets the same successor")
	}
	_, err := sf.ver.Verify(ctx, results[0].AccessToken)
	require.NoError(t, err, "the family lives")
	_, err = sf.sess.Refresh(ctx, results[0].RefreshToken)
	require.NoError(t, err)
	assert.Empty(t, sf.securityKinds(), "no security event")
}

func TestReplayOfRotatedRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
		wait  time.Duration
		older bool
	}{
		{"no grace", -1, 0, false},
		{"after the default grace window", 0, 11 * time.Second, false},
		{"second-to-last within grace", 10 * time.Second, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf := newSessions(t, jtiguard.SessionConfig{RefreshGrace: tc.grace})
			ctx := context.Background()
			p1 := sf.login(t, "alice")
			p2, err := sf.sess.Refresh(ctx, p1.RefreshToken)
			require.NoError(t, err)
			replayed := p1.RefreshToken
			latest := p2
			if tc.older {
				latest, err = sf.sess.Refresh(ctx, p2.RefreshToken)
				require.NoError(t, err)
			}
			sf.clock.Advance(tc.wait)
			_, err = sf.sess.Refresh(ctx, replayed)
			require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
			for _, tok := range []string{p1.AccessToken, p2.AccessToken, latest.AccessToken} {
				_, err := sf.ver.Verify(ctx, tok)
				assert.ErrorIs(t, err, jtiguard.ErrRefreshReused, "outstanding access tokens die with the family")
			}
		})
	}
}

func TestStepUpInvalidatesEarlierTokens(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{}, func(c *jtiguard.VerifierConfig) { c.ACRLevels = []string{"pwd", "mfa", "hwk"} })
	ctx := context.Background()
	before := sf.login(t, "alice")
	c, err := sf.ver.Verify(ctx, before.AccessToken)
	require.NoError(t, err)

	adminRoute := jtiguard.Requirement{ACR: "mfa", MaxAge: 10 * time.Minute}
	err = sf.ver.Require(&c, adminRoute)
	require.ErrorIs(t, err, jtiguard.ErrInsufficientAuth)
	assert.NotErrorIs(t, err, jtiguard.ErrInvalidToken, "the token is valid, only not enough")
	var e *jtiguard.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusUnauthorized, e.Status)
	assert.Equal(t, "insufficient_user_authentication", e.Code)
	assert.Equal(t, "mfa hwk", e.ACRValues)
	assert.Equal(t, 10*time.Minute, e.MaxAge)

	sf.clock.Advance(time.Minute)
	after, err := sf.sess.Renew(ctx, before.AccessToken, jtiguard.Change{ACR: "mfa", AMR: []string{"pwd", "otp"}})
	require.NoError(t, err)
	assert.Equal(t, before.Access.Session, after.Access.Session)
	assert.EqualValues(t, 2, after.Access.Generation)

	for name, tok := range map[string]string{"access": before.AccessToken} {
		_, err := sf.ver.Verify(ctx, tok)
		assert.ErrorIs(t, err, jtiguard.ErrSuperseded, name+" token from before MFA")
	}
	_, err = sf.sess.Refresh(ctx, before.RefreshToken)
	assert.ErrorIs(t, err, jtiguard.ErrRefreshReused, "a refresh token from before MFA is superseded: presenting it is reuse")
	_, err = sf.ver.Verify(ctx, after.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrRefreshReused, "reuse revokes the family, its new generation included")
	assert.Contains(t, sf.eventKinds(), jtiguard.EventRefreshReused, "and is reported as reuse")

	// That reuse killed the family: step up again on a fresh login.
	before = sf.login(t, "alice")
	after, err = sf.sess.Renew(ctx, before.AccessToken, jtiguard.Change{ACR: "mfa"})
	require.NoError(t, err)
	c, err = sf.ver.Verify(ctx, after.AccessToken)
	require.NoError(t, err)
	require.NoError(t, sf.ver.Require(&c, adminRoute), "the post-MFA token meets the route")
	require.NoError(t, sf.ver.Require(&c, jtiguard.Requirement{ACR: "pwd"}), "a higher level meets a lower requirement")
	require.ErrorIs(t, sf.ver.Require(&c, jtiguard.Requirement{ACR: "hwk"}), jtiguard.ErrInsufficientAuth)

	sf.clock.Advance(11 * time.Minute)
	p3, err := sf.sess.Refresh(ctx, after.RefreshToken)
	require.NoError(t, err)
	c, err = sf.ver.Verify(ctx, p3.AccessToken)
	require.NoError(t, err)
	assert.ErrorIs(t, sf.ver.Require(&c, adminRoute), jtiguard.ErrInsufficientAuth, "max auth age: refreshing does not make authentication recent")

	_, err = sf.sess.Renew(ctx, p3.AccessToken, jtiguard.Change{ACR: "mfa"})
	require.NoError(t, err)
	_, err = sf.sess.Renew(ctx, p3.AccessToken, jtiguard.Change{ACR: "mfa"})
	assert.ErrorIs(t, err, jtiguard.ErrSuperseded, "a second change from the same generation loses")
}

func TestRequireScope(t *testing.T) {
	f := newFixture(t)
	_, c := f.access(t) // scope "read write"
	require.NoError(t, f.ver.Require(c, jtiguard.Requirement{Scopes: []string{"read"}}))
	err := f.ver.Require(c, jtiguard.Requirement{Scopes: []string{"read", "admin"}})
	require.ErrorIs(t, err, jtiguard.ErrInsufficientScope)
	var e *jtiguard.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, http.StatusForbidden, e.Status)
	assert.Equal(t, "insufficient_scope", e.Code)
	assert.Equal(t, "read admin", e.Scope)
	err = f.ver.Require(c, jtiguard.Requirement{ACR: "mfa"})
	require.ErrorIs(t, err, jtiguard.ErrInsufficientAuth, "without levels an acr must match exactly")
}

func TestLoginEndsPresentedSession(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	anon := sf.login(t, "anonymous")
	seen := map[string]bool{anon.Access.Session: true}
	p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Previous: anon.RefreshToken})
	require.NoError(t, err)
	assert.False(t, seen[p.Access.Session], "login starts a new family")
	_, err = sf.ver.Verify(ctx, anon.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrSessionEnded, "the pre-login family is ended")
	_, err = sf.sess.Refresh(ctx, anon.RefreshToken)
	assert.ErrorIs(t, err, jtiguard.ErrSessionEnded)

	for range 100 {
		p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Previous: "garbage"})
		require.NoError(t, err, "a bogus presented token is ignored, not trusted")
		require.False(t, seen[p.Access.Session], "sids never repeat")
		seen[p.Access.Session] = true
	}
}

func TestTokenClassesNeverStandIn(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	pair := sf.login(t, "alice")
	step, _, err := sf.issuer.Step(jtiguard.Claims{Subject: "alice", Purpose: "mfa"})
	require.NoError(t, err)
	once, _ := sf.oneTime(t, "confirm-transfer")

	use := map[string]func(string) error{
		"Verify":  func(tok string) error { _, err := sf.ver.Verify(ctx, tok); return err },
		"Refresh": func(tok string) error { _, err := sf.sess.Refresh(ctx, tok); return err },
		"Consume": func(tok string) error { _, err := sf.ver.Consume(ctx, tok, "confirm-transfer"); return err },
		"CompleteStep": func(tok string) error {
			_, err := sf.sess.CompleteStep(ctx, tok, "mfa", jtiguard.Login{ACR: "mfa"})
			return err
		},
	}
	tokens := map[string]string{"Verify": pair.AccessToken, "Refresh": pair.RefreshToken, "Consume": once, "CompleteStep": step}
	for tokName, tok := range tokens {
		for useName, fn := range use {
			if useName == tokName {
				continue
			}
			assert.ErrorIs(t, fn(tok), jtiguard.ErrWrongTokenType, "%s token used for %s", tokName, useName)
		}
	}
	_, err = sf.sess.CompleteStep(ctx, step, "password-reset", jtiguard.Login{})
	assert.ErrorIs(t, err, jtiguard.ErrWrongPurpose, "a step token serves its step only")
	for useName, fn := range use {
		assert.NoError(t, fn(tokens[useName]), useName)
	}
	_, err = sf.sess.CompleteStep(ctx, step, "mfa", jtiguard.Login{ACR: "mfa"})
	assert.ErrorIs(t, err, jtiguard.ErrReplayed, "a step token works once")
	assert.Contains(t, sf.eventKinds(), jtiguard.EventReplayRefused)
}

func TestCompleteStepStartsNewFamily(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	step, sc, err := sf.issuer.Step(jtiguard.Claims{Subject: "alice", Purpose: "mfa"})
	require.NoError(t, err)
	p, err := sf.sess.CompleteStep(ctx, step, "mfa", jtiguard.Login{ACR: "mfa", AMR: []string{"pwd", "otp"}})
	require.NoError(t, err)
	assert.Equal(t, "alice", p.Access.Subject)
	assert.Equal(t, "mfa", p.Access.ACR)
	assert.NotEqual(t, sc.ID.String(), p.Access.Session, "the step token's identity is not carried over")
	_, err = sf.sess.CompleteStep(ctx, step, "mfa", jtiguard.Login{Subject: "mallory"})
	assert.Error(t, err)
}

func TestSessionLifetimes(t *testing.T) {
	t.Run("absolute", func(t *testing.T) {
		sf := newSessions(t, jtiguard.SessionConfig{Lifetime: time.Hour, IdleTimeout: 10 * time.Minute})
		ctx := context.Background()
		p := sf.login(t, "alice")
		end := p.Refresh.IssuedAt.Add(time.Hour)
		rotations := 0
		for {
			sf.clock.Advance(time.Minute)
			np, err := sf.sess.Refresh(ctx, p.RefreshToken)
			if err != nil {
				assert.False(t, sf.clock.Now().Before(end), "refused only at the absolute end")
				assert.ErrorIs(t, err, jtiguard.ErrExpired, "the last refresh token expires at the absolute end")
				break
			}
			assert.False(t, np.Refresh.ExpiresAt.After(end), "rotation never extends the family")
			assert.False(t, np.Access.ExpiresAt.After(end), "nor does an access token outlive it")
			p = np
			rotations++
			require.Less(t, rotations, 120)
		}
		assert.Equal(t, 59, rotations)
		_, err := sf.ver.Verify(ctx, p.AccessToken)
		assert.Error(t, err)
	})
	t.Run("idle", func(t *testing.T) {
		sf := newSessions(t, jtiguard.SessionConfig{Lifetime: time.Hour, IdleTimeout: 10 * time.Minute})
		ctx := context.Background()
		p := sf.login(t, "alice")
		for range 3 {
			sf.clock.Advance(9 * time.Minute)
			np, err := sf.sess.Refresh(ctx, p.RefreshToken)
			require.NoError(t, err, "refreshing within the idle timeout keeps the family")
			p = np
		}
		sf.clock.Advance(4 * time.Minute)
		_, err := sf.ver.Verify(ctx, p.AccessToken)
		require.NoError(t, err)
		sf.clock.Advance(6 * time.Minute)
		_, err = sf.sess.Refresh(ctx, p.RefreshToken)
		assert.ErrorIs(t, err, jtiguard.ErrExpired, "idle for the timeout: the refresh token has expired")
	})
}

func TestLogoutAndLogoutAll(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	var alice []*jtiguard.TokenPair
	for range 3 {
		alice = append(alice, sf.login(t, "alice"))
	}
	bob := sf.login(t, "bob")
	n, err := sf.sess.LogoutAll(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	for _, p := range alice {
		_, err := sf.ver.Verify(ctx, p.AccessToken)
		assert.ErrorIs(t, err, jtiguard.ErrSessionEnded)
		_, err = sf.sess.Refresh(ctx, p.RefreshToken)
		assert.ErrorIs(t, err, jtiguard.ErrSessionEnded)
	}
	_, err = sf.ver.Verify(ctx, bob.AccessToken)
	require.NoError(t, err, "another subject is unaffected")

	require.NoError(t, sf.sess.Logout(ctx, bob.AccessToken))
	_, err = sf.ver.Verify(ctx, bob.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrSessionEnded)
	_, err = sf.sess.Refresh(ctx, bob.RefreshToken)
	assert.ErrorIs(t, err, jtiguard.ErrSessionEnded)
}

func TestRevokeByToken(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	p := sf.login(t, "alice")
	require.NoError(t, sf.ver.Revoke(ctx, p.AccessToken))
	_, err := sf.ver.Verify(ctx, p.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrRevoked, "revoking an access token denylists its jti")
	p2, err := sf.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err, "and leaves the family alive")

	require.NoError(t, sf.ver.Revoke(ctx, p2.RefreshToken))
	_, err = sf.ver.Verify(ctx, p2.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrSessionEnded, "revoking a refresh token ends its family")
	assert.Contains(t, sf.eventKinds(), jtiguard.EventRevoke)
	assert.NotContains(t, sf.eventKinds(), jtiguard.EventFamilyRevoked, "a revocation is no reuse")
	assert.Error(t, sf.ver.Revoke(ctx, "not-a-token"))
}

func TestSessionsFailClosed(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	p := sf.login(t, "alice")
	done, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := sf.sess.Refresh(done, p.RefreshToken)
	assertUnavailable(t, err, context.Canceled)
	_, err = sf.sess.Login(done, jtiguard.Login{Subject: "alice"})
	assertUnavailable(t, err, context.Canceled)
	_, err = sf.sess.LogoutAll(done, "alice")
	assertUnavailable(t, err, context.Canceled)
	assert.Contains(t, sf.eventKinds(), jtiguard.EventStoreUnavailable)
	// Nothing changed: the refresh token still works once the store answers.
	_, err = sf.sess.Refresh(context.Background(), p.RefreshToken)
	require.NoError(t, err)
}

func TestSessionMemoryReturnsAfterExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 10k families")
	}
	// A fixture that keeps no event: 10k login events would be memory
	// that never returns.
	sf := &sessionFixture{fixture: newFixture(t, func(c *jtiguard.VerifierConfig) { c.CacheSize = -1 })}
	var err error
	sf.sess, err = jtiguard.NewSessions(sf.issuer, sf.ver, jtiguard.SessionConfig{Lifetime: time.Hour, IdleTimeout: 30 * time.Minute, MaxSessions: -1})
	require.NoError(t, err)
	ctx := context.Background()
	base := heapAlloc()
	const n = 10_000
	for i := range n {
		_, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "user" + string(rune('a'+i%26))})
		require.NoError(t, err)
	}
	full := heapAlloc()
	require.Equal(t, n, sf.store.Len())
	t.Logf("%d families: %.0f B/family", n, float64(full-base)/n)
	sf.clock.Advance(31 * time.Minute)
	assert.Equal(t, 0, sf.store.Sweep())
	after := heapAlloc()
	t.Logf("after expiry: %d B above baseline (was %d)", int64(after)-int64(base), full-base)
	assert.Less(t, int64(after)-int64(base), int64(full-base)/10, "memory returns once families expire")
	n2, err := sf.sess.LogoutAll(ctx, "usera")
	require.NoError(t, err)
	assert.Zero(t, n2, "the subject index forgot expired families too")
}

func TestRevokeIDOfSessionTokens(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	p := sf.login(t, "alice")
	// An operator revokes by what the logs show: jti, subject and expiry.
	require.NoError(t, sf.ver.RevokeID(ctx, p.Access.ID, p.Access.Subject, p.Access.ExpiresAt))
	_, err := sf.ver.Verify(ctx, p.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrRevoked)

	// A refresh token revoked by id mints no successor (it used to rotate).
	require.NoError(t, sf.ver.RevokeID(ctx, p.Refresh.ID, p.Refresh.Subject, p.Refresh.ExpiresAt))
	_, err = sf.sess.Refresh(ctx, p.RefreshToken)
	assert.ErrorIs(t, err, jtiguard.ErrRevoked)

	// A revoked access token cannot step up either.
	q := sf.login(t, "alice")
	require.NoError(t, sf.ver.RevokeID(ctx, q.Access.ID, "alice", q.Access.ExpiresAt))
	_, err = sf.sess.Renew(ctx, q.AccessToken, jtiguard.Change{ACR: "mfa"})
	assert.ErrorIs(t, err, jtiguard.ErrRevoked)
	_, err = sf.sess.Refresh(ctx, q.RefreshToken)
	require.NoError(t, err, "the family itself lives on")

	assert.ErrorIs(t, sf.ver.RevokeID(ctx, p.Access.ID, "", p.Access.ExpiresAt), jtiguard.ErrConfig)
	assert.ErrorIs(t, sf.ver.RevokeID(ctx, jtiguard.JTI{}, "alice", p.Access.ExpiresAt), jtiguard.ErrConfig)
}

// TestForeignStoreSaysSo: a resource server that verifies the issuer's
// session tokens with a store of its own is told what is wrong, rather
// than that the session ended.
func TestForeignStoreSaysSo(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	p := sf.login(t, "alice")
	rs, err := jtiguard.NewVerifier(sf.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Now: sf.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(rs.Close)
	_, err = rs.Verify(context.Background(), p.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrForeignSession)
	assert.Contains(t, err.Error(), "issuer's store")

	// The issuer's own store, once it holds sessions, says "ended" for a
	// family it no longer has.
	require.NoError(t, sf.sess.Logout(context.Background(), p.AccessToken))
	_, err = sf.ver.Verify(context.Background(), p.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
}

// TestOneClock: a fake clock given to one part of a deployment and not to
// another is refused at construction, with a clear error, instead of
// making every token fail later as issued before the store.
func TestOneClock(t *testing.T) {
	f := newFixture(t) // everything on the fixture's clock, days before now
	realStore, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
	require.NoError(t, err)
	_, err = jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: realStore, Now: f.clock.Now})
	require.ErrorIs(t, err, jtiguard.ErrConfig)
	assert.Contains(t, err.Error(), "same Now")

	realIssuer, err := jtiguard.NewIssuer(f.keys, jtiguard.IssuerConfig{Issuer: testIssuer})
	require.NoError(t, err)
	_, err = jtiguard.NewSessions(realIssuer, f.ver, jtiguard.SessionConfig{})
	require.ErrorIs(t, err, jtiguard.ErrConfig)

	_, err = jtiguard.NewSessions(f.issuer, f.ver, jtiguard.SessionConfig{})
	require.NoError(t, err, "one clock everywhere")
}

// recordingStore records the families begun and rotations run on a
// MemoryStore.
type recordingStore struct {
	*jtiguard.MemoryStore
	mu        sync.Mutex
	families  []store.Family
	rotations []store.Rotation
}

func (r *recordingStore) Begin(ctx context.Context, f store.Family) error {
	r.mu.Lock()
	r.families = append(r.families, f)
	r.mu.Unlock()
	return r.MemoryStore.Begin(ctx, f)
}

func (r *recordingStore) Rotate(ctx context.Context, rot store.Rotation) (store.Rotated, error) {
	r.mu.Lock()
	r.rotations = append(r.rotations, rot)
	r.mu.Unlock()
	return r.MemoryStore.Rotate(ctx, rot)
}

func TestLoginRecordsDevice(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		limit int
	}{{"default", 0, jtiguard.DefaultMaxSessions}, {"set", 3, 3}, {"no cap", -1, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			var rec *recordingStore
			sf := newSessions(t, jtiguard.SessionConfig{MaxSessions: tc.max}, func(c *jtiguard.VerifierConfig) {
				rec = &recordingStore{MemoryStore: c.Store.(*jtiguard.MemoryStore)}
				c.Store = rec
			})
			ctx := context.Background()
			dev := jtiguard.Device{Label: "Firefox on Linux", IP: "203.0.113.0/24"}
			p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", ClientID: "demo-client", ACR: "pwd", Device: dev})
			require.NoError(t, err)
			require.Len(t, rec.families, 1)
			f := rec.families[0]
			assert.Equal(t, p.Access.Session, f.ID.String())
			assert.Equal(t, t0, f.Created)
			assert.Equal(t, "demo-client", f.ClientID)
			assert.Equal(t, "pwd", f.ACR)
			assert.Equal(t, dev, f.Device)
			assert.Equal(t, tc.limit, f.Limit)

			_, err = sf.sess.Renew(ctx, p.AccessToken, jtiguard.Change{ACR: "mfa"})
			require.NoError(t, err)
			require.Len(t, rec.rotations, 1)
			assert.Equal(t, "mfa", rec.rotations[0].ACR)
		})
	}
}

func TestLoginRefusesLongDevice(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	long := strings.Repeat("x", jtiguard.MaxDeviceField+1)
	for _, d := range []jtiguard.Device{{Label: long}, {IP: long}} {
		_, err := sf.sess.Login(context.Background(), jtiguard.Login{Subject: "alice", Device: d})
		require.ErrorIs(t, err, jtiguard.ErrConfig)
	}
	_, err := sf.sess.Login(context.Background(), jtiguard.Login{Subject: "alice", Device: jtiguard.Device{Label: long[1:], IP: long[1:]}})
	require.NoError(t, err)
}
