package tokenserver

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// loginAs logs user in with the password grant from a client sending ua,
// and returns the access token and its sid.
func loginAs(t *testing.T, base, user, pass, ua string) (at, sid string) {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}}
	req, err := http.NewRequest("POST", base+"/token", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", ua)
	req.SetBasicAuth("demo-client", "demo-secret")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
	me := call(t, base, "GET", "/me", nil, body.AccessToken, false)
	require.Equal(t, http.StatusOK, me.status)
	return body.AccessToken, me.str("sid")
}

// listed returns the sessions of one page of GET /sessions and its next
// cursor.
func listed(t *testing.T, r reply) (sessions []map[string]any, next string) {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, r.body)
	for _, s := range r.body["sessions"].([]any) {
		sessions = append(sessions, s.(map[string]any))
	}
	return sessions, r.str("next")
}

// sessionsSuite drives the devices routes; a and b are two instances (the
// same one on the in-memory store): a session ended on one is refused on
// the other at once.
func sessionsSuite(t *testing.T, a, b string) {
	const firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
	laptop, laptopSID := loginAs(t, a, "alice", "secret", firefox)
	phone, phoneSID := loginAs(t, b, "alice", "secret", "curl/8.5.0")
	bob, bobSID := loginAs(t, a, "bob", "hunter2", "curl/8.5.0")

	t.Run("list", func(t *testing.T) {
		list, next := listed(t, call(t, b, "GET", "/sessions", nil, laptop, false))
		assert.Empty(t, next)
		require.Len(t, list, 2)
		// Logins within one second are listed in either order.
		bySID := map[any]map[string]any{list[0]["sid"]: list[0], list[1]["sid"]: list[1]}
		l, p := bySID[laptopSID], bySID[phoneSID]
		require.NotNil(t, l)
		require.NotNil(t, p)
		assert.Equal(t, "Firefox on Linux", l["device"])
		assert.Equal(t, "127.0.0.0/24", l["ip"], "a prefix, not the address")
		assert.Equal(t, "demo-client", l["client_id"])
		assert.Equal(t, "pwd", l["acr"])
		assert.Equal(t, true, l["current"])
		assert.Equal(t, "curl", p["device"])
		assert.Equal(t, false, p["current"])
		for _, k := range []string{"created", "refreshed", "expires"} {
			assert.NotEmpty(t, l[k], k)
		}

		first, next := listed(t, call(t, a, "GET", "/sessions?limit=1", nil, phone, false))
		require.Len(t, first, 1)
		require.NotEmpty(t, next)
		second, next := listed(t, call(t, b, "GET", "/sessions?limit=1&cursor="+url.QueryEscape(next), nil, phone, false))
		require.Len(t, second, 1)
		assert.Empty(t, next)
		assert.Equal(t, []any{list[0]["sid"], list[1]["sid"]}, []any{first[0]["sid"], second[0]["sid"]}, "the pages are the list's")

		for _, q := range []string{"?cursor=nonsense", "?limit=0", "?limit=x"} {
			r := call(t, a, "GET", "/sessions"+q, nil, laptop, false)
			assert.Equal(t, http.StatusBadRequest, r.status, q)
			assert.Equal(t, "invalid_request", r.str("error"), q)
		}
		assert.Equal(t, http.StatusUnauthorized, call(t, a, "GET", "/sessions", nil, "", false).status)

		bobs, _ := listed(t, call(t, a, "GET", "/sessions", nil, bob, false))
		require.Len(t, bobs, 1, "each user sees their own")
		assert.Equal(t, bobSID, bobs[0]["sid"])
	})

	t.Run("another user cannot end it, and cannot tell it exists", func(t *testing.T) {
		r := call(t, a, "DELETE", "/sessions/"+phoneSID, nil, bob, false)
		assert.Equal(t, http.StatusNoContent, r.status)
		unknown := call(t, a, "DELETE", "/sessions/"+strings.Repeat("A", 22), nil, bob, false)
		assert.Equal(t, r.status, unknown.status, "the same answer for a sid that does not exist")
		assert.Equal(t, http.StatusOK, call(t, b, "GET", "/me", nil, phone, false).status, "alice's phone still works")
		assert.Equal(t, http.StatusBadRequest, call(t, a, "DELETE", "/sessions/not-a-sid", nil, bob, false).status)
	})

	t.Run("the owner ends a device: its token is refused at once, everywhere", func(t *testing.T) {
		assert.Equal(t, http.StatusNoContent, call(t, a, "DELETE", "/sessions/"+phoneSID, nil, laptop, false).status)
		r := call(t, b, "GET", "/me", nil, phone, false)
		assert.Equal(t, http.StatusUnauthorized, r.status)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_token"`)
		assert.Equal(t, http.StatusNoContent, call(t, b, "DELETE", "/sessions/"+phoneSID, nil, laptop, false).status, "idempotent")
		sessions, _ := listed(t, call(t, b, "GET", "/sessions", nil, laptop, false))
		require.Len(t, sessions, 1)
		assert.Equal(t, laptopSID, sessions[0]["sid"])
	})

	t.Run("sign out everywhere else", func(t *testing.T) {
		tablet, _ := loginAs(t, b, "alice", "secret", "curl/8.5.0")
		tv, _ := loginAs(t, a, "alice", "secret", "curl/8.5.0")
		r := call(t, b, "POST", "/sessions/others/logout", nil, laptop, false)
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.EqualValues(t, 2, r.body["sessions"])
		for _, tok := range []string{tablet, tv} {
			assert.Equal(t, http.StatusUnauthorized, call(t, a, "GET", "/me", nil, tok, false).status)
		}
		assert.Equal(t, http.StatusOK, call(t, a, "GET", "/me", nil, laptop, false).status)
		assert.Equal(t, http.StatusOK, call(t, a, "GET", "/me", nil, bob, false).status, "another user's sessions are untouched")
		assert.Equal(t, http.StatusUnauthorized, call(t, a, "POST", "/sessions/others/logout", nil, tv, false).status, "an ended session ends nothing")
	})
}

func TestSessionsInMemory(t *testing.T) {
	base := instance(t, filepath.Join(t.TempDir(), "key.pem"), "")
	sessionsSuite(t, base, base)
}

func TestSessionsTwoInstancesOnRedis(t *testing.T) {
	redis := redistest.Start(t)
	key := filepath.Join(t.TempDir(), "key.pem")
	sessionsSuite(t, instance(t, key, redis.Addr()), instance(t, key, redis.Addr()))
}

func TestDeviceLabel(t *testing.T) {
	for ua, want := range map[string]string{
		"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0":                                                                  "Firefox on Linux",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36":                         "Chrome on Windows",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131":                     "Edge on Windows",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1": "Safari on iOS",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36":                   "Chrome on Android",
		"curl/8.5.0":             "curl",
		"Go-http-client/1.1":     "Go-http-client",
		"":                       "",
		strings.Repeat("x", 100): "",
	} {
		assert.Equal(t, want, deviceLabel(ua), ua)
	}
}

func TestIPPrefix(t *testing.T) {
	for remote, want := range map[string]string{
		"203.0.113.77:5555":        "203.0.113.0/24",
		"[2001:db8:1:2::5]:443":    "2001:db8:1::/48",
		"[::ffff:198.51.100.9]:80": "198.51.100.0/24",
		"[fe80::1%eth0]:80":        "fe80::/48",
		"not an address":           "",
		"@":                        "",
	} {
		assert.Equal(t, want, ipPrefix(remote), remote)
	}
}
