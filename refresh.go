package jtiguard

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// Session lifetimes.
const (
	// DefaultSessionLifetime is a family's absolute lifetime unless
	// configured: rotation never extends it.
	DefaultSessionLifetime = 30 * 24 * time.Hour
	// DefaultIdleTimeout ends a family not refreshed for this long.
	DefaultIdleTimeout = 7 * 24 * time.Hour
	// MaxSessionLifetime caps a family's lifetime, and so exp-iat of
	// refresh tokens.
	MaxSessionLifetime = 365 * 24 * time.Hour
	// DefaultRefreshGrace is the refresh grace window unless configured.
	DefaultRefreshGrace = 10 * time.Second
	// MaxRefreshGrace caps the refresh grace window.
	MaxRefreshGrace = 60 * time.Second
	// DefaultMaxSessions is the cap of live sessions per subject unless
	// configured (SessionConfig.MaxSessions).
	DefaultMaxSessions = 50
	// MaxDeviceField caps each field of a Login's Device, in bytes.
	MaxDeviceField = 256
)

// Device is what a session records of the client that began it, to show a
// user their signed-in devices: a label such as the User-Agent's product
// ("Firefox on Linux") and an IP prefix ("203.0.113.0/24"), as the caller
// chooses to keep them. It is never a token, and the library never fills
// it in: what is kept of a user's browser and address is the caller's
// decision (store as little as the page needs). Each field is at most
// MaxDeviceField bytes.
type Device = store.Device

// SessionConfig configures Sessions. The zero value is usable.
type SessionConfig struct {
	// Audience is the aud of access tokens minted for sessions. Default:
	// the Verifier's Audience.
	Audience []string
	// Lifetime is a family's absolute lifetime, counted from login and
	// never extended by rotation: default 30 days, at most 365 days.
	Lifetime time.Duration
	// IdleTimeout ends a family that has not been refreshed for this long:
	// default 7 days, at least the access token lifetime, at most Lifetime.
	IdleTimeout time.Duration
	// RefreshGrace lets a client that lost the response to a refresh
	// present the same refresh token again for this long and get the same
	// successor back, instead of having its family revoked for reuse. Only
	// the immediately previous refresh token gets grace, never an older
	// one and never across a privilege change, and the answer is the same
	// successor, so a thief presenting it gains nothing the client does not
	// already hold. Default DefaultRefreshGrace (10 s): a client whose
	// refresh was answered 503 (its write may have committed, its reply
	// lost) and that retries must not lose its session. Negative turns it
	// off; at most 60 seconds.
	RefreshGrace time.Duration
	// MaxSessions caps the live sessions (families) of one subject: a
	// Login that would exceed it ends the subject's oldest sessions (by
	// login time) in the same atomic step as it begins the new one, so a
	// user signed in on more devices than this loses the least recently
	// begun first, and a script logging in in a loop cannot grow one
	// subject's state without bound. Default DefaultMaxSessions (50);
	// negative means no cap. The cap is the store's to enforce (the
	// memory and Redis stores do); a store that ignores Family.Limit
	// keeps every session.
	MaxSessions int
}

// Sessions runs session families: login, refresh-token rotation with reuse
// detection, privilege changes, logout. It is the defence against the JWT
// form of session fixation: every login starts a new family with a fresh
// random sid, and every change of authentication state (MFA step-up,
// password, role or scope change) moves the family to a new generation, so
// that no token minted before the change is accepted after it.
//
// Every token Sessions mints carries its family's sid and generation; the
// Verifier checks the family on each verification (one store read, with
// the revocation check), so ending or revoking a family kills its access
// tokens at once without tracking them one by one.
//
// A family's facts (subject, client, scope, acr, amr, auth_time and custom
// claims) travel in its signed refresh token, not in the store: Refresh
// mints the successor pair from the refresh token presented, and Renew
// from the access token presented and the Change. Sessions never mints a
// token longer than its Verifier's MaxTokenSize: Login, Refresh and Renew
// refuse with ErrConfig before writing anything to the store.
type Sessions struct {
	iss   *Issuer
	ver   *Verifier
	store store.SessionStore
	cfg   SessionConfig
}

