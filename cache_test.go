package jtiguard_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// A cache far smaller than the tokens presented drops and replaces entries
// all the time, from every goroutine at once: each token must still verify
// to its own claims, never to another's.
func TestCacheUnderChurnAnswersEachTokenItsOwnClaims(t *testing.T) {
	f := newFixture(t, func(c *jtiguard.VerifierConfig) { c.CacheSize = 8 })
	ctx := context.Background()
	type issued struct {
		tok string
		c   *jtiguard.Claims
	}
	toks := make([]issued, 64)
	for i := range toks {
		tok, c, err := f.issuer.Access(jtiguard.Claims{Subject: fmt.Sprintf("user-%d", i), Audience: []string{testAudience}})
		require.NoError(t, err)
		toks[i] = issued{tok, c}
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for round := range 5 {
				for i := range toks {
					x := toks[(i*7+g*31+round)%len(toks)]
					got, err := f.ver.Verify(ctx, x.tok)
					if !assert.NoError(t, err) {
						return
					}
					if got.ID != x.c.ID || got.Subject != x.c.Subject {
						assert.Failf(t, "wrong claims", "token of %s verified to %s", x.c.Subject, got.Subject)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// A key retired while its tokens are cached and being verified on every
// core: no verification that starts after Retire returns accepts them.
func TestCacheRacingRetirement(t *testing.T) {
	for trial := range 50 {
		f := newFixture(t)
		ctx := context.Background()
		toks := make([]string, 16)
		for i := range toks {
			toks[i], _ = f.access(t)
			_, err := f.ver.Verify(ctx, toks[i]) // cached
			require.NoError(t, err)
		}
		k2, err := jtiguard.GenerateKey("k2", jtiguard.EdDSA)
		require.NoError(t, err)
		require.NoError(t, f.keys.Add(k2)) // the set changes: cached entries stay good
		require.NoError(t, f.keys.Rotate("k2"))

		var retired atomic.Bool
		var accepted, refused atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range 4 {
			wg.Go(func() {
				<-start
				for i := 0; ; i++ {
					after := retired.Load()
					_, err := f.ver.Verify(ctx, toks[(i+g)%len(toks)])
					switch {
					case err == nil && after:
						assert.Failf(t, "accepted after retirement", "trial %d", trial)
						return
					case err == nil:
						accepted.Add(1)
					case after:
						assert.ErrorIs(t, err, jtiguard.ErrUnknownKey)
						if refused.Add(1) > 200 {
							return
						}
					default:
						// Refused before Retire returned: it is retiring.
						assert.ErrorIs(t, err, jtiguard.ErrUnknownKey)
					}
				}
			})
		}
		close(start)
		for accepted.Load() < 100 {
			// Let the verifiers hit the cache before the key goes.
			_, err := f.ver.Verify(ctx, toks[0])
			require.NoError(t, err)
		}
		require.NoError(t, f.keys.Retire("k1"))
		retired.Store(true)
		wg.Wait()
	}
}
