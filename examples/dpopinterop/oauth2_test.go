package dpopinterop

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/jtiguard/jtiguard"
)

// dpopContext returns a context whose HTTP client, used by x/oauth2 for
// token requests and as the base of the clients it returns, signs DPoP
// proofs with a new key.
func dpopContext(t *testing.T, clk *clock, alg string) (context.Context, *jtiguard.DPoPTransport) {
	t.Helper()
	key, err := jtiguard.GenerateKey("", alg)
	require.NoError(t, err)
	tr, err := jtiguard.NewDPoPTransport(key, nil)
	require.NoError(t, err)
	tr.Now = clk.Now
	return context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Transport: tr}), tr
}

// TestOAuth2PasswordGrant: x/oauth2 over DPoPTransport gets a DPoP token
// with the password grant (recovering from use_dpop_nonce by itself),
// refreshes it with the bound refresh token and calls the API; the token
// is useless to anyone without the key.
func TestOAuth2PasswordGrant(t *testing.T) {
	for _, alg := range []string{jtiguard.ES256, jtiguard.EdDSA} {
		t.Run(alg, func(t *testing.T) {
			clk, srv := newAuthServer(t)
			ctx, tr := dpopContext(t, clk, alg)
			conf := &oauth2.Config{
				ClientID: "app", ClientSecret: "app-secret",
				Endpoint: oauth2.Endpoint{TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader},
			}
			tok, err := conf.PasswordCredentialsToken(ctx, "alice", "wonderland")
			require.NoError(t, err)
			assert.Equal(t, "DPoP", tok.Type())

			// The token expires within x/oauth2's delta: the first call
			// refreshes it, through the same transport, with a proof of
			// the same key.
			ts := conf.TokenSource(ctx, tok)
			client := oauth2.NewClient(ctx, ts)
			for range 3 {
				code, body := get(t, client, srv.URL+"/api/me")
				require.Equal(t, http.StatusOK, code)
				assert.JSONEq(t, `{"sub":"alice"}`, body)
			}
			srv.mu.Lock()
			assert.Equal(t, []string{"password", "refresh_token"}, srv.grants)
			assert.Equal(t, 3, srv.calls)
			assert.Equal(t, 1, srv.asks, "the first token request met use_dpop_nonce; the nonce was kept after")
			srv.mu.Unlock()

			cur, err := ts.Token()
			require.NoError(t, err)
			require.NotEqual(t, tok.AccessToken, cur.AccessToken)

			// Stolen: the token with a proof of another key, as a Bearer
			// token, or as DPoP without a proof, is refused.
			_, thief := dpopContext(t, clk, alg)
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/me", nil)
			req.Header.Set("Authorization", "DPoP "+cur.AccessToken)
			resp, err := (&http.Client{Transport: thief}).Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
			for _, auth := range []string{"Bearer " + cur.AccessToken, "DPoP " + cur.AccessToken} {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/me", nil)
				req.Header.Set("Authorization", auth)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, auth[:5])
			}
			assert.NotEqual(t, tr.JKT(), thief.JKT())
		})
	}
}

// TestOAuth2ClientCredentials: the clientcredentials package, over
// DPoPTransport, gets a DPoP token and calls the API.
func TestOAuth2ClientCredentials(t *testing.T) {
	clk, srv := newAuthServer(t)
	ctx, _ := dpopContext(t, clk, jtiguard.ES256)
	conf := &clientcredentials.Config{
		ClientID: "app", ClientSecret: "app-secret",
		TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader,
	}
	client := conf.Client(ctx)
	code, body := get(t, client, srv.URL+"/api/me")
	require.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"sub":"alice"}`, body)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	assert.Equal(t, []string{"client_credentials"}, srv.grants)
	assert.Equal(t, 1, srv.asks)
}
