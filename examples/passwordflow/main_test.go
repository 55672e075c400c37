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
