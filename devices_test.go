package jtiguard_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/store"
)

func (sf *sessionFixture) loginFrom(t *testing.T, subject string, d jtiguard.Device) *jtiguard.TokenPair {
	t.Helper()
	p, err := sf.sess.Login(context.Background(), jtiguard.Login{Subject: subject, ClientID: "web", ACR: "pwd", Device: d})
	require.NoError(t, err)
	return p
}

// listAll reads every page of subject's sessions, limit at a time.
func listAll(t *testing.T, s *jtiguard.Sessions, subject string, limit int) []jtiguard.SessionInfo {
	t.Helper()
	var all []jtiguard.SessionInfo
	cursor := ""
	for range 1000 {
		page, err := s.List(context.Background(), subject, cursor, limit)
		require.NoError(t, err)
		most := limit
		if limit <= 0 {
			most = jtiguard.DefaultSessionPage
		}
		require.LessOrEqual(t, len(page.Sessions), most)
		all = append(all, page.Sessions...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
	t.Fatal("no last page")
	return nil
}

func sessionIDs(ss []jtiguard.SessionInfo) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestListSessions(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{Lifetime: 30 * 24 * time.Hour, IdleTimeout: 24 * time.Hour})
	ctx := context.Background()
	laptop := sf.loginFrom(t, "alice", jtiguard.Device{Label: "Firefox on Linux", IP: "203.0.113.0/24"})
	sf.clock.Advance(time.Minute)
	phone := sf.loginFrom(t, "alice", jtiguard.Device{Label: "Safari on iOS", IP: "2001:db8:1::/48"})
	sf.clock.Advance(time.Minute)
	sf.loginFrom(t, "bob", jtiguard.Device{Label: "curl"})

	all := listAll(t, sf.sess, "alice", 0)
	require.Len(t, all, 2)
	assert.Equal(t, []string{laptop.Access.Session, phone.Access.Session}, sessionIDs(all), "oldest first")
	l := all[0]
	assert.Equal(t, jtiguard.Device{Label: "Firefox on Linux", IP: "203.0.113.0/24"}, l.Device)
	assert.Equal(t, "web", l.ClientID)
	assert.Equal(t, "pwd", l.ACR)
	assert.True(t, l.Created.Equal(t0), "created %v", l.Created)
	assert.True(t, l.Refreshed.Equal(t0), "never refreshed: Refreshed is Created")
	assert.True(t, l.ExpiresAt.Equal(t0.Add(24*time.Hour)), "the idle timeout comes first: %v", l.ExpiresAt)

	// A refresh moves Refreshed and the idle end; a step-up the ACR.
	sf.clock.Advance(time.Hour)
	p2, err := sf.sess.Refresh(ctx, laptop.RefreshToken)
	require.NoError(t, err)
	_, err = sf.sess.Renew(ctx, p2.AccessToken, jtiguard.Change{ACR: "mfa"})
	require.NoError(t, err)
	l = listAll(t, sf.sess, "alice", 1)[0]
	assert.True(t, l.Refreshed.Equal(sf.clock.Now()), "refreshed %v", l.Refreshed)
	assert.True(t, l.Created.Equal(t0))
	assert.Equal(t, "mfa", l.ACR)
	assert.True(t, l.ExpiresAt.Equal(sf.clock.Now().Add(24*time.Hour)))

	// Pages of one, and the limit's bounds.
	assert.Equal(t, sessionIDs(all), sessionIDs(listAll(t, sf.sess, "alice", 1)))
	page, err := sf.sess.List(ctx, "alice", "", jtiguard.MaxSessionPage+1)
	require.NoError(t, err)
	assert.Len(t, page.Sessions, 2)
	assert.Empty(t, page.Next)

	// Logged out, it is no longer listed.
	require.NoError(t, sf.sess.Logout(ctx, phone.AccessToken))
	assert.Equal(t, []string{laptop.Access.Session}, sessionIDs(listAll(t, sf.sess, "alice", 10)))
	assert.Empty(t, listAll(t, sf.sess, "nobody", 10))
}

// TestEndSession: the owner ends a device and its access token is refused
// at once; another subject cannot end it and learns nothing.
func TestEndSession(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	laptop := sf.loginFrom(t, "alice", jtiguard.Device{Label: "laptop"})
	phone := sf.loginFrom(t, "alice", jtiguard.Device{Label: "phone"})
	mallory := sf.loginFrom(t, "mallory", jtiguard.Device{Label: "evil"})

	// Mallory ends Alice's phone: answered as any sid, nothing ended.
	require.NoError(t, sf.sess.EndSession(ctx, "mallory", phone.Access.Session))
	unknown, err := store.NewJTI(nil)
	require.NoError(t, err)
	require.NoError(t, sf.sess.EndSession(ctx, "mallory", unknown.String()), "an unknown sid: the same answer")
	require.NoError(t, sf.sess.EndSession(ctx, "mallory", mallory.Access.Session))
	_, err = sf.ver.Verify(ctx, phone.AccessToken)
	require.NoError(t, err, "another subject cannot end it")
	assert.Len(t, listAll(t, sf.sess, "alice", 10), 2)

	require.NoError(t, sf.sess.EndSession(ctx, "alice", phone.Access.Session))
	_, err = sf.ver.Verify(ctx, phone.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded, "its access token is refused at once")
	_, err = sf.sess.Refresh(ctx, phone.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
	_, err = sf.ver.Verify(ctx, laptop.AccessToken)
	require.NoError(t, err)
	require.NoError(t, sf.sess.EndSession(ctx, "alice", phone.Access.Session), "idempotent")
	assert.Equal(t, []string{laptop.Access.Session}, sessionIDs(listAll(t, sf.sess, "alice", 10)))

	require.ErrorIs(t, sf.sess.EndSession(ctx, "alice", "not a sid"), jtiguard.ErrInvalidJTI)
	require.ErrorIs(t, sf.sess.EndSession(ctx, "", phone.Access.Session), jtiguard.ErrConfig)
	assert.Contains(t, sf.eventKinds(), jtiguard.EventSessionEnded)
}

func TestEndOthers(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	laptop := sf.loginFrom(t, "alice", jtiguard.Device{Label: "laptop"})
	phone := sf.loginFrom(t, "alice", jtiguard.Device{Label: "phone"})
	tablet := sf.loginFrom(t, "alice", jtiguard.Device{Label: "tablet"})
	bob := sf.loginFrom(t, "bob", jtiguard.Device{})

	n, err := sf.sess.EndOthers(ctx, laptop.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	_, err = sf.ver.Verify(ctx, laptop.AccessToken)
	require.NoError(t, err, "the current session stays")
	for _, p := range []*jtiguard.TokenPair{phone, tablet} {
		_, err = sf.ver.Verify(ctx, p.AccessToken)
		require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
	}
	_, err = sf.ver.Verify(ctx, bob.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, []string{laptop.Access.Session}, sessionIDs(listAll(t, sf.sess, "alice", 10)))

	// An ended session's token ends nothing: it is verified in full.
	_, err = sf.sess.EndOthers(ctx, phone.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
	// So is a revoked one, and a refresh token is not an access token.
	require.NoError(t, sf.ver.Revoke(ctx, laptop.AccessToken))
	_, err = sf.sess.EndOthers(ctx, laptop.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
	_, err = sf.sess.EndOthers(ctx, laptop.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrWrongTokenType)
	// A token of no session has no current session to keep.
	plain, _ := sf.access(t)
	_, err = sf.sess.EndOthers(ctx, plain)
	require.ErrorIs(t, err, jtiguard.ErrConfig)

	var ended *jtiguard.Event
	sf.mu.Lock()
	for _, e := range sf.events {
		if e.Kind == jtiguard.EventSessionEnded {
			ended = &e
		}
	}
	sf.mu.Unlock()
	require.NotNil(t, ended)
	assert.Equal(t, laptop.Access.Session, ended.Session)
	assert.Equal(t, 2, ended.Count)
}

// TestMaxSessions: a login beyond the cap ends the subject's oldest
// session, whose access token is refused at once.
func TestMaxSessions(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{MaxSessions: 2})
	ctx := context.Background()
	var pairs []*jtiguard.TokenPair
	for i := range 3 {
		pairs = append(pairs, sf.loginFrom(t, "alice", jtiguard.Device{Label: fmt.Sprint(i)}))
		sf.clock.Advance(time.Second)
	}
	_, err := sf.ver.Verify(ctx, pairs[0].AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
	for _, p := range pairs[1:] {
		_, err = sf.ver.Verify(ctx, p.AccessToken)
		require.NoError(t, err)
	}
	assert.Equal(t, []string{pairs[1].Access.Session, pairs[2].Access.Session}, sessionIDs(listAll(t, sf.sess, "alice", 10)))
}

// TestDevicesConcurrent: logins, ends and end-others of one subject at
// once through Sessions leave the list and the tokens in agreement.
func TestDevicesConcurrent(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{MaxSessions: -1})
	ctx := context.Background()
	pairs := make([]*jtiguard.TokenPair, 300)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 1000 {
		wg.Go(func() {
			<-start
			if i < len(pairs) {
				p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
				assert.NoError(t, err)
				mu.Lock()
				pairs[i] = p
				mu.Unlock()
				return
			}
			mu.Lock()
			p := pairs[i%len(pairs)]
			mu.Unlock()
			if p == nil {
				return // not logged in yet
			}
			if i%25 == 0 {
				_, err := sf.sess.EndOthers(ctx, p.AccessToken)
				if err != nil {
					assert.ErrorIs(t, err, jtiguard.ErrSessionEnded)
				}
				return
			}
			assert.NoError(t, sf.sess.EndSession(ctx, "alice", p.Access.Session))
		})
	}
	close(start)
	wg.Wait()
	listed := map[string]bool{}
	for _, s := range listAll(t, sf.sess, "alice", 7) {
		listed[s.ID] = true
	}
	live := 0
	for _, p := range pairs {
		_, err := sf.ver.Verify(ctx, p.AccessToken)
		if err == nil {
			live++
		} else {
			require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
		}
		assert.Equal(t, err == nil, listed[p.Access.Session], "session %s: verify %v, listed %v", p.Access.Session, err, listed[p.Access.Session])
	}
	assert.Len(t, listed, live)
}

// notListing is a session store that cannot list sessions.
type notListing struct {
	store.Store
	store.SessionStore
}

func TestDevicesNeedADeviceStore(t *testing.T) {
	f := newFixture(t)
	ver, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: notListing{f.store, f.store}, Now: f.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	sess, err := jtiguard.NewSessions(f.issuer, ver, jtiguard.SessionConfig{})
	require.NoError(t, err)
	ctx := context.Background()
	p, err := sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	_, err = sess.List(ctx, "alice", "", 0)
	require.ErrorIs(t, err, jtiguard.ErrConfig)
	_, err = sess.EndOthers(ctx, p.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrConfig)
	// Ending one session needs no listing.
	require.NoError(t, sess.EndSession(ctx, "alice", p.Access.Session))
	_, err = ver.Verify(ctx, p.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
}

// A "signed-in devices" page: the user's sessions with what Login kept of
// each device, a button to sign one out, and one to sign out everywhere
// else. What to keep of a device (here the browser's name and a /24 or
// /48 prefix of the address) is the application's choice.
func ExampleSessions_List() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()
	ctx := context.Background()

	laptop, _ := sessions.Login(ctx, jtiguard.Login{Subject: "alice", ACR: "pwd",
		Device: jtiguard.Device{Label: "Firefox on Linux", IP: "203.0.113.0/24"}})
	phone, _ := sessions.Login(ctx, jtiguard.Login{Subject: "alice", ACR: "pwd",
		Device: jtiguard.Device{Label: "Safari on iOS", IP: "2001:db8:1::/48"}})
	tv, _ := sessions.Login(ctx, jtiguard.Login{Subject: "alice", Device: jtiguard.Device{Label: "TV app"}})

	// GET /sessions with the laptop's access token: the subject is the
	// caller's, never a parameter.
	me, _ := verifier.Verify(ctx, laptop.AccessToken)
	page, _ := sessions.List(ctx, me.Subject, "", 0)
	for _, s := range page.Sessions {
		fmt.Printf("%s (%s) current=%v\n", s.Device.Label, s.Device.IP, s.ID == me.Session)
	}

	// DELETE /sessions/{sid}: the phone is signed out at once.
	fmt.Println("end phone:", sessions.EndSession(ctx, me.Subject, phone.Access.Session))
	_, err := verifier.Verify(ctx, phone.AccessToken)
	fmt.Println("phone:", err)

	// POST /sessions/others/logout: all but the laptop.
	n, err := sessions.EndOthers(ctx, laptop.AccessToken)
	fmt.Println("ended others:", n, err)
	_, err = verifier.Verify(ctx, tv.AccessToken)
	fmt.Println("tv:", err)
	_, err = verifier.Verify(ctx, laptop.AccessToken)
	fmt.Println("laptop:", err)
	// Unordered output:
	// Firefox on Linux (203.0.113.0/24) current=true
	// Safari on iOS (2001:db8:1::/48) current=false
	// TV app () current=false
	// end phone: <nil>
	// phone: jtiguard: session ended
	// ended others: 1 <nil>
	// tv: jtiguard: session ended
	// laptop: <nil>
}