// NewSessions returns Sessions minting with iss and verifying with ver,
// whose Store must also be a SessionStore (MemoryStore and the Redis store
// are both).
func NewSessions(iss *Issuer, ver *Verifier, cfg SessionConfig) (*Sessions, error) {
	if iss == nil || ver == nil {
		return nil, fmt.Errorf("%w: Sessions needs an Issuer and a Verifier", ErrConfig)
	}
	if iss.cfg.Issuer != ver.cfg.Issuer {
		return nil, fmt.Errorf("%w: Issuer and Verifier disagree on the issuer", ErrConfig)
	}
	if err := sameClock("the Issuer's", iss.cfg.Now, ver.cfg.Now, ver.cfg.Leeway); err != nil {
		return nil, err
	}
	if _, ok := ver.keys.Key(iss.keys.Signer().kid); !ok {
		return nil, fmt.Errorf("%w: the Verifier's keys do not hold the Issuer's signer", ErrConfig)
	}
	store, ok := ver.cfg.Store.(store.SessionStore)
	if !ok {
		return nil, fmt.Errorf("%w: the Verifier's Store (%T) is not a SessionStore", ErrConfig, ver.cfg.Store)
	}
	if len(cfg.Audience) == 0 {
		cfg.Audience = []string{ver.cfg.Audience}
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultSessionLifetime
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = min(DefaultIdleTimeout, cfg.Lifetime)
	}
	switch {
	case cfg.RefreshGrace == 0:
		cfg.RefreshGrace = DefaultRefreshGrace
	case cfg.RefreshGrace < 0:
		cfg.RefreshGrace = 0
	}
	switch {
	case cfg.MaxSessions == 0:
		cfg.MaxSessions = DefaultMaxSessions
	case cfg.MaxSessions < 0:
		cfg.MaxSessions = 0 // the store's "no cap"
	}
	switch {
	case cfg.Lifetime < time.Minute || cfg.Lifetime > MaxSessionLifetime:
		return nil, fmt.Errorf("%w: Lifetime must be between 1m and %v", ErrConfig, MaxSessionLifetime)
	case cfg.IdleTimeout < iss.cfg.AccessTTL || cfg.IdleTimeout > cfg.Lifetime:
		return nil, fmt.Errorf("%w: IdleTimeout must be between the access TTL and Lifetime", ErrConfig)
	case cfg.RefreshGrace > MaxRefreshGrace:
		return nil, fmt.Errorf("%w: RefreshGrace must be at most %v", ErrConfig, MaxRefreshGrace)
	}
	cfg.Lifetime, cfg.IdleTimeout = cfg.Lifetime.Truncate(time.Second), cfg.IdleTimeout.Truncate(time.Second)
	return &Sessions{iss: iss, ver: ver, store: store, cfg: cfg}, nil
}

// TokenPair is what a login, refresh or privilege change returns.
type TokenPair struct {
	AccessToken  string
	RefreshToken string
	Access       *Claims // the access token's claims (ExpiresAt, Scope, Session, ...)
	Refresh      *Claims // the refresh token's claims
}

