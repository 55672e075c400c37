package redisstore

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/jtiguard/jtiguard/store"
)

// TestInvalidateDropsWhatAWriteTouched: one invalidation message (the keys
// of one pass of the server's loop) drops the answers resting on what it
// names, and nothing else.
func TestInvalidateDropsWhatAWriteTouched(t *testing.T) {
	const prefix = "p:"
	s := &Store{prefix: prefix}
	jti := store.JTI{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sid := store.JTI{16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}
	other := store.JTI{0xaa, 0xbb}
	ref := store.TokenRef{ID: jti, Subject: "alice", Session: sid}
	b := bucket("alice")
	tag, elsewhere := s.tag(b), s.tag(b+1)
	cases := []struct {
		name string
		keys []string
		kept bool
	}{
		{"a write about another token of the bucket", []string{tag + ":e", tag + ":j:" + other.String()}, true},
		{"a write about another family of the bucket", []string{tag + ":e", tag + ":f:" + other.String(), tag + ":s:616c696365"}, true},
		{"the token's jti", []string{tag + ":e", tag + ":j:" + jti.String()}, false},
		{"the token's family", []string{tag + ":e", tag + ":f:" + sid.String()}, false},
		{"the family expired (no marker bump)", []string{tag + ":f:" + sid.String()}, false},
		{"the marker alone (deleted, or a write about an index only)", []string{tag + ":e"}, false},
		{"the marker with an index only", []string{tag + ":e", tag + ":s:616c696365"}, false},
		{"the marker, with a jti of another bucket", []string{tag + ":e", elsewhere + ":j:" + other.String()}, false},
		{"the marker rewritten in the pass of another write, or the bucket migrated", []string{tag + ":e", tag + ":m", tag + ":j:" + other.String(), tag + ":f:" + other.String()}, false},
		{"another bucket's marker rewritten", []string{elsewhere + ":e", elsewhere + ":m"}, true},
		{"a flush", []string{""}, false},
		{"the lease key", []string{prefix + "lease"}, false},
		{"a key of an unknown shape", []string{tag + ":x:1"}, false},
		{"a jti key that does not parse", []string{tag + ":e", tag + ":j:short"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLocal(prefix, DefaultLease, 16)
			before := l.versionsOf(ref, b)
			l.invalidate(c.keys)
			assert.Equal(t, c.kept, before == l.versionsOf(ref, b))
		})
	}
}

// TestParseKey: the keys the store writes parse back to their bucket, kind
// and id; no other shape does.
func TestParseKey(t *testing.T) {
	s := &Store{prefix: "p:"}
	id := store.JTI{9, 8, 7}
	for _, c := range []struct {
		key  string
		kind string
		id   store.JTI
		ok   bool
	}{
		{s.tag(0x3c)[2:] + ":e", "e", store.JTI{}, true},
		{s.tag(0x3c)[2:] + ":m", "m", store.JTI{}, true},
		{s.tag(0x3c)[2:] + ":j:" + id.String(), "j", id, true},
		{s.tag(0x3c)[2:] + ":f:" + id.String(), "f", id, true},
		{s.indexKey(s.tag(0x3c), "alice")[2:], "s", store.JTI{}, true},
		{"{b3c}:j:" + id.String() + "x", "", store.JTI{}, false},
		{"{b3c}:q", "", store.JTI{}, false},
		{"{bzz}:e", "", store.JTI{}, false},
		{"{b3c}e", "", store.JTI{}, false},
		{"", "", store.JTI{}, false},
	} {
		b, kind, got, ok := parseKey(c.key)
		assert.Equal(t, c.ok, ok, c.key)
		if c.ok {
			assert.Equal(t, byte(0x3c), b, c.key)
			assert.Equal(t, c.kind, kind, c.key)
			assert.Equal(t, c.id, got, c.key)
		}
	}
}
