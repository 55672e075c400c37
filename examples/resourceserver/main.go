// Command resourceserver is "orders", a small API that accepts the access
// tokens of the passwordflow token server without sharing its keys: it
// verifies them with the keys of the token server's JWKS (refetched on a
// schedule, and at once for a kid it has not seen, so a key rotation needs
// no restart here), and learns whether each is still live in one of two
// ways:
//
//   - -introspect URL: asks the token server's introspection endpoint
//     (RFC 7662) as the client -client, and reuses an "active" answer for
//     -introspect-cache (5 s): no shared store, and a revocation is seen
//     within that time;
//   - -redis ADDR: reads the token server's state in the Redis it runs on
//     (passwordflow -redis, same -redis-prefix): a revocation is seen at
//     once.
//
// Routes: GET /orders (an access token for -audience required) and GET
// /healthz (503 while the state source cannot answer).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "resourceserver:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("resourceserver", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	issuer := fs.String("issuer", "http://127.0.0.1:8080", "the token server's iss")
	audience := fs.String("audience", "https://orders.example.com", "this API's identifier, in the aud of the access tokens it accepts (passwordflow -rs-audience)")
	jwks := fs.String("jwks", "http://127.0.0.1:8080/.well-known/jwks.json", "the token server's key set (https, or http to a loopback address)")
	introspect := fs.String("introspect", "", "the token server's introspection endpoint, e.g. http://127.0.0.1:8080/introspect (or -redis)")
	client := fs.String("client", "orders-api:orders-secret", "id:secret for -introspect (passwordflow -rs-client)")
	cacheTTL := fs.Duration("introspect-cache", 0, "how long an active answer is reused: the longest a revoked token is still accepted (0: 5s; at most 60s; negative: ask every time)")
	redisAddr := fs.String("redis", "", "the token server's Redis address, host:port (or -introspect)")
	prefix := fs.String("redis-prefix", "passwordflow:", "the token server's key prefix in Redis")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := Config{
		Issuer: *issuer, Audience: *audience, JWKSURL: *jwks,
		IntrospectionURL: *introspect, IntrospectionCacheTTL: *cacheTTL,
		RedisAddr: *redisAddr, RedisPrefix: *prefix,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	if (cfg.IntrospectionURL == "") == (cfg.RedisAddr == "") {
		return errors.New("-introspect or -redis: give one")
	}
	if cfg.IntrospectionURL != "" {
		var ok bool
		if cfg.ClientID, cfg.ClientSecret, ok = strings.Cut(*client, ":"); !ok || cfg.ClientID == "" || cfg.ClientSecret == "" {
			return errors.New("-client: want id:secret")
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := NewServer(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer srv.Close()
	state := "introspection at " + cfg.IntrospectionURL
	if cfg.RedisAddr != "" {
		state = "Redis at " + cfg.RedisAddr
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "resourceserver listening on %s (keys from %s, state from %s)\n\n"+
		"  curl -s -H \"Authorization: Bearer $AT\" %s/orders   # an access token of %s\n\n", base, cfg.JWKSURL, state, base, cfg.Issuer)

	hs := srv.HTTPServer()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
