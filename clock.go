package jtiguard

import (
	"sync/atomic"
	"time"
)

// wallClock is time.Now at the cost of one clock reading instead of two:
// the time of a base reading plus the monotonic time elapsed since, the
// base taken again every second. On a virtual machine whose clock readings
// cost tens of nanoseconds each, that is a good part of a warm
// verification. NTP's slewing moves both clocks alike; a step of the wall
// clock shows within a second. The times it returns carry a monotonic
// reading, so time.Since of them reads one clock too.
type wallClock struct {
	base atomic.Pointer[time.Time]
}

func newWallClock() *wallClock {
	c := &wallClock{}
	c.rebase()
	return c
}

func (c *wallClock) rebase() time.Time {
	now := time.Now()
	c.base.Store(&now)
	return now
}

// Now returns the current time.
func (c *wallClock) Now() time.Time {
	b := c.base.Load()
	if d := time.Since(*b); d >= 0 && d < time.Second {
		return b.Add(d)
	}
	return c.rebase()
}
