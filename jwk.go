package jtiguard

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
)

// jwk is the JSON Web Key representation (RFC 7517, RFC 7518 section 6, RFC 8037).
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	Use    string   `json:"use,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	D      string   `json:"d,omitempty"`
	P      string   `json:"p,omitempty"`
	Q      string   `json:"q,omitempty"`
	DP     string   `json:"dp,omitempty"`
	DQ     string   `json:"dq,omitempty"`
	QI     string   `json:"qi,omitempty"`
	K      string   `json:"k,omitempty"`
}

// member returns the field of the string member name, or nil.
func (j *jwk) member(name string) *string {
	switch name {
	case "kty":
		return &j.Kty
	case "kid":
		return &j.Kid
	case "alg":
		return &j.Alg
	case "use":
		return &j.Use
	case "crv":
		return &j.Crv
	case "x":
		return &j.X
	case "y":
		return &j.Y
	case "n":
		return &j.N
	case "e":
		return &j.E
	case "d":
		return &j.D
	case "p":
		return &j.P
	case "q":
		return &j.Q
	case "dp":
		return &j.DP
	case "dq":
		return &j.DQ
	case "qi":
		return &j.QI
	case "k":
		return &j.K
	}
	return nil
}

// private reports whether j carries private members of an asymmetric key.
func (j *jwk) private() bool {
	return j.D+j.P+j.Q+j.DP+j.DQ+j.QI != ""
}

// foreign reports whether j carries members that do not belong to its kty:
// a key that could be read as two different keys.
func (j *jwk) foreign() bool {
	switch j.Kty {
	case "OKP":
		return j.Y+j.N+j.E+j.P+j.Q+j.DP+j.DQ+j.QI+j.K != ""
	case "EC":
		return j.N+j.E+j.P+j.Q+j.DP+j.DQ+j.QI+j.K != ""
	case "RSA":
		return j.Crv+j.X+j.Y+j.K != ""
	case "oct":
		return j.Crv+j.X+j.Y+j.N+j.E != "" || j.private()
	}
	return false
}

func (k *Key) publicJWK() (jwk, bool) {
	j := jwk{Kid: k.kid, Alg: k.alg, Use: "sig"}
	switch pub := k.verify.(type) {
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64(pub)
	case *ecdsa.PublicKey:
		raw, _ := pub.Bytes() // checked on load: 0x04 || x || y
		j.Kty, j.Crv, j.X, j.Y = "EC", "P-256", b64(raw[1:33]), b64(raw[33:])
	case *rsa.PublicKey:
		j.Kty, j.N, j.E = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	default:
		return jwk{}, false
	}
	return j, true
}

// thumbprint is the key's RFC 7638 JWK thumbprint: SHA-256 over the
// required public members in lexicographic order, base64url. For an HMAC
// key it is a hash of the secret, which exposes no more than any token the
// secret signs (both allow offline guessing of a weak secret, which the
// 32-byte minimum rules out when the secret is random).
func (k *Key) thumbprint() string {
	var s string
	if secret, ok := k.verify.([]byte); ok {
		s = `{"k":"` + b64(secret) + `","kty":"oct"}`
	} else {
		j, _ := k.publicJWK()
		switch j.Kty {
		case "OKP":
			s = `{"crv":"Ed25519","kty":"OKP","x":"` + j.X + `"}`
		case "EC":
			s = `{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
		case "RSA":
			s = `{"e":"` + j.E + `","kty":"RSA","n":"` + j.N + `"}`
		}
	}
	sum := sha256.Sum256([]byte(s))
	return b64(sum[:])
}

// MarshalJWK returns k as a JSON Web Key with its kid, alg and use "sig".
// With private false it holds the public members only, as JWKS publishes
// them; an HMAC key has no public form and is refused. With private true it
// holds the private members too (an HMAC key's secret): only a key that can
// sign has them. ParseJWK reads either back.
func (k *Key) MarshalJWK(private bool) ([]byte, error) {
	if !private {
		j, ok := k.publicJWK()
		if !ok {
			return nil, keyErr(ErrInvalidKey, k.kid, "an HMAC secret has no public form")
		}
		return json.Marshal(j)
	}
	if !k.CanSign() {
		return nil, keyErr(ErrInvalidKey, k.kid, "a verify-only key has no private members")
	}
	var j jwk
	switch s := k.sign.(type) {
	case []byte:
		j = jwk{Kty: "oct", Kid: k.kid, Alg: k.alg, Use: "sig", K: b64(s)}
	case ed25519.PrivateKey:
		j, _ = k.publicJWK()
		j.D = b64(s.Seed())
	case *ecdsa.PrivateKey:
		d, err := s.Bytes()
		if err != nil {
			return nil, keyErr(ErrInvalidKey, k.kid, "ECDSA private key cannot be encoded")
		}
		j, _ = k.publicJWK()
		j.D = b64(d)
	case *rsa.PrivateKey:
		if len(s.Primes) != 2 {
			return nil, keyErr(ErrInvalidKey, k.kid, "multi-prime RSA keys are not written as JWK")
		}
		j, _ = k.publicJWK()
		c := crt(s)
		j.D, j.P, j.Q = b64(s.D.Bytes()), b64(s.Primes[0].Bytes()), b64(s.Primes[1].Bytes())
		j.DP, j.DQ, j.QI = b64(c[0].Bytes()), b64(c[1].Bytes()), b64(c[2].Bytes())
	}
	return json.Marshal(j)
}

