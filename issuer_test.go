package jtiguard_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

func TestIssuerRefusesWhatItMustSet(t *testing.T) {
	f := newFixture(t)
	aud := []string{testAudience}
	for name, c := range map[string]jtiguard.Claims{
		"no subject":          {Audience: aud},
		"no audience":         {Subject: "alice"},
		"empty audience":      {Subject: "alice", Audience: []string{""}},
		"caller-set jti":      {Subject: "alice", Audience: aud, ID: jtiguard.JTI{1}},
		"caller-set exp":      {Subject: "alice", Audience: aud, ExpiresAt: t0.Add(time.Hour)},
		"caller-set iss":      {Subject: "alice", Audience: aud, Issuer: "https://evil.example"},
		"caller-set sid":      {Subject: "alice", Audience: aud, Session: "AAAAAAAAAAAAAAAAAAAAAA"},
		"purpose on access":   {Subject: "alice", Audience: aud, Purpose: "x"},
		"extra named exp":     {Subject: "alice", Audience: aud, Extra: map[string]json.RawMessage{"exp": json.RawMessage(`1`)}},
		"extra named EXP":     {Subject: "alice", Audience: aud, Extra: map[string]json.RawMessage{"EXP": json.RawMessage(`1`)}},
		"extra invalid JSON":  {Subject: "alice", Audience: aud, Extra: map[string]json.RawMessage{"x": json.RawMessage(`{`)}},
		"invalid UTF-8 scope": {Subject: "alice", Audience: aud, Scope: "\xff"},
	} {
		_, _, err := f.issuer.Access(c)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, name)
	}
	_, _, err := f.issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: aud})
	assert.ErrorIs(t, err, jtiguard.ErrConfig, "a one-time token needs a purpose")

	for name, cfg := range map[string]jtiguard.IssuerConfig{
		"no issuer":         {},
		"access TTL > 1h":   {Issuer: testIssuer, AccessTTL: 2 * time.Hour},
		"one-time TTL < 1s": {Issuer: testIssuer, OneTimeTTL: time.Millisecond},
	} {
		_, err := jtiguard.NewIssuer(f.keys, cfg)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, name)
	}
}

func TestIssuedClaimsRoundTrip(t *testing.T) {
	for _, cacheSize := range []int{0, -1} { // default cache, and no cache
		f := newFixture(t, func(c *jtiguard.VerifierConfig) { c.CacheSize = cacheSize })
		in := jtiguard.Claims{
			Subject:  "alice \"the admin\" \u00e9\n",
			Audience: []string{testAudience, "https://other.example"},
			ClientID: "demo-client",
			Scope:    "read write",
			ACR:      "urn:example:mfa",
			AMR:      []string{"pwd", "otp"},
			AuthTime: t0.Add(-time.Minute),
			Extra:    map[string]json.RawMessage{"tenant": json.RawMessage(`{"id":7,"name":"acme"}`), "roles": json.RawMessage(`["a","b"]`)},
		}
		tok, issued, err := f.issuer.Access(in)
		require.NoError(t, err)
		for range 2 {
			got, err := f.ver.Verify(context.Background(), tok)
			require.NoError(t, err)
			assert.Equal(t, in.Subject, got.Subject)
			assert.Equal(t, in.Audience, got.Audience)
			assert.Equal(t, in.ClientID, got.ClientID)
			assert.Equal(t, in.Scope, got.Scope)
			assert.Equal(t, in.ACR, got.ACR)
			assert.Equal(t, in.AMR, got.AMR)
			assert.Equal(t, in.AuthTime.Unix(), got.AuthTime.Unix())
			assert.Equal(t, issued.ID, got.ID)
			assert.Equal(t, testIssuer, got.Issuer)
			assert.JSONEq(t, `{"id":7,"name":"acme"}`, string(got.Extra["tenant"]))
			assert.JSONEq(t, `["a","b"]`, string(got.Extra["roles"]))
		}
	}
}

func TestErrorsWrapGolangJWT(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.access(t)
	f.clock.Advance(time.Hour)
	_, err := f.ver.Verify(context.Background(), tok)
	assert.ErrorIs(t, err, jtiguard.ErrExpired)
	assert.ErrorIs(t, err, jwt.ErrTokenExpired)
	assert.ErrorIs(t, err, jtiguard.ErrInvalidToken)
	assert.NotErrorIs(t, err, jtiguard.ErrRevoked)
}

func TestJTIShape(t *testing.T) {
	seen := map[jtiguard.JTI]bool{}
	for range 1000 {
		id, err := store.NewJTI(nil)
		require.NoError(t, err)
		s := id.String()
		require.Len(t, s, 22)
		back, err := jtiguard.ParseJTI(s)
		require.NoError(t, err)
		require.Equal(t, id, back)
		require.False(t, seen[id])
		seen[id] = true
	}
	for _, bad := range []string{"", "A", "AAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAB", "AAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAA+/", "AAAAAAAAAAAAAAAAAAAA\nA"} {
		_, err := jtiguard.ParseJTI(bad)
		assert.ErrorIs(t, err, jtiguard.ErrInvalidJTI, "%q", bad)
	}
}
