package jtiguard

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"math/big"
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

// ParseJWK loads one JSON Web Key. The key must name its kid and its alg
// (EdDSA, ES256, RS256 or HS256), its use, if given, must be "sig", and its
// key_ops, if given, only "sign" and "verify". Private members make a
// signing key; they must agree with the public ones. Weak keys match
// ErrWeakKey, anything else refused matches ErrInvalidKey.
func ParseJWK(data []byte) (*Key, error) {
	var j jwk
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return j.key()
}

// ParseJWKS loads a JSON Web Key Set ({"keys":[...]}) into a KeySet, with
// the rules of ParseJWK for each key and of NewKeySet for the set: no
// duplicate kid, no mix of HMAC and asymmetric keys.
func ParseJWKS(data []byte) (*KeySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	if len(doc.Keys) == 0 {
		return nil, keyErr(ErrInvalidKey, "", "empty key set")
	}
	keys := make([]*Key, 0, len(doc.Keys))
	for _, raw := range doc.Keys {
		k, err := ParseJWK(raw)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return NewKeySet(keys...)
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
	if j.D == "" {
		return pub, nil
	}
	var parts [3]*big.Int
	for i, s := range []string{j.D, j.P, j.Q} {
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
	priv.Precompute()
	return priv, nil
}
