package jtiguard

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
)

// tokenCache maps a token's exact text to the claims it verified to, so a
// token presented again skips decoding and signature verification, the
// costliest steps. ristretto may drop or evict any entry; that costs only
// a re-verification. It answers nothing about revocation: the Verifier
// checks time and the Store on every presentation, hit or miss.
type tokenCache struct {
	// ristretto's Clear must not run beside Get or Set. Readers take one
	// of several read locks at random, the flush takes them all: one
	// shared lock would make every verification on every core write the
	// same cache line.
	mu          [cacheLocks]paddedRWMutex
	rc          *ristretto.Cache[string, *cachedToken]
	keys        *KeySet
	seenRetired atomic.Uint64
}

const cacheLocks = 16

type paddedRWMutex struct {
	sync.RWMutex
	_ [40]byte
}

func (c *tokenCache) rlock() *sync.RWMutex {
	m := &c.mu[rand.Uint32()%cacheLocks].RWMutex
	m.RLock()
	return m
}

func (c *tokenCache) lockAll() {
	for i := range c.mu {
		c.mu[i].Lock()
	}
}

func (c *tokenCache) unlockAll() {
	for i := range c.mu {
		c.mu[i].Unlock()
	}
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
	m := c.rlock()
	e, ok := c.rc.Get(token)
	m.RUnlock()
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

func (c *tokenCache) put(token string, claims *Claims, key *Key) {
	if c == nil {
		return
	}
	m := c.rlock()
	// No TTL: every hit checks exp itself, and a TTL would cost ristretto a
	// clock read per Get. Expired entries are no longer read, so the
	// frequency-based policy evicts them first.
	c.rc.Set(token, &cachedToken{token: token, claims: claims, key: key}, 1)
	m.RUnlock()
}

// flushOnRetire empties the cache once after each key retirement.
func (c *tokenCache) flushOnRetire() {
	r := c.keys.retired.Load()
	if seen := c.seenRetired.Load(); r != seen && c.seenRetired.CompareAndSwap(seen, r) {
		c.lockAll()
		c.rc.Clear()
		c.unlockAll()
	}
}

func (c *tokenCache) close() {
	c.lockAll()
	c.rc.Close()
	c.unlockAll()
}
