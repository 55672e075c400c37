package jtiguard

import (
	"context"
	"log/slog"
)

// EventKind names a security event worth an operator's attention.
type EventKind string

// The security events.
const (
	// EventRefreshReused: a superseded refresh token was presented; its
	// family has been revoked. Either the client lost a response or the
	// token was stolen: alert on it.
	EventRefreshReused EventKind = "refresh_reused"
	// EventFamilyRevoked: a session family was revoked (reuse detected, or
	// its refresh token revoked).
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
	// refused.
	EventStoreUnavailable EventKind = "store_unavailable"
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

// Event describes a security event. It identifies tokens by jti and
// session by sid, never by the token itself.
type Event struct {
	Kind     EventKind
	Subject  string
	Session  string // sid
	JTI      string
	ClientID string
	Err      error // the cause, for EventStoreUnavailable and the key events
}

// report logs e at warning level and passes it to the configured hook.
func (v *Verifier) report(ctx context.Context, e Event) {
	reportEvent(ctx, v.log, v.cfg.OnEvent, e)
}

// reportEvent logs e to log at warning level and passes it to onEvent, if set.
func reportEvent(ctx context.Context, log *slog.Logger, onEvent func(context.Context, Event), e Event) {
	attrs := []slog.Attr{slog.String("event", string(e.Kind))}
	for _, kv := range [...][2]string{{"sub", e.Subject}, {"sid", e.Session}, {"jti", e.JTI}, {"client_id", e.ClientID}} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	log.LogAttrs(ctx, slog.LevelWarn, "jtiguard: security event", attrs...)
	if onEvent != nil {
		onEvent(ctx, e)
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