// Login describes a successful authentication.
type Login struct {
	Subject  string    // required
	ClientID string    // the OAuth client, if any
	Scope    string    // granted scope, space-separated
	ACR      string    // authentication context class reached, e.g. "pwd"
	AMR      []string  // methods used, e.g. ["pwd"]
	AuthTime time.Time // when the user authenticated; default now
	// Previous is a token the client presented with the login request, if
	// any (the access or refresh token of an anonymous or earlier session).
	// If it is authentic, its family is ended: a session from before the
	// login never survives it.
	Previous string
	// Extra holds custom claims, such as roles or a tenant, that every
	// token of the family carries, access and refresh, until Renew changes
	// them; read them with Claims.DecodeExtra. Names must not be those of
	// registered claims, nor differ from one only in case, and the values
	// must be valid JSON of at most MaxExtraSize in all (see Claims.Extra):
	// Login refuses anything else with ErrConfig. They are signed, not
	// secret: anyone holding a token can read them.
	Extra map[string]json.RawMessage
	// JKT binds the family to a DPoP key (RFC 9449): the thumbprint of a
	// proof the login request carried (DPoPProof.JKT). Every access token
	// of the family carries it as cnf.jkt, through refreshes and Renew, and
	// is accepted only with a proof of that key. TokenEndpoint sets it
	// from the request's DPoP proof.
	JKT string
	// BindRefresh binds the refresh tokens to JKT as well: each is then
	// refused without a proof of that key (RFC 9449 section 5). It is for
	// public clients, whose refresh tokens nothing else constrains;
	// TokenEndpoint sets it for clients that authenticated without a
	// secret. It needs JKT.
	BindRefresh bool
	// Device is optional: what the caller chooses to keep of the client
	// that logged in, for a signed-in devices page (Sessions.List): a
	// label such as the User-Agent's product and an IP prefix, never a
	// token nor anything secret. It is kept with the session in the store,
	// not in any token. A Label or IP longer than MaxDeviceField (256)
	// bytes is refused with ErrConfig.
	Device Device
}

