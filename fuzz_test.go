package jtiguard_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jtiguard/jtiguard/store"

	"github.com/jtiguard/jtiguard"
)

// FuzzVerify feeds arbitrary strings to the verifier. It must never panic,
// must answer every rejection with a 401 *Error, and must accept nothing but
// the tokens the issuer actually minted: any other accepted string would be
// a forgery or a second encoding of a token.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	valid := map[string]bool{}
	for range 3 {
		tok, _ := fx.access(f)
		valid[tok] = true
		f.Add(tok)
	}
	once, _ := fx.oneTime(f, "confirm")
	f.Add(once)
	cases, good := forgedCases(f, fx)
	valid[good] = true // validly signed by the fixture's key: accepting it is right
	for _, c := range cases {
		if len(c.token) <= 16<<10 {
			f.Add(c.token)
		}
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := fx.ver.Verify(context.Background(), token)
		if err == nil {
			if !valid[token] {
				t.Fatalf("accepted a token that was never issued: %q (sub %q)", token, c.Subject)
			}
			return
		}
		var e *jtiguard.Error
		if !errors.As(err, &e) || e.Status != 401 || !errors.Is(err, jtiguard.ErrInvalidToken) {
			t.Fatalf("rejection is not a 401 *Error: %v", err)
		}
	})
}

// FuzzParseJTI: a jti is accepted only in its one canonical form.
func FuzzParseJTI(f *testing.F) {
	id, _ := store.NewJTI(nil)
	for _, s := range []string{id.String(), "A", "AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAB", "AAAAAAAAAAAAAAAAAAAA+/", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAA\nAAAAAAAAAAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := jtiguard.ParseJTI(s)
		if err != nil {
			if !errors.Is(err, jtiguard.ErrInvalidJTI) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("accepted %q, whose canonical form is %q", s, id.String())
		}
	})
}

// FuzzParseJWK: key loading never panics, and what it accepts is a usable
// key pinned to a supported algorithm.
func FuzzParseJWK(f *testing.F) {
	for _, s := range []string{
		`{"kty":"OKP","crv":"Ed25519","kid":"a","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
		`{"kty":"EC","crv":"P-256","kid":"e","alg":"ES256","x":"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY","y":"UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw"}`,
		`{"kty":"oct","kid":"h","alg":"HS256","k":"-ebuDNsVZ2iJtoZ-akfXTSCt4UO2cruLCsbWlBinggE"}`,
		`{"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQ"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := jtiguard.ParseJWK(data)
		if err != nil {
			if !errors.Is(err, jtiguard.ErrInvalidKey) {
				t.Fatalf("refusal does not match ErrInvalidKey: %v", err)
			}
			return
		}
		switch k.Alg() {
		case jtiguard.EdDSA, jtiguard.ES256, jtiguard.RS256, jtiguard.HS256:
		default:
			t.Fatalf("accepted a key for %q", k.Alg())
		}
	})
}