// ParseJWK loads one JSON Web Key, public or private. The key must name its
// alg (EdDSA, ES256, RS256 or HS256); without a kid it is named by its
// RFC 7638 thumbprint. Its use, if given, must be "sig", and its key_ops, if
// given, only "sign" and "verify". Private members (d, with p and q for RSA)
// make a signing key and must agree with the public ones; an "oct" key is an
// HS256 secret. The JSON is read strictly: a duplicate member, a member
// that differs from a known one only in case, a member foreign to the kty,
// or anything after the object is refused. Weak keys match ErrWeakKey,
// anything else refused matches ErrInvalidKey.
func ParseJWK(data []byte) (*Key, error) {
	j, err := decodeJWK(string(data))
	if err != nil {
		return nil, err
	}
	return j.key()
}

// ParseJWKS loads a published JSON Web Key Set ({"keys":[...]}) into a
// KeySet, with the rules of ParseJWK for each key and of NewKeySet for the
// set: no duplicate kid, no mix of HMAC and asymmetric keys. A key with
// private members is refused: a document that carries them has leaked them.
// HMAC ("oct") keys are accepted, since an HS256 verifier needs the secret;
// such a set is itself a secret and is never published (JWKS leaves HMAC
// keys out). To load private keys, use ParseJWK or a KeyDir.
func ParseJWKS(data []byte) (*KeySet, error) {
	r := jsonReader{s: string(data)}
	var raws []string
	seen := false
	err := r.open()
	for err == nil {
		var name string
		var ok bool
		if name, ok, err = r.next(); err != nil || !ok {
			break
		}
		if name != "keys" {
			_, err = r.raw()
			continue
		}
		if seen {
			return nil, keyErr(ErrInvalidKey, "", "key set with two keys members")
		}
		seen = true
		raws, err = r.objects()
	}
	if err == nil {
		err = r.end()
	}
	if err != nil {
		return nil, keyErr(ErrInvalidKey, "", "a key set must be a JSON object with a keys array of objects")
	}
	if len(raws) == 0 {
		return nil, keyErr(ErrInvalidKey, "", "empty key set")
	}
	keys := make([]*Key, 0, len(raws))
	for _, raw := range raws {
		j, err := decodeJWK(raw)
		if err != nil {
			return nil, err
		}
		if j.private() {
			return nil, keyErr(ErrInvalidKey, j.Kid, "a published key set must not hold private keys")
		}
		k, err := j.key()
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return NewKeySet(keys...)
}

// objects reads an array of JSON objects and returns the text of each.
func (r *jsonReader) objects() ([]string, error) {
	return r.array(func() (string, error) {
		if r.peek() != '{' {
			return "", errJSON
		}
		return r.raw()
	})
}

// jwkNames are the members decodeJWK reads, for the case-variant check.
var jwkNames = []string{"kty", "kid", "alg", "use", "key_ops", "crv", "x", "y", "n", "e", "d", "p", "q", "dp", "dq", "qi", "k"}

// decodeJWK reads a JWK object strictly (see ParseJWK); other members, such
// as x5c, are validated as JSON and ignored.
func decodeJWK(s string) (*jwk, error) {
	bad := keyErr(ErrInvalidKey, "", "a JWK must be one well-formed JSON object")
	var j jwk
	r := jsonReader{s: s}
	if r.open() != nil {
		return nil, bad
	}
	seen := make(map[string]bool, 8)
	for {
		name, ok, err := r.next()
		if err != nil {
			return nil, bad
		}
		if !ok {
			break
		}
		if seen[name] {
			return nil, keyErr(ErrInvalidKey, "", fmt.Sprintf("JWK member %q appears twice", name))
		}
		seen[name] = true
		if name == "key_ops" {
			j.KeyOps, err = r.strs()
		} else if f := j.member(name); f != nil {
			*f, err = r.str()
		} else {
			for _, known := range jwkNames {
				if strings.EqualFold(name, known) {
					return nil, keyErr(ErrInvalidKey, "", fmt.Sprintf("JWK member %q is a case variant of %q", name, known))
				}
			}
			_, err = r.raw()
		}
		if err != nil {
			return nil, bad
		}
	}
	if r.end() != nil {
		return nil, bad
	}
	return &j, nil
}

func (j *jwk) key() (*Key, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, keyErr(ErrInvalidKey, j.Kid, fmt.Sprintf("key use %q is not sig", j.Use))
	}
	for _, op := range j.KeyOps {
		if op != "sign" && op != "verify" {
			return nil, keyErr(ErrInvalidKey, j.Kid, fmt.Sprintf("key operation %q is not for signatures", op))
		}
	}
	switch j.Alg {
	case "":
		return nil, keyErr(ErrInvalidKey, j.Kid, "a key must name its alg")
	case EdDSA, ES256, RS256, HS256:
	default:
		return nil, keyErr(ErrUnsupportedAlgorithm, j.Kid, fmt.Sprintf("%q", j.Alg))
	}
	if j.foreign() {
		return nil, keyErr(ErrInvalidKey, j.Kid, fmt.Sprintf("members foreign to kty %q", j.Kty))
	}
	var material any
	var err error
	switch j.Kty {
	case "OKP":
		material, err = j.ed25519()
	case "EC":
		material, err = j.ecdsa()
	case "RSA":
		material, err = j.rsa()
	case "oct":
		material, err = decodeB64(j.K)
		if err != nil {
			err = keyErr(ErrInvalidKey, j.Kid, "bad k")
		}
	default:
		return nil, keyErr(ErrInvalidKey, j.Kid, fmt.Sprintf("unsupported kty %q", j.Kty))
	}
	if err != nil {
		return nil, err
	}
	return NewKey(j.Kid, j.Alg, material)
}

