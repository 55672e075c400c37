package main

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/examples/passwordflow/tokenserver"
)

// TestWalkthrough runs the command against the token server, in process,
// with nonces on: every answer as expected, one use_dpop_nonce.
func TestWalkthrough(t *testing.T) {
	start := time.Now()
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	srv, err := tokenserver.NewServer(context.Background(), tokenserver.Config{
		Issuer:          base,
		Users:           map[string]string{"alice": "secret"},
		ClientID:        "demo-client",
		ClientSecret:    "demo-secret",
		PublicClientID:  "demo-public",
		ExternalURL:     base,
		DPoPNonceSecret: []byte(strings.Repeat("k", 32)),
		KeyFile:         filepath.Join(t.TempDir(), "key.pem"),
		AccessTTL:       5 * time.Minute,
		Logger:          slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	ts.Config = srv.HTTPServer()
	ts.Start()
	t.Cleanup(ts.Close)
	// A new store refuses proofs as old as its memory (see the token
	// server's tests).
	time.Sleep(time.Until(start.Add(jtiguard.DefaultLeeway + time.Second)))

	for _, args := range [][]string{
		{"-server", base},
		{"-server", base + "/", "-client", "demo-client", "-secret", "demo-secret"},
	} {
		var out strings.Builder
		require.NoError(t, run(args, &out), out.String())
		assert.Contains(t, out.String(), "all as expected")
		assert.NotContains(t, out.String(), "FAIL")
		assert.Contains(t, out.String(), "ok   GET /dpop/me with the key: 200")
		assert.Contains(t, out.String(), "ok   stolen access token with the thief's key: 401")
		if len(args) == 2 {
			assert.Contains(t, out.String(), "ok   stolen refresh token with the thief's key: invalid_grant")
		}
		assert.Contains(t, out.String(), "use_dpop_nonce answers met (and retried by the transport): 1\n")
		t.Log(out.String())
	}
}
