package store

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
)

// JTI is a token identifier: 128 bits from a cryptographically secure
// source. Its text form (the jti claim) is exactly 22 characters of
// unpadded base64url. Stores key their state on it, never on the token text
// or its signature, which an attacker can re-encode without changing what
// they mean.
type JTI [16]byte

// jtiLen is the length of a JTI's text form.
const jtiLen = 22

// NewJTI returns a fresh random JTI read from r (crypto/rand when r is nil).
func NewJTI(r io.Reader) (JTI, error) {
	var id JTI
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return JTI{}, err
	}
	return id, nil
}

// String returns the jti claim value.
func (id JTI) String() string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// IsZero reports whether id is the zero value (no jti).
func (id JTI) IsZero() bool { return id == JTI{} }

// ErrInvalidJTI is what ParseJTI returns for a text that is not a JTI's
// text form.
var ErrInvalidJTI = errors.New("store: invalid jti")

// ParseJTI parses the text form of a JTI. It accepts only what NewJTI
// produces: 22 characters of the base64url alphabet whose trailing bits are
// zero, so that every JTI has exactly one text form. Anything else is
// ErrInvalidJTI.
func ParseJTI(s string) (JTI, error) {
	var id JTI
	if len(s) != jtiLen {
		return id, ErrInvalidJTI
	}
	for i := range len(s) {
		// Go's decoder skips CR and LF: the alphabet is checked first.
		if c := s[i]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return id, ErrInvalidJTI
		}
	}
	n, err := base64.RawURLEncoding.Strict().Decode(id[:], []byte(s))
	if err != nil || n != len(id) {
		return JTI{}, ErrInvalidJTI
	}
	return id, nil
}
