package jtiguard

import (
	"encoding/base64"
	"errors"
	"strings"
)

// strictB64 refuses padding and non-zero trailing bits. Go's decoder still
// skips CR and LF, so every segment is also checked against the alphabet.
var strictB64 = base64.RawURLEncoding.Strict()

var b64Alphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if !b64Alphabet[s[i]] {
			return false
		}
	}
	return true
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

var errB64 = errors.New("jtiguard: bad base64url")

// decodeB64 decodes canonical unpadded base64url and nothing else.
func decodeB64(s string) ([]byte, error) {
	if !isBase64URL(s) {
		return nil, errB64
	}
	b, err := strictB64.DecodeString(s)
	if err != nil {
		return nil, errB64
	}
	return b, nil
}

// maxHeaderLen bounds the encoded protected header; ours is under 100 bytes.
const maxHeaderLen = 512

// jws is a compact JWS split into its parts, each part's encoding checked.
type jws struct {
	signingInput string // header.payload, as signed
	header       string // decoded protected header
	payload      string // decoded payload
	sig          []byte
}

// parseJWS splits a compact JWS (RFC 7515 section 7.1) and decodes its three
// parts strictly: exactly two dots, no empty header or signature, only the base64url
// alphabet, no padding, canonical trailing bits.
func parseJWS(token string) (jws, error) {
	d1 := strings.IndexByte(token, '.')
	if d1 <= 0 || d1 > maxHeaderLen {
		return jws{}, ErrMalformed
	}
	d2 := strings.IndexByte(token[d1+1:], '.') + d1 + 1
	if d2 <= d1 || d2 == len(token)-1 || strings.IndexByte(token[d2+1:], '.') >= 0 {
		return jws{}, ErrMalformed
	}
	if !isBase64URL(token[:d1]) || !isBase64URL(token[d1+1:d2]) || !isBase64URL(token[d2+1:]) {
		return jws{}, ErrMalformed
	}
	// One buffer and one string for header and payload together.
	hLen := strictB64.DecodedLen(d1)
	buf := make([]byte, hLen+strictB64.DecodedLen(d2-d1-1))
	hn, err := strictB64.Decode(buf, []byte(token[:d1]))
	if err != nil {
		return jws{}, ErrMalformed
	}
	pn, err := strictB64.Decode(buf[hn:], []byte(token[d1+1:d2]))
	if err != nil {
		return jws{}, ErrMalformed
	}
	sig, err := strictB64.DecodeString(token[d2+1:])
	if err != nil {
		return jws{}, ErrMalformed
	}
	text := string(buf[:hn+pn])
	return jws{signingInput: token[:d2], header: text[:hn], payload: text[hn:], sig: sig}, nil
}

// header is a protected header: exactly alg, kid and typ, nothing else.
// Parameters that could choose a key or change processing (jwk, jku, x5u,
// x5c, x5t, crit, b64, zip, ...) are refused, not ignored.
type header struct {
	alg, kid string
	typ      TokenType
}

func parseHeader(s string) (header, error) {
	var h header
	var typ string
	r := jsonReader{s: s}
	if r.open() != nil {
		return h, ErrMalformed
	}
	seen := 0
	for {
		name, ok, err := r.next()
		if err != nil {
			return h, ErrMalformed
		}
		if !ok {
			break
		}
		var bit int
		switch name {
		case "alg":
			h.alg, err = r.str()
			bit = 1
		case "kid":
			h.kid, err = r.str()
			bit = 2
		case "typ":
			typ, err = r.str()
			bit = 4
		default:
			return h, ErrMalformed
		}
		if err != nil || seen&bit != 0 {
			return h, ErrMalformed
		}
		seen |= bit
	}
	if r.end() != nil {
		return h, ErrMalformed
	}
	if h.alg == "" {
		return h, ErrAlgorithm
	}
	h.typ = parseTyp(typ) // 0 when missing or unknown: the caller refuses it
	return h, nil
}

// authenticate checks the signature of j with k, which must be pinned to the
// algorithm the header names.
func authenticate(j jws, h header, k *Key) error {
	if h.alg != k.alg {
		return ErrAlgorithm
	}
	return k.verifySignature(j.signingInput, j.sig)
}

// signJWS returns the compact JWS of payload signed by k with typ t.
func signJWS(k *Key, t TokenType, payload []byte) (string, error) {
	w := jsonWriter{b: make([]byte, 0, 96)}
	w.str("alg", k.alg)
	w.str("kid", k.kid)
	w.str("typ", t.String())
	hdr := w.close()

	enc := base64.RawURLEncoding
	buf := make([]byte, 0, enc.EncodedLen(len(hdr))+1+enc.EncodedLen(len(payload))+1+enc.EncodedLen(512))
	buf = enc.AppendEncode(buf, hdr)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig, err := k.signString(string(buf))
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}
