package jtiguard

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// TokenType is a token's class, carried in its header's typ. Each verifying
// method accepts exactly one class, so a token of one class never stands in
// for another; a missing or unknown typ is rejected, never defaulted.
type TokenType uint8

// The token classes.
const (
	// Access is a short-lived bearer token for resource servers (RFC 9068,
	// typ "at+jwt").
	Access TokenType = iota + 1
	// OneTime is an action token accepted once, for one purpose (typ
	// "once+jwt"): a confirmation link, a transfer approval.
	OneTime
	// Refresh is a refresh token (typ "refresh+jwt"): only Sessions.Refresh
	// accepts it, once, and its audience is the issuer itself.
	Refresh
	// Step is a pre-authentication step token (typ "step+jwt"), such as
	// "password checked, second factor pending": only the named next step
	// accepts it, once, and its audience is the issuer itself.
	Step
)

var typNames = [...]string{Access: "at+jwt", OneTime: "once+jwt", Refresh: "refresh+jwt", Step: "step+jwt"}

// String returns the header typ value of t.
func (t TokenType) String() string {
	if int(t) < len(typNames) && t != 0 {
		return typNames[t]
	}
	return "invalid"
}

func parseTyp(s string) TokenType {
	for t, name := range typNames {
		if t != 0 && name == s {
			return TokenType(t)
		}
	}
	return 0
}

// Claims are the verified contents of a token. Times have one-second
// precision. Claims returned by a Verifier may share their slices and Extra
// map with other callers: treat them as read-only.
type Claims struct {
	Type     TokenType // from the header's typ
	KeyID    string    // from the header's kid
	Issuer   string    // iss
	Subject  string    // sub
	Audience []string  // aud
	// ExpiresAt, IssuedAt and ID are set by the Issuer.
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat
	NotBefore time.Time // nbf, optional
	ID        JTI       // jti

	ClientID string // client_id (RFC 9068)
	Scope    string // scope, space-separated (RFC 9068)
	// Session (sid) and Generation (gen) tie a token to its session family
	// and to the family's state when it was minted. Only Sessions sets
	// them; a token that carries a sid is checked against its family on
	// every verification.
	Session    string    // sid
	Generation uint64    // gen
	sid        JTI       // Session, parsed
	ACR        string    // acr: authentication context class
	AMR        []string  // amr: authentication methods
	AuthTime   time.Time // auth_time: when the user last authenticated
	Purpose    string    // purpose of a one-time token

	// Extra holds claims that are not registered above, as raw JSON values.
	// Names that equal a registered claim name, or differ from one only in
	// case, are refused.
	Extra map[string]json.RawMessage
}

// HasScope reports whether the space-separated scope claim contains s.
func (c *Claims) HasScope(s string) bool {
	for f := range strings.FieldsSeq(c.Scope) {
		if f == s {
			return true
		}
	}
	return false
}

// The registered claim names, each with its bit for duplicate detection.
const (
	cIss = 1 << iota
	cSub
	cAud
	cExp
	cNbf
	cIat
	cJti
	cClientID
	cScope
	cSid
	cAcr
	cAmr
	cAuthTime
	cPurpose
	cGen
)

var claimNames = []string{
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope",
	"sid", "acr", "amr", "auth_time", "purpose", "gen",
}

// registeredName reports whether n equals a registered claim name, or
// differs from one only in letter case.
func registeredName(n string) bool {
	for _, r := range claimNames {
		if strings.EqualFold(n, r) {
			return true
		}
	}
	return false
}

// parseClaims reads a claims object strictly: each registered claim has one
// type, appears at most once, and no other member's name differs from a
// registered one only in case. Required claims are checked by the caller.
func parseClaims(s string, c *Claims) (seen int, err error) {
	r := jsonReader{s: s}
	if err := r.open(); err != nil {
		return 0, ErrMalformed
	}
	for {
		name, ok, err := r.next()
		if err != nil {
			return 0, ErrMalformed
		}
		if !ok {
			break
		}
		bit, err := c.readMember(&r, name)
		if err != nil {
			return 0, err
		}
		if seen&bit != 0 {
			return 0, ErrInvalidClaims // duplicate registered claim
		}
		seen |= bit
	}
	if r.end() != nil {
		return 0, ErrMalformed
	}
	return seen, nil
}

