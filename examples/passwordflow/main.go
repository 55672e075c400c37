// Command passwordflow is an OAuth 2.0 token server for the password and
// refresh_token grants, with a small protected API, built on jtiguard: the
// example that shows the whole library at work. It runs on the in-memory
// store, or on Redis with -redis so that several instances (sharing one
// -key-file or -key-dir) act as one. Resource servers verify its access
// tokens from its JWKS and ask about them at its introspection endpoint
// (RFC 7662), or read its state in the shared Redis: see
// examples/resourceserver. With -key-dir its keys are rotated without a
// restart.
//
// Tokens may be bound to the client's key with DPoP (RFC 9449): a client
// that sends a DPoP proof gets DPoP tokens, which work only with proofs of
// its key, and GET /dpop/me takes nothing else. -external-url is the URL
// clients use (behind a proxy, the public one, the same on every replica);
// -dpop-nonces turns server nonces on. Curl cannot sign proofs: see
// examples/dpopclient.
//
// Users see their signed-in devices (GET /sessions) and sign one out
// (DELETE /sessions/{sid}) or all but the current one (POST
// /sessions/others/logout). With -metrics it serves GET /metrics for
// Prometheus.
//
// The password grant is deprecated for new designs (RFC 9700); it is here
// because many servers still run it, and jtiguard makes the rest of such an
// endpoint safe. The second factor is a fixed demo code.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jtiguard/jtiguard/examples/passwordflow/tokenserver"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "passwordflow:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("passwordflow", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	redisAddr := fs.String("redis", "", "Redis address (host:port); empty: the in-memory store")
	keyFile := fs.String("key-file", "passwordflow-key.pem", "signing key (PEM or JWK); an Ed25519 key is created if missing; share it between replicas")
	keyDir := fs.String("key-dir", "", "key directory (*.pem, *.jwk, and \"active\" naming the signer's file), read again every 30 s: keys rotate without a restart; if it holds no key, one is created (initial.pem) and named in \"active\"; replaces -key-file")
	users := fs.String("users", "alice:secret", "comma-separated user:password pairs")
	client := fs.String("client", "demo-client:demo-secret", "the OAuth client, id:secret")
	publicClient := fs.String("public-client", "demo-public", "a public OAuth client (id only, no secret), whose DPoP refresh tokens are bound to its key; empty: none")
	externalURL := fs.String("external-url", "", "the URL clients address this server at (scheme://host[:port]), which DPoP proofs name; default http://ADDR; behind a proxy or load balancer the public URL, the same on every replica")
	dpopNonces := fs.Bool("dpop-nonces", false, "DPoP server nonces: proofs must carry a recent nonce of this server (use_dpop_nonce); the secret is random unless "+nonceSecretEnv+" gives it (base64, at least 32 bytes), which replicas must share")
	rsClients := fs.String("rs-client", "orders-api:orders-secret", "comma-separated id:secret pairs of resource servers allowed to introspect tokens (POST /introspect); empty: none")
	rsAudiences := fs.String("rs-audience", "https://orders.example.com", "comma-separated resource server identifiers added to the aud of access tokens, after ISSUER/api")
	mfaCode := fs.String("mfa-code", "123456", "the demo second factor")
	accessTTL := fs.Duration("access-ttl", 5*time.Minute, "access token lifetime")
	grace := fs.Duration("refresh-grace", 0, "refresh token grace window (0: the library default, 10s; negative: off; at most 60s)")
	issuer := fs.String("issuer", "", "the iss of every token; default http://ADDR (give replicas behind one name the same)")
	metrics := fs.Bool("metrics", false, "serve GET /metrics: verifications, cache, store latency and events in the Prometheus format (jtiprom)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := tokenserver.Config{
		MFACode:      *mfaCode,
		AccessTTL:    *accessTTL,
		RefreshGrace: *grace,
		KeyFile:      *keyFile,
		KeyDir:       *keyDir,
		RedisAddr:    *redisAddr,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Metrics:      *metrics,
	}
	keyFileSet := false
	fs.Visit(func(f *flag.Flag) { keyFileSet = keyFileSet || f.Name == "key-file" })
	if keyFileSet && *keyDir != "" {
		return fmt.Errorf("-key-dir: give it or -key-file, not both")
	}
	var err error
	if cfg.Users, err = pairs("-users", "user:password", *users); err != nil {
		return err
	}
	if len(cfg.Users) == 0 {
		return fmt.Errorf("-users: give at least one user:password")
	}
	if cfg.ResourceServers, err = pairs("-rs-client", "id:secret", *rsClients); err != nil {
		return err
	}
	for a := range strings.SplitSeq(*rsAudiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.ResourceAudiences = append(cfg.ResourceAudiences, a)
		}
	}
	var ok bool
	if cfg.ClientID, cfg.ClientSecret, ok = strings.Cut(*client, ":"); !ok || cfg.ClientID == "" || cfg.ClientSecret == "" {
		return fmt.Errorf("-client: want id:secret")
	}
	if cfg.PublicClientID = *publicClient; strings.Contains(cfg.PublicClientID, ":") || cfg.PublicClientID == cfg.ClientID && cfg.PublicClientID != "" {
		return fmt.Errorf("-public-client: want an id (no secret) other than -client's")
	}
	if *externalURL != "" {
		if err := checkOrigin(*externalURL); err != nil {
			return fmt.Errorf("-external-url: %w", err)
		}
	}
	if cfg.DPoPNonceSecret, err = nonceSecret(*dpopNonces, os.Getenv(nonceSecretEnv)); err != nil {
		return fmt.Errorf("-dpop-nonces: %w", err)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	cfg.Issuer = base
	if *issuer != "" {
		cfg.Issuer = *issuer
	}
	cfg.ExternalURL = base
	if *externalURL != "" {
		cfg.ExternalURL = strings.TrimSuffix(*externalURL, "/")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := tokenserver.NewServer(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer srv.Close()
	store := "in-memory store"
	if cfg.RedisAddr != "" {
		store = "Redis at " + cfg.RedisAddr
	}
	nonces := "off"
	if cfg.DPoPNonceSecret != nil {
		nonces = "on"
	}
	fmt.Fprintf(out, "passwordflow listening on %s (%s; DPoP at %s, nonces %s)\n\n%s", base, store, cfg.ExternalURL, nonces, walkthrough(cfg.ExternalURL, cfg))

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

// nonceSecretEnv names the environment variable that gives the DPoP nonce
// secret: an environment variable rather than a flag, which anyone on the
// host could read in the process list.
const nonceSecretEnv = "PASSWORDFLOW_DPOP_NONCE_SECRET"

// nonceSecret is the DPoP nonce secret: nil when nonces are off; else the
// base64 env value (standard or URL alphabet, padded or not), or 32 random
// bytes, good for one instance only.
func nonceSecret(on bool, env string) ([]byte, error) {
	switch {
	case !on && env != "":
		return nil, fmt.Errorf("%s is set: give -dpop-nonces too", nonceSecretEnv)
	case !on:
		return nil, nil
	case env == "":
		secret := make([]byte, 32)
		_, _ = rand.Read(secret) // never fails
		return secret, nil
	}
	env = strings.TrimRight(strings.TrimSpace(env), "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if secret, err := enc.DecodeString(env); err == nil {
			if len(secret) < 32 {
				return nil, fmt.Errorf("%s: %d bytes, want at least 32", nonceSecretEnv, len(secret))
			}
			return secret, nil
		}
	}
	return nil, fmt.Errorf("%s: not base64 (openssl rand -base64 32 makes one)", nonceSecretEnv)
}

// checkOrigin checks that s is an http or https origin: scheme, host and
// optional port, no path, query or userinfo.
func checkOrigin(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("want scheme://host[:port], got %q", s)
	}
	return nil
}

// pairs reads a comma-separated list of name:secret pairs; empty is none.
func pairs(flagName, want, list string) (map[string]string, error) {
	m := map[string]string{}
	if list == "" {
		return m, nil
	}
	for pair := range strings.SplitSeq(list, ",") {
		k, v, ok := strings.Cut(pair, ":")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%s: want %s, got %q", flagName, want, pair)
		}
		m[k] = v
	}
	return m, nil
}

