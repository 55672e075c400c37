// Command dpopclient is the DPoP walkthrough of the passwordflow example,
// where curl cannot go: DPoP proofs are signed per request with a key the
// client never sends. It logs in to the token server with
// golang.org/x/oauth2 over jtiguard.DPoPTransport, calls the DPoP-only
// route, refreshes, and then plays the thief with the tokens it got,
// printing every answer. It exits non-zero if any answer is not the one
// expected.
//
//	make run                                # the token server, in another terminal
//	go -C examples run ./dpopclient         # -server http://127.0.0.1:8080
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/jtiguard/jtiguard"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dpopclient:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpopclient", flag.ContinueOnError)
	server := fs.String("server", "http://127.0.0.1:8080", "the token server's URL: its -external-url")
	clientID := fs.String("client", "demo-public", "the OAuth client id")
	secret := fs.String("secret", "", "the client secret; empty: a public client, whose refresh tokens are bound to the key too")
	user := fs.String("user", "alice", "username")
	pass := fs.String("password", "secret", "password")
	if err := fs.Parse(args); err != nil {
		return err
	}
	base := strings.TrimSuffix(*server, "/")
	c := &checker{out: out}

	owner, err := newClient(context.Background())
	if err != nil {
		return err
	}
	conf := &oauth2.Config{
		ClientID:     *clientID,
		ClientSecret: *secret,
		Endpoint:     oauth2.Endpoint{TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInParams},
	}

	// 1. Log in: the password grant, with a proof of the owner's key.
	tok, err := conf.PasswordCredentialsToken(owner.ctx, *user, *pass)
	if err != nil {
		if strings.Contains(err.Error(), "predates the replay store") {
			return fmt.Errorf("login: %w (the server started less than a few seconds ago and refuses, fail closed, proofs as old as its memory: try again)", err)
		}
		return fmt.Errorf("login: %w", err)
	}
	fmt.Fprintf(out, "key thumbprint (jkt): %s\n", owner.dpop.JKT())
	c.check("POST /token password grant: token_type", tok.Type(), "DPoP")

	// 2. The DPoP-only route: Authorization: DPoP and a proof with ath.
	status, body := get(conf.Client(owner.ctx, tok), base+"/dpop/me", "")
	c.check("GET /dpop/me with the key", status, 200, body)

	// 3. Refresh through the TokenSource, as when the token expires.
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	fresh, err := conf.TokenSource(owner.ctx, &stale).Token()
	if err != nil {
		return fmt.Errorf("refresh: %w", err)
	}
	c.check("POST /token refresh_token grant: token_type", fresh.Type(), "DPoP")
	status, body = get(conf.Client(owner.ctx, fresh), base+"/dpop/me", "")
	c.check("GET /dpop/me with the refreshed token", status, 200, body)

	// 4. The thief has the tokens, not the key.
	thief, err := newClient(context.Background())
	if err != nil {
		return err
	}
	status, body = get(http.DefaultClient, base+"/dpop/me", "Bearer "+fresh.AccessToken)
	c.check("stolen access token as Bearer on /dpop/me", status, 401, body)
	status, body = get(http.DefaultClient, base+"/me", "Bearer "+fresh.AccessToken)
	c.check("stolen access token as Bearer on /me", status, 401, body)
	status, body = get(&http.Client{Transport: thief.dpop}, base+"/dpop/me", "DPoP "+fresh.AccessToken)
	c.check("stolen access token with the thief's key", status, 401, body)
	if *secret == "" {
		staleFresh := *fresh
		staleFresh.Expiry = time.Now().Add(-time.Minute)
		_, err = conf.TokenSource(thief.ctx, &staleFresh).Token()
		var re *oauth2.RetrieveError
		code := ""
		if errors.As(err, &re) {
			code = re.ErrorCode
		}
		c.check("stolen refresh token with the thief's key", code, "invalid_grant")
		status, body = get(conf.Client(owner.ctx, fresh), base+"/dpop/me", "")
		c.check("the owner's token after the theft attempt", status, 200, body)
	}

	fmt.Fprintf(out, "use_dpop_nonce answers met (and retried by the transport): %d\n", owner.nonceAsks.Load())
	if c.failed > 0 {
		return fmt.Errorf("%d answers not as expected", c.failed)
	}
	fmt.Fprintln(out, "all as expected")
	return nil
}

// client is an HTTP client that signs DPoP proofs with a key of its own,
// in the context x/oauth2 takes it from.
type client struct {
	ctx       context.Context
	dpop      *jtiguard.DPoPTransport
	nonceAsks atomic.Int64
}

func newClient(ctx context.Context) (*client, error) {
	key, err := jtiguard.GenerateKey("", jtiguard.ES256)
	if err != nil {
		return nil, err
	}
	c := &client{}
	if c.dpop, err = jtiguard.NewDPoPTransport(key, nonceCounter{&c.nonceAsks}); err != nil {
		return nil, err
	}
	c.ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: c.dpop, Timeout: 10 * time.Second})
	return c, nil
}

// nonceCounter counts the server's use_dpop_nonce answers: 400 from the
// token endpoint, 401 with a DPoP challenge from the API.
type nonceCounter struct{ n *atomic.Int64 }

func (c nonceCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	asked := strings.Contains(res.Header.Get("WWW-Authenticate"), "use_dpop_nonce")
	if res.StatusCode == http.StatusBadRequest {
		body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		if err != nil {
			return nil, err
		}
		res.Body = io.NopCloser(bytes.NewReader(body))
		asked = asked || bytes.Contains(body, []byte(`"use_dpop_nonce"`))
	}
	if asked {
		c.n.Add(1)
	}
	return res, nil
}

// get GETs url with client, with an Authorization header if auth is set,
// and returns the status and a one-line summary of the answer.
func get(client *http.Client, url, auth string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode == http.StatusOK {
		var me map[string]any
		if json.Unmarshal(data, &me) == nil {
			return res.StatusCode, fmt.Sprintf("sub=%v client_id=%v jkt=%v", me["sub"], me["client_id"], me["jkt"])
		}
	}
	return res.StatusCode, res.Header.Get("WWW-Authenticate")
}

// checker prints each answer against the one expected.
type checker struct {
	out    io.Writer
	failed int
}

func (c *checker) check(what string, got, want any, detail ...string) {
	mark := "ok  "
	if got != want {
		mark = "FAIL"
		c.failed++
	}
	line := fmt.Sprintf("%s %s: %v", mark, what, got)
	if got != want {
		line += fmt.Sprintf(" (want %v)", want)
	}
	if len(detail) > 0 && detail[0] != "" {
		line += "  " + detail[0]
	}
	fmt.Fprintln(c.out, line)
}
