package jtiguard

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/golang-jwt/jwt/v5"
)

// The signing algorithms a Key can be pinned to.
const (
	// EdDSA is Ed25519 (RFC 8037), the default: small keys, fast, and
	// signatures that cannot be re-encoded.
	EdDSA = "EdDSA"
	// ES256 is ECDSA on P-256 with SHA-256.
	ES256 = "ES256"
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256, modulus of 2048 bits or more.
	RS256 = "RS256"
	// HS256 is HMAC SHA-256 with a secret of 32 bytes or more; every
	// verifier then holds the signing secret.
	HS256 = "HS256"
)

// Key limits enforced at load.
const (
	// MinHMACSecret is the shortest HS256 secret accepted, in bytes.
	MinHMACSecret = 32
	// MinRSABits is the smallest RSA modulus accepted, in bits.
	MinRSABits = 2048
	maxRSABits = 8192 // bounds the cost of one verification
	maxKIDLen  = 128
)

// Key is a signing or verification key pinned to one algorithm and named by
// a kid. A token is only ever checked with the algorithm its key is pinned
// to, whatever its header says. Keys are immutable.
type Key struct {
	kid    string
	alg    string
	method jwt.SigningMethod
	sign   any // crypto.Signer or []byte; nil for a verify-only key
	verify any // ed25519.PublicKey, *ecdsa.PublicKey, *rsa.PublicKey or []byte
}

// NewKey pins key material to kid and alg. An empty kid names the key by
// its RFC 7638 JWK thumbprint, the same on every machine that loads the key.
// material is one of
// ed25519.PrivateKey or ed25519.PublicKey (EdDSA), *ecdsa.PrivateKey or
// *ecdsa.PublicKey on P-256 (ES256), *rsa.PrivateKey or *rsa.PublicKey of at
// least 2048 bits (RS256), or a []byte secret of at least 32 bytes (HS256).
// A private key makes a key that can sign; a public key makes a verify-only
// key. Material of the wrong type for alg matches ErrInvalidKey; weak
// material matches ErrWeakKey.
func NewKey(kid, alg string, material any) (*Key, error) {
	if kid != "" {
		if err := checkKID(kid); err != nil {
			return nil, err
		}
	}
	k := &Key{kid: kid, alg: alg}
	switch alg {
	case EdDSA:
		k.method = jwt.SigningMethodEdDSA
		switch m := material.(type) {
		case ed25519.PrivateKey:
			if len(m) != ed25519.PrivateKeySize {
				return nil, keyErr(ErrInvalidKey, kid, "Ed25519 private key of wrong size")
			}
			k.sign, k.verify = m, m.Public().(ed25519.PublicKey)
		case ed25519.PublicKey:
			if len(m) != ed25519.PublicKeySize {
				return nil, keyErr(ErrInvalidKey, kid, "Ed25519 public key of wrong size")
			}
			k.verify = m
		default:
			return nil, keyErr(ErrInvalidKey, kid, fmt.Sprintf("EdDSA needs an Ed25519 key, not %T", material))
		}
	case ES256:
		k.method = jwt.SigningMethodES256
		var pub *ecdsa.PublicKey
		switch m := material.(type) {
		case *ecdsa.PrivateKey:
			pub, k.sign = &m.PublicKey, m
		case *ecdsa.PublicKey:
			pub = m
		default:
			return nil, keyErr(ErrInvalidKey, kid, fmt.Sprintf("ES256 needs a P-256 ECDSA key, not %T", material))
		}
		if pub.Curve != elliptic.P256() {
			return nil, keyErr(ErrInvalidKey, kid, "ES256 needs the P-256 curve")
		}
		// Round-trip through the uncompressed encoding: it refuses points
		// that are not on the curve.
		raw, err := pub.Bytes()
		if err != nil {
			return nil, keyErr(ErrInvalidKey, kid, "ECDSA point not on P-256")
		}
		if pub, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw); err != nil {
			return nil, keyErr(ErrInvalidKey, kid, "ECDSA point not on P-256")
		}
		k.verify = pub
	case RS256:
		k.method = jwt.SigningMethodRS256
		var pub *rsa.PublicKey
		var priv *rsa.PrivateKey
		switch m := material.(type) {
		case *rsa.PrivateKey:
			pub, priv = &m.PublicKey, m
		case *rsa.PublicKey:
			pub = m
		default:
			return nil, keyErr(ErrInvalidKey, kid, fmt.Sprintf("RS256 needs an RSA key, not %T", material))
		}
		// The public checks first, so that a small key is reported as weak
		// rather than as one that does not validate.
		if err := checkRSA(kid, pub); err != nil {
			return nil, err
		}
		if priv != nil {
			if err := priv.Validate(); err != nil {
				return nil, keyErr(ErrInvalidKey, kid, "RSA private key does not validate")
			}
			k.sign = priv
		}
		k.verify = pub
	case HS256:
		k.method = jwt.SigningMethodHS256
		secret, ok := material.([]byte)
		if !ok {
			return nil, keyErr(ErrInvalidKey, kid, fmt.Sprintf("HS256 needs a []byte secret, not %T", material))
		}
		if len(secret) < MinHMACSecret {
			return nil, keyErr(ErrWeakKey, kid, fmt.Sprintf("HMAC secret of %d bytes, need %d", len(secret), MinHMACSecret))
		}
		s := append([]byte(nil), secret...)
		k.sign, k.verify = s, s
	default:
		return nil, keyErr(ErrUnsupportedAlgorithm, kid, fmt.Sprintf("%q", alg))
	}
	if k.kid == "" {
		k.kid = k.thumbprint()
	}
	return k, nil
}

