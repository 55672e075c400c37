package jtiguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// TokenType is a token's class, carried in its header's typ. Each verifying
// method accepts exactly one class, so a token of one class never stands in
// for another; a missing or unknown typ is rejected, never defaulted.
type TokenType uint8

// The token classes.
const (
	// TypeAccess is a short-lived bearer token for resource servers (RFC 9068,
	// typ "at+jwt").
	TypeAccess TokenType = iota + 1
	// TypeOneTime is an action token accepted once, for one purpose (typ
	// "once+jwt"): a confirmation link, a transfer approval.
	TypeOneTime
	// TypeRefresh is a refresh token (typ "refresh+jwt"): only Sessions.Refresh
	// accepts it, once, and its audience is the issuer itself.
	TypeRefresh
	// TypeStep is a pre-authentication step token (typ "step+jwt"), such as
	// "password checked, second factor pending": only the named next step
	// accepts it, once, and its audience is the issuer itself.
	TypeStep
)

var typNames = [...]string{TypeAccess: "at+jwt", TypeOneTime: "once+jwt", TypeRefresh: "refresh+jwt", TypeStep: "step+jwt"}

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
	keep       time.Time // ExpiresAt plus the verifying Verifier's leeway, set when cached
	ACR        string    // acr: authentication context class
	AMR        []string  // amr: authentication methods
	AuthTime   time.Time // auth_time: when the user last authenticated
	Purpose    string    // purpose of a one-time token
	// JKT is cnf.jkt (RFC 9449 section 6.1, RFC 7800): the RFC 7638
	// SHA-256 thumbprint of the DPoP key an access or refresh token is
	// bound to, or "" for a bearer token. A bound token is accepted only
	// with a DPoP proof signed by that key (DPoPVerifier.Verify, the
	// Guard, the TokenEndpoint); Verifier.Verify refuses it.
	JKT string

	// Extra holds the custom claims: those not registered above, as raw
	// JSON values, such as roles or a tenant. Names that equal a registered
	// claim name, or differ from one only in case, are refused, when
	// minting and when verifying, so a custom claim never stands in for a
	// registered one. When minting, each value must be valid JSON (no
	// duplicate names in an object, none differing only in case), two
	// names must not differ only in case, and all of them together must fit
	// in MaxExtraSize; values are stored compacted. Read them into a struct
	// with DecodeExtra.
	Extra map[string]json.RawMessage
}

// MaxExtraSize caps the custom claims (Extra) of a token, measured as one
// compact JSON object: 4 KiB. Tokens travel in headers, and a Verifier
// refuses tokens longer than DefaultMaxTokenSize (8 KiB) before decoding
// them; this leaves room for the registered claims, the header and an RSA
// signature. Minting refuses more with ErrConfig. Custom claims are for
// what every request needs (roles, a tenant), not for profiles: look
// those up by subject.
const MaxExtraSize = 4 << 10

// DecodeExtra stores the custom claims (Extra) in the value v points to,
// as json.Unmarshal does with one JSON object of them: a struct with json
// tags, a map, or a *json.RawMessage.
//
// Only custom claims are decoded, never registered ones: a field tagged
// `json:"sub"` or `json:"exp"` (or an embedded jwt.RegisteredClaims) is
// left as it was, since Extra never holds those names; read them from the
// Claims fields, which the verifier has checked. As with json.Unmarshal,
// fields without a matching custom claim keep their values, and names
// match fields case-insensitively: custom claims whose names differ only
// in case (which the Issuer never mints) are an error, so which one fills
// a field never depends on order.
func (c *Claims) DecodeExtra(v any) error {
	extra, err := cleanExtra(c.Extra, -1)
	if err == nil {
		err = json.Unmarshal(appendExtra(nil, extra), v)
	}
	if err != nil {
		return fmt.Errorf("jtiguard: decoding custom claims: %w", err)
	}
	return nil
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
	cCnf
)

var claimNames = []string{
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope",
	"sid", "acr", "amr", "auth_time", "purpose", "gen", "cnf",
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
	case "cnf":
		c.JKT, err = r.cnf()
		bit = cCnf
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
	if c.JKT != "" {
		w.name("cnf")
		w.b = append(w.b, `{"jkt":`...)
		w.b = appendJSONString(w.b, c.JKT)
		w.b = append(w.b, '}')
	}
	for _, n := range sortedNames(c.Extra) {
		w.raw(n, string(c.Extra[n]))
	}
	return w.close()
}