// Login starts a new session family for l.Subject, with a fresh random sid
// that owes nothing to anything the client sent, and returns its first
// token pair. Call it after every successful authentication; never reuse a
// session across one.
func (s *Sessions) Login(ctx context.Context, l Login) (*TokenPair, error) {
	if l.Subject == "" {
		return nil, fmt.Errorf("%w: Login needs a Subject", ErrConfig)
	}
	extra, err := cleanExtra(l.Extra, MaxExtraSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := checkJKT(l.JKT); err != nil {
		return nil, err
	}
	if l.BindRefresh && l.JKT == "" {
		return nil, fmt.Errorf("%w: BindRefresh needs a JKT", ErrConfig)
	}
	if len(l.Device.Label) > MaxDeviceField || len(l.Device.IP) > MaxDeviceField {
		return nil, fmt.Errorf("%w: Device.Label and Device.IP must be at most %d bytes", ErrConfig, MaxDeviceField)
	}
	facts := Claims{Subject: l.Subject, ClientID: l.ClientID, Scope: l.Scope, ACR: l.ACR, AMR: l.AMR, Extra: extra, JKT: l.JKT}
	refreshJKT := ""
	if l.BindRefresh {
		refreshJKT = l.JKT
	}
	if err := s.fits(&facts, 1, refreshJKT); err != nil {
		return nil, err
	}
	if l.Previous != "" {
		if err := s.endPresented(ctx, l.Previous); err != nil {
			return nil, err
		}
	}
	sid, err := s.iss.newJTI()
	if err != nil {
		return nil, err
	}
	rt, err := s.iss.newJTI()
	if err != nil {
		return nil, err
	}
	now := s.iss.now()
	facts.AuthTime = l.AuthTime.Truncate(time.Second)
	if l.AuthTime.IsZero() {
		facts.AuthTime = now
	}
	f := store.Family{
		ID: sid, Subject: l.Subject, Generation: 1, Refresh: rt,
		ExpiresAt: now.Add(s.cfg.Lifetime), IdleTimeout: s.cfg.IdleTimeout,
		// Created to the millisecond, not the token's whole second: logins
		// of one second list, and meet the cap, in their order.
		Created:  s.iss.cfg.Now(),
		ClientID: l.ClientID, ACR: l.ACR, Device: l.Device, Limit: s.cfg.MaxSessions,
	}
	t := s.ver.storeStart()
	err = s.store.Begin(ctx, f)
	s.ver.storeDone(ctx, StoreBegin, t, err)
	if err != nil {
		return nil, s.unavailable(ctx, err, &Claims{Subject: l.Subject, Session: sid.String(), ClientID: l.ClientID})
	}
	s.ver.report(ctx, Event{Kind: EventLogin, Subject: l.Subject, Session: sid.String(), ClientID: l.ClientID, Next: rt.String()})
	return s.mintPair(facts, sid, store.Rotated{Next: rt, Generation: 1, At: now, ExpiresAt: f.ExpiresAt}, refreshJKT)
}

// Refresh rotates a refresh token: it is consumed and a successor pair
// minted, in one compare-and-set on the family. Of N concurrent refreshes
// with one token exactly one rotates; within the grace window the others
// get the same successor, otherwise they are reuse. Presenting a superseded
// refresh token is reuse: the whole family is revoked, every access token
// of it is rejected from then on, and ErrRefreshReused is returned (and
// reported as a security event). A token endpoint answers any rejection
// with invalid_grant. The new pair carries the facts of the token
// presented, its custom claims and DPoP binding included.
//
// A refresh token bound to a DPoP key (Login.BindRefresh) is refused here
// with ErrDPoPRequired, before anything rotates: it rotates only at a
// TokenEndpoint with a DPoP proof of its key.
func (s *Sessions) Refresh(ctx context.Context, refreshToken string) (*TokenPair, error) {
	return s.refresh(ctx, refreshToken, "", refreshKey{})
}

// refreshKey is the DPoP key a refresh request proved it holds, if any
// (jkt), and whether the client is public, so that its refresh tokens are
// bound to that key from now on.
type refreshKey struct {
	jkt    string
	public bool
}

// refresh is Refresh for the token's own client only, unless clientID is
// empty: another client's attempt is refused before anything rotates. A
// bound refresh token rotates only with a proof of its key, and its
// successors stay bound to it; an unbound one binds the new access token
// to the proof's key, if any (RFC 9449 section 5), and its successor
// refresh token too for a public client.
func (s *Sessions) refresh(ctx context.Context, refreshToken, clientID string, key refreshKey) (*TokenPair, error) {
	start := s.ver.verifyStart()
	p, cache, err := s.rotateRefresh(ctx, refreshToken, clientID, key)
	s.ver.verifyDone(ctx, TypeRefresh, start, cache, err)
	return p, err
}

// rotateRefresh is refresh, but for the report of the verification.
func (s *Sessions) rotateRefresh(ctx context.Context, refreshToken, clientID string, key refreshKey) (*TokenPair, CacheResult, error) {
	c, cache, err := s.ver.verified(ctx, refreshToken, TypeRefresh) // a refresh token always has a sid
	if err != nil {
		return nil, cache, err
	}
	p, err := s.rotateVerified(ctx, c, clientID, key)
	return p, cache, err
}

// rotateVerified rotates the refresh token whose verified claims are c.
func (s *Sessions) rotateVerified(ctx context.Context, c *Claims, clientID string, key refreshKey) (*TokenPair, error) {
	if clientID != "" && c.ClientID != clientID {
		return nil, reject(ErrWrongClient)
	}
	facts, refreshJKT := *c, c.JKT
	switch {
	case c.JKT != "" && key.jkt == "":
		s.ver.report(ctx, eventFor(EventDPoPBindingRefused, c))
		return nil, reject(ErrDPoPRequired)
	case c.JKT != "" && key.jkt != c.JKT:
		s.ver.report(ctx, eventFor(EventDPoPBindingRefused, c))
		return nil, reject(ErrDPoPKeyMismatch)
	case c.JKT == "":
		facts.JKT = key.jkt
		if key.public {
			refreshJKT = key.jkt
		}
	}
	if err := s.fits(&facts, c.Generation, refreshJKT); err != nil { // say, a larger signing key since
		return nil, err
	}
	r, err := s.rotate(ctx, c, store.Rotation{Presented: c.ID, Grace: s.cfg.RefreshGrace})
	if err != nil {
		return nil, err
	}
	s.ver.report(ctx, rotated(EventRefresh, c, r))
	return s.mintPair(facts, c.sid, r, refreshJKT)
}

// rotated is the audit event of a rotation r of the family of c.
func rotated(kind EventKind, c *Claims, r store.Rotated) Event {
	e := eventFor(kind, c)
	e.Next = r.Next.String()
	return e
}

// rotate runs r on the family of c, with a fresh successor jti and nonce,
// and turns anything but Live into the error.
func (s *Sessions) rotate(ctx context.Context, c *Claims, r store.Rotation) (store.Rotated, error) {
	next, err := s.iss.newJTI()
	if err != nil {
		return store.Rotated{}, err
	}
	r.Subject, r.Session, r.Generation, r.Next, r.Nonce = c.Subject, c.sid, c.Generation, next, rand.Uint64()|1
	t := s.ver.storeStart()
	res, err := s.store.Rotate(ctx, r)
	s.ver.storeDone(ctx, StoreRotate, t, err)
	if err != nil {
		return store.Rotated{}, s.unavailable(ctx, err, c)
	}
	if res.Status != store.Live {
		return store.Rotated{}, s.refused(ctx, res.Status, c)
	}
	return res, nil
}

// Change is a change of authentication state: the new facts a privilege
// change carries. Empty fields keep the current value.
type Change struct {
	ACR      string    // e.g. "mfa" after a second factor
	AMR      []string  // e.g. ["pwd", "otp"]
	AuthTime time.Time // default now
	Scope    string    // a new scope (role change); empty keeps it
	// Extra, when not nil, replaces the family's custom claims (a role or
	// tenant change), under the rules of Login.Extra; an empty map removes
	// them, and nil keeps them.
	Extra map[string]json.RawMessage
}

// Renew moves the family of accessToken to a new generation with the facts
// of ch and returns a new pair: call it on MFA step-up, password change,
// role or scope change. Every token minted before it is rejected after it:
// an access token with ErrSuperseded; a refresh token is a superseded
// refresh token like any other, so presenting it is reuse: the family,
// the new generation included, is revoked and ErrRefreshReused returned
// (a pre-change refresh token in other hands is exactly what rotation
// exists to catch). Of concurrent Renew calls on one generation one wins;
// the others get ErrSuperseded. A revoked access token cannot renew.
//
// A DPoP-bound access token is accepted here without a proof: Renew is
// called behind a Guard, which has checked the proof. The new pair keeps
// the binding: its access token, and its refresh token too, whether or
// not the family's refresh tokens were bound before (the access token
// does not say), so a confidential client must refresh with the same key
// after a Renew.
func (s *Sessions) Renew(ctx context.Context, accessToken string, ch Change) (*TokenPair, error) {
	start := s.ver.verifyStart()
	cp, cache, err := s.ver.access(ctx, accessToken)
	var p *TokenPair
	if err == nil {
		p, err = s.renew(ctx, cp, ch)
	}
	s.ver.verifyDone(ctx, TypeAccess, start, cache, err)
	return p, err
}

// renew is Renew of the access token whose verified claims are cp.
func (s *Sessions) renew(ctx context.Context, cp *Claims, ch Change) (*TokenPair, error) {
	var err error
	c := *cp
	if c.sid.IsZero() {
		return nil, fmt.Errorf("%w: the token belongs to no session", ErrConfig)
	}
	facts := c
	if ch.ACR != "" {
		facts.ACR = ch.ACR
	}
	if ch.AMR != nil {
		facts.AMR = ch.AMR
	}
	if ch.Scope != "" {
		facts.Scope = ch.Scope
	}
	if ch.Extra != nil {
		if facts.Extra, err = cleanExtra(ch.Extra, MaxExtraSize); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	// Refuse before the family moves: a Renew that fails after rotating
	// would leave the client with superseded tokens only.
	if err := s.fits(&facts, c.Generation+1, c.JKT); err != nil {
		return nil, err
	}
	r, err := s.rotate(ctx, &c, store.Rotation{NewGeneration: true, Presented: c.ID, ACR: ch.ACR})
	if err != nil {
		return nil, err
	}
	facts.AuthTime = ch.AuthTime
	if facts.AuthTime.IsZero() {
		facts.AuthTime = r.At
	}
	facts.AuthTime = facts.AuthTime.Truncate(time.Second)
	s.ver.report(ctx, rotated(EventRenew, &c, r))
	return s.mintPair(facts, c.sid, r, c.JKT)
}

// CompleteStep consumes a step token minted by Issuer.Step for step and
// starts a new family for its subject with the facts of l (the token's
// identity is not carried over: fixation). A step token works once, for its
// step only; l.Subject must be empty or the token's subject.
func (s *Sessions) CompleteStep(ctx context.Context, stepToken, step string, l Login) (*TokenPair, error) {
	if _, err := cleanExtra(l.Extra, MaxExtraSize); err != nil { // before the token is used up
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := s.ver.consume(ctx, stepToken, TypeStep, step)
	if err != nil {
		return nil, err
	}
	if l.Subject != "" && l.Subject != c.Subject {
		return nil, fmt.Errorf("%w: Login.Subject differs from the step token's", ErrConfig)
	}
	l.Subject = c.Subject
	return s.Login(ctx, l)
}

// Logout ends the family of token (an access or refresh token of it, even
// expired): its tokens are rejected from the moment Logout returns. A
// token of no family, or one that does not verify, returns its error.
func (s *Sessions) Logout(ctx context.Context, token string) error {
	c, err := s.ver.authentic(ctx, token, 0)
	if err != nil {
		return err
	}
	if c.sid.IsZero() {
		return reject(ErrMissingClaim)
	}
	if err := s.end(ctx, c); err != nil {
		return err
	}
	s.ver.report(ctx, eventFor(EventLogout, c))
	return nil
}

// end ends the family of c.
func (s *Sessions) end(ctx context.Context, c *Claims) error {
	t := s.ver.storeStart()
	err := s.store.End(ctx, c.Subject, c.sid)
	s.ver.storeDone(ctx, StoreEnd, t, err)
	if err != nil {
		return s.unavailable(ctx, err, c)
	}
	return nil
}

// LogoutAll ends every family of subject, atomically (a login racing it is
// either ended or begun after it), and reports how many live sessions it
// ended: families already revoked for reuse are ended too but not counted.
// It is one store operation, O(families of the subject).
func (s *Sessions) LogoutAll(ctx context.Context, subject string) (int, error) {
	t := s.ver.storeStart()
	n, err := s.store.EndSubject(ctx, subject)
	s.ver.storeDone(ctx, StoreEndSubject, t, err)
	if err != nil {
		return 0, s.unavailable(ctx, err, &Claims{Subject: subject})
	}
	s.ver.report(ctx, Event{Kind: EventLogoutAll, Subject: subject, Count: n})
	return n, nil
}

// endPresented ends the family of a token presented at login, if it is
// authentic and has one; anything else presented is ignored.
func (s *Sessions) endPresented(ctx context.Context, token string) error {
	c, err := s.ver.authentic(ctx, token, 0)
	if err != nil || c.sid.IsZero() {
		return nil
	}
	return s.end(ctx, c)
}

// machine mints the access token of a client_credentials grant: no
// session, no refresh token; bound to jkt, the key of the request's DPoP
// proof, if any.
func (s *Sessions) machine(c Claims, clientID, jkt string) (*TokenPair, error) {
	c.JKT = jkt
	if c.Subject == "" {
		c.Subject = clientID
	}
	if len(c.Audience) == 0 {
		c.Audience = s.cfg.Audience
	}
	c.ClientID = clientID
	tok, claims, err := s.iss.Access(c)
	if err != nil {
		return nil, err
	}
	return &TokenPair{AccessToken: tok, Access: claims}, nil
}

// mintPair signs the access and refresh tokens of a family at generation
// r.Generation, with refresh jti r.Next minted at r.At. The refresh token
// is a function of those, so a repeated rotation (grace, retry) re-mints
// the same successor. The access token is bound to facts.JKT, the refresh
// token to refreshJKT ("" for neither).
func (s *Sessions) mintPair(facts Claims, sid JTI, r store.Rotated, refreshJKT string) (*TokenPair, error) {
	aid, err := s.iss.newJTI()
	if err != nil {
		return nil, err
	}
	rc, ac := s.pairClaims(&facts, sid, r, aid, s.iss.now(), refreshJKT)
	limit := s.ver.cfg.MaxTokenSize
	rt, rclaims, err := s.iss.sign(TypeRefresh, &rc, limit)
	if err != nil {
		return nil, err
	}
	at, aclaims, err := s.iss.sign(TypeAccess, &ac, limit)
	if err != nil {
		return nil, err
	}
	return &TokenPair{AccessToken: at, RefreshToken: rt, Access: aclaims, Refresh: rclaims}, nil
}

// pairClaims returns the claims of the refresh token of a family at r and
// of an access token with jti aid minted at now.
func (s *Sessions) pairClaims(facts *Claims, sid JTI, r store.Rotated, aid JTI, now time.Time, refreshJKT string) (rc, ac Claims) {
	base := Claims{
		Issuer:     s.iss.cfg.Issuer,
		Subject:    facts.Subject,
		ClientID:   facts.ClientID,
		Scope:      facts.Scope,
		ACR:        facts.ACR,
		AMR:        facts.AMR,
		AuthTime:   facts.AuthTime,
		Session:    sid.String(),
		Generation: r.Generation,
		sid:        sid,
		Extra:      facts.Extra,
	}
	rc = base
	rc.JKT = refreshJKT
	rc.Audience = []string{s.iss.cfg.Issuer}
	rc.ID, rc.IssuedAt = r.Next, r.At
	rc.ExpiresAt = minTime(r.ExpiresAt, r.At.Add(s.cfg.IdleTimeout))
	ac = base
	ac.JKT = facts.JKT
	ac.Audience = s.cfg.Audience
	ac.ID, ac.IssuedAt = aid, now
	ac.ExpiresAt = minTime(r.ExpiresAt, now.Add(s.iss.cfg.AccessTTL))
	return rc, ac
}

// fits refuses, with ErrConfig and before anything is written, facts whose
// pair at generation gen would not be valid UTF-8 or would be longer than
// the Verifier accepts. Every jti has one length and times have ten
// digits, so the stand-ins below measure what mintPair will sign.
func (s *Sessions) fits(facts *Claims, gen uint64, refreshJKT string) error {
	if err := facts.checkText(); err != nil {
		return fmt.Errorf("%w: claim text must be valid UTF-8", err)
	}
	now := s.iss.now()
	probe := *facts
	if probe.AuthTime.IsZero() {
		probe.AuthTime = now // as Login and Renew will set it
	}
	rc, ac := s.pairClaims(&probe, JTI{}, store.Rotated{Generation: gen, At: now, ExpiresAt: now.Add(s.cfg.Lifetime)}, JTI{}, now, refreshJKT)
	key, limit := s.iss.keys.Signer(), s.ver.cfg.MaxTokenSize
	for _, p := range [...]struct {
		t TokenType
		c *Claims
	}{{TypeRefresh, &rc}, {TypeAccess, &ac}} {
		if n := tokenLen(key, p.t, len(appendClaims(nil, p.c))); n > limit {
			return fmt.Errorf("%w: its %v token would be %d bytes, more than the Verifier's MaxTokenSize of %d", ErrConfig, p.t, n, limit)
		}
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// refused turns a rotation's refusal into the error, reporting reuse.
func (s *Sessions) refused(ctx context.Context, st store.Status, c *Claims) error {
	if st == store.Reused {
		s.ver.report(ctx, eventFor(EventRefreshReused, c))
		s.ver.report(ctx, eventFor(EventFamilyRevoked, c))
	}
	return s.ver.settle(ctx, c, st, nil)
}

func (s *Sessions) unavailable(ctx context.Context, err error, c *Claims) error {
	return s.ver.settle(ctx, c, store.Live, err)
}