// GenerateKey returns a fresh signing key for alg (EdDSA, ES256, RS256 with
// 2048 bits, or HS256 with a 32-byte secret). An empty kid names it by its
// RFC 7638 thumbprint.
func GenerateKey(kid, alg string) (*Key, error) {
	var material any
	var err error
	switch alg {
	case EdDSA:
		_, material, err = ed25519.GenerateKey(rand.Reader)
	case ES256:
		material, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		material, err = rsa.GenerateKey(rand.Reader, MinRSABits)
	case HS256:
		secret := make([]byte, MinHMACSecret)
		_, err = rand.Read(secret)
		material = secret
	default:
		return nil, keyErr(ErrUnsupportedAlgorithm, kid, fmt.Sprintf("%q", alg))
	}
	if err != nil {
		return nil, err
	}
	return NewKey(kid, alg, material)
}

// KID returns the key's identifier.
func (k *Key) KID() string { return k.kid }

// Alg returns the algorithm the key is pinned to.
func (k *Key) Alg() string { return k.alg }

// CanSign reports whether the key holds private material.
func (k *Key) CanSign() bool { return k.sign != nil }

// Public returns a verify-only copy of k. For HS256 the copy still holds the
// secret (HMAC verification needs it) and is never published in a JWKS.
func (k *Key) Public() *Key {
	p := *k
	p.sign = nil
	return &p
}

func (k *Key) symmetric() bool { return k.alg == HS256 }

// verifySignature checks sig over the JWS signing input with the key's own
// algorithm.
func (k *Key) verifySignature(signingInput string, sig []byte) error {
	if k.method.Verify(signingInput, sig, k.verify) != nil {
		return ErrSignature
	}
	return nil
}

func (k *Key) signString(signingInput string) ([]byte, error) {
	if k.sign == nil {
		return nil, keyErr(ErrInvalidKey, k.kid, "key cannot sign")
	}
	return k.method.Sign(signingInput, k.sign)
}

func checkKID(kid string) error {
	if kid == "" || len(kid) > maxKIDLen {
		return keyErr(ErrInvalidKey, kid, "kid must be 1 to 128 characters")
	}
	for i := 0; i < len(kid); i++ {
		// Printable ASCII without quote or backslash: a kid travels in
		// headers, logs and JWKS documents and must need no escaping.
		if c := kid[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return keyErr(ErrInvalidKey, "", "kid has characters outside printable ASCII")
		}
	}
	return nil
}

// rocaPrimes and rocaGenerated carry the ROCA fingerprint test (CVE-2017-15361,
// Nemec et al.): moduli from the affected Infineon library are, modulo each
// small prime p, a power of 65537.
var rocaPrimes = []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

func rocaFingerprint(n *big.Int) bool {
	var m big.Int
	for _, p := range rocaPrimes {
		r := m.Mod(n, big.NewInt(p)).Int64()
		// Walk the subgroup generated by 65537 mod p.
		g := int64(65537) % p
		x, found := int64(1), false
		for range p {
			if x == r {
				found = true
				break
			}
			x = x * g % p
		}
		if !found {
			return false
		}
	}
	return true
}

