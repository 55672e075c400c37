package jtiguard

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// Lifetime defaults and hard caps. Short lifetimes are what make a stolen
// access token worth little; revocation covers the rest of its life.
const (
	// DefaultAccessTTL is the lifetime of access tokens unless configured.
	DefaultAccessTTL = 5 * time.Minute
	// DefaultOneTimeTTL is the lifetime of one-time tokens unless configured.
	DefaultOneTimeTTL = 5 * time.Minute
	// MaxTTL caps every token lifetime, at issuance and at verification.
	MaxTTL = time.Hour
)

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	// Issuer is the iss claim of every token, usually the HTTPS URL of the
	// authorization server. Required.
	Issuer string
	// AccessTTL is the lifetime of access tokens: default 5 minutes, at most
	// MaxTTL.
	AccessTTL time.Duration
	// OneTimeTTL is the lifetime of one-time tokens: default 5 minutes, at
	// most MaxTTL.
	OneTimeTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Rand is the source of jti values; default crypto/rand. Only tests and
	// examples that need reproducible output should set it.
	Rand io.Reader
}

// Issuer mints signed tokens with the active key of a KeySet. It keeps no
// state: minting needs no store, and an Issuer is safe for concurrent use.
type Issuer struct {
	keys *KeySet
	cfg  IssuerConfig
}

// NewIssuer returns an Issuer signing with keys.Signer() at the time of each
// call, so rotating the set rotates what new tokens are signed with.
func NewIssuer(keys *KeySet, cfg IssuerConfig) (*Issuer, error) {
	if keys == nil || keys.Signer() == nil {
		return nil, fmt.Errorf("%w: issuer needs a key set with a signing key", ErrConfig)
	}
	if cfg.Issuer == "" {
		return nil, fmt.Errorf("%w: Issuer is required", ErrConfig)
	}
	var err error
	if cfg.AccessTTL, err = ttl(cfg.AccessTTL, DefaultAccessTTL, "AccessTTL"); err != nil {
		return nil, err
	}
	if cfg.OneTimeTTL, err = ttl(cfg.OneTimeTTL, DefaultOneTimeTTL, "OneTimeTTL"); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Issuer{keys: keys, cfg: cfg}, nil
}

func ttl(d, def time.Duration, name string) (time.Duration, error) {
	switch {
	case d == 0:
		return def, nil
	case d < time.Second || d > MaxTTL:
		return 0, fmt.Errorf("%w: %s must be between 1s and %v", ErrConfig, name, MaxTTL)
	}
	return d.Truncate(time.Second), nil
}

// Access mints an access token (RFC 9068) for c.Subject and c.Audience,
// with the optional client_id, scope, acr, amr, auth_time, custom (Extra)
// and DPoP binding (JKT, a thumbprint from a verified DPoPProof) claims of
// c. The Issuer sets iss, iat, exp and a fresh random
// jti; c must leave Type, KeyID, Issuer, IssuedAt, ExpiresAt, NotBefore,
// ID, Session, Generation and Purpose empty. Tokens of a session (sid) are
// minted by Sessions, which records the session they belong to. It returns
// the token and its claims as a verifier will see them.
//
// Every class refuses with ErrConfig custom claims under a registered name
// (or a case variant of one), invalid JSON, more than MaxExtraSize of
// them, and any token longer than DefaultMaxTokenSize, which a Verifier
// with default settings would refuse.
func (i *Issuer) Access(c Claims) (string, *Claims, error) {
	if c.Purpose != "" {
		return "", nil, fmt.Errorf("%w: access tokens carry no purpose", ErrConfig)
	}
	return i.mint(TypeAccess, c, i.cfg.AccessTTL)
}

// OneTime mints a one-time token for c.Purpose (for example
// "confirm-transfer"): a verifier's Consume accepts it once, for that
// purpose only, within its short lifetime. Subject and Audience are
// required as for Access.
func (i *Issuer) OneTime(c Claims) (string, *Claims, error) {
	if c.Purpose == "" || c.JKT != "" {
		return "", nil, fmt.Errorf("%w: a one-time token needs a Purpose and carries no JKT", ErrConfig)
	}
	return i.mint(TypeOneTime, c, i.cfg.OneTimeTTL)
}

