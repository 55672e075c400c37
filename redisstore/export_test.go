package redisstore

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard/store"
)

// CheckSource is the verification script, for the benchmark's ceiling run.
const CheckSource = checkSource

// MarkerKey is the key of the loss marker of subject's bucket under prefix.
func MarkerKey(prefix, subject string) string {
	return (&Store{prefix: prefix}).tag(bucket(subject)) + ":e"
}

// SetTrackingDial makes the store's tracking connections (and their
// heartbeats' probes) dial with f's changes to the node's options: tests
// route them through a proxy.
func SetTrackingDial(c *Config, f func(*redis.Options)) { c.trackingDial = f }

// Answering reports whether s may answer from its local state now.
func Answering(s *Store) bool {
	l := s.local
	if l == nil {
		return false
	}
	now := l.mono()
	return now >= l.from.Load() && now < l.until.Load() && l.confirmed.Load() == l.suspects.Load()
}

// Kept reports whether s holds a local answer for t that no invalidation
// has dropped, whether or not the lease lets it be used now.
func Kept(s *Store, t store.TokenRef) bool {
	l := s.local
	if l == nil {
		return false
	}
	e := l.entry(t.ID)
	return e != nil && e.versions == l.versionsOf(t, bucket(t.Subject))
}

// HeartbeatAfter returns a condition that holds once a heartbeat of s
// begun after the call has been confirmed: every invalidation Redis sent
// s before then has been taken.
func HeartbeatAfter(s *Store) func() bool {
	l := s.local
	t0 := l.mono()
	return func() bool { return l.until.Load() > t0+int64(l.lease) }
}

// RewriteMarker rewrites the marker of subject's bucket, as a process that
// found the bucket rolled back does.
func RewriteMarker(ctx context.Context, s *Store, subject string) error {
	b := bucket(subject)
	g, err := s.c.HGet(ctx, s.tag(b)+":e", "g").Int64()
	if err != nil {
		return err
	}
	s.rolled[b].Store(g + 1)
	s.repair(ctx, int(b))
	if s.rolled[b].Load() != 0 {
		return errors.New("marker not rewritten")
	}
	return nil
}

// SharesVersion reports whether two jti or sid values share a version, so
// that a write about one drops answers resting on the other.
func SharesVersion(a, b store.JTI) bool { return keyVersion(a) == keyVersion(b) }