func checkRSA(kid string, pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return keyErr(ErrInvalidKey, kid, "RSA key without modulus")
	}
	bits := pub.N.BitLen()
	if bits < MinRSABits {
		return keyErr(ErrWeakKey, kid, fmt.Sprintf("RSA modulus of %d bits, need %d", bits, MinRSABits))
	}
	if bits > maxRSABits {
		return keyErr(ErrInvalidKey, kid, fmt.Sprintf("RSA modulus of %d bits, at most %d", bits, maxRSABits))
	}
	if pub.E < 3 || pub.E%2 == 0 {
		return keyErr(ErrWeakKey, kid, "RSA public exponent must be odd and at least 3")
	}
	if pub.N.Bit(0) == 0 {
		return keyErr(ErrInvalidKey, kid, "RSA modulus is even")
	}
	if rocaFingerprint(pub.N) {
		return keyErr(ErrWeakKey, kid, "RSA modulus has the ROCA fingerprint (CVE-2017-15361)")
	}
	return nil
}

func keyErr(kind error, kid, detail string) error {
	if kid != "" {
		return fmt.Errorf("%w: kid %q: %s", kind, kid, detail)
	}
	return fmt.Errorf("%w: %s", kind, detail)
}

// KeySet holds the keys of one issuer: at most one active signer and any
// number of verify-only keys, so that keys can rotate without rejecting
// tokens signed by the previous one. A set never mixes HMAC secrets with
// asymmetric keys (that mix is what algorithm-confusion attacks exploit),
// and never holds two keys with one kid. It is safe for concurrent use:
// readers see a consistent snapshot and never wait for writers. A KeyDir
// keeps a set equal to a directory of key files, for replicas that rotate
// together; a RemoteKeys keeps one equal to an issuer's published JWKS.
type KeySet struct {
	mu      sync.Mutex // serializes writers
	ring    atomic.Pointer[keyring]
	retired atomic.Uint64 // counts retirements, so caches know when to flush
	// unknownKID, if set, is asked for a kid the set lacks while a token
	// is verified: a RemoteKeys that may fetch its document again. It
	// bounds its own wait, and ends it with ctx (the request's). Set before the set is shared, never after.
	unknownKID func(ctx context.Context, kid string) (*Key, bool)
}

type keyring struct {
	signer *Key
	byKID  map[string]*Key
	order  []*Key // insertion order, for a stable JWKS
}

// NewKeySet returns a set holding keys. The first key that can sign becomes
// the active signer; a set without one can only verify (a resource server
// that checks tokens with an authorization server's public keys).
func NewKeySet(keys ...*Key) (*KeySet, error) {
	ring := &keyring{byKID: make(map[string]*Key, len(keys))}
	for _, k := range keys {
		if err := ring.add(k); err != nil {
			return nil, err
		}
		if ring.signer == nil && k.CanSign() {
			ring.signer = k
		}
	}
	s := &KeySet{}
	s.ring.Store(ring)
	return s, nil
}

func (r *keyring) add(k *Key) error {
	if k == nil || k.method == nil {
		return keyErr(ErrInvalidKey, "", "nil or zero Key")
	}
	if _, dup := r.byKID[k.kid]; dup {
		return keyErr(ErrInvalidKey, k.kid, "duplicate kid")
	}
	for _, o := range r.order {
		if o.symmetric() != k.symmetric() {
			return keyErr(ErrInvalidKey, k.kid, "a key set cannot mix HMAC and asymmetric keys")
		}
	}
	r.byKID[k.kid] = k
	r.order = append(r.order, k)
	return nil
}

func (r *keyring) clone() *keyring {
	c := &keyring{signer: r.signer, byKID: make(map[string]*Key, len(r.byKID)+1), order: append([]*Key(nil), r.order...)}
	for kid, k := range r.byKID {
		c.byKID[kid] = k
	}
	return c
}

// Add adds a key without making it the signer: publish the next key in the
// JWKS ahead of rotation, or keep verifying with an older one.
func (s *KeySet) Add(k *Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.ring.Load().clone()
	if err := next.add(k); err != nil {
		return err
	}
	s.ring.Store(next)
	return nil
}

