package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jtiguard/jtiguard/store"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/jtiguard/jtiguard"
)

const (
	issuer   = "https://auth.example.com"
	audience = "https://api.example.com"
)

var algs = []string{jtiguard.HS256, jtiguard.ES256, jtiguard.EdDSA}

// setup is one algorithm's keys and an issuer, shared by every contender.
type setup struct {
	alg    string
	keys   *jtiguard.KeySet
	store  *jtiguard.MemoryStore // created before any token: a store vouches only for tokens issued after it
	issuer *jtiguard.Issuer
	pub    any // what golang-jwt, jwx and the floor verify with
	jwxAlg jwa.SignatureAlgorithm
}

func newSetup(b *testing.B, alg string) *setup {
	b.Helper()
	s := &setup{alg: alg}
	var material any
	switch alg {
	case jtiguard.HS256:
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		material, s.pub, s.jwxAlg = secret, secret, jwa.HS256()
	case jtiguard.ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		material, s.pub, s.jwxAlg = k, &k.PublicKey, jwa.ES256()
	case jtiguard.EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		material, s.pub, s.jwxAlg = k, k.Public(), jwa.EdDSA()
	}
	key, err := jtiguard.NewKey("bench", alg, material)
	if err != nil {
		b.Fatal(err)
	}
	if s.keys, err = jtiguard.NewKeySet(key); err != nil {
		b.Fatal(err)
	}
	if s.issuer, err = jtiguard.NewIssuer(s.keys, jtiguard.IssuerConfig{Issuer: issuer}); err != nil {
		b.Fatal(err)
	}
	if s.store, err = jtiguard.NewMemoryStore(jtiguard.MemoryConfig{}); err != nil {
		b.Fatal(err)
	}
	return s
}

