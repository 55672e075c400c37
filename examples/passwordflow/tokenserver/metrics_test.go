package tokenserver

import (
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMetrics: with Metrics, GET /metrics shows the verifications, the
// store calls and the events, by fixed labels only; without, it is 404.
func TestMetrics(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key.pem")
	base := instanceWith(t, func(c *Config) { c.KeyFile, c.Metrics = key, true })
	at, sid := loginAs(t, base, "alice", "secret", "curl/8.5.0")
	phone, phoneSID := loginAs(t, base, "alice", "secret", "curl/8.5.0")
	require.Equal(t, http.StatusNoContent, call(t, base, "DELETE", "/sessions/"+phoneSID, nil, at, false).status)
	require.Equal(t, http.StatusUnauthorized, call(t, base, "GET", "/me", nil, phone, false).status)

	res, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, res.Header.Get("Content-Type"), "text/plain")
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	text := string(body)
	for _, want := range []string{
		`jtiguard_verifications_total{class="access",reason="ok"}`,
		`jtiguard_verifications_total{class="access",reason="session_ended"} 1`,
		`jtiguard_events_total{event="login"} 2`,
		`jtiguard_events_total{event="session_ended"} 1`,
		`jtiguard_store_duration_seconds_count{op="end"} 1`,
		`go_goroutines`,
	} {
		assert.Contains(t, text, want)
	}
	for _, secret := range []string{at, phone, sid, phoneSID, "alice"} {
		assert.NotContains(t, text, secret, "no token, sid or subject in a label")
	}

	plain := instance(t, key, "")
	assert.Equal(t, http.StatusNotFound, call(t, plain, "GET", "/metrics", nil, "", false).status)
}
