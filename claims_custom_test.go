package jtiguard_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// appClaims is how an application reads its custom claims. Its Subject
// field is tagged like the registered sub claim and RegisteredClaims is
// embedded as golang-jwt users do: DecodeExtra must fill neither.
type appClaims struct {
	Roles  []string `json:"roles"`
	Tenant struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	} `json:"tenant"`
	Subject string `json:"sub"`
	jwt.RegisteredClaims
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// customExtra holds the custom claims of the tests, with white space the
// Issuer compacts away.
func customExtra() map[string]json.RawMessage {
	return map[string]json.RawMessage{
		"roles":  raw(` [ "admin", "dev" ] `),
		"tenant": raw(`{"id": 7, "name": "acme"}`),
	}
}

// wantExtra is customExtra as every token carries it.
var wantExtra = map[string]json.RawMessage{
	"roles":  raw(`["admin","dev"]`),
	"tenant": raw(`{"id":7,"name":"acme"}`),
}

// payloadExtra reads the custom claims out of a token's payload without the
// library: what any holder of the token sees.
func payloadExtra(t *testing.T, tok string) map[string]json.RawMessage {
	t.Helper()
	_, p, _ := segments(tok)
	b, err := base64.RawURLEncoding.DecodeString(p)
	require.NoError(t, err)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m))
	for _, n := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "sid", "gen", "acr", "amr", "auth_time", "nbf", "purpose"} {
		delete(m, n)
	}
	return m
}

func TestLoginCustomClaims(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	in := customExtra()
	p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", ClientID: "demo-client", Scope: "read", Extra: in})
	require.NoError(t, err)
	in["roles"] = raw(`["root"]`) // the caller's map is not kept

	assert.Equal(t, wantExtra, p.Access.Extra)
	assert.Equal(t, wantExtra, p.Refresh.Extra)
	for name, tok := range map[string]string{"access": p.AccessToken, "refresh": p.RefreshToken} {
		assert.Equal(t, wantExtra, payloadExtra(t, tok), "the %s token carries them", name)
	}

	c, err := sf.ver.Verify(ctx, p.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, wantExtra, c.Extra)
	assert.Equal(t, "alice", c.Subject)

	got := appClaims{Subject: "untouched"}
	require.NoError(t, c.DecodeExtra(&got))
	assert.Equal(t, []string{"admin", "dev"}, got.Roles)
	assert.Equal(t, 7, got.Tenant.ID)
	assert.Equal(t, "acme", got.Tenant.Name)
	assert.Equal(t, "untouched", got.Subject, "a field tagged sub is not a custom claim")
	assert.Zero(t, got.RegisteredClaims, "registered claims are never decoded into the caller's struct")

	var m map[string]any
	require.NoError(t, c.DecodeExtra(&m))
	assert.Equal(t, map[string]any{"roles": []any{"admin", "dev"}, "tenant": map[string]any{"id": 7.0, "name": "acme"}}, m)

	// A session without custom claims carries none, and decodes to nothing.
	plain := sf.login(t, "bob")
	c, err = sf.ver.Verify(ctx, plain.AccessToken)
	require.NoError(t, err)
	assert.Empty(t, c.Extra)
	assert.Empty(t, payloadExtra(t, plain.RefreshToken))
	got = appClaims{}
	require.NoError(t, c.DecodeExtra(&got))
	assert.Zero(t, got)
}

