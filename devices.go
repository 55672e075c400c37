package jtiguard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// Pages of Sessions.List.
const (
	// DefaultSessionPage is the number of sessions List returns when asked
	// for none (limit <= 0).
	DefaultSessionPage = 50
	// MaxSessionPage caps the number of sessions one List call returns.
	MaxSessionPage = 200
)

// SessionInfo is one live session (family) of a subject, as a "signed-in
// devices" page shows it. It holds no token and nothing that mints one.
type SessionInfo struct {
	// ID is the session's sid, as its tokens carry it (Claims.Session):
	// the handle EndSession takes, and how a page tells the session of
	// the request showing it (compare with the caller's Claims.Session).
	ID       string
	ClientID string // the OAuth client it was begun for, if any
	// ACR is its authentication level now: Login's, or the last Renew's.
	ACR    string
	Device Device // as Login recorded it
	// Created is when Login began it; Refreshed its last refresh or
	// Renew (Created if none).
	Created, Refreshed time.Time
	// ExpiresAt is when it ends unless refreshed before: the earlier of
	// its absolute end and its idle timeout after Refreshed.
	ExpiresAt time.Time
}

// SessionPage is one page of a subject's sessions, oldest first.
type SessionPage struct {
	Sessions []SessionInfo
	// Next is the cursor of the next page, for List; "" when this is the
	// last.
	Next string
}

// devices returns the store as a DeviceStore, or an ErrConfig error.
func (s *Sessions) devices() (store.DeviceStore, error) {
	ds, ok := s.store.(store.DeviceStore)
	if !ok {
		return nil, fmt.Errorf("%w: the Verifier's Store (%T) does not list sessions (it is not a store.DeviceStore)", ErrConfig, s.store)
	}
	return ds, nil
}

// List returns a page of subject's live sessions, oldest first, for a
// "signed-in devices" page: up to limit of them (DefaultSessionPage when
// limit <= 0, at most MaxSessionPage), starting after cursor ("" for the
// first page). Sessions that ended (logout, expiry, idle timeout) or were
// revoked for refresh-token reuse are not listed. A page may be shorter
// than limit and still have a Next: read on until Next is "". Sessions
// ended or begun while paging neither repeat nor shift the others.
//
// subject must be the authenticated caller's own (the Claims.Subject of
// the request's verified access token): List shows whatever subject it is
// given. A cursor is opaque, and valid only for the subject it was
// returned for; one that is not a cursor of the store matches ErrConfig.
// The store must be a store.DeviceStore (MemoryStore and the Redis store
// are); another store gets an ErrConfig error. It is one store operation
// per page (one round trip on Redis).
func (s *Sessions) List(ctx context.Context, subject, cursor string, limit int) (SessionPage, error) {
	ds, err := s.devices()
	if err != nil {
		return SessionPage{}, err
	}
	if subject == "" {
		return SessionPage{}, fmt.Errorf("%w: List needs a subject", ErrConfig)
	}
	switch {
	case limit <= 0:
		limit = DefaultSessionPage
	case limit > MaxSessionPage:
		limit = MaxSessionPage
	}
	t := s.ver.storeStart()
	page, next, err := ds.List(ctx, subject, cursor, limit)
	s.ver.storeDone(ctx, StoreList, t, err)
	switch {
	case errors.Is(err, ErrConfig): // the caller's cursor
		return SessionPage{}, err
	case err != nil:
		return SessionPage{}, s.unavailable(ctx, err, &Claims{Subject: subject})
	}
	out := SessionPage{Sessions: make([]SessionInfo, 0, len(page)), Next: next}
	for _, f := range page {
		end := f.ExpiresAt
		if f.IdleTimeout > 0 {
			end = minTime(end, f.Refreshed.Add(f.IdleTimeout))
		}
		out.Sessions = append(out.Sessions, SessionInfo{
			ID: f.ID.String(), ClientID: f.ClientID, ACR: f.ACR, Device: f.Device,
			Created: f.Created, Refreshed: f.Refreshed, ExpiresAt: end,
		})
	}
	return out, nil
}

// EndSession ends subject's session sid (a SessionInfo.ID), as a "sign
// out" button beside a device does: every token of it, access tokens
// included, is refused (ErrSessionEnded) from the moment it returns, on
// every replica sharing the store. subject must be the authenticated
// caller's own: a sid of another subject's session is left alone, and
// EndSession answers exactly as for a sid that does not exist or has
// ended already (nil), so that it tells no one whether another user's
// session exists. A sid that is not of the shape this package issues
// matches ErrInvalidJTI. It reports EventSessionEnded.
func (s *Sessions) EndSession(ctx context.Context, subject, sid string) error {
	if subject == "" {
		return fmt.Errorf("%w: EndSession needs a subject", ErrConfig)
	}
	id, err := ParseJTI(sid)
	if err != nil {
		return err
	}
	c := &Claims{Subject: subject, Session: sid, sid: id}
	if err := s.end(ctx, c); err != nil {
		return err
	}
	s.ver.report(ctx, eventFor(EventSessionEnded, c))
	return nil
}

// EndOthers ends every session of the caller but the current one ("sign
// out everywhere else"), atomically (a login racing it is ended or begun
// after it), and reports how many live sessions it ended. The caller and
// its session come from currentAccessToken, verified in full first (a
// revoked, expired or ended token ends nothing), so neither can be
// another user's. A DPoP-bound token is accepted without a proof here:
// call EndOthers behind a Guard, which checks it. The store must be a
// store.DeviceStore; it is one store operation, O(sessions of the
// subject). It reports EventSessionEnded with Session the current sid and
// Count the sessions ended.
func (s *Sessions) EndOthers(ctx context.Context, currentAccessToken string) (int, error) {
	ds, err := s.devices()
	if err != nil {
		return 0, err
	}
	c, _, err := s.ver.access(ctx, currentAccessToken)
	if err != nil {
		return 0, err
	}
	if c.sid.IsZero() {
		return 0, fmt.Errorf("%w: the token belongs to no session", ErrConfig)
	}
	t := s.ver.storeStart()
	n, err := ds.EndOthers(ctx, c.Subject, c.sid)
	s.ver.storeDone(ctx, StoreEndOthers, t, err)
	if err != nil {
		return 0, s.unavailable(ctx, err, c)
	}
	e := eventFor(EventSessionEnded, c)
	e.Count = n
	s.ver.report(ctx, e)
	return n, nil
}
