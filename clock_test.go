package jtiguard

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWallClock: the clock's readings fall between time.Now's taken around
// them, its Unix second too, and it follows a rebase (the base is taken
// again when a second has passed). The margin is NTP's: slewing may move
// the wall clock up to 0.5 ms a second against the monotonic one.
func TestWallClock(t *testing.T) {
	c := newWallClock()
	for i := range 2000 {
		if i == 1000 {
			// An old base: the next reading takes a new one.
			old := *c.base.Load()
			old.t = old.t.Add(-2 * time.Second)
			c.base.Store(&old)
		}
		const margin = time.Millisecond
		before := time.Now().Add(-margin)
		now := c.Now()
		sec := c.unix()
		after := time.Now().Add(margin)
		require.False(t, now.Before(before), "Now before time.Now")
		require.False(t, now.After(after), "Now after time.Now")
		require.GreaterOrEqual(t, sec, before.Unix())
		require.LessOrEqual(t, sec, after.Unix())
	}
}