// Rotate makes the key named kid, already in the set and able to sign, the
// active signer. The previous signer stays in the set for verification until
// it is retired: retire it once every token it signed has expired.
func (s *KeySet) Rotate(kid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.ring.Load().clone()
	k, ok := next.byKID[kid]
	if !ok || !k.CanSign() {
		return keyErr(ErrInvalidKey, kid, "no signing key with this kid in the set")
	}
	next.signer = k
	s.ring.Store(next)
	return nil
}

// Retire removes the key named kid. Tokens it signed are rejected from the
// moment Retire returns, including tokens a Verifier had cached. The active
// signer cannot be retired; rotate first.
func (s *KeySet) Retire(kid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.ring.Load()
	k, ok := cur.byKID[kid]
	if !ok {
		return keyErr(ErrInvalidKey, kid, "no key with this kid in the set")
	}
	if k == cur.signer {
		return keyErr(ErrInvalidKey, kid, "cannot retire the active signer")
	}
	next := cur.clone()
	delete(next.byKID, kid)
	next.order = slices.DeleteFunc(next.order, func(o *Key) bool { return o == k })
	s.ring.Store(next)
	s.retired.Add(1)
	return nil
}

// replace swaps the whole content of the set for keys, with signer (one of
// keys, or nil) as the active signer, in one step: readers see the old set
// or the new one, never a mix. It refuses what NewKeySet refuses, an empty
// set, and a set without a signer in place of one that had a signer. A key
// that leaves the set, or whose kid now names another *Key, counts as a
// retirement, so verified-token caches flush as they do after Retire; keys
// kept as the same *Key keep their cached tokens. It reports whether the set
// changed.
func (s *KeySet) replace(keys []*Key, signer *Key) (bool, error) {
	next := &keyring{byKID: make(map[string]*Key, len(keys))}
	for _, k := range keys {
		if err := next.add(k); err != nil {
			return false, err
		}
	}
	if len(next.order) == 0 {
		return false, keyErr(ErrInvalidKey, "", "a key set cannot become empty")
	}
	if signer != nil {
		if next.byKID[signer.kid] != signer || !signer.CanSign() {
			return false, keyErr(ErrInvalidKey, signer.kid, "the signer must be a signing key of the set")
		}
		next.signer = signer
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.ring.Load()
	if cur.signer != nil && next.signer == nil {
		return false, keyErr(ErrInvalidKey, cur.signer.kid, "the set would lose its signer: rotate to another key first")
	}
	retired := false
	for kid, k := range cur.byKID {
		if next.byKID[kid] != k {
			retired = true
		}
	}
	if !retired && next.signer == cur.signer && slices.Equal(next.order, cur.order) {
		return false, nil
	}
	s.ring.Store(next)
	if retired {
		s.retired.Add(1)
	}
	return true, nil
}

// Signer returns the active signing key, or nil if the set can only verify.
func (s *KeySet) Signer() *Key { return s.ring.Load().signer }

// Key returns the key named kid.
func (s *KeySet) Key(kid string) (*Key, bool) {
	k, ok := s.ring.Load().byKID[kid]
	return k, ok
}

// lookup is Key for a token being verified: if the set lacks kid and has a
// source that can refresh it, the source is asked. The warm path is Key's:
// one atomic load and a map read.
func (s *KeySet) lookup(ctx context.Context, kid string) (*Key, bool) {
	if k, ok := s.ring.Load().byKID[kid]; ok {
		return k, true
	}
	if s.unknownKID == nil {
		return nil, false
	}
	return s.unknownKID(ctx, kid)
}

// clear removes every key, and the signer, in one step, as a retirement of
// each: for a remote set whose keys can no longer be vouched for. It
// reports whether the set held keys.
func (s *KeySet) clear() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring.Load().order) == 0 {
		return false
	}
	s.ring.Store(&keyring{byKID: map[string]*Key{}})
	s.retired.Add(1)
	return true
}

// JWKS returns the set's public keys as a JSON Web Key Set (RFC 7517), in the
// order they were added. HMAC secrets are never included.
func (s *KeySet) JWKS() ([]byte, error) {
	doc := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range s.ring.Load().order {
		if j, ok := k.publicJWK(); ok {
			doc.Keys = append(doc.Keys, j)
		}
	}
	return json.Marshal(doc)
}
