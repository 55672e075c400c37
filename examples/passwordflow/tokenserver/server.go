// Package tokenserver is the passwordflow example's server: an OAuth 2.0
// token server for the password and refresh_token grants, with a small
// protected API, a signed-in devices API (GET /sessions, DELETE
// /sessions/{sid}, POST /sessions/others/logout), token revocation (RFC
// 7009) and introspection (RFC 7662) for resource servers, and DPoP (RFC
// 9449) when Config.ExternalURL is set:
// tokens bound to the client's key, and GET /dpop/me, which takes nothing
// else. It is a package of its own so that the resource server's tests
// (examples/resourceserver) run it in process.
package tokenserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/redis/go-redis/v9"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/jtiprom"
	"github.com/jtiguard/jtiguard/redisstore"
)

// Config is what the flags set.
type Config struct {
	Issuer       string            // the iss of every token, and the base URL
	Users        map[string]string // username -> password
	ClientID     string
	ClientSecret string
	// PublicClientID, if set, is a public client: one that authenticates
	// with its id alone (no secret), as an app on a user's device does.
	// With DPoP its refresh tokens are bound to the client's key too, so a
	// stolen one is useless without the key. Empty: no public client.
	PublicClientID string
	// ExternalURL turns DPoP on (RFC 9449): the origin clients address
	// this server at (scheme, host and port), which every proof's htu must
	// name. Behind a proxy or load balancer it is the public URL, the same
	// on every replica, never the listen address. Empty: DPoP off, every
	// token a Bearer token.
	ExternalURL string
	// DPoPNonceSecret, if set (at least 32 random bytes), turns DPoP server
	// nonces on: every proof must carry a recent nonce of this server, or is
	// refused with use_dpop_nonce and a DPoP-Nonce header. Nonces are
	// derived from the secret and the time, nothing is stored: replicas
	// must share the secret. Needs ExternalURL.
	DPoPNonceSecret []byte
	// ResourceServers are the clients of POST /introspect, id -> secret:
	// resource servers that verify this server's access tokens without its
	// store. They are not clients of /token or /revoke, nor is the OAuth
	// client one of /introspect.
	ResourceServers map[string]string
	// ResourceAudiences are added to the aud of every access token, after
	// Issuer+"/api" (this server's own API): the identifiers of the resource
	// servers that accept them.
	ResourceAudiences []string
	MFACode           string
	AccessTTL         time.Duration
	RefreshGrace      time.Duration
	// KeyFile is the signing key (PEM or JWK); an Ed25519 key is created if
	// missing. Ignored when KeyDir is set.
	KeyFile string
	// KeyDir, if set, is a key directory (see jtiguard.KeyDir), read again
	// every 30 s and at ReloadKeys: keys are added, rotated and retired
	// without a restart. If it holds no key, one Ed25519 key is created in
	// it, initial.pem, and an "active" file naming it.
	KeyDir    string
	RedisAddr string // empty: the in-memory store
	Logger    *slog.Logger
	// Metrics serves GET /metrics: the Verifier's verifications, cache,
	// store calls and events (jtiprom), and the Go runtime's, in the
	// Prometheus text format. On the API's own listener for the example;
	// a real server keeps it on an internal one.
	Metrics bool
}

// Server is the password-flow token server and its small API.
type Server struct {
	cfg      Config
	keys     *jtiguard.KeySet
	keyDir   *jtiguard.KeyDir // nil with a KeyFile
	issuer   *jtiguard.Issuer
	verifier *jtiguard.Verifier
	sessions *jtiguard.Sessions
	guard    *jtiguard.Guard
	dpop     *jtiguard.DPoPVerifier // nil: DPoP off
	closers  []func()
	mux      *http.ServeMux
	handler  http.Handler
	metrics  http.Handler // nil: no /metrics
}

const (
	scopesAllowed = "read write"
	purpose       = "transfer"
)

// RedisPrefix starts every key of the server's state in Redis: a resource
// server that reads that state (redisstore) gives the same Prefix.
const RedisPrefix = "passwordflow:"

// The server's deadlines. Each request is answered within requestTimeout of
// its headers, store calls included; the http.Server's own timeouts bound
// what happens around the handler: slow headers, a slow body, a client slow
// to read the answer, idle keep-alive connections.
const (
	requestTimeout    = 5 * time.Second
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds headers and body together; a body is at most
	// jtiguard.MaxFormBytes.
	readTimeout = 10 * time.Second
	// writeTimeout runs from the end of the headers, so it must outlast
	// requestTimeout for the 503 of a request out of time to go out.
	writeTimeout = requestTimeout + 5*time.Second
	idleTimeout  = 60 * time.Second
)