func TestDecodeExtraErrors(t *testing.T) {
	c := jtiguard.Claims{Extra: map[string]json.RawMessage{"roles": raw(`["a"]`)}}
	var notSlice struct {
		Roles int `json:"roles"`
	}
	var ute *json.UnmarshalTypeError
	assert.ErrorAs(t, c.DecodeExtra(&notSlice), &ute)
	var iue *json.InvalidUnmarshalError
	assert.ErrorAs(t, c.DecodeExtra(nil), &iue)
	assert.ErrorAs(t, c.DecodeExtra(notSlice), &iue)

	// Which of two case variants would fill a field is up to order in
	// encoding/json: DecodeExtra refuses to guess, at the top level and
	// inside values.
	for name, extra := range map[string]map[string]json.RawMessage{
		"names differ in case":   {"role": raw(`"user"`), "ROLE": raw(`"admin"`)},
		"nested duplicate":       {"tenant": raw(`{"id":1,"id":2}`)},
		"nested case variant":    {"tenant": raw(`{"id":1,"ID":2}`)},
		"invalid JSON":           {"tenant": raw(`{`)},
		"registered name":        {"sub": raw(`"root"`)},
		"Kelvin sign variant":    {"\u212Aind": raw(`1`), "kind": raw(`2`)},
		"long s of a registered": {"\u017Fub": raw(`"root"`)},
	} {
		var v map[string]any
		assert.Error(t, (&jtiguard.Claims{Extra: extra}).DecodeExtra(&v), name)
	}
}

func TestRefreshCarriesCustomClaims(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Extra: customExtra()})
	require.NoError(t, err)
	for i := range 3 {
		prev := p
		p, err = sf.sess.Refresh(ctx, prev.RefreshToken)
		require.NoError(t, err, "rotation %d", i+1)
		assert.Equal(t, wantExtra, p.Access.Extra, "rotation %d", i+1)
		assert.Equal(t, wantExtra, payloadExtra(t, p.RefreshToken), "rotation %d", i+1)
		c, err := sf.ver.Verify(ctx, p.AccessToken)
		require.NoError(t, err)
		assert.Equal(t, wantExtra, c.Extra, "rotation %d", i+1)

		// Within grace the same successor comes back, with the same claims.
		again, err := sf.sess.Refresh(ctx, prev.RefreshToken)
		require.NoError(t, err)
		assert.Equal(t, p.RefreshToken, again.RefreshToken)
		assert.Equal(t, wantExtra, again.Access.Extra)
		c, err = sf.ver.Verify(ctx, again.AccessToken)
		require.NoError(t, err)
		assert.Equal(t, wantExtra, c.Extra)
	}
}

func TestRenewChangesCustomClaims(t *testing.T) {
	for name, tc := range map[string]struct {
		change map[string]json.RawMessage
		want   map[string]json.RawMessage
	}{
		"nil keeps them":      {change: nil, want: wantExtra},
		"new ones replace":    {change: map[string]json.RawMessage{"roles": raw(` ["viewer"]`)}, want: map[string]json.RawMessage{"roles": raw(`["viewer"]`)}},
		"an empty map clears": {change: map[string]json.RawMessage{}, want: nil},
	} {
		t.Run(name, func(t *testing.T) {
			sf := newSessions(t, jtiguard.SessionConfig{})
			ctx := context.Background()
			p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", ACR: "pwd", Extra: customExtra()})
			require.NoError(t, err)
			n, err := sf.sess.Renew(ctx, p.AccessToken, jtiguard.Change{ACR: "mfa", Extra: tc.change})
			require.NoError(t, err)
			c, err := sf.ver.Verify(ctx, n.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, "mfa", c.ACR)
			assert.Equal(t, tc.want, nilIfEmpty(c.Extra))
			assert.Equal(t, tc.want, nilIfEmpty(payloadExtra(t, n.RefreshToken)))

			// The renewed family's refreshes carry the changed claims.
			r, err := sf.sess.Refresh(ctx, n.RefreshToken)
			require.NoError(t, err)
			c, err = sf.ver.Verify(ctx, r.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, tc.want, nilIfEmpty(c.Extra))

			_, err = sf.ver.Verify(ctx, p.AccessToken)
			assert.ErrorIs(t, err, jtiguard.ErrSuperseded)
		})
	}
}

func nilIfEmpty(m map[string]json.RawMessage) map[string]json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	return m
}

