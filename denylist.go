package jtiguard

import (
	"context"
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
	return v.RevokeID(ctx, c.ID, c.ExpiresAt)
}

// RevokeID revokes the token whose jti is id and whose expiry is exp, as
// logged at issuance, without the token itself. Revoking a jti that was
// never issued only costs a store entry until exp.
func (v *Verifier) RevokeID(ctx context.Context, id JTI, exp time.Time) error {
	if !v.cfg.Now().Before(exp) {
		return nil
	}
	if err := v.cfg.Store.Revoke(ctx, TokenRef{ID: id, ExpiresAt: exp.Add(v.cfg.Leeway)}); err != nil {
		return unavailable(err)
	}
	return nil
}
