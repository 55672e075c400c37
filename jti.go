package jtiguard

import (
	"crypto/rand"
	"encoding/base64"
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

// ParseJTI parses the text form of a JTI. It accepts only what NewJTI
// produces: 22 characters of the base64url alphabet whose trailing bits are
// zero, so that every JTI has exactly one text form. Anything else matches
// ErrInvalidJTI.
func ParseJTI(s string) (JTI, error) {
	var id JTI
	if len(s) != jtiLen || !isBase64URL(s) {
		return id, ErrInvalidJTI
	}
	n, err := strictB64.Decode(id[:], []byte(s))
	if err != nil || n != len(id) {
		return JTI{}, ErrInvalidJTI
	}
	return id, nil
}