func (c *Claims) readMember(r *jsonReader, name string) (bit int, err error) {
	var n int64
	switch name {
	case "iss":
		c.Issuer, err = r.str()
		bit = cIss
	case "sub":
		c.Subject, err = r.str()
		bit = cSub
	case "aud":
		c.Audience, err = r.strOrStrs()
		bit = cAud
	case "exp":
		n, err = r.uint()
		c.ExpiresAt, bit = time.Unix(n, 0), cExp
	case "nbf":
		n, err = r.uint()
		c.NotBefore, bit = time.Unix(n, 0), cNbf
	case "iat":
		n, err = r.uint()
		c.IssuedAt, bit = time.Unix(n, 0), cIat
	case "auth_time":
		n, err = r.uint()
		c.AuthTime, bit = time.Unix(n, 0), cAuthTime
	case "jti":
		var s string
		if s, err = r.str(); err == nil {
			if c.ID, err = ParseJTI(s); err != nil {
				return 0, ErrInvalidJTI
			}
		}
		bit = cJti
	case "client_id":
		c.ClientID, err = r.str()
		bit = cClientID
	case "scope":
		c.Scope, err = r.str()
		bit = cScope
	case "sid":
		var s string
		if s, err = r.str(); err == nil {
			if c.sid, err = ParseJTI(s); err != nil {
				return 0, ErrInvalidClaims // a sid is always of our shape
			}
			c.Session = s
		}
		bit = cSid
	case "gen":
		n, err = r.uint()
		c.Generation, bit = uint64(n), cGen
	case "acr":
		c.ACR, err = r.str()
		bit = cAcr
	case "amr":
		c.AMR, err = r.strs()
		bit = cAmr
	case "purpose":
		c.Purpose, err = r.str()
		bit = cPurpose
	default:
		if registeredName(name) {
			return 0, ErrInvalidClaims // case variant of a registered claim
		}
		var v string
		if v, err = r.raw(); err != nil {
			return 0, ErrMalformed
		}
		if _, dup := c.Extra[name]; dup {
			return 0, ErrInvalidClaims
		}
		if c.Extra == nil {
			c.Extra = make(map[string]json.RawMessage)
		}
		c.Extra[name] = json.RawMessage(v)
		return 0, nil
	}
	if err != nil {
		// A registered claim of the wrong JSON type (exp as a string, aud
		// as a number, null) is invalid claims, not mere bad JSON.
		return 0, ErrInvalidClaims
	}
	return bit, nil
}

// appendClaims appends the claims object in a fixed member order, with Extra
// members sorted by name, so that equal claims encode to equal bytes.
func appendClaims(b []byte, c *Claims) []byte {
	w := jsonWriter{b: b}
	w.str("iss", c.Issuer)
	if c.Subject != "" {
		w.str("sub", c.Subject)
	}
	if len(c.Audience) == 1 {
		w.str("aud", c.Audience[0])
	} else if len(c.Audience) > 1 {
		w.strs("aud", c.Audience)
	}
	w.int("exp", c.ExpiresAt.Unix())
	if !c.NotBefore.IsZero() {
		w.int("nbf", c.NotBefore.Unix())
	}
	w.int("iat", c.IssuedAt.Unix())
	w.str("jti", c.ID.String())
	if c.ClientID != "" {
		w.str("client_id", c.ClientID)
	}
	if c.Scope != "" {
		w.str("scope", c.Scope)
	}
	if c.Session != "" {
		w.str("sid", c.Session)
		w.int("gen", int64(c.Generation))
	}
	if c.ACR != "" {
		w.str("acr", c.ACR)
	}
	if len(c.AMR) > 0 {
		w.strs("amr", c.AMR)
	}
	if !c.AuthTime.IsZero() {
		w.int("auth_time", c.AuthTime.Unix())
	}
	if c.Purpose != "" {
		w.str("purpose", c.Purpose)
	}
	names := make([]string, 0, len(c.Extra))
	for n := range c.Extra {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		w.raw(n, string(c.Extra[n]))
	}
	return w.close()
}

// checkText refuses claim strings that are not valid UTF-8, so that what is
// signed is what a strict reader accepts.
func (c *Claims) checkText() error {
	for _, s := range [...]string{c.Subject, c.ClientID, c.Scope, c.Session, c.ACR, c.Purpose} {
		if !utf8.ValidString(s) {
			return ErrConfig
		}
	}
	for _, list := range [...][]string{c.Audience, c.AMR} {
		for _, s := range list {
			if !utf8.ValidString(s) {
				return ErrConfig
			}
		}
	}
	for n, v := range c.Extra {
		if !utf8.ValidString(n) || registeredName(n) {
			return ErrConfig
		}
		r := jsonReader{s: string(v)}
		r.ws()
		if _, err := r.raw(); err != nil || r.end() != nil {
			return ErrConfig
		}
	}
	return nil
}
