package jtiguard

// VerifyJWS runs the signature layer of the Verifier on a compact JWS whose
// payload need not be JWT claims: strict compact parsing, the header
// allowlist, key lookup by kid, algorithm pinning and the signature check.
// A header without kid is checked against the set's only key, since test
// vectors, unlike our tokens, often carry none.
func VerifyJWS(keys *KeySet, token string) error {
	j, err := parseJWS(token)
	if err != nil {
		return err
	}
	h, err := parseHeader(j.header)
	if err != nil {
		return err
	}
	ring := keys.ring.Load()
	k, ok := ring.byKID[h.kid]
	if !ok && h.kid == "" && len(ring.order) == 1 {
		k, ok = ring.order[0], true
	}
	if !ok {
		return ErrUnknownKey
	}
	return authenticate(j, h, k)
}

// VerifySignature checks sig over msg with k's pinned algorithm.
func VerifySignature(k *Key, msg string, sig []byte) error { return k.verifySignature(msg, sig) }

// Indexed is the number of families in the store's subject index, ended
// ones not yet forgotten included.
func (s *MemoryStore) Indexed() int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	n := 0
	for _, fams := range s.subjects {
		n += fams.len()
	}
	return n
}

// MemShards is the number of shards of a MemoryStore.
const MemShards = memShards
