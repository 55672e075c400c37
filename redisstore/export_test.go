package redisstore

import "github.com/redis/go-redis/v9"

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
