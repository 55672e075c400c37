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
	base atomic.Pointer[clockBase]
}

// clockBase is one reading of time.Now, with its Unix time in nanoseconds.
type clockBase struct {
	t    time.Time
	unix int64
}

func newWallClock() *wallClock {
	c := &wallClock{}
	c.rebase()
	return c
}

func (c *wallClock) rebase() *clockBase {
	b := &clockBase{t: time.Now()}
	b.unix = b.t.UnixNano()
	c.base.Store(b)
	return b
}

// since returns the base and the time elapsed since it.
func (c *wallClock) since() (*clockBase, time.Duration) {
	b := c.base.Load()
	if d := time.Since(b.t); d >= 0 && d < time.Second {
		return b, d
	}
	return c.rebase(), 0
}

// Now returns the current time.
func (c *wallClock) Now() time.Time {
	b, d := c.since()
	return b.t.Add(d)
}

// unix returns Now().Unix(), without building a time.Time.
func (c *wallClock) unix() int64 {
	b, d := c.since()
	return (b.unix + int64(d)) / int64(time.Second)
}