// NewServer builds the server; Close releases what it opened.
func NewServer(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	if err := s.openKeys(); err != nil {
		s.Close()
		return nil, err
	}
	var st store.Store
	if cfg.RedisAddr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, ContextTimeoutEnabled: true})
		rs, err := redisstore.New(ctx, redisstore.Config{Client: rdb, Prefix: RedisPrefix})
		if err != nil {
			rdb.Close()
			s.Close()
			return nil, err
		}
		s.closers = append(s.closers, func() { rs.Close(); rdb.Close() })
		st = rs
	} else {
		ms, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
		if err != nil {
			s.Close()
			return nil, err
		}
		st = ms
	}
	var err error
	if s.issuer, err = jtiguard.NewIssuer(s.keys, jtiguard.IssuerConfig{Issuer: cfg.Issuer, AccessTTL: cfg.AccessTTL}); err != nil {
		s.Close()
		return nil, err
	}
	var obs *jtiguard.Observer
	if cfg.Metrics {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if obs, err = jtiprom.New(reg, jtiprom.Options{}); err != nil {
			s.Close()
			return nil, err
		}
		s.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	s.verifier, err = jtiguard.NewVerifier(s.keys, jtiguard.VerifierConfig{
		Issuer:    cfg.Issuer,
		Audience:  cfg.Issuer + "/api",
		Store:     st,
		Logger:    cfg.Logger,
		ACRLevels: []string{"pwd", "mfa"},
		Observer:  obs, // nil without -metrics
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.closers = append(s.closers, s.verifier.Close)
	if s.sessions, err = jtiguard.NewSessions(s.issuer, s.verifier, jtiguard.SessionConfig{
		Audience:     append([]string{cfg.Issuer + "/api"}, cfg.ResourceAudiences...),
		RefreshGrace: cfg.RefreshGrace,
	}); err != nil {
		s.Close()
		return nil, err
	}
	if cfg.ExternalURL != "" {
		// The proofs' jti are recorded in the verifier's store: on Redis,
		// a proof accepted by one replica is a replay on every other.
		if s.dpop, err = jtiguard.NewDPoPVerifier(s.verifier, jtiguard.DPoPConfig{
			ExternalURL: cfg.ExternalURL,
			NonceSecret: cfg.DPoPNonceSecret,
		}); err != nil {
			s.Close()
			return nil, err
		}
	} else if cfg.DPoPNonceSecret != nil {
		s.Close()
		return nil, errors.New("DPoP nonces need an ExternalURL")
	}
	s.guard = jtiguard.NewGuard(s.verifier, jtiguard.GuardConfig{Realm: "passwordflow", DPoP: s.dpop})
	s.routes()
	s.handler = withDeadline(s.mux, requestTimeout)
	return s, nil
}

// Close releases the store, the verifier and the key directory.
func (s *Server) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Handler is the server's HTTP handler. It answers every request within
// requestTimeout: 503 temporarily_unavailable if the route has not by then.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server for Handler with every timeout set, so
// that no client, however slow, holds a connection for long.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
	}
}

// timeoutBody is the answer to a request out of time, worded as the
// library's own 503 when the store does not answer.
const timeoutBody = `{"error":"temporarily_unavailable","error_description":"the request took too long"}`

// withDeadline answers 503 for a request h has not answered within d, and
// gives h's context that deadline, so the store call in progress (go-redis
// with ContextTimeoutEnabled) gives up too; the verifier then fails closed.
// http.TimeoutHandler rather than a context deadline alone: the client gets
// its answer on time even from code that does not watch its context. What
// it costs, buffering each answer, is nothing for these small JSON bodies.
func withDeadline(h http.Handler, d time.Duration) http.Handler {
	th := http.TimeoutHandler(h, d, timeoutBody)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// TimeoutHandler writes its 503 with these headers. An answer of h
		// gets them too unless it sets its own: right here, where every
		// answer is uncached JSON but the JWKS, which sets both.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		th.ServeHTTP(w, r)
	})
}

