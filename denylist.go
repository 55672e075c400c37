package jtiguard

import (
	"context"
	"fmt"
	"time"
)

// Revoke makes a token dead on every verifier sharing the Store, from the
// moment it returns nil until the token expires. The token must verify
// (signature, issuer, audience, lifetime) so that forged tokens cannot fill
// the store; an already expired token needs nothing and returns nil. A token
// that does not verify returns its *Error, for which an RFC 7009 endpoint
// still answers 200.
func (v *Verifier) Revoke(ctx context.Context, token string) error {
	if len(token) > v.cfg.MaxTokenSize {
		return reject(ErrTokenTooLarge)
	}
	c, _, err := v.parse(token, 0)
	if err == nil {
		err = v.checkClaims(c)
	}
	if err != nil {
		return reject(err)
	}
	return v.revoke(ctx, c)
}

// RevokeID revokes a token without the token itself, by what was logged
// when it was issued: its jti, its session's sid (empty for a token of no
// session) and its expiry. Revoking a jti that was never issued only costs
// a store entry until exp.
func (v *Verifier) RevokeID(ctx context.Context, id JTI, sid string, exp time.Time) error {
	c := &Claims{ID: id, ExpiresAt: exp, Session: sid}
	if sid != "" {
		var err error
		if c.sid, err = ParseJTI(sid); err != nil {
			return fmt.Errorf("%w: malformed sid", ErrConfig)
		}
	}
	return v.revoke(ctx, c)
}

func (v *Verifier) revoke(ctx context.Context, c *Claims) error {
	if !v.cfg.Now().Before(c.ExpiresAt) {
		return nil
	}
	if err := v.cfg.Store.Revoke(ctx, v.ref(c)); err != nil {
		_, err = v.settle(ctx, c, Live, err)
		return err
	}
	return nil
}