// refusedExtra are custom claims every minting path refuses.
var refusedExtra = map[string]map[string]json.RawMessage{
	"sub":                         {"sub": raw(`"root"`)},
	"SUB":                         {"SUB": raw(`"root"`)},
	"exp":                         {"exp": raw(`9999999999`)},
	`"jti"`:                       {"jti": raw(`"AAAAAAAAAAAAAAAAAAAAAA"`)},
	"Sid":                         {"Sid": raw(`"AAAAAAAAAAAAAAAAAAAAAA"`)},
	"Client_ID":                   {"Client_ID": raw(`"other"`)},
	"long s folding to sub":       {"\u017Fub": raw(`"root"`)},
	"names that differ in case":   {"role": raw(`"user"`), "Role": raw(`"admin"`)},
	"invalid JSON":                {"tenant": raw(`{"id":`)},
	"empty value":                 {"tenant": nil},
	"two values":                  {"tenant": raw(`1 2`)},
	"trailing comma":              {"roles": raw(`["a",]`)},
	"single quotes":               {"roles": raw(`['a']`)},
	"lone surrogate":              {"name": raw(`"\ud800"`)},
	"invalid UTF-8 value":         {"name": raw("\"\xff\"")},
	"invalid UTF-8 name":          {"\xff": raw(`1`)},
	"duplicate inside a value":    {"tenant": raw(`{"id":1,"id":2}`)},
	"case variant inside a value": {"tenant": raw(`{"id":1,"Id":2}`)},
	"too deep":                    {"deep": raw(strings.Repeat("[", 40) + strings.Repeat("]", 40))},
	"over MaxExtraSize":           {"pad": raw(`"` + strings.Repeat("x", jtiguard.MaxExtraSize) + `"`)},
}

func TestCustomClaimsRefused(t *testing.T) {
	ctx := context.Background()
	aud := []string{testAudience}
	for name, extra := range refusedExtra {
		t.Run(name, func(t *testing.T) {
			sf := newSessions(t, jtiguard.SessionConfig{})

			_, _, err := sf.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: aud, Extra: extra})
			assert.ErrorIs(t, err, jtiguard.ErrConfig, "Issuer.Access")
			_, _, err = sf.issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: aud, Purpose: "confirm", Extra: extra})
			assert.ErrorIs(t, err, jtiguard.ErrConfig, "Issuer.OneTime")
			_, _, err = sf.issuer.Step(jtiguard.Claims{Subject: "alice", Purpose: "mfa", Extra: extra})
			assert.ErrorIs(t, err, jtiguard.ErrConfig, "Issuer.Step")

			_, err = sf.sess.Login(ctx, jtiguard.Login{Subject: "carol", Extra: extra})
			assert.ErrorIs(t, err, jtiguard.ErrConfig, "Login")
			n, err := sf.sess.LogoutAll(ctx, "carol")
			require.NoError(t, err)
			assert.Zero(t, n, "a refused login begins no session")

			// A refused Renew leaves the family as it was.
			p := sf.login(t, "alice")
			_, err = sf.sess.Renew(ctx, p.AccessToken, jtiguard.Change{Extra: extra})
			assert.ErrorIs(t, err, jtiguard.ErrConfig, "Renew")
			_, err = sf.ver.Verify(ctx, p.AccessToken)
			assert.NoError(t, err, "the family did not move")
			_, err = sf.sess.Refresh(ctx, p.RefreshToken)
			assert.NoError(t, err)

			// A refused CompleteStep does not use up the step token.
			step, _, err := sf.issuer.Step(jtiguard.Claims{Subject: "alice", Purpose: "mfa"})
			require.NoError(t, err)
			_, err = sf.sess.CompleteStep(ctx, step, "mfa", jtiguard.Login{Extra: extra})
			assert.ErrorIs(t, err, jtiguard.ErrConfig, "CompleteStep")
			_, err = sf.sess.CompleteStep(ctx, step, "mfa", jtiguard.Login{})
			assert.NoError(t, err)
		})
	}
}

