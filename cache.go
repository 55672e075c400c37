package jtiguard

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// tokenCache maps a token's exact text to the claims it verified to, so a
// token presented again skips decoding and signature verification, the
// costliest steps. It answers nothing about revocation: the Verifier checks
// time and the Store on every presentation, hit or miss.
//
// It is a fixed table of four-way sets of atomic pointers to immutable
// entries: a hit is an atomic load, a comparison of the whole token and of
// the key ring, and writes no memory, so verifications on every core share
// nothing they write (a lock's reader count, a policy's counters would be
// such a line). A put replaces an empty slot or one of the set at random;
// a dropped entry costs one re-verification, nothing else.
type tokenCache struct {
	slots []atomic.Pointer[cachedToken]
	shift uint8  // 64 - log2(len(slots)): a hash's top bits pick its set
	seed  uint64 // per cache, so tables of different processes differ
	keys  *KeySet
}

type cachedToken struct {
	hash   uint64 // of the token's tail, compared before the token
	token  string // the whole token, compared on a hit
	claims *Claims
	key    *Key     // the key that verified it
	ring   *keyring // the key set's state when it was checked to hold key
}

func newTokenCache(size int, keys *KeySet) *tokenCache {
	// Twice the entries wanted, in sets of four, keeps the sets that
	// overflow (and make their tokens take turns) rare at full size.
	n := max(ways, 1<<bits.Len(uint(2*size-1)))
	return &tokenCache{
		slots: make([]atomic.Pointer[cachedToken], n),
		shift: uint8(64 - bits.Len(uint(n-1))),
		seed:  rand.Uint64(),
		keys:  keys,
	}
}

const ways = 4

// hash hashes token's tail. It is the signature's last characters, which
// differ between any two tokens: a multiply spreads them over the table,
// with no hashing of a token of hundreds of bytes. Tokens whose tails
// collide only share a set; the whole token is compared on a hit, and a
// token that cannot be cached (forged, unknown) costs a miss, not a longer
// probe.
func (c *tokenCache) hash(token string) uint64 {
	var tail uint64
	if n := len(token); n >= 8 {
		tail = binary.LittleEndian.Uint64([]byte(token[n-8:]))
	} else {
		for i := range n {
			tail = tail<<8 | uint64(token[i])
		}
	}
	return (tail ^ c.seed) * 0x9e3779b97f4a7c15
}

// get returns the cached claims of token if it was verified as class want
// with a key that is still in the set.
func (c *tokenCache) get(token string, want TokenType) *Claims {
	if c == nil {
		return nil
	}
	h := c.hash(token)
	i := h >> c.shift &^ (ways - 1)
	for j := range uint64(ways) {
		e := c.slots[i+j].Load()
		if e == nil || e.hash != h || e.token != token || e.claims.Type != want {
			continue
		}
		if c.valid(e, i+j) {
			return e.claims
		}
		return nil
	}
	return nil
}

// valid reports whether e's key is still the set's key for its kid: a key
// retired (or replaced under its kid) after the entry was cached must not
// keep its tokens alive. While the set has not changed since the check,
// that is one pointer comparison.
func (c *tokenCache) valid(e *cachedToken, slot uint64) bool {
	ring := c.keys.ring.Load()
	if ring == e.ring {
		return true
	}
	if ring.byKID[e.claims.KeyID] != e.key {
		c.slots[slot].CompareAndSwap(e, nil)
		return false
	}
	// The set changed in another way (a key added, the signer rotated):
	// record the new state, so later hits take the short path again.
	c.slots[slot].CompareAndSwap(e, &cachedToken{hash: e.hash, token: e.token, claims: e.claims, key: e.key, ring: ring})
	return true
}

// put caches the claims of token, verified with key.
func (c *tokenCache) put(token string, claims *Claims, key *Key) {
	if c == nil {
		return
	}
	ring := c.keys.ring.Load()
	if ring.byKID[claims.KeyID] != key {
		return // retired while the token was being verified
	}
	h := c.hash(token)
	e := &cachedToken{hash: h, token: token, claims: claims, key: key, ring: ring}
	i := h >> c.shift &^ (ways - 1)
	for j := range uint64(ways) {
		if c.slots[i+j].CompareAndSwap(nil, e) {
			return
		}
	}
	c.slots[i+rand.Uint64N(ways)].Store(e)
}

// close releases the cached entries.
func (c *tokenCache) close() {
	for i := range c.slots {
		c.slots[i].Store(nil)
	}
}