func (s *Server) routes() {
	clients := func(_ context.Context, id, secret string) bool {
		confidential := jtiguard.SecretsEqual(id, s.cfg.ClientID) && jtiguard.SecretsEqual(secret, s.cfg.ClientSecret)
		public := s.cfg.PublicClientID != "" && id == s.cfg.PublicClientID && secret == ""
		return confidential || public
	}
	s.mux.Handle("POST /token", withDevice(&jtiguard.TokenEndpoint{
		Sessions: s.sessions,
		Clients:  clients,
		Password: s.checkPassword,
		Realm:    "passwordflow",
		DPoP:     s.dpop, // nil: DPoP headers are ignored, tokens are Bearer
	}))
	s.mux.Handle("POST /revoke", &jtiguard.RevocationEndpoint{Verifier: s.verifier, Clients: clients, Realm: "passwordflow"})
	s.mux.Handle("POST /introspect", &jtiguard.IntrospectionEndpoint{Verifier: s.verifier, Clients: s.resourceServer, Realm: "passwordflow"})
	s.mux.Handle("GET /.well-known/jwks.json", jtiguard.JWKSHandler(s.keys, 5*time.Minute))
	s.mux.Handle("GET /me", s.guard.Authenticate(http.HandlerFunc(s.me)))
	if s.dpop != nil {
		// DPoP-bound tokens only: a Bearer token, or a bound one without a
		// proof of its key, is refused with 401.
		s.mux.Handle("GET /dpop/me", s.guard.Require(jtiguard.Requirement{DPoP: true})(http.HandlerFunc(s.me)))
	}
	s.mux.Handle("POST /mfa", s.guard.Authenticate(http.HandlerFunc(s.mfa)))
	s.mux.Handle("GET /admin", s.guard.Require(jtiguard.Requirement{ACR: "mfa"})(http.HandlerFunc(s.admin)))
	s.mux.Handle("POST /transfer/token", s.guard.Require(jtiguard.Requirement{Scopes: []string{"write"}})(http.HandlerFunc(s.transferToken)))
	s.mux.Handle("POST /transfer", s.guard.Require(jtiguard.Requirement{Scopes: []string{"write"}})(
		s.guard.Consume(purpose, jtiguard.FormValue("action_token"))(http.HandlerFunc(s.transfer))))
	s.mux.Handle("POST /logout", s.guard.Authenticate(http.HandlerFunc(s.logout)))
	s.mux.Handle("POST /logout-all", s.guard.Authenticate(http.HandlerFunc(s.logoutAll)))
	s.sessionRoutes()
	s.mux.HandleFunc("GET /healthz", s.healthz)
	if s.metrics != nil {
		s.mux.Handle("GET /metrics", s.metrics)
	}
}

// healthz is the readiness probe: 503 while the store cannot answer (a
// replica that refuses every token should leave the load balancer).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.verifier.Ping(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// resourceServer authenticates a client of the introspection endpoint:
// only resource servers may ask, so that it is no oracle for whoever found
// a token. The secret is compared in constant time, an unknown id's too.
func (s *Server) resourceServer(_ context.Context, id, secret string) bool {
	want, ok := s.cfg.ResourceServers[id]
	return jtiguard.SecretsEqual(secret, want) && ok && want != ""
}

// checkPassword is the password grant's credential check: the part a real
// server does against its user database. The login records the device the
// request came from (withDevice), for GET /sessions.
func (s *Server) checkPassword(ctx context.Context, _, username, password, scope string) (jtiguard.Login, error) {
	want, ok := s.cfg.Users[username]
	if !jtiguard.SecretsEqual(password, want) || !ok {
		return jtiguard.Login{}, errors.New("bad credentials")
	}
	if scope == "" {
		scope = scopesAllowed
	}
	for _, sc := range strings.Fields(scope) {
		if !strings.Contains(" "+scopesAllowed+" ", " "+sc+" ") {
			return jtiguard.Login{}, errors.New("scope not allowed")
		}
	}
	return jtiguard.Login{Subject: username, Scope: scope, ACR: "pwd", AMR: []string{"pwd"}, Device: deviceFrom(ctx)}, nil
}

func claims(r *http.Request) *jtiguard.Claims {
	c, _ := jtiguard.ClaimsFrom(r.Context())
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	c := claims(r)
	me := map[string]any{
		"sub": c.Subject, "sid": c.Session, "acr": c.ACR, "amr": c.AMR, "scope": c.Scope,
		"client_id": c.ClientID, "exp": c.ExpiresAt.Unix(), "auth_time": c.AuthTime.Unix(),
	}
	if c.JKT != "" {
		me["jkt"] = c.JKT // the thumbprint of the key the token is bound to
	}
	writeJSON(w, http.StatusOK, me)
}

