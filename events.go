package jtiguard

import (
	"context"
	"log/slog"
)

// EventKind names an event: a security event worth an operator's
// attention, or a routine audit event. The names are stable (see
// docs/observability.md for the table): alert and query on them.
type EventKind string

// The security events, logged at warning level (EventKind.Level).
const (
	// EventRefreshReused: a superseded refresh token was presented; its
	// family has been revoked. JTI is the presented refresh token's jti,
	// Session the family's sid. Either the client lost a response or the
	// token was stolen: alert on it.
	EventRefreshReused EventKind = "refresh_reused"
	// EventFamilyRevoked: a session family was revoked because reuse was
	// detected (it follows EventRefreshReused, with the same fields).
	EventFamilyRevoked EventKind = "family_revoked"
	// EventReplayRefused: a one-time or step token was presented again.
	EventReplayRefused EventKind = "replay_refused"
	// EventDPoPReplayRefused: a DPoP proof was presented again with its
	// key; JTI is the proof's jti. A client retrying with the same proof
	// is buggy; otherwise a proof was captured and replayed.
	EventDPoPReplayRefused EventKind = "dpop_replay_refused"
	// EventDPoPBindingRefused: a DPoP-bound token was presented without a
	// proof of its key, or with another key's proof: at a resource server
	// or, for a bound refresh token, at the token endpoint. JTI and
	// Session are the token's. A client that forgot its key, or a stolen
	// token: alert when it repeats.
	EventDPoPBindingRefused EventKind = "dpop_binding_refused"
	// EventStoreUnavailable: the store could not answer; the request was
	// refused. Err is the store's error.
	EventStoreUnavailable EventKind = "store_unavailable"
	// EventStateLost: the store answered that it lost its memory since
	// the token (or DPoP proof) was issued (a restart without persistence,
	// a flush, a failover to a lagging replica), and the token was refused
	// (ErrStateLost). Each token issued before the loss is refused once
	// per presentation until it expires: a burst of these after a store
	// incident is expected, a steady flow is not.
	EventStateLost EventKind = "state_lost"
	// EventKeysFetchFailed: a RemoteKeys could not fetch its key set, or
	// refused the document it got; it keeps the last good keys. Err says
	// why. Alert when it repeats: past RemoteKeysConfig.StaleLimit the keys
	// are dropped.
	EventKeysFetchFailed EventKind = "keys_fetch_failed"
	// EventKeysExpired: a RemoteKeys could not refresh its key set for
	// longer than its StaleLimit and dropped the keys: every token is
	// refused until a fetch succeeds. Err is the last fetch's error.
	EventKeysExpired EventKind = "keys_expired"
)

// The audit events, logged at info level: what users and clients did to
// their sessions, once each has taken effect in the store.
const (
	// EventLogin: Sessions.Login (or CompleteStep, or the token endpoint)
	// began a session family. Session is its sid, Next the jti of its
	// first refresh token.
	EventLogin EventKind = "login"
	// EventRefresh: Sessions.Refresh rotated a refresh token. JTI is the
	// presented token's jti, Next the successor's (the same successor
	// again for a retry within the grace window).
	EventRefresh EventKind = "refresh"
	// EventRenew: Sessions.Renew moved a family to a new generation (a
	// step-up, a password, role or scope change). JTI is the presented
	// access token's jti, Next the new refresh token's.
	EventRenew EventKind = "renew"
	// EventLogout: Sessions.Logout ended a family. JTI is the presented
	// token's jti.
	EventLogout EventKind = "logout"
	// EventLogoutAll: Sessions.LogoutAll ended every family of Subject;
	// Count is how many were live.
	EventLogoutAll EventKind = "logout_all"
	// EventRevoke: a token was revoked (Verifier.Revoke, RevokeID, the
	// revocation endpoint). A revoked refresh token ends its family:
	// Session is then set.
	EventRevoke EventKind = "revoke"
	// EventSessionEnded: a user ended one of their sessions (one device)
	// from a list of their sessions, or all but the current one (Count
	// is then how many).
	EventSessionEnded EventKind = "session_ended"
)

// Level is the slog level an event is logged at: slog.LevelInfo for the
// audit events (login, refresh, renew, logout, logout_all, revoke,
// session_ended), slog.LevelWarn for the security events and any kind it
// does not know. Set a Logger's level to Warn to keep only the security
// events.
func (k EventKind) Level() slog.Level {
	switch k {
	case EventLogin, EventRefresh, EventRenew, EventLogout, EventLogoutAll, EventRevoke, EventSessionEnded:
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// Event describes an event. It identifies tokens by jti and sessions by
// sid, never by the token itself: no field ever holds a token or a part of
// one, and Err's text never quotes one.
type Event struct {
	Kind     EventKind
	Subject  string
	Session  string // sid
	JTI      string // the presented token's jti
	ClientID string
	Next     string // the jti of the refresh token minted (login, refresh, renew)
	Count    int    // sessions ended (logout_all, session_ended for several)
	Err      error  // the cause, for EventStoreUnavailable and the key events
}

// Log messages of the two levels of events.
const (
	msgSecurityEvent = "jtiguard: security event"
	msgAuditEvent    = "jtiguard: audit event"
)

// report logs e and passes it to the configured hooks.
func (v *Verifier) report(ctx context.Context, e Event) {
	reportEvent(ctx, v.log, v.cfg.OnEvent, v.obs.event, e)
}

// reportEvent logs e to log at its kind's level, then passes it to onEvent
// and to observe, when set.
func reportEvent(ctx context.Context, log *slog.Logger, onEvent, observe func(context.Context, Event), e Event) {
	level, msg := e.Kind.Level(), msgSecurityEvent
	if level < slog.LevelWarn {
		msg = msgAuditEvent
	}
	if log.Enabled(ctx, level) {
		attrs := make([]slog.Attr, 0, 8)
		attrs = append(attrs, slog.String("event", string(e.Kind)))
		for _, kv := range [...][2]string{{"sub", e.Subject}, {"sid", e.Session}, {"jti", e.JTI}, {"client_id", e.ClientID}, {"next", e.Next}} {
			if kv[1] != "" {
				attrs = append(attrs, slog.String(kv[0], kv[1]))
			}
		}
		if e.Count != 0 {
			attrs = append(attrs, slog.Int("count", e.Count))
		}
		if e.Err != nil {
			attrs = append(attrs, slog.String("err", e.Err.Error()))
		}
		log.LogAttrs(ctx, level, msg, attrs...)
	}
	if onEvent != nil {
		onEvent(ctx, e)
	}
	if observe != nil {
		observe(ctx, e)
	}
}

// eventFor fills an event's identifiers from claims.
func eventFor(kind EventKind, c *Claims) Event {
	e := Event{Kind: kind}
	if c != nil {
		e.Subject, e.Session, e.ClientID = c.Subject, c.Session, c.ClientID
		if !c.ID.IsZero() {
			e.JTI = c.ID.String()
		}
	}
	return e
}
