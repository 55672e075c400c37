package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
)

// Config is what the flags set.
type Config struct {
	Issuer       string            // the iss of every token, and the base URL
	Users        map[string]string // username -> password
	ClientID     string
	ClientSecret string
	MFACode      string
	AccessTTL    time.Duration
	RefreshGrace time.Duration
	KeyFile      string // the signing key (PEM or JWK); an Ed25519 key is created if missing
	RedisAddr    string // empty: the in-memory store
	Logger       *slog.Logger
}

// Server is the password-flow token server and its small API.
type Server struct {
	cfg      Config
	keys     *jtiguard.KeySet
	issuer   *jtiguard.Issuer
	verifier *jtiguard.Verifier
	sessions *jtiguard.Sessions
	guard    *jtiguard.Guard
	closers  []func()
	mux      *http.ServeMux
	handler  http.Handler
}

const (
	scopesAllowed = "read write"
	purpose       = "transfer"
)

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
	key, err := loadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if s.keys, err = jtiguard.NewKeySet(key); err != nil {
		return nil, err
	}
	var store jtiguard.Store
	if cfg.RedisAddr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, ContextTimeoutEnabled: true})
		rs, err := redisstore.New(ctx, redisstore.Config{Client: rdb, Prefix: "passwordflow:"})
		if err != nil {
			rdb.Close()
			return nil, err
		}
		s.closers = append(s.closers, func() { rs.Close(); rdb.Close() })
		store = rs
	} else {
		ms, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
		if err != nil {
			return nil, err
		}
		store = ms
	}
	if s.issuer, err = jtiguard.NewIssuer(s.keys, jtiguard.IssuerConfig{Issuer: cfg.Issuer, AccessTTL: cfg.AccessTTL}); err != nil {
		return nil, err
	}
	s.verifier, err = jtiguard.NewVerifier(s.keys, jtiguard.VerifierConfig{
		Issuer:    cfg.Issuer,
		Audience:  cfg.Issuer + "/api",
		Store:     store,
		Logger:    cfg.Logger,
		ACRLevels: []string{"pwd", "mfa"},
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.closers = append(s.closers, s.verifier.Close)
	if s.sessions, err = jtiguard.NewSessions(s.issuer, s.verifier, jtiguard.SessionConfig{RefreshGrace: cfg.RefreshGrace}); err != nil {
		s.Close()
		return nil, err
	}
	s.guard = jtiguard.NewGuard(s.verifier, jtiguard.GuardConfig{Realm: "passwordflow"})
	s.routes()
	s.handler = withDeadline(s.mux, requestTimeout)
	return s, nil
}

// Close releases the store and the verifier.
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
		return jtiguard.SecretsEqual(id, s.cfg.ClientID) && jtiguard.SecretsEqual(secret, s.cfg.ClientSecret)
	}
	s.mux.Handle("POST /token", &jtiguard.TokenEndpoint{
		Sessions: s.sessions,
		Clients:  clients,
		Password: s.checkPassword,
		Realm:    "passwordflow",
	})
	s.mux.Handle("POST /revoke", &jtiguard.RevocationEndpoint{Verifier: s.verifier, Clients: clients, Realm: "passwordflow"})
	s.mux.Handle("GET /.well-known/jwks.json", jtiguard.JWKSHandler(s.keys, 5*time.Minute))
	s.mux.Handle("GET /me", s.guard.Authenticate(http.HandlerFunc(s.me)))
	s.mux.Handle("POST /mfa", s.guard.Authenticate(http.HandlerFunc(s.mfa)))
	s.mux.Handle("GET /admin", s.guard.Require(jtiguard.Requirement{ACR: "mfa"})(http.HandlerFunc(s.admin)))
	s.mux.Handle("POST /transfer/token", s.guard.Require(jtiguard.Requirement{Scopes: []string{"write"}})(http.HandlerFunc(s.transferToken)))
	s.mux.Handle("POST /transfer", s.guard.Require(jtiguard.Requirement{Scopes: []string{"write"}})(
		s.guard.Consume(purpose, jtiguard.FormValue("action_token"))(http.HandlerFunc(s.transfer))))
	s.mux.Handle("POST /logout", s.guard.Authenticate(http.HandlerFunc(s.logout)))
	s.mux.Handle("POST /logout-all", s.guard.Authenticate(http.HandlerFunc(s.logoutAll)))
	s.mux.HandleFunc("GET /healthz", s.healthz)
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

// checkPassword is the password grant's credential check: the part a real
// server does against its user database.
func (s *Server) checkPassword(_ context.Context, _, username, password, scope string) (jtiguard.Login, error) {
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
	return jtiguard.Login{Subject: username, Scope: scope, ACR: "pwd", AMR: []string{"pwd"}}, nil
}

func claims(r *http.Request) *jtiguard.Claims {
	c, _ := jtiguard.ClaimsFrom(r.Context())
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = jsonEncode(w, v)
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	c := claims(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"sub": c.Subject, "sid": c.Session, "acr": c.ACR, "amr": c.AMR, "scope": c.Scope,
		"client_id": c.ClientID, "exp": c.ExpiresAt.Unix(), "auth_time": c.AuthTime.Unix(),
	})
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