// Every token class carries custom claims the same way: compacted as minted,
// and returned as minted.
func TestIssuerClassesCarryCustomClaims(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	aud := []string{testAudience}
	for name, mint := range map[string]func(jtiguard.Claims) (string, *jtiguard.Claims, error){
		"access": f.issuer.Access,
		"one-time": func(c jtiguard.Claims) (string, *jtiguard.Claims, error) {
			c.Purpose = "confirm"
			return f.issuer.OneTime(c)
		},
		"step": func(c jtiguard.Claims) (string, *jtiguard.Claims, error) {
			c.Purpose, c.Audience = "mfa", nil
			return f.issuer.Step(c)
		},
	} {
		tok, issued, err := mint(jtiguard.Claims{Subject: "alice", Audience: aud, Extra: customExtra()})
		require.NoError(t, err, name)
		assert.Equal(t, wantExtra, issued.Extra, name)
		assert.Equal(t, wantExtra, payloadExtra(t, tok), name)
	}

	tok, _, err := f.issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: aud, Purpose: "confirm", Extra: customExtra()})
	require.NoError(t, err)
	c, err := f.ver.Consume(ctx, tok, "confirm")
	require.NoError(t, err)
	assert.Equal(t, wantExtra, c.Extra)
	var got appClaims
	require.NoError(t, c.DecodeExtra(&got))
	assert.Equal(t, "acme", got.Tenant.Name)
}

func TestCustomClaimsSize(t *testing.T) {
	ctx := context.Background()
	aud := []string{testAudience}
	// pad returns one custom claim whose compact JSON object is n bytes.
	pad := func(t *testing.T, n int) map[string]json.RawMessage {
		extra := map[string]json.RawMessage{"pad": raw(`"` + strings.Repeat("x", n-len(`{"pad":""}`)) + `"`)}
		b, err := json.Marshal(extra)
		require.NoError(t, err)
		require.Len(t, b, n)
		return extra
	}

	t.Run("MaxExtraSize", func(t *testing.T) {
		sf := newSessions(t, jtiguard.SessionConfig{})
		_, _, err := sf.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: aud, Extra: pad(t, jtiguard.MaxExtraSize)})
		require.NoError(t, err)
		p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Extra: pad(t, jtiguard.MaxExtraSize)})
		require.NoError(t, err)
		assert.LessOrEqual(t, len(p.AccessToken), jtiguard.DefaultMaxTokenSize)
		_, err = sf.sess.Refresh(ctx, p.RefreshToken)
		require.NoError(t, err)

		over := pad(t, jtiguard.MaxExtraSize+1)
		_, _, err = sf.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: aud, Extra: over})
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
		_, err = sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Extra: over})
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
		_, err = sf.sess.Renew(ctx, p.AccessToken, jtiguard.Change{Extra: over})
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
	})

	t.Run("the Issuer never mints what a default Verifier refuses", func(t *testing.T) {
		f := newFixture(t)
		scope := strings.Repeat("s ", 2500) // custom claims count with the rest
		_, _, err := f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: aud, Scope: scope})
		require.NoError(t, err)
		_, _, err = f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: aud, Scope: scope, Extra: pad(t, jtiguard.MaxExtraSize)})
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
	})

	t.Run("Sessions mint up to their Verifier's MaxTokenSize", func(t *testing.T) {
		sf := newSessions(t, jtiguard.SessionConfig{}, func(c *jtiguard.VerifierConfig) { c.MaxTokenSize = 1024 })
		n := largestLogin(t, sf.sess, 1024)

		_, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "carol", Scope: "read", Extra: pad(t, n+1)})
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
		count, err := sf.sess.LogoutAll(ctx, "carol")
		require.NoError(t, err)
		assert.Zero(t, count, "refused before the store was written")

		// A Renew that would outgrow the limit is refused before the
		// family moves.
		p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Scope: "read", Extra: pad(t, n-40)})
		require.NoError(t, err)
		_, err = sf.sess.Renew(ctx, p.AccessToken, jtiguard.Change{Extra: pad(t, n+1)})
		assert.ErrorIs(t, err, jtiguard.ErrConfig)
		_, err = sf.ver.Verify(ctx, p.AccessToken)
		require.NoError(t, err)
		r, err := sf.sess.Renew(ctx, p.AccessToken, jtiguard.Change{Extra: pad(t, n)})
		require.NoError(t, err)
		_, err = sf.sess.Refresh(ctx, r.RefreshToken)
		require.NoError(t, err)
	})

	// The limit is measured before signing: exactly, for every algorithm.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for alg, material := range map[string]any{
		jtiguard.EdDSA: ed25519.NewKeyFromSeed(testSeed),
		jtiguard.ES256: ecKey,
		jtiguard.RS256: rsaKey,
		jtiguard.HS256: []byte(testSeed),
	} {
		t.Run(alg, func(t *testing.T) {
			key, err := jtiguard.NewKey("", alg, material)
			require.NoError(t, err)
			keys, err := jtiguard.NewKeySet(key)
			require.NoError(t, err)
			iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer})
			require.NoError(t, err)
			ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, MaxTokenSize: 1500, Logger: quiet})
			require.NoError(t, err)
			t.Cleanup(ver.Close)
			sess, err := jtiguard.NewSessions(iss, ver, jtiguard.SessionConfig{})
			require.NoError(t, err)
			largestLogin(t, sess, 1500)
		})
	}
}

