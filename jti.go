package jtiguard

import "github.com/jtiguard/jtiguard/store"

// JTI is a token identifier: 128 random bits, whose text form is the jti
// claim. State is keyed on it, never on the token's text.
type JTI = store.JTI

// ParseJTI parses the text form of a JTI (22 characters of base64url, with
// one text form per JTI), as a log line or an audit record gives it to
// RevokeID. Anything else matches ErrInvalidJTI.
func ParseJTI(s string) (JTI, error) {
	id, err := store.ParseJTI(s)
	if err != nil {
		return JTI{}, ErrInvalidJTI
	}
	return id, nil
}