func walkthrough(base string, cfg tokenserver.Config) string {
	user := slices.Sorted(maps.Keys(cfg.Users))[0]
	pass := cfg.Users[user]
	c := cfg.ClientID + ":" + cfg.ClientSecret
	s := fmt.Sprintf(`Try it (jq extracts the fields):

  # log in: password grant, client authenticated with HTTP Basic
  TOKENS=$(curl -s -u %[2]s -d grant_type=password -d username=%[3]s -d password=%[4]s %[1]s/token)
  AT=$(echo "$TOKENS" | jq -r .access_token); RT=$(echo "$TOKENS" | jq -r .refresh_token)
  curl -s -H "Authorization: Bearer $AT" %[1]s/me

  # /admin needs the second factor: 401 insufficient_user_authentication
  curl -si -H "Authorization: Bearer $AT" %[1]s/admin | grep -i www-authenticate
  STEP=$(curl -s -H "Authorization: Bearer $AT" -d code=%[5]s %[1]s/mfa)
  AT2=$(echo "$STEP" | jq -r .access_token); RT2=$(echo "$STEP" | jq -r .refresh_token)
  curl -s -H "Authorization: Bearer $AT2" %[1]s/admin
  curl -s -H "Authorization: Bearer $AT" %[1]s/me       # the pre-MFA token is dead now

  # refresh rotates; a retry within 10 s gets the same successor; an older token revokes the session
  RT3=$(curl -s -u %[2]s -d grant_type=refresh_token -d refresh_token=$RT2 %[1]s/token | jq -r .refresh_token)
  curl -s -u %[2]s -d grant_type=refresh_token -d refresh_token=$RT2 %[1]s/token | jq -r .refresh_token  # $RT3 again
  NEW=$(curl -s -u %[2]s -d grant_type=refresh_token -d refresh_token=$RT3 %[1]s/token)
  curl -s -u %[2]s -d grant_type=refresh_token -d refresh_token=$RT2 %[1]s/token   # invalid_grant: reuse
  curl -s -H "Authorization: Bearer $(echo "$NEW" | jq -r .access_token)" %[1]s/me  # rejected: family revoked

  # one-time action token: works once
  AT=$(curl -s -u %[2]s -d grant_type=password -d username=%[3]s -d password=%[4]s %[1]s/token | jq -r .access_token)
  ACT=$(curl -s -X POST -H "Authorization: Bearer $AT" %[1]s/transfer/token | jq -r .action_token)
  curl -s -H "Authorization: Bearer $AT" -d action_token=$ACT %[1]s/transfer   # done
  curl -s -H "Authorization: Bearer $AT" -d action_token=$ACT %[1]s/transfer   # replay refused

  # signed-in devices: each login keeps its device (browser or program, and a /24 or /48 of the address)
  PHONE=$(curl -s -A "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Safari/604.1" -u %[2]s -d grant_type=password -d username=%[3]s -d password=%[4]s %[1]s/token | jq -r .access_token)
  TV=$(curl -s -A "SmartTV/2.0" -u %[2]s -d grant_type=password -d username=%[3]s -d password=%[4]s %[1]s/token | jq -r .access_token)
  curl -s -H "Authorization: Bearer $AT" %[1]s/sessions | jq       # %[3]s's sessions, oldest first; "current": this one
  curl -s -H "Authorization: Bearer $AT" "%[1]s/sessions?limit=1" | jq -r .next   # pages: ?cursor=<next>
  SID=$(curl -s -H "Authorization: Bearer $PHONE" %[1]s/me | jq -r .sid)
  curl -si -X DELETE -H "Authorization: Bearer $AT" %[1]s/sessions/$SID | head -1   # 204 (for any sid: no oracle)
  curl -s -H "Authorization: Bearer $PHONE" %[1]s/me                  # the phone is signed out at once
  curl -s -X POST -H "Authorization: Bearer $AT" %[1]s/sessions/others/logout   # the TV too: all but this one

  # revoke (RFC 7009); log out; log out everywhere; the public keys
  curl -s -u %[2]s -d token=$AT %[1]s/revoke
  curl -s -H "Authorization: Bearer $AT" %[1]s/me                              # revoked
  AT=$(curl -s -u %[2]s -d grant_type=password -d username=%[3]s -d password=%[4]s %[1]s/token | jq -r .access_token)
  curl -s -X POST -H "Authorization: Bearer $AT" %[1]s/logout
  AT=$(curl -s -u %[2]s -d grant_type=password -d username=%[3]s -d password=%[4]s %[1]s/token | jq -r .access_token)
  curl -s -X POST -H "Authorization: Bearer $AT" %[1]s/logout-all              # every session of %[3]s
  curl -s %[1]s/.well-known/jwks.json
`, base, c, user, pass, cfg.MFACode)
	if len(cfg.ResourceServers) > 0 {
		rs := slices.Sorted(maps.Keys(cfg.ResourceServers))[0]
		s += fmt.Sprintf(`
  # introspection (RFC 7662), for resource servers (examples/resourceserver): inactive after the logout-all
  curl -s -u %[2]s:%[3]s -d token=$AT %[1]s/introspect
`, base, rs, cfg.ResourceServers[rs])
	}
	if cfg.ExternalURL != "" {
		args := ""
		if cfg.PublicClientID == "" {
			args = fmt.Sprintf(" -client %s -secret %s", cfg.ClientID, cfg.ClientSecret)
		} else if cfg.PublicClientID != "demo-public" {
			args = " -client " + cfg.PublicClientID
		}
		if user != "alice" || pass != "secret" {
			args += fmt.Sprintf(" -user %s -password %s", user, pass)
		}
		s += fmt.Sprintf(`
  # DPoP (RFC 9449): tokens bound to the client's key; GET /dpop/me takes nothing else.
  # curl cannot sign proofs: this Go client (x/oauth2 over jtiguard.DPoPTransport) logs in,
  # calls /dpop/me, refreshes, and plays the thief with the stolen tokens
  go -C examples run ./dpopclient -server %[1]s%[2]s
`, base, args)
	}
	if cfg.Metrics {
		s += fmt.Sprintf(`
  # metrics (-metrics): verifications by class and reason, store latency per operation, events
  curl -s %[1]s/metrics | grep '^jtiguard_'
`, base)
	}
	return s + "\n"
}
