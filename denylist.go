package jtiguard

import (
	"context"
	"fmt"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// Revoke implements token revocation (RFC 7009) for every class. Revoking
// a refresh token ends its session family, and so every token of it (the
// Store must be a SessionStore); revoking any other token makes that token
// dead. Either holds on every verifier sharing the Store, from the moment
// Revoke returns nil until the token would have expired. The token must be
// authentic (signature, issuer, lifetime) so that forged tokens cannot fill
// the store, but may be for any audience of the issuer (the issuer revokes
// for every resource server) and may have expired; a token that does not
// verify returns its *Error, which an RFC 7009 endpoint still answers with
// 200.
func (v *Verifier) Revoke(ctx context.Context, token string) error {
	c, err := v.authentic(ctx, token, 0)
	if err != nil {
		return err
	}
	return v.revokeAuthentic(ctx, c)
}

// revokeAuthentic revokes the token whose authentic claims are c.
func (v *Verifier) revokeAuthentic(ctx context.Context, c *Claims) error {
	if c.Type != TypeRefresh {
		return v.revoke(ctx, c)
	}
	sessions, ok := v.cfg.Store.(store.SessionStore)
	if !ok || c.sid.IsZero() {
		return fmt.Errorf("%w: a refresh token is revoked by ending its family, which needs a SessionStore", ErrConfig)
	}
	t := v.storeStart()
	err := sessions.End(ctx, c.Subject, c.sid)
	v.storeDone(ctx, StoreEnd, t, err)
	if err != nil {
		return v.settle(ctx, c, store.Live, err)
	}
	v.report(ctx, eventFor(EventRevoke, c))
	return nil
}

// authentic verifies token's signature and its claims that do not change
// with time, of class want (any when 0) and for any audience: for
// revocation, logout and introspection, which the issuer serves for every
// resource server, and which must work on expired tokens too.
func (v *Verifier) authentic(ctx context.Context, token string, want TokenType) (*Claims, error) {
	if len(token) > v.cfg.MaxTokenSize {
		return nil, reject(ErrTokenTooLarge)
	}
	c, _, err := v.parse(ctx, token, want)
	if err == nil {
		err = v.checkIssued(c)
	}
	if err != nil {
		return nil, reject(err)
	}
	return c, nil
}

// RevokeID revokes a token without the token itself, by what was logged
// when it was issued: its jti, its subject and its expiry. It holds for a
// token of any class, of a session or not: a revoked refresh token mints
// no successor, a revoked access token is refused. The subject must be the
// token's sub: stores keep a subject's state together, and a revocation
// recorded under another subject revokes nothing (revoking a jti that was
// never issued only costs a store entry until exp).
func (v *Verifier) RevokeID(ctx context.Context, id JTI, subject string, exp time.Time) error {
	if id.IsZero() || subject == "" {
		return fmt.Errorf("%w: RevokeID needs the jti and the subject", ErrConfig)
	}
	return v.revoke(ctx, &Claims{ID: id, Subject: subject, ExpiresAt: exp})
}

func (v *Verifier) revoke(ctx context.Context, c *Claims) error {
	ref := v.ref(c)
	if !v.cfg.Now().Before(ref.ExpiresAt) {
		return nil // no verifier within the leeway accepts it any more
	}
	t := v.storeStart()
	err := v.cfg.Store.Revoke(ctx, ref)
	v.storeDone(ctx, StoreRevoke, t, err)
	if err != nil {
		return v.settle(ctx, c, store.Live, err)
	}
	v.report(ctx, eventFor(EventRevoke, c))
	return nil
}
