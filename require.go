package jtiguard

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// Requirement is what a route asks of the authentication behind a verified
// access token, beyond its validity.
type Requirement struct {
	// ACR is the authentication context class the route needs (e.g.
	// "mfa"). With VerifierConfig.ACRLevels, any level at or above it
	// satisfies it; without, only exactly it.
	ACR string
	// MaxAge is the longest time since the user authenticated (auth_time)
	// that the route accepts (RFC 9470 max_age); zero: any.
	MaxAge time.Duration
	// Scopes must all be granted.
	Scopes []string
	// DPoP refuses bearer tokens: only a DPoP-bound access token, presented
	// with a proof of its key (RFC 9449), meets it. A Guard answers a
	// bearer token with 401 invalid_token and a DPoP challenge.
	DPoP bool
}

// Insufficient authentication or scope. These do not match ErrInvalidToken:
// the token is valid, but not enough for the route.
var (
	// ErrInsufficientAuth: the token's acr or auth_time does not meet the
	// Requirement (HTTP 401 insufficient_user_authentication, RFC 9470).
	// The *Error carries ACRValues and MaxAge for the challenge.
	ErrInsufficientAuth = newSentinel("insufficient user authentication", nil)
	// ErrInsufficientScope: a required scope is missing (HTTP 403
	// insufficient_scope). The *Error carries the required Scope.
	ErrInsufficientScope = newSentinel("insufficient scope", nil)
)

// Require checks verified claims against r at the Verifier's time. It
// returns nil, or an *Error: status 401 with code invalid_token matching
// ErrDPoPRequired for a bearer token where r.DPoP asks for a bound one,
// status 401 with code
// insufficient_user_authentication and the ACRValues and MaxAge to ask for
// (RFC 9470), or status 403 with code insufficient_scope and the Scope
// required. Authentication is checked before scope, so a client learns first
// that it must step up.
func (v *Verifier) Require(c *Claims, r Requirement) error {
	if r.DPoP && c.JKT == "" {
		return reject(ErrDPoPRequired)
	}
	if r.ACR != "" && !v.acrMeets(c.ACR, r.ACR) {
		return v.insufficientAuth(r)
	}
	if r.MaxAge > 0 && (c.AuthTime.IsZero() || v.cfg.Now().Sub(c.AuthTime) > r.MaxAge) {
		return v.insufficientAuth(r)
	}
	for _, sc := range r.Scopes {
		if !c.HasScope(sc) {
			return &Error{
				Status:      http.StatusForbidden,
				Code:        codeInsufficientScope,
				Description: "insufficient scope",
				Scope:       strings.Join(r.Scopes, " "),
				kind:        ErrInsufficientScope,
			}
		}
	}
	return nil
}

func (v *Verifier) acrMeets(have, want string) bool {
	if len(v.cfg.ACRLevels) == 0 {
		return have == want
	}
	h, w := slices.Index(v.cfg.ACRLevels, have), slices.Index(v.cfg.ACRLevels, want)
	return h >= 0 && w >= 0 && h >= w
}

func (v *Verifier) insufficientAuth(r Requirement) *Error {
	e := &Error{
		Status:      http.StatusUnauthorized,
		Code:        codeInsufficientAuth,
		Description: "insufficient user authentication",
		MaxAge:      r.MaxAge,
		kind:        ErrInsufficientAuth,
	}
	if r.ACR != "" {
		e.ACRValues = r.ACR
		if i := slices.Index(v.cfg.ACRLevels, r.ACR); i >= 0 {
			e.ACRValues = strings.Join(v.cfg.ACRLevels[i:], " ")
		}
	}
	return e
}
