package jtiguard

import (
	"strings"
	"testing"
)

// parseChallenge reads `Bearer name="v", name=token, ...` strictly and
// returns its parameters, or false.
func parseChallenge(s string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(s, "Bearer")
	if !ok {
		return nil, false
	}
	params := map[string]string{}
	if rest == "" {
		return params, true
	}
	rest, ok = strings.CutPrefix(rest, " ")
	for ok && rest != "" {
		name, after, found := strings.Cut(rest, "=")
		if !found || name == "" || strings.ContainsAny(name, " \",") {
			return nil, false
		}
		var val strings.Builder
		if strings.HasPrefix(after, `"`) {
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' {
					i++
				}
				if i >= len(after) || after[i] < 0x20 || after[i] >= 0x7f {
					return nil, false
				}
				val.WriteByte(after[i])
			}
			if i >= len(after) {
				return nil, false
			}
			after = after[i+1:]
		} else {
			end := strings.IndexByte(after, ',')
			if end < 0 {
				end = len(after)
			}
			val.WriteString(after[:end])
			after = after[end:]
		}
		if _, dup := params[name]; dup {
			return nil, false
		}
		params[name] = val.String()
		if after == "" {
			return params, true
		}
		rest, ok = strings.CutPrefix(after, ", ")
	}
	return params, ok
}

// FuzzChallenge: whatever the realm and the error's texts, the
// WWW-Authenticate value is one line of well-formed parameters, exactly the
// expected ones: no value can end the header or inject a parameter.
func FuzzChallenge(f *testing.F) {
	f.Add("api", "invalid_token", "token expired", "read write", "mfa hwk")
	f.Add(`a"b`, "x", "line\r\nInjected: yes", `scope", error="none`, "\\")
	f.Fuzz(func(t *testing.T, realm, code, desc, scope, acr string) {
		e := &Error{Code: code, Description: desc, Scope: scope, ACRValues: acr}
		h := challenge(realm, e)
		if strings.ContainsAny(h, "\r\n\x00") {
			t.Fatalf("control characters in %q", h)
		}
		params, ok := parseChallenge(h)
		if !ok {
			t.Fatalf("malformed challenge %q", h)
		}
		want := map[string]bool{"error": true}
		for name, v := range map[string]string{"realm": realm, "error_description": desc, "scope": scope, "acr_values": acr} {
			if v != "" {
				want[name] = true
			}
		}
		for name := range params {
			if !want[name] {
				t.Fatalf("unexpected parameter %q in %q", name, h)
			}
		}
		if len(params) != len(want) {
			t.Fatalf("parameters %v, want %v, in %q", params, want, h)
		}
	})
}
