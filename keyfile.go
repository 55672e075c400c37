package jtiguard

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// maxKeyFile bounds what ReadKeyFile and a KeyDir read from one file; an
// 8192-bit RSA private key in PEM is under 7 KiB.
const maxKeyFile = 64 << 10

// ParsePEM loads one PEM-encoded key: a private key in PKCS #8 ("PRIVATE
// KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY") form makes
// a signing key; a public key in PKIX ("PUBLIC KEY") or PKCS #1 ("RSA PUBLIC
// KEY") form makes a verify-only key. The data must hold exactly one such
// block and nothing but white space around it; only an "EC PARAMETERS"
// block naming P-256 may precede an EC key, as `openssl ecparam -genkey`
// writes it. Encrypted keys and PEM headers are refused.
//
// PEM carries neither kid nor alg: the key is named by its RFC 7638
// thumbprint, the same on every machine, and pinned to the one algorithm
// this package supports for its type (Ed25519: EdDSA, P-256: ES256, RSA:
// RS256). HMAC secrets have no PEM form; load them with ParseJWK or NewKey.
// The key passes NewKey's checks: weak keys match ErrWeakKey, anything else
// refused matches ErrInvalidKey.
func ParsePEM(data []byte) (*Key, error) {
	material, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	var alg string
	switch material.(type) {
	case ed25519.PrivateKey, ed25519.PublicKey:
		alg = EdDSA
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		alg = ES256
	case *rsa.PrivateKey, *rsa.PublicKey:
		alg = RS256
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return nil, keyErr(ErrInvalidKey, "", "an X25519 or ECDH key cannot sign")
	default:
		return nil, keyErr(ErrInvalidKey, "", fmt.Sprintf("unsupported key type %T", material))
	}
	return NewKey("", alg, material)
}

var pemBegin = []byte("-----BEGIN ")

// oidP256 is the DER of the P-256 curve's OID, the content of an
// "EC PARAMETERS" block that names it.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

func decodePEM(data []byte) (any, error) {
	// pem.Decode skips text before a block and blocks it cannot parse, so
	// count the blocks first: each one starts with exactly one BEGIN line.
	data = bytes.TrimLeft(data, " \t\r\n")
	blocks := bytes.Count(data, pemBegin)
	if !bytes.HasPrefix(data, pemBegin) {
		return nil, keyErr(ErrInvalidKey, "", "not PEM: want a -----BEGIN line first")
	}
	block, rest := pem.Decode(data)
	if block != nil && block.Type == "EC PARAMETERS" && blocks == 2 {
		if !bytes.Equal(block.Bytes, oidP256) {
			return nil, keyErr(ErrInvalidKey, "", "EC PARAMETERS name a curve other than P-256")
		}
		blocks--
		block, rest = pem.Decode(rest)
		if block != nil && block.Type != "EC PRIVATE KEY" {
			return nil, keyErr(ErrInvalidKey, "", "EC PARAMETERS must precede an EC PRIVATE KEY")
		}
	}
	switch {
	case block == nil:
		return nil, keyErr(ErrInvalidKey, "", "malformed PEM block")
	case blocks != 1 || len(bytes.TrimSpace(rest)) != 0:
		return nil, keyErr(ErrInvalidKey, "", "more than one PEM block, or text after it: give one key")
	case len(block.Headers) != 0 || block.Type == "ENCRYPTED PRIVATE KEY":
		return nil, keyErr(ErrInvalidKey, "", "encrypted PEM keys are not read: decrypt the key first")
	}
	var material any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		material, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		material, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		material, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PUBLIC KEY":
		material, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		material, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, keyErr(ErrInvalidKey, "", fmt.Sprintf("PEM block %q is not a key", block.Type))
	}
	if err != nil {
		// x509's messages name the DER structure, never key bytes.
		return nil, keyErr(ErrInvalidKey, "", fmt.Sprintf("%s: %v", block.Type, err))
	}
	if !embeddedPublicMatches(block.Type, block.Bytes, material) {
		return nil, keyErr(ErrInvalidKey, "", "the public key stored beside the private key does not match it")
	}
	return material, nil
}