func (j *jwk) ed25519() (any, error) {
	x, err := decodeB64(j.X)
	if j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
		return nil, keyErr(ErrInvalidKey, j.Kid, "OKP key must be Ed25519 with a 32-byte x")
	}
	if j.D == "" {
		return ed25519.PublicKey(x), nil
	}
	d, err := decodeB64(j.D)
	if err != nil || len(d) != ed25519.SeedSize {
		return nil, keyErr(ErrInvalidKey, j.Kid, "bad Ed25519 d")
	}
	priv := ed25519.NewKeyFromSeed(d)
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), x) {
		return nil, keyErr(ErrInvalidKey, j.Kid, "Ed25519 d does not match x")
	}
	return priv, nil
}

func (j *jwk) ecdsa() (any, error) {
	if j.Crv != "P-256" {
		return nil, keyErr(ErrInvalidKey, j.Kid, fmt.Sprintf("unsupported curve %q", j.Crv))
	}
	x, errX := decodeB64(j.X)
	y, errY := decodeB64(j.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, keyErr(ErrInvalidKey, j.Kid, "P-256 x and y must be 32 bytes each")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, keyErr(ErrInvalidKey, j.Kid, "point not on P-256")
	}
	if j.D == "" {
		return pub, nil
	}
	d, err := decodeB64(j.D)
	if err != nil {
		return nil, keyErr(ErrInvalidKey, j.Kid, "bad EC d")
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil || !priv.PublicKey.Equal(pub) {
		return nil, keyErr(ErrInvalidKey, j.Kid, "EC d does not match x and y")
	}
	return priv, nil
}

func (j *jwk) rsa() (any, error) {
	n, errN := decodeB64(j.N)
	e, errE := decodeB64(j.E)
	if errN != nil || errE != nil || len(e) == 0 || len(e) > 4 {
		return nil, keyErr(ErrInvalidKey, j.Kid, "bad RSA n or e")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	if err := checkRSA(j.Kid, pub); err != nil {
		return nil, err
	}
	if !j.private() {
		return pub, nil
	}
	var parts [6]*big.Int
	for i, s := range []string{j.D, j.P, j.Q, j.DP, j.DQ, j.QI} {
		if s == "" && i >= 3 {
			continue // the CRT values are optional; computed when absent
		}
		b, err := decodeB64(s)
		if err != nil || len(b) == 0 {
			return nil, keyErr(ErrInvalidKey, j.Kid, "RSA private key needs d, p and q")
		}
		parts[i] = new(big.Int).SetBytes(b)
	}
	priv := &rsa.PrivateKey{PublicKey: *pub, D: parts[0], Primes: []*big.Int{parts[1], parts[2]}}
	if err := priv.Validate(); err != nil {
		return nil, keyErr(ErrInvalidKey, j.Kid, "RSA private key does not validate")
	}
	// CRT values, when present, must be the right ones: a signer that used
	// wrong ones would make faulty signatures, and those leak the key.
	for i, want := range crt(priv) {
		if got := parts[3+i]; got != nil && got.Cmp(want) != 0 {
			return nil, keyErr(ErrInvalidKey, j.Kid, "RSA dp, dq or qi does not match d, p and q")
		}
	}
	priv.Precompute()
	return priv, nil
}

// crt returns dp, dq and qi (RFC 7518 section 6.3.2) of a two-prime key.
func crt(k *rsa.PrivateKey) [3]*big.Int {
	p, q := k.Primes[0], k.Primes[1]
	one := big.NewInt(1)
	return [3]*big.Int{
		new(big.Int).Mod(k.D, new(big.Int).Sub(p, one)),
		new(big.Int).Mod(k.D, new(big.Int).Sub(q, one)),
		new(big.Int).ModInverse(q, p),
	}
}
