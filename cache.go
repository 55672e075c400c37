package jtiguard

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// tokenCache maps a token's exact text to the claims it verified to, so a
// token presented again skips decoding and signature verification, the
// costliest steps. ristretto may drop or evict any entry; that costs only
// a re-verification. It answers nothing about revocation: the Verifier
// checks time and the Store on every presentation, hit or miss.
type tokenCache struct {
	mu          sync.RWMutex // Clear must not run beside Get or Set
	rc          *ristretto.Cache[string, *cachedToken]
	keys        *KeySet
	seenRetired atomic.Uint64
}

type cachedToken struct {
	token  string // the whole token, compared on a hit: the cache hashes keys
	claims *Claims
	key    *Key // the key that verified it
}

func newTokenCache(size int, keys *KeySet) (*tokenCache, error) {
	rc, err := ristretto.NewCache(&ristretto.Config[string, *cachedToken]{
		NumCounters:        int64(size) * 10,
		MaxCost:            int64(size),
		BufferItems:        64,
		IgnoreInternalCost: true, // cost is one per token
	})
	if err != nil {
		return nil, err
	}
	c := &tokenCache{rc: rc, keys: keys}
	c.seenRetired.Store(keys.retired.Load())
	return c, nil
}

// get returns the cached claims of token if it was verified as class want
// with a key that is still in the set.
func (c *tokenCache) get(token string, want TokenType) *Claims {
	if c == nil {
		return nil
	}
	c.flushOnRetire()
	c.mu.RLock()
	e, ok := c.rc.Get(token)
	c.mu.RUnlock()
	if !ok || e.token != token || e.claims.Type != want {
		return nil
	}
	// A key retired after the entry was cached must not keep its tokens
	// alive, even in the moment before the flush.
	if k, ok := c.keys.Key(e.claims.KeyID); !ok || k != e.key {
		return nil
	}
	return e.claims
}

func (c *tokenCache) put(token string, claims *Claims, key *Key, now time.Time) {
	if c == nil {
		return
	}
	c.mu.RLock()
	c.rc.SetWithTTL(token, &cachedToken{token: token, claims: claims, key: key}, 1, claims.ExpiresAt.Sub(now))
	c.mu.RUnlock()
}

// flushOnRetire empties the cache once after each key retirement.
func (c *tokenCache) flushOnRetire() {
	r := c.keys.retired.Load()
	if seen := c.seenRetired.Load(); r != seen && c.seenRetired.CompareAndSwap(seen, r) {
		c.mu.Lock()
		c.rc.Clear()
		c.mu.Unlock()
	}
}

func (c *tokenCache) close() {
	c.mu.Lock()
	c.rc.Close()
	c.mu.Unlock()
}