// oneAsymmetricKey is PKCS #8 as RFC 5958 extends it, with an optional copy
// of the public key; ecPrivateKey is SEC 1's, with one too. The x509
// parsers ignore those copies; a copy that disagrees with the private key
// means the file was damaged or assembled from two keys, so it is refused.
type oneAsymmetricKey struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey []byte
	Attributes asn1.RawValue  `asn1:"optional,tag:0"`
	PublicKey  asn1.BitString `asn1:"optional,tag:1"`
}

type ecPrivateKey struct {
	Version    int
	PrivateKey []byte
	Curve      asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey  asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

var oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}

func embeddedPublicMatches(typ string, der []byte, material any) bool {
	var copies []asn1.BitString
	var ec ecPrivateKey
	switch typ {
	case "EC PRIVATE KEY":
		if _, err := asn1.Unmarshal(der, &ec); err == nil {
			copies = append(copies, ec.PublicKey)
		}
	case "PRIVATE KEY":
		var p oneAsymmetricKey
		if _, err := asn1.Unmarshal(der, &p); err != nil {
			break
		}
		copies = append(copies, p.PublicKey)
		if p.Algorithm.Algorithm.Equal(oidECPublicKey) {
			if _, err := asn1.Unmarshal(p.PrivateKey, &ec); err == nil {
				copies = append(copies, ec.PublicKey)
			}
		}
	}
	for _, c := range copies {
		if c.BitLength == 0 {
			continue
		}
		if c.BitLength != 8*len(c.Bytes) {
			return false
		}
		switch m := material.(type) {
		case ed25519.PrivateKey:
			if !bytes.Equal(c.Bytes, m.Public().(ed25519.PublicKey)) {
				return false
			}
		case *ecdsa.PrivateKey:
			raw, err := m.PublicKey.Bytes() // 0x04 || x || y
			if err != nil {
				return false
			}
			compressed := append([]byte{2 | raw[len(raw)-1]&1}, raw[1:1+(len(raw)-1)/2]...)
			if !bytes.Equal(c.Bytes, raw) && !bytes.Equal(c.Bytes, compressed) {
				return false
			}
		}
	}
	return true
}

// MarshalPEM returns k in PEM: with private true, the private key in
// PKCS #8 ("PRIVATE KEY"), which only a key that can sign has; with private
// false, the public key in PKIX ("PUBLIC KEY"). ParsePEM reads either back,
// naming the key by its thumbprint: PEM keeps no kid. An HMAC key has no
// PEM form and is refused; use MarshalJWK.
func (k *Key) MarshalPEM(private bool) ([]byte, error) {
	if k.symmetric() {
		return nil, keyErr(ErrInvalidKey, k.kid, "an HMAC secret has no PEM form: use MarshalJWK")
	}
	var block pem.Block
	var err error
	if private {
		if !k.CanSign() {
			return nil, keyErr(ErrInvalidKey, k.kid, "a verify-only key has no private key")
		}
		block.Type = "PRIVATE KEY"
		block.Bytes, err = x509.MarshalPKCS8PrivateKey(k.sign)
	} else {
		block.Type = "PUBLIC KEY"
		block.Bytes, err = x509.MarshalPKIXPublicKey(k.verify)
	}
	if err != nil {
		return nil, keyErr(ErrInvalidKey, k.kid, err.Error())
	}
	return pem.EncodeToMemory(&block), nil
}

// ReadKeyFile loads the key in the file at path: a JWK, read as ParseJWK
// reads it, if the file's first character other than white space is '{',
// else a PEM key, read as ParsePEM reads it. Files over 64 KiB are refused.
// An error reading the file wraps the *fs.PathError (errors.Is(err,
// fs.ErrNotExist) tells a missing file); a refused key matches
// ErrInvalidKey.
func ReadKeyFile(path string) (*Key, error) {
	data, err := readSmallFile(path)
	if err != nil {
		return nil, err
	}
	k, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

func parseKeyFile(data []byte) (*Key, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return ParseJWK(data)
	}
	return ParsePEM(data)
}

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("jtiguard: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("jtiguard: %w", err)
	}
	if len(data) > maxKeyFile {
		return nil, keyErr(ErrInvalidKey, "", fmt.Sprintf("%s is larger than %d KiB", path, maxKeyFile>>10))
	}
	return data, nil
}

