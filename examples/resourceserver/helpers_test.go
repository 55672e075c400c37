package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/examples/passwordflow/tokenserver"
)

const (
	testIssuer   = "http://passwordflow.test"
	testAudience = "https://orders.example.com"
)

var discard = slog.New(slog.DiscardHandler)

// network is where the tests' servers listen: loopback TCP, or memNet in
// a synctest bubble.
type network interface {
	// serve serves hs until the test ends and returns its base URL.
	serve(t *testing.T, hs *http.Server) string
	// client is the client that reaches those servers; nil: the library's
	// and net/http's defaults.
	client() *http.Client
}

// loopback is the real network: httptest servers on 127.0.0.1.
type loopback struct{}

func (loopback) serve(t *testing.T, hs *http.Server) string {
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = hs
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.URL
}

func (loopback) client() *http.Client { return nil }

// memNet is an in-memory network (net.Pipe) for tests in a synctest
// bubble: a goroutine blocked on a socket is not durably blocked, so the
// bubble's clock would not advance past a server on loopback. Its
// addresses are 127.0.0.1:N, so that the URLs pass the library's rule for
// http (loopback only); they are never dialled.
type memNet struct {
	mu        sync.Mutex
	listeners map[string]*memListener
	transport *http.Transport
}

func newMemNet(t *testing.T) *memNet {
	n := &memNet{listeners: map[string]*memListener{}}
	n.transport = &http.Transport{DialContext: n.dial}
	t.Cleanup(n.transport.CloseIdleConnections)
	return n
}

func (n *memNet) serve(t *testing.T, hs *http.Server) string {
	n.mu.Lock()
	port := len(n.listeners) + 1
	l := &memListener{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, conns: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[l.addr.String()] = l
	n.mu.Unlock()
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { hs.Close() })
	return "http://" + l.addr.String()
}

func (n *memNet) client() *http.Client { return &http.Client{Transport: n.transport} }

func (n *memNet) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.listeners[addr]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
	}
	client.Close()
	server.Close()
	return nil, fmt.Errorf("dial %s: connection refused", addr)
}

type memListener struct {
	addr  *net.TCPAddr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

// tokenServer is passwordflow's server, as the tests run it.
type tokenServer struct {
	*tokenserver.Server
	url     string
	keyDir  string
	fetches *atomic.Int32 // of its JWKS
}

// startTokenServer starts passwordflow's server with a key directory, on
// the in-memory store or on the Redis at redisAddr; its access tokens
// carry the audiences given after ISSUER/api.
func startTokenServer(t *testing.T, n network, redisAddr string, audiences ...string) *tokenServer {
	t.Helper()
	ts := &tokenServer{keyDir: filepath.Join(t.TempDir(), "keys"), fetches: new(atomic.Int32)}
	var err error
	ts.Server, err = tokenserver.NewServer(context.Background(), tokenserver.Config{
		Issuer:            testIssuer,
		Users:             map[string]string{"alice": "secret"},
		ClientID:          "demo-client",
		ClientSecret:      "demo-secret",
		ResourceServers:   map[string]string{"orders-api": "orders-secret"},
		ResourceAudiences: audiences,
		MFACode:           "123456",
		AccessTTL:         5 * time.Minute,
		KeyDir:            ts.keyDir,
		RedisAddr:         redisAddr,
		Logger:            discard,
	})
	require.NoError(t, err)
	t.Cleanup(ts.Close)
	hs := ts.HTTPServer()
	h := hs.Handler
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/jwks.json" {
			ts.fetches.Add(1)
		}
		h.ServeHTTP(w, r)
	})
	ts.url = n.serve(t, hs)
	return ts
}

// addKey is step 1 of a rotation: a new key in the directory, published
// but not signing (the "active" file the server created names the first
// key), read at once.
func (ts *tokenServer) addKey(t *testing.T) *jtiguard.Key {
	t.Helper()
	k, err := jtiguard.GenerateKey("", jtiguard.EdDSA)
	require.NoError(t, err)
	require.NoError(t, jtiguard.WriteKeyFile(filepath.Join(ts.keyDir, "next.pem"), k))
	require.NoError(t, ts.ReloadKeys()) // or wait for the directory's next read, within 30 s
	return k
}

// activate is step 2: the new key signs from now on.
func (ts *tokenServer) activate(t *testing.T) { ts.writeActive(t, "next.pem") }

func (ts *tokenServer) writeActive(t *testing.T, name string) {
	t.Helper()
	tmp := filepath.Join(ts.keyDir, ".active")
	require.NoError(t, os.WriteFile(tmp, []byte(name+"\n"), 0o600))
	require.NoError(t, os.Rename(tmp, filepath.Join(ts.keyDir, "active")))
	require.NoError(t, ts.ReloadKeys()) // or wait for the directory's next read, within 30 s
}

// startResourceServer starts the orders API on cfg, completed with the
// tests' issuer and audience and n's client.
func startResourceServer(t *testing.T, n network, cfg Config) string {
	t.Helper()
	cfg.Issuer, cfg.Audience, cfg.HTTPClient, cfg.Logger = testIssuer, testAudience, n.client(), discard
	srv, err := NewServer(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return n.serve(t, srv.HTTPServer())
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (r reply) str(k string) string { s, _ := r.body[k].(string); return s }

// call sends one request: a form (POST) or none (GET), with a bearer token
// or the OAuth client's credentials (HTTP Basic) if given.
func call(t *testing.T, c *http.Client, method, u string, form url.Values, bearer string, basic bool) reply {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if basic {
		req.SetBasicAuth("demo-client", "demo-secret")
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	r := reply{status: res.StatusCode, header: res.Header}
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if len(data) > 0 && strings.Contains(res.Header.Get("Content-Type"), "json") {
		require.NoError(t, json.Unmarshal(data, &r.body), "%s", data)
	}
	return r
}

// login is alice's password grant at the token server: her access token.
func login(t *testing.T, n network, ts *tokenServer) string {
	t.Helper()
	r := call(t, n.client(), "POST", ts.url+"/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"secret"}}, "", true)
	require.Equal(t, http.StatusOK, r.status, r.body)
	return r.str("access_token")
}

// getOrders is GET /orders at the resource server with token.
func getOrders(t *testing.T, n network, rs, token string) reply {
	t.Helper()
	return call(t, n.client(), "GET", rs+"/orders", nil, token, false)
}

// kid is the kid in a token's header.
func kid(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	require.NoError(t, err)
	return jws.Signatures[0].Header.KeyID
}