// Step mints a pre-authentication step token for c.Subject: proof that a
// first step (say, the password) succeeded, accepted once and only by
// Sessions.CompleteStep for the step named c.Purpose (say, "mfa"). It is
// never an access token, its audience is the issuer itself (leave Audience
// empty), and it lives OneTimeTTL.
func (i *Issuer) Step(c Claims) (string, *Claims, error) {
	if c.Purpose == "" || len(c.Audience) != 0 || c.JKT != "" {
		return "", nil, fmt.Errorf("%w: a step token needs a Purpose (the step), and no Audience or JKT", ErrConfig)
	}
	c.Audience = []string{i.cfg.Issuer}
	return i.mint(TypeStep, c, i.cfg.OneTimeTTL)
}

func (i *Issuer) mint(t TokenType, c Claims, ttl time.Duration) (string, *Claims, error) {
	if c.Type != 0 || c.Issuer != "" || !c.IssuedAt.IsZero() || !c.ExpiresAt.IsZero() ||
		!c.NotBefore.IsZero() || !c.ID.IsZero() || c.KeyID != "" || c.Session != "" || c.Generation != 0 {
		return "", nil, fmt.Errorf("%w: Type, KeyID, Issuer, IssuedAt, ExpiresAt, NotBefore, ID, Session and Generation are set by the Issuer", ErrConfig)
	}
	if c.Subject == "" || len(c.Audience) == 0 {
		return "", nil, fmt.Errorf("%w: Subject and Audience are required", ErrConfig)
	}
	for _, a := range c.Audience {
		if a == "" {
			return "", nil, fmt.Errorf("%w: empty audience", ErrConfig)
		}
	}
	if err := c.checkText(); err != nil {
		return "", nil, fmt.Errorf("%w: claim text must be valid UTF-8", err)
	}
	if err := checkJKT(c.JKT); err != nil {
		return "", nil, err
	}
	var err error
	if c.Extra, err = cleanExtra(c.Extra, MaxExtraSize); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	id, err := i.newJTI()
	if err != nil {
		return "", nil, err
	}
	now := i.now()
	c.Issuer, c.ID = i.cfg.Issuer, id
	c.IssuedAt, c.ExpiresAt = now, now.Add(ttl)
	if !c.AuthTime.IsZero() {
		c.AuthTime = c.AuthTime.Truncate(time.Second)
	}
	return i.sign(t, &c, DefaultMaxTokenSize)
}

// now is the issuer's clock at token precision.
func (i *Issuer) now() time.Time { return i.cfg.Now().Truncate(time.Second) }

func (i *Issuer) newJTI() (JTI, error) {
	id, err := store.NewJTI(i.cfg.Rand)
	if err != nil {
		return JTI{}, fmt.Errorf("jtiguard: reading random jti: %w", err)
	}
	return id, nil
}

// sign signs c, complete but for Type and KeyID, with the active key, and
// refuses a token longer than limit.
func (i *Issuer) sign(t TokenType, c *Claims, limit int) (string, *Claims, error) {
	key := i.keys.Signer()
	c.Type, c.KeyID = t, key.kid
	payload := appendClaims(make([]byte, 0, 320), c)
	if n := tokenLen(key, t, len(payload)); n > limit {
		return "", nil, fmt.Errorf("%w: a %v token of %d bytes exceeds the %d-byte limit", ErrConfig, t, n, limit)
	}
	tok, err := signJWS(key, t, payload)
	if err != nil {
		return "", nil, err
	}
	if len(tok) > limit { // should tokenLen ever disagree with signJWS
		return "", nil, fmt.Errorf("%w: a %v token of %d bytes exceeds the %d-byte limit", ErrConfig, t, len(tok), limit)
	}
	return tok, c, nil
}

// tokenLen is the length of the compact JWS that signJWS makes with k and
// typ t over a payload of n bytes, found without signing.
func tokenLen(k *Key, t TokenType, n int) int {
	hdr := len(`{"alg":"","kid":"","typ":""}`) + len(k.alg) + len(k.kid) + len(t.String()) // kid needs no escaping
	sig := 64                                                                              // EdDSA, ES256
	switch pub := k.verify.(type) {
	case *rsa.PublicKey:
		sig = pub.Size()
	case []byte:
		sig = sha256.Size
	}
	enc := base64.RawURLEncoding
	return enc.EncodedLen(hdr) + 1 + enc.EncodedLen(n) + 1 + enc.EncodedLen(sig)
}

// checkJKT refuses a binding that is not a thumbprint: "" (no binding) or
// 43 characters of base64url, as DPoPProof.JKT has it.
func checkJKT(jkt string) error {
	if jkt != "" && !validJKT(jkt) {
		return fmt.Errorf("%w: JKT must be an RFC 7638 SHA-256 thumbprint, base64url (DPoPProof.JKT)", ErrConfig)
	}
	return nil
}
