// Package store is the contract between jtiguard and the stores that keep
// the state that makes a validly signed token dead: revoked and used jti
// values, and session families. It is to jtiguard what database/sql/driver
// is to database/sql: users pick a store (jtiguard.MemoryStore, the
// redisstore module) and never call it; implementers satisfy Store and
// SessionStore here and prove it with the storetest suite.
package store

import (
	"context"
	"time"
)

// Status is what a store knows of one token.
type Status uint8

const (
	// Live: neither revoked nor used. From Consume: this call used it.
	Live Status = iota
	// Revoked: the token was revoked before its expiry.
	Revoked
	// Used: a one-time token that has been consumed.
	Used
	// Lost: the token was issued before the store's memory begins (a store
	// restarted empty or flushed), so the store cannot vouch for it.
	Lost
	// Ended: the token's session family has ended (logout, expiry, idle
	// timeout) or is unknown to the store.
	Ended
	// Reused: the token's family was revoked because a superseded refresh
	// token of it was presented.
	Reused
	// Superseded: the token predates a change of its family's generation
	// (step-up, password or role change).
	Superseded
	// Foreign: the token belongs to a session family this store has never
	// held, and it holds none at all: it is not the store of the token's
	// issuer (a resource server verifying with a store of its own).
	Foreign
)

// TokenRef names one token to a store: its jti, its subject and the times
// that bound its life. Stores keep state about it until ExpiresAt, after
// which the token is rejected on its own; the Verifier passes the token's
// exp plus its clock skew allowance, so the state outlives every clock that
// might accept it. A shared store keeps everything of one subject together
// (the Redis store in one slot), so the subject is part of the name: state
// written under one subject is not seen under another.
type TokenRef struct {
	ID        JTI
	Subject   string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Session and Generation name the token's family (zero: none). A
	// token of a family is Live only while the family is live and at
	// exactly this generation.
	Session    JTI
	Generation uint64
	// Token is the token's text, for a store that asks the token's issuer
	// about it (IntrospectionStore). The Verifier sets it for Check from
	// Verify only; it is empty for Consume and Revoke. It is a bearer
	// credential, never a key: state is keyed on ID (the same token can be
	// re-encoded into other texts), and a store must neither keep nor log
	// it.
	Token string
}

// Store keeps the state that makes a validly signed token dead: revoked and
// used jti values. The Verifier reads it on every verification, so an
// implementation shared by several processes (Redis) makes revocation and
// one-time use hold across all of them.
//
// Implementations must be safe for concurrent use, and each method must be
// atomic: no interleaving of calls can make two Consume calls for one token
// both see Live. err is for infrastructure failures only (unreachable,
// timed out, full); a verifier treats any err as "cannot vouch" and rejects
// the request with jtiguard.ErrStoreUnavailable, never as a pass (a full
// store returns an error matching jtiguard.ErrStoreFull). A store that lost
// its data must answer Lost for tokens issued before the loss instead of
// Live.
type Store interface {
	// Check reports the token's status: its jti first (Revoked, Used),
	// then its family if it has one (Ended, Reused, Superseded). It changes
	// nothing. A shared store reads both in one round trip.
	Check(ctx context.Context, t TokenRef) (Status, error)
	// Consume marks the token used if Check would report Live, and
	// reports Live for the one call that did so; every other call sees Used
	// (or what Check would report). A call repeated with the same nonce, as a client library
	// retries a command whose reply was lost, recognizes its own earlier
	// write and reports Live again, so a retry never turns an honest
	// first use into a replay.
	Consume(ctx context.Context, t TokenRef, nonce uint64) (Status, error)
	// Revoke marks the token revoked until t.ExpiresAt. When it returns
	// nil, every later Check, Consume and Rotate presenting the token
	// reports Revoked. A revocation is never refused for capacity: it is
	// bounded by the token's own lifetime.
	Revoke(ctx context.Context, t TokenRef) error
}

// ProofStore is an optional interface of a Store that checks a token and
// consumes a proof presented with it (a DPoP proof and its access token) as
// one operation: one round trip on a shared store. The Verifier's
// DPoPVerifier uses it when its store implements it, and otherwise calls
// Check and Consume.
type ProofStore interface {
	// CheckAndConsume reports the token's status as Check does and, only if
	// it is Live, consumes the proof as Consume does (with nonce, for
	// retries), atomically (or as if): the proof is consumed only if the
	// token was Live when it was checked. When the token is not Live the
	// proof is left as it was and proofStatus equals tokenStatus, so that
	// neither status is Live. proof.Subject must equal token.Subject: the
	// proof's entry is kept with the token's state (the Redis store's
	// bucket), so a proof consumed under one subject is not seen under
	// another. Like every method, err is for infrastructure failures only.
	CheckAndConsume(ctx context.Context, token, proof TokenRef, nonce uint64) (tokenStatus, proofStatus Status, err error)
}

