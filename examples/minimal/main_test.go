package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMinimalServer runs the README's server through its whole life:
// login, a protected route, step-up, refresh, logout.
func TestMinimalServer(t *testing.T) {
	srv := httptest.NewServer(newServer(map[string]string{"alice": "secret"}))
	t.Cleanup(srv.Close)
	do := func(method, path, token string, form url.Values) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(form.Encode()))
		require.NoError(t, err)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("app", "")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(body)
	}
	pair := func(body string) (access, refresh string) {
		var p struct{ AccessToken, RefreshToken string }
		require.NoError(t, json.Unmarshal([]byte(strings.NewReplacer("access_token", "AccessToken", "refresh_token", "RefreshToken").Replace(body)), &p))
		return p.AccessToken, p.RefreshToken
	}

	code, body := do("POST", "/token", "", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"secret"}})
	require.Equal(t, http.StatusOK, code, body)
	at, _ := pair(body)
	_, body = do("GET", "/me", at, nil)
	assert.Equal(t, "hello alice (pwd)", body)

	code, body = do("POST", "/mfa", at, nil)
	require.Equal(t, http.StatusOK, code, body)
	at2, rt2 := pair(body)
	code, _ = do("GET", "/me", at, nil)
	assert.Equal(t, http.StatusUnauthorized, code, "the pre-MFA token is dead")
	_, body = do("GET", "/me", at2, nil)
	assert.Equal(t, "hello alice (mfa)", body)

	code, body = do("POST", "/token", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}})
	require.Equal(t, http.StatusOK, code, body)
	at3, _ := pair(body)
	code, _ = do("POST", "/logout", at3, nil)
	assert.Equal(t, http.StatusOK, code)
	code, _ = do("GET", "/me", at3, nil)
	assert.Equal(t, http.StatusUnauthorized, code, "logged out")
	code, _ = do("POST", "/token", "", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wrong"}})
	assert.Equal(t, http.StatusBadRequest, code)
}

// TestREADMEShowsThisFile: the README's server is this file, to the byte.
func TestREADMEShowsThisFile(t *testing.T) {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	assert.Contains(t, string(readme), "```go\n"+string(src)+"```\n", "README.md must show examples/minimal/main.go verbatim")
}