// token is the one claims set every contender verifies.
func (s *setup) token(b *testing.B) string {
	tok, _, err := s.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{audience}, ClientID: "demo-client", Scope: "read write", ACR: "pwd", AMR: []string{"pwd"}})
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// verifier returns a verifier on store, or on the setup's memory store.
func (s *setup) verifier(b *testing.B, store store.Store) *jtiguard.Verifier {
	if store == nil {
		store = s.store
	}
	v, err := jtiguard.NewVerifier(s.keys, jtiguard.VerifierConfig{Issuer: issuer, Audience: audience, Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// golangJWT is golang-jwt's Parse with what a careful user sets: one
// algorithm, issuer, audience, required exp, iat checked, strict base64.
func (s *setup) golangJWT() func(string) error {
	p := jwt.NewParser(jwt.WithValidMethods([]string{s.alg}), jwt.WithIssuer(issuer), jwt.WithAudience(audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithStrictDecoding())
	keyfunc := func(t *jwt.Token) (any, error) {
		if t.Header["kid"] != "bench" {
			return nil, errors.New("unknown kid")
		}
		return s.pub, nil
	}
	return func(tok string) error { _, err := p.Parse(tok, keyfunc); return err }
}

// jwx is lestrrat-go/jwx v3's jwt.Parse with verification and validation.
func (s *setup) jwx() func(string) error {
	return func(tok string) error {
		_, err := jwxjwt.Parse([]byte(tok), jwxjwt.WithKey(s.jwxAlg, s.pub), jwxjwt.WithValidate(true),
			jwxjwt.WithIssuer(issuer), jwxjwt.WithAudience(audience), jwxjwt.WithRequiredClaim("exp"))
		return err
	}
}

// floor is the least any verifier must do: base64url-decode the three
// parts, check the signature with crypto/*, decode the claims.
func (s *setup) floor() func(string) error {
	dec := base64.RawURLEncoding
	return func(tok string) error {
		i, j := strings.IndexByte(tok, '.'), strings.LastIndexByte(tok, '.')
		if _, err := dec.DecodeString(tok[:i]); err != nil {
			return err
		}
		payload, err := dec.DecodeString(tok[i+1 : j])
		if err != nil {
			return err
		}
		sig, err := dec.DecodeString(tok[j+1:])
		if err != nil {
			return err
		}
		ok := false
		switch pub := s.pub.(type) {
		case []byte:
			m := hmac.New(sha256.New, pub)
			m.Write([]byte(tok[:j]))
			ok = hmac.Equal(m.Sum(nil), sig)
		case *ecdsa.PublicKey:
			h := sha256.Sum256([]byte(tok[:j]))
			ok = len(sig) == 64 && ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		case ed25519.PublicKey:
			ok = ed25519.Verify(pub, []byte(tok[:j]), sig)
		}
		if !ok {
			return errors.New("bad signature")
		}
		var c struct {
			Iss, Sub, Jti string
			Aud           any
			Exp, Iat      int64
		}
		return json.Unmarshal(payload, &c)
	}
}

// settle collects the previous contender's garbage before timing starts,
// so that no contender pays for another's.
func settle() { runtime.GC() }

func loop(b *testing.B, verify func(string) error, tok string) {
	settle()
	b.ReportAllocs()
	for b.Loop() {
		if err := verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify: every contender on the same token, per algorithm.
// jtiguard-cold is a token's first presentation (strict parse, signature,
// claims, store check, cache fill); jtiguard-warm a later one (cache hit:
// time and store checks only). Both use the in-memory store.
func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	for _, alg := range algs {
		b.Run(alg, func(b *testing.B) {
			s := newSetup(b, alg)
			tok := s.token(b)
			b.Run("floor", func(b *testing.B) { loop(b, s.floor(), tok) })
			b.Run("golang-jwt", func(b *testing.B) { loop(b, s.golangJWT(), tok) })
			b.Run("jwx", func(b *testing.B) { loop(b, s.jwx(), tok) })
			b.Run("jtiguard-cold", func(b *testing.B) {
				pool := make([]string, 2048)
				for i := range pool {
					pool[i] = s.token(b)
				}
				v := s.verifier(b, nil)
				settle()
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i == len(pool) {
						// A fresh verifier (empty cache) each time the pool
						// is used up, built outside the timer.
						b.StopTimer()
						v.Close()
						v, i = s.verifier(b, nil), 0
						b.StartTimer()
					}
					if _, err := v.Verify(ctx, pool[i]); err != nil {
						b.Fatal(err)
					}
					i++
				}
				v.Close()
			})
			b.Run("jtiguard-warm", func(b *testing.B) {
				v := s.verifier(b, nil)
				defer v.Close()
				verify := func(tok string) error { _, err := v.Verify(ctx, tok); return err }
				for range 1000 { // let the cache admit the token
					if err := verify(tok); err != nil {
						b.Fatal(err)
					}
				}
				loop(b, verify, tok)
			})
		})
	}
}

// BenchmarkVerifyParallel: verification from all cores at once (run with
// -cpu 1,2 to see the scaling), EdDSA, with 1,024 users' tokens presented
// round-robin: golang-jwt against jtiguard with its cache off, so that
// every verification parses and checks the signature. The warm path's
// scaling is BenchmarkWarmParallel's.
func BenchmarkVerifyParallel(b *testing.B) {
	ctx := context.Background()
	s := newSetup(b, jtiguard.EdDSA)
	toks := make([]string, 1024)
	for i := range toks {
		toks[i] = s.token(b)
	}
	par := func(b *testing.B, verify func(string) error) {
		settle()
		b.ReportAllocs()
		var next atomic.Uint32
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(97)
			for pb.Next() {
				i++
				if err := verify(toks[i%uint32(len(toks))]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("golang-jwt", func(b *testing.B) { par(b, s.golangJWT()) })
	b.Run("jtiguard-nocache", func(b *testing.B) {
		v, err := jtiguard.NewVerifier(s.keys, jtiguard.VerifierConfig{Issuer: issuer, Audience: audience, Store: s.store, CacheSize: -1, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer v.Close()
		par(b, func(tok string) error { _, err := v.Verify(ctx, tok); return err })
	})
}