// Family is a session family as a store keeps it: the state that every
// token of one login shares.
type Family struct {
	ID         JTI    // the sid
	Subject    string // for EndSubject
	Generation uint64 // starts at 1
	Refresh    JTI    // jti of the refresh token in force
	// ExpiresAt is the absolute end of the family; rotation never moves it.
	ExpiresAt time.Time
	// IdleTimeout ends the family this long after its last rotation.
	IdleTimeout time.Duration

	// What a store that lists sessions (DeviceStore) keeps to show a user
	// their signed-in devices; a store that does not list them may ignore
	// it. None of it is ever a token.
	Created  time.Time // when the family was begun
	ClientID string    // the OAuth client it was begun for, if any
	ACR      string    // its authentication level; a Rotation may change it
	Device   Device
	// Limit caps the live families of Subject, this one included: Begin
	// ends the subject's oldest families (by Created) to stay within it,
	// in the same atomic step. Zero: no cap.
	Limit int
}

// Device is what a family records of the client that began it, as the
// caller chose to keep it: a label such as the User-Agent's product and an
// IP prefix, not the whole header or address, and never a token.
type Device struct {
	Label string // e.g. "Firefox on Linux"
	IP    string // e.g. "203.0.113.0/24"
}

// Session is a live family as DeviceStore.List reports it: the Family as
// begun, with Generation and ACR as they are now.
type Session struct {
	Family
	Refreshed time.Time // its last rotation; Created if none
}

// DeviceStore is an optional interface of a SessionStore that lists a
// subject's live families, for a "signed-in devices" page. Like every
// method, err is for infrastructure failures only.
type DeviceStore interface {
	// List returns up to limit live families of subject, oldest (by
	// Created) first, starting after cursor ("" for the first page), and
	// the cursor of the next page ("" when there is none). Families that
	// ended, expired or were revoked for reuse are not listed. A cursor is
	// opaque and valid only for the subject it was returned for.
	List(ctx context.Context, subject, cursor string, limit int) (page []Session, next string, err error)
	// EndOthers ends every family of subject but keep, atomically (as
	// EndSubject does), and reports how many live ones it ended. keep is
	// left as it is, whatever its state.
	EndOthers(ctx context.Context, subject string, keep JTI) (int, error)
}

// Rotation is one compare-and-set on a family: a refresh (the presented
// refresh token is replaced by Next) or, with NewGeneration, a privilege
// change (the generation is bumped and Next put in force, whatever refresh
// token was current).
type Rotation struct {
	Subject    string // the family's subject
	Session    JTI
	Generation uint64 // the generation the caller's token carries
	// Presented is the jti of the token the caller presented: the refresh
	// token for a refresh, the access token for a privilege change. A
	// revoked one refuses the rotation (Revoked): no token revoked by id
	// mints successors.
	Presented JTI
	Next      JTI // the refresh jti to put in force
	// NewGeneration makes this a privilege change: it succeeds only while
	// the family is at Generation, and moves it to Generation+1.
	NewGeneration bool
	// Nonce identifies this call: a call retried after a lost reply finds
	// its own earlier write and gets the same answer, not reuse detection.
	Nonce uint64
	// ACR, with NewGeneration, is the family's new authentication level
	// (a step-up); empty leaves it as it was.
	ACR string
	// Grace lets the refresh token replaced by the last rotation be
	// presented again for that long after it, getting the same successor
	// back (Repeat) instead of reuse detection. Zero: no grace.
	Grace time.Duration
}

// Rotated is a store's answer to a Rotation.
type Rotated struct {
	// Status is Live when Next is in force; otherwise Ended, Revoked (the
	// presented token was revoked), Reused (the presented refresh token
	// was superseded: the family is revoked as of this call) or
	// Superseded (a privilege change lost a race).
	Status     Status
	Next       JTI       // the refresh jti in force
	Generation uint64    // the family's generation
	At         time.Time // when Next was put in force
	ExpiresAt  time.Time // the family's absolute end
	// Repeat is true when Next was put in force by an earlier call: the
	// grace window, or a retry of this very call.
	Repeat bool
}

// SessionStore keeps session families. Like Store, each method is atomic,
// safe for concurrent use, and err is for infrastructure failures only.
// Family expiry (absolute, idle) is the store's to enforce: an expired
// family is Ended.
type SessionStore interface {
	// Begin records a new live family and adds it to its subject's
	// families, atomically: no EndSubject can end the subject's families
	// and miss this one unless it is ordered before Begin.
	Begin(ctx context.Context, f Family) error
	// Rotate performs r as one compare-and-set: of N concurrent rotations
	// presenting the same refresh token, exactly one puts its Next in
	// force. Presenting a refresh token that is neither in force nor
	// within the grace window revokes the family (Reused) in the same
	// atomic step.
	Rotate(ctx context.Context, r Rotation) (Rotated, error)
	// End ends the family sid of subject: every token of it is Ended from
	// the moment End returns. Ending an unknown family is not an error.
	End(ctx context.Context, subject string, sid JTI) error
	// EndSubject ends every family of subject, atomically, and reports how
	// many were live (families already revoked for reuse are ended too but
	// not counted). Every family begun before it is Ended from the moment
	// it returns. It costs O(families of the subject).
	EndSubject(ctx context.Context, subject string) (int, error)
}