func sortedNames(extra map[string]json.RawMessage) []string {
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// appendExtra appends extra as one JSON object, members sorted by name.
func appendExtra(b []byte, extra map[string]json.RawMessage) []byte {
	w := jsonWriter{b: b}
	for _, n := range sortedNames(extra) {
		w.raw(n, string(extra[n]))
	}
	return w.close()
}

// cleanExtra returns a copy of extra fit to be signed, each value
// compacted, or the reason it is not: a name that is not valid UTF-8, is
// registered or differs from a registered name only in case, or differs
// from another only in case; a value that is not strict JSON (see
// jsonReader) or holds an object with two names that differ at most in
// case; more than limit bytes in all, unless limit is negative. It returns
// nil for an empty extra.
func cleanExtra(extra map[string]json.RawMessage, limit int) (map[string]json.RawMessage, error) {
	if len(extra) == 0 {
		return nil, nil
	}
	out := make(map[string]json.RawMessage, len(extra))
	folded := make(map[string]bool, len(extra))
	size := 1 // the closing brace; each member adds its colon and a '{' or ','
	for n, v := range extra {
		switch {
		case !utf8.ValidString(n):
			return nil, errors.New("a custom claim name is not valid UTF-8")
		case registeredName(n):
			return nil, fmt.Errorf("custom claim %q has the name of a registered claim", n)
		case folded[foldName(n)]:
			return nil, fmt.Errorf("custom claim %q and another differ only in case", n)
		}
		folded[foldName(n)] = true
		r := jsonReader{s: string(v)}
		r.ws()
		b, err := r.compact(nil, 0)
		if err != nil || r.end() != nil {
			return nil, fmt.Errorf("custom claim %q is not valid JSON, or repeats a name in an object", n)
		}
		out[n] = b
		size += len(appendJSONString(nil, n)) + 2 + len(b)
		if limit >= 0 && size > limit {
			return nil, fmt.Errorf("custom claims exceed %d bytes", limit)
		}
	}
	return out, nil
}

// compact validates a JSON value as skip does and appends it to b without
// insignificant white space, refusing objects whose member names repeat
// or differ only in case: decoders disagree on which of two such members
// wins, and encoding/json matches struct fields case-insensitively.
func (r *jsonReader) compact(b []byte, depth int) ([]byte, error) {
	if depth > maxJSONDepth {
		return nil, errJSON
	}
	open := r.peek()
	if open != '{' && open != '[' {
		start := r.i
		if err := r.skip(depth); err != nil { // a string, number or literal
			return nil, err
		}
		return append(b, r.s[start:r.i]...), nil
	}
	closing := byte('}')
	var names map[string]bool
	if open == '{' {
		names = map[string]bool{}
	} else {
		closing = ']'
	}
	r.i++
	b = append(b, open)
	for n := 0; ; n++ {
		r.ws()
		if r.peek() == closing && n == 0 {
			r.i++
			return append(b, closing), nil
		}
		if n > 0 {
			switch r.peek() {
			case closing:
				r.i++
				return append(b, closing), nil
			case ',':
				r.i++
				r.ws()
				b = append(b, ',')
			default:
				return nil, errJSON
			}
		}
		if names != nil {
			start := r.i
			name, err := r.str()
			if err != nil || names[foldName(name)] {
				return nil, errJSON
			}
			names[foldName(name)] = true
			b = append(b, r.s[start:r.i]...)
			r.ws()
			if r.peek() != ':' {
				return nil, errJSON
			}
			r.i++
			r.ws()
			b = append(b, ':')
		}
		var err error
		if b, err = r.compact(b, depth+1); err != nil {
			return nil, err
		}
	}
}

// foldName maps names that strings.EqualFold (and so encoding/json's
// field matching) holds equal to one string: each rune becomes the least
// of its case-folding orbit, which for ASCII letters is the upper case.
func foldName(s string) string {
	ascii := true
	for i := 0; i < len(s) && ascii; i++ {
		ascii = s[i] < utf8.RuneSelf
	}
	if ascii {
		return strings.ToUpper(s)
	}
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// cnf reads a confirmation claim (RFC 7800) strictly: an object with
// exactly one member, jkt, a thumbprint as validJKT has it. Other
// confirmation methods (jwk, x5t#S256, ...) are refused, not ignored: a
// token bound by a method this package cannot check must not pass as a
// bearer token.
func (r *jsonReader) cnf() (string, error) {
	if r.peek() != '{' {
		return "", errJSON
	}
	sub := jsonReader{s: r.s, i: r.i}
	if sub.open() != nil {
		return "", errJSON
	}
	name, ok, err := sub.next()
	if err != nil || !ok || name != "jkt" {
		return "", errJSON
	}
	jkt, err := sub.str()
	if err != nil || !validJKT(jkt) {
		return "", errJSON
	}
	if _, more, err := sub.next(); err != nil || more {
		return "", errJSON
	}
	r.i = sub.i
	return jkt, nil
}

// validJKT reports whether s is an RFC 7638 SHA-256 thumbprint as RFC
// 9449 writes it: 43 characters of canonical, unpadded base64url.
func validJKT(s string) bool {
	if len(s) != 43 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !b64Alphabet[s[i]] {
			return false
		}
	}
	// 32 bytes take 42 2/3 characters: the last one's 2 low bits are 0.
	return strings.IndexByte(b64URLAlphabet, s[42])&3 == 0
}

const b64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

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
	return nil
}