// WriteKeyFile writes k to a new file at path, with the private key when k
// can sign: as a JWK (kid included) if path ends in ".jwk", else as PEM.
// Since PEM keeps no kid, a key whose kid is not its thumbprint (see NewKey)
// is refused for a PEM file: it would come back under another kid. The file
// is created readable and writable by its owner only (mode 0600, less if
// the umask says so) and appears complete or not at all: the key is written
// to a temporary file in the same directory, synced, and then hard-linked
// into place (the file system must support hard links). An existing file is never replaced: the error then matches
// fs.ErrExist, so replicas racing to create one key file can each load the
// winner's.
func WriteKeyFile(path string, k *Key) error {
	var data []byte
	var err error
	if strings.HasSuffix(path, ".jwk") {
		data, err = k.MarshalJWK(k.CanSign())
	} else {
		if k.kid != k.thumbprint() {
			return keyErr(ErrInvalidKey, k.kid, "a PEM file keeps no kid: name the file .jwk, or use the thumbprint kid (empty kid in NewKey)")
		}
		data, err = k.MarshalPEM(k.CanSign())
	}
	if err != nil {
		return err
	}
	// os.CreateTemp creates the file with mode 0600.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*.tmp")
	if err != nil {
		return fmt.Errorf("jtiguard: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("jtiguard: %w", err)
	}
	return nil
}

// DefaultKeyDirInterval is how often a KeyDir reads its directory again,
// unless KeyDirConfig.Interval says otherwise.
const DefaultKeyDirInterval = 30 * time.Second

// keyDirActive is the file of a key directory that names the signer's file.
const keyDirActive = "active"

// KeyDirConfig configures OpenKeyDir.
type KeyDirConfig struct {
	// Interval between two reads of the directory: the longest a replica
	// keeps signing with the previous key, or accepting tokens of a
	// retired one, after the directory changed. Zero means
	// DefaultKeyDirInterval; negative, never (call Reload yourself, e.g.
	// on SIGHUP).
	Interval time.Duration
	// Logger receives a warning for each read that fails and an info
	// record, with the kids, each time the keys change. Default
	// slog.Default().
	Logger *slog.Logger
}

// KeyDir keeps a KeySet equal to the keys in one directory, so that
// replicas reading one directory (a mounted secret, a shared volume) rotate
// keys together, without a restart. The directory holds one key per file:
// each "*.pem" and "*.jwk" file is read with ReadKeyFile; names starting
// with a dot and other files are ignored (a Kubernetes secret's "..data"
// links, for instance). The signer is chosen from the directory alone, so
// every replica chooses the same key:
//
//   - if a file named "active" exists, it holds the name of the file of the
//     signer (e.g. "2026-11.pem"; surrounding white space is ignored);
//   - else, if exactly one key can sign, that key;
//   - else, if no key can sign, none (a verifier's directory of public keys);
//   - else the read fails: name the signer in "active".
//
// The schedule, each step a change to the directory:
//
//  1. Add: write the new private key file (WriteKeyFile, or any tool,
//     with "active" already naming the current one). Every replica
//     publishes it in its JWKS within Interval, but signs with the old key.
//  2. Rotate: once verifiers have refetched the JWKS (its max-age), replace
//     "active" (write a temporary file and rename it) to name the new file.
//     Within Interval every replica signs with the new key.
//  3. Retire: once every token the old key signed has expired, remove its
//     file (or keep only its public key). Refresh tokens live as long as
//     their session (SessionConfig's absolute lifetime), so retiring the
//     key that signed them ends those sessions. Within Interval no replica
//     accepts the old key's tokens, cached ones included.
//
// A read that fails (a missing directory, a file that does not parse, two
// keys with one kid, a mix of HMAC and asymmetric keys, no key at all, an
// "active" that names no signing key, or no signer where there was one)
// changes nothing: the set keeps its last good keys and the error is
// logged. Replace files atomically (rename), or a read may see half a file
// and fail until the next one. Files are read one by one, so a read may see
// a directory in the middle of a change of several files; the next read
// sees the end of it.
type KeyDir struct {
	path      string
	keys      *KeySet
	log       *slog.Logger
	mu        sync.Mutex // serializes reads; guards files
	files     map[string]dirKey
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// dirKey is a key read from a file, with a hash of the file, so that an
// unchanged file keeps its *Key (and the Verifier its cached tokens).
type dirKey struct {
	sum [sha256.Size]byte
	key *Key
}

// OpenKeyDir reads the keys in the directory at path (see KeyDir) and
// returns a KeyDir that reads it again every Interval until Close. The
// first read must succeed.
func OpenKeyDir(path string, cfg KeyDirConfig) (*KeyDir, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultKeyDirInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	keys, err := NewKeySet()
	if err != nil {
		return nil, err
	}
	d := &KeyDir{path: path, keys: keys, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if err := d.Reload(); err != nil {
		return nil, err
	}
	if cfg.Interval < 0 {
		close(d.done)
		return d, nil
	}
	go d.poll(cfg.Interval)
	return d, nil
}

// Keys returns the set the directory keeps up to date: give it to the
// Issuer, the Verifier and JWKSHandler. Changes made to it with Add, Rotate
// or Retire last until the next read of the directory.
func (d *KeyDir) Keys() *KeySet { return d.keys }

// Reload reads the directory now and replaces the set's keys with its keys
// in one step. On error the set is unchanged. Keys whose file did not
// change stay the same *Key; a key that left the set (or whose kid now
// names another key) counts as retired, as with KeySet.Retire.
func (d *KeyDir) Reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return fmt.Errorf("jtiguard: key directory: %w", err)
	}
	files := make(map[string]dirKey, len(entries))
	var keys []*Key
	var signers []string
	for _, e := range entries { // sorted by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || (!strings.HasSuffix(name, ".pem") && !strings.HasSuffix(name, ".jwk")) {
			continue
		}
		path := filepath.Join(d.path, name)
		data, err := readSmallFile(path)
		if err != nil {
			return err
		}
		f := dirKey{sum: sha256.Sum256(data)}
		if old, ok := d.files[name]; ok && old.sum == f.sum {
			f.key = old.key
		} else if f.key, err = parseKeyFile(data); err != nil {
			return fmt.Errorf("%w (in %s)", err, path)
		}
		files[name] = f
		keys = append(keys, f.key)
		if f.key.CanSign() {
			signers = append(signers, name)
		}
	}
	var signer *Key
	switch data, err := readSmallFile(filepath.Join(d.path, keyDirActive)); {
	case err == nil:
		name := strings.TrimSpace(string(data))
		f, ok := files[name]
		if !ok || !f.key.CanSign() {
			return keyErr(ErrInvalidKey, "", fmt.Sprintf("%s names %q, which is no signing key's file in %s", keyDirActive, name, d.path))
		}
		signer = f.key
	case !errors.Is(err, fs.ErrNotExist):
		return err
	case len(signers) == 1:
		signer = files[signers[0]].key
	case len(signers) > 1:
		return keyErr(ErrInvalidKey, "", fmt.Sprintf("%d keys in %s can sign (%s): name the signer's file in %s", len(signers), d.path, strings.Join(signers, ", "), keyDirActive))
	}
	changed, err := d.keys.replace(keys, signer)
	if err != nil {
		return fmt.Errorf("%w (in %s)", err, d.path)
	}
	d.files = files
	if changed {
		kids := make([]string, len(keys))
		for i, k := range keys {
			kids[i] = k.kid
		}
		attrs := []any{slog.String("dir", d.path), slog.Any("kids", kids)}
		if signer != nil {
			attrs = append(attrs, slog.String("signer", signer.kid))
		}
		d.log.Info("jtiguard: keys loaded", attrs...)
	}
	return nil
}

func (d *KeyDir) poll(interval time.Duration) {
	defer close(d.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			if err := d.Reload(); err != nil {
				d.log.Warn("jtiguard: key directory not reloaded; keeping the last keys", slog.String("dir", d.path), slog.String("err", err.Error()))
			}
		}
	}
}

// Close stops the periodic reads and waits for one in progress. The set
// keeps its keys.
func (d *KeyDir) Close() {
	d.closeOnce.Do(func() { close(d.stop) })
	<-d.done
}
