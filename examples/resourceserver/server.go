package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
)

// Config is what the flags set. Keys always come from the token server's
// JWKS; a token's state comes from one of two places: the token server's
// introspection endpoint (IntrospectionURL), or the Redis it keeps its
// state in (RedisAddr).
type Config struct {
	Issuer   string // the token server's iss
	Audience string // this API's identifier: an access token must carry it in aud
	JWKSURL  string // the token server's key set

	// IntrospectionURL, if set, is the token server's introspection
	// endpoint (RFC 7662), asked with ClientID and ClientSecret.
	IntrospectionURL string
	ClientID         string
	ClientSecret     string
	// IntrospectionCacheTTL is how long an "active" answer is reused: the
	// longest a token revoked on the token server is still accepted here.
	// 0: the library's default, 5 s; negative: every verification asks.
	IntrospectionCacheTTL time.Duration

	// RedisAddr, if set, is the token server's Redis, read under
	// RedisPrefix, the token server's Prefix: every revocation and session
	// change is seen at once.
	RedisAddr   string
	RedisPrefix string

	// HTTPClient fetches the key set and asks the introspection endpoint:
	// nil, the library's own clients (10 s and 5 s timeouts).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Server is the orders API.
type Server struct {
	verifier *jtiguard.Verifier
	guard    *jtiguard.Guard
	closers  []func()
	handler  http.Handler
}

// The server's deadlines, as in passwordflow: each request is answered
// within requestTimeout of its headers, the key set refetch an unknown kid
// may wait for (at most 1 s) and the introspection request (at most 5 s)
// included; the http.Server's timeouts bound slow clients.
const (
	requestTimeout    = 5 * time.Second
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = requestTimeout + 5*time.Second // room for the 503 of a request out of time
	idleTimeout       = 60 * time.Second
)

// NewServer fetches the token server's keys (that first fetch must
// succeed, within ctx) and opens the state source; Close releases them.
func NewServer(ctx context.Context, cfg Config) (*Server, error) {
	if (cfg.IntrospectionURL == "") == (cfg.RedisAddr == "") {
		return nil, errors.New("give the token server's introspection URL or its Redis address, one of them")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{}
	if err := s.open(ctx, cfg); err != nil {
		s.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /orders", s.guard.Authenticate(http.HandlerFunc(orders)))
	mux.HandleFunc("GET /healthz", s.healthz)
	s.handler = withDeadline(mux, requestTimeout)
	return s, nil
}

// open builds the verifier: keys from the JWKS, state from introspection
// or Redis. What it opened is in s.closers, also on error.
func (s *Server) open(ctx context.Context, cfg Config) error {
	rk, err := jtiguard.NewRemoteKeys(ctx, cfg.JWKSURL, jtiguard.RemoteKeysConfig{Client: cfg.HTTPClient, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	s.closers = append(s.closers, rk.Close)
	var st store.Store
	if cfg.RedisAddr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, ContextTimeoutEnabled: true})
		s.closers = append(s.closers, func() { rdb.Close() })
		rs, err := redisstore.New(ctx, redisstore.Config{Client: rdb, Prefix: cfg.RedisPrefix})
		if err != nil {
			return err
		}
		s.closers = append(s.closers, rs.Close)
		st = rs
	} else {
		is, err := jtiguard.NewIntrospectionStore(cfg.IntrospectionURL, jtiguard.IntrospectionConfig{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Client: cfg.HTTPClient, CacheTTL: cfg.IntrospectionCacheTTL,
		})
		if err != nil {
			return err
		}
		s.closers = append(s.closers, is.Close)
		st = is
	}
	s.verifier, err = jtiguard.NewVerifier(rk.Keys(), jtiguard.VerifierConfig{
		Issuer: cfg.Issuer, Audience: cfg.Audience, Store: st, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	s.closers = append(s.closers, s.verifier.Close) // closed first: before its st
	s.guard = jtiguard.NewGuard(s.verifier, jtiguard.GuardConfig{Realm: "orders"})
	return nil
}

// Close releases the verifier, its store and the key set, in that order.
func (s *Server) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Handler is the server's HTTP handler: every request is answered within
// requestTimeout, 503 temporarily_unavailable if the route has not by then.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server for Handler with every timeout set.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
	}
}

// withDeadline answers 503 for a request h has not answered within d, and
// gives h's context that deadline, so that a key fetch, an introspection
// request or a Redis call in progress gives up too (see passwordflow's).
func withDeadline(h http.Handler, d time.Duration) http.Handler {
	th := http.TimeoutHandler(h, d, `{"error":"temporarily_unavailable","error_description":"the request took too long"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		th.ServeHTTP(w, r)
	})
}

// orders answers the caller's orders: here, who the caller is.
func orders(w http.ResponseWriter, r *http.Request) {
	c, _ := jtiguard.ClaimsFrom(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"sub": c.Subject, "orders": []string{}})
}

// healthz is the readiness probe: 503 while the state source (the
// introspection endpoint, or Redis) cannot answer, when every token would
// be refused.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.verifier.Ping(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