// mfa checks the second factor and steps the session up: a new generation
// at acr "mfa"; every token from before stops working. Its form is capped
// like the library's (net/http alone reads 10 MB): over the cap, 413.
func (s *Server) mfa(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, jtiguard.MaxFormBytes)
	if err := r.ParseForm(); err != nil {
		status, desc := http.StatusBadRequest, "malformed form"
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			status, desc = http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is over %d KiB", jtiguard.MaxFormBytes>>10)
		}
		writeJSON(w, status, map[string]string{"error": "invalid_request", "error_description": desc})
		return
	}
	if !jtiguard.SecretsEqual(r.PostForm.Get("code"), s.cfg.MFACode) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "error_description": "wrong code"})
		return
	}
	tok, _ := s.guard.Token(r) // the guard already checked it
	pair, err := s.sessions.Renew(r.Context(), tok, jtiguard.Change{ACR: "mfa", AMR: []string{"pwd", "otp"}})
	if err != nil {
		s.guard.WriteError(w, err)
		return
	}
	jtiguard.WriteTokenPair(w, pair)
}

func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"admin": true, "sub": claims(r).Subject})
}

// transferToken mints a one-time token that approves one transfer.
func (s *Server) transferToken(w http.ResponseWriter, r *http.Request) {
	c := claims(r)
	tok, _, err := s.issuer.OneTime(jtiguard.Claims{Subject: c.Subject, Audience: []string{s.cfg.Issuer + "/api"}, ClientID: c.ClientID, Purpose: purpose})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"action_token": tok})
}

// transfer runs behind the guard's Consume: the action token has been used
// up, so this runs once per token, on any replica.
func (s *Server) transfer(w http.ResponseWriter, r *http.Request) {
	a, _ := jtiguard.OneTimeFrom(r.Context())
	if a.Subject != claims(r).Subject {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "error_description": "the action token belongs to another user"})
		return
	}
	s.cfg.Logger.Info("transfer approved", "sub", a.Subject, "jti", a.ID.String())
	writeJSON(w, http.StatusOK, map[string]string{"status": "done"})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	tok, _ := s.guard.Token(r)
	if err := s.sessions.Logout(r.Context(), tok); err != nil {
		s.guard.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

func (s *Server) logoutAll(w http.ResponseWriter, r *http.Request) {
	n, err := s.sessions.LogoutAll(r.Context(), claims(r).Subject)
	if err != nil {
		s.guard.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "logged out", "sessions": n})
}

// openKeys loads the signing keys: from the key directory, or else from
// the key file.
func (s *Server) openKeys() error {
	if s.cfg.KeyDir == "" {
		key, err := loadOrCreateKey(s.cfg.KeyFile)
		if err == nil {
			s.keys, err = jtiguard.NewKeySet(key)
		}
		return err
	}
	if err := createKeyDir(s.cfg.KeyDir); err != nil {
		return err
	}
	d, err := jtiguard.OpenKeyDir(s.cfg.KeyDir, jtiguard.KeyDirConfig{Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	s.keyDir, s.keys = d, d.Keys()
	s.closers = append(s.closers, d.Close)
	return nil
}

// ReloadKeys reads the key directory now rather than at its next read
// (every 30 s): after an operator added, rotated or retired a key. On error
// the keys are unchanged.
func (s *Server) ReloadKeys() error {
	if s.keyDir == nil {
		return errors.New("no key directory to reload: the server reads one key file")
	}
	return s.keyDir.Reload()
}

// createKeyDir creates the key directory at path with one Ed25519 key,
// initial.pem, and an "active" file that names it, unless it holds a key
// already: the state KeyDir's rotation schedule starts from, so that a key
// added next is published without signing. Replicas started at once on one
// empty directory all write these two names, and neither file is ever
// replaced, so they share the first one's key.
func createKeyDir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if n := e.Name(); !strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".pem") || strings.HasSuffix(n, ".jwk")) {
			return nil
		}
	}
	key, err := jtiguard.GenerateKey("", jtiguard.EdDSA)
	if err != nil {
		return err
	}
	if err := jtiguard.WriteKeyFile(filepath.Join(path, "initial.pem"), key); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	// "active" appears whole or not at all, and never replaces one: a
	// temporary file (ignored by KeyDir: its name starts with a dot),
	// linked into place.
	tmp, err := os.CreateTemp(path, ".active-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString("initial.pem\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), filepath.Join(path, "active"))
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// loadOrCreateKey reads the key in path (PEM or JWK), creating an Ed25519
// key there first if the file does not exist, so that replicas started with
// one file share one key. Its kid is its RFC 7638 thumbprint, the same
// everywhere.
func loadOrCreateKey(path string) (*jtiguard.Key, error) {
	key, err := jtiguard.ReadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if key, err = jtiguard.GenerateKey("", jtiguard.EdDSA); err != nil {
		return nil, err
	}
	// WriteKeyFile never replaces a file: if another replica got there
	// first, use its key.
	if err := jtiguard.WriteKeyFile(path, key); errors.Is(err, fs.ErrExist) {
		return jtiguard.ReadKeyFile(path)
	} else if err != nil {
		return nil, err
	}
	return key, nil
}
