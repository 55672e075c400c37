package main

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/jtiguard/jtiguard/examples/passwordflow/tokenserver"
)

// TestFlags: flags that cannot work are refused before the server starts.
func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-key-file", "k.pem", "-key-dir", "keys"},
		{"-rs-client", "orders-api"},
		{"-rs-client", "orders-api:s,:x"},
		{"-users", ""},
		{"-users", "alice"},
		{"-client", "nosecret"},
		{"-client", "id:"},
		{"-public-client", "demo-client"},
		{"-public-client", "p:s"},
		{"-external-url", "ftp://x"},
		{"-external-url", "http://x/path"},
		{"-external-url", "https://user@x"},
	} {
		// An address that cannot be listened on: a flag accepted by mistake
		// would fail later, with another error.
		err := run(append(args, "-addr", "256.0.0.1:0"), io.Discard)
		if assert.Error(t, err, strings.Join(args, " ")) {
			assert.Regexp(t, `^-[a-z-]+: `, err.Error())
		}
	}
}

func TestWalkthroughIntrospection(t *testing.T) {
	cfg := tokenserver.Config{Users: map[string]string{"alice": "secret"}, ClientID: "c", ClientSecret: "s"}
	assert.NotContains(t, walkthrough("http://x", cfg), "/introspect")
	cfg.ResourceServers = map[string]string{"orders-api": "orders-secret"}
	assert.Contains(t, walkthrough("http://x", cfg), "curl -s -u orders-api:orders-secret -d token=$AT http://x/introspect")
}

func TestNonceSecret(t *testing.T) {
	s, err := nonceSecret(false, "")
	assert.NoError(t, err)
	assert.Nil(t, s)
	_, err = nonceSecret(false, "c2VjcmV0")
	assert.Error(t, err, "a secret without -dpop-nonces")
	a, err := nonceSecret(true, "")
	assert.NoError(t, err)
	assert.Len(t, a, 32)
	b, _ := nonceSecret(true, "")
	assert.NotEqual(t, a, b, "random")
	for _, env := range []string{
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", // openssl rand -base64 32
		"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
		" AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
	} {
		s, err := nonceSecret(true, env)
		if assert.NoError(t, err, env) {
			assert.Equal(t, byte(31), s[31])
		}
	}
	for _, env := range []string{"c2VjcmV0", "not base64!"} {
		_, err := nonceSecret(true, env)
		assert.Error(t, err, env)
	}
}

func TestWalkthroughDPoP(t *testing.T) {
	cfg := tokenserver.Config{Users: map[string]string{"alice": "secret"}, ClientID: "c", ClientSecret: "s"}
	assert.NotContains(t, walkthrough("http://x", cfg), "dpopclient")
	cfg.ExternalURL, cfg.PublicClientID = "http://x", "demo-public"
	assert.Contains(t, walkthrough("http://x", cfg), "go -C examples run ./dpopclient -server http://x\n")
	cfg.PublicClientID = ""
	assert.Contains(t, walkthrough("http://x", cfg), "go -C examples run ./dpopclient -server http://x -client c -secret s\n")
}

func TestWalkthroughSessions(t *testing.T) {
	cfg := tokenserver.Config{Users: map[string]string{"alice": "secret"}, ClientID: "c", ClientSecret: "s"}
	w := walkthrough("http://x", cfg)
	for _, want := range []string{
		`curl -s -H "Authorization: Bearer $AT" http://x/sessions | jq`,
		`curl -si -X DELETE -H "Authorization: Bearer $AT" http://x/sessions/$SID`,
		`curl -s -X POST -H "Authorization: Bearer $AT" http://x/sessions/others/logout`,
	} {
		assert.Contains(t, w, want)
	}
}

func TestWalkthroughMetrics(t *testing.T) {
	cfg := tokenserver.Config{Users: map[string]string{"alice": "secret"}, ClientID: "c", ClientSecret: "s"}
	assert.NotContains(t, walkthrough("http://x", cfg), "/metrics")
	cfg.Metrics = true
	assert.Contains(t, walkthrough("http://x", cfg), "curl -s http://x/metrics")
}