// largestLogin finds the largest custom claims (as the length of their
// compact JSON object) a login with sess can carry under limit, and checks
// that the refusal just beyond is ErrConfig and no early one: one more byte
// of payload adds at most two characters of base64url.
func largestLogin(t *testing.T, sess *jtiguard.Sessions, limit int) int {
	t.Helper()
	ctx := context.Background()
	login := func(n int) (int, error) {
		extra := map[string]json.RawMessage{"pad": raw(`"` + strings.Repeat("x", n-len(`{"pad":""}`)) + `"`)}
		p, err := sess.Login(ctx, jtiguard.Login{Subject: "alice", Scope: "read", Extra: extra})
		if err != nil {
			return 0, err
		}
		return max(len(p.AccessToken), len(p.RefreshToken)), nil
	}
	n := len(`{"pad":""}`)
	l, err := login(n)
	require.NoError(t, err)
	n += (limit-l)*3/4 - 8 // just below the limit
	longest := 0
	for ; ; n++ {
		l, err := login(n)
		if err != nil {
			require.ErrorIs(t, err, jtiguard.ErrConfig)
			break
		}
		require.LessOrEqual(t, l, limit)
		longest = l
	}
	require.Greater(t, longest, limit-2, "refused a login whose tokens would fit")
	return n - 1
}

// A token with custom claims is held to the same strictness as any other:
// it verifies as minted, and changing any one character of it is refused
// with a 401, as FuzzVerify demands of every input.
func TestCustomClaimsTokenStaysStrict(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{}, func(c *jtiguard.VerifierConfig) { c.CacheSize = -1 })
	ctx := context.Background()
	p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", Extra: customExtra()})
	require.NoError(t, err)
	_, err = sf.ver.Verify(ctx, p.AccessToken)
	require.NoError(t, err)
	tok := []byte(p.AccessToken)
	for i := range tok {
		if tok[i] == '.' {
			continue
		}
		orig := tok[i]
		tok[i] = 'A'
		if orig == 'A' {
			tok[i] = 'B'
		}
		_, err := sf.ver.Verify(ctx, string(tok))
		var e *jtiguard.Error
		if !errors.As(err, &e) || e.Status != 401 || !errors.Is(err, jtiguard.ErrInvalidToken) {
			t.Fatalf("changing byte %d: %v", i, err)
		}
		tok[i] = orig
	}
}
