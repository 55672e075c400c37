package jtiguard

import (
	"encoding/json"
	"testing"
)

// FuzzClaimsJSON: whatever the strict claims reader accepts is valid JSON,
// and re-encoding accepted claims reads back to the same claims.
func FuzzClaimsJSON(f *testing.F) {
	for _, s := range []string{
		`{"iss":"a","sub":"b","aud":["c","d"],"exp":2,"iat":1,"jti":"AAAAAAAAAAAAAAAAAAAAAA"}`,
		`{"exp":1,"EXP":2}`, `{"exp":1,"exp":2}`, `{"exp":"1"}`, `null`, `{"x":{"y":[1,2.5e-3,true,null,"\ud83d\ude00"]}}`,
		`{"\u0065xp":1}`, `{"a":"\ud800"}`, `{"amr":["pwd","otp"],"auth_time":5,"acr":"mfa"}`, `{} `, ` {"a":1}x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var c Claims
		seen, err := parseClaims(s, &c)
		if err != nil {
			return
		}
		if !json.Valid([]byte(s)) {
			t.Fatalf("accepted invalid JSON %q", s)
		}
		if seen&(cIss|cJti|cExp|cIat) != cIss|cJti|cExp|cIat {
			return // appendClaims writes these unconditionally, as the Issuer sets them
		}
		var again Claims
		if _, err := parseClaims(string(appendClaims(nil, &c)), &again); err != nil {
			t.Fatalf("re-encoded claims of %q do not parse: %v", s, err)
		}
	})
}

// FuzzHeader: whatever the header reader accepts is valid JSON with at most
// alg, kid and typ.
func FuzzHeader(f *testing.F) {
	for _, s := range []string{
		`{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}`, `{"alg":"none"}`, `{"alg":"EdDSA","crit":["exp"]}`,
		`{"alg":"EdDSA","jwk":{}}`, `{"alg":"a","alg":"b"}`, `{"alg":"EdDSA","kid":"k\u0031"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseHeader(s); err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("accepted invalid JSON %q", s)
		}
		for k := range m {
			if k != "alg" && k != "kid" && k != "typ" {
				t.Fatalf("accepted header member %q", k)
			}
		}
	})
}
