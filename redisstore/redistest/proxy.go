package redistest

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of a Redis address, for injecting
// network faults: lost replies, a paused link, cut connections. It parses
// RESP in both directions, so it knows which reply answers which command
// (pipelined or not); every control is safe to call while traffic flows.
//
// A connection on which a client issues PSYNC or SYNC (a replica),
// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, MONITOR or CLIENT REPLY is forwarded
// byte for byte from then on: replies no longer match commands there, so
// no reply is dropped on it, but Pause, Cut and Refuse still apply. That is
// what lets a replica replicate through a Proxy.
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	refuse bool
	closed bool
	resume chan struct{} // non-nil while paused; closed by Resume
	drop   dropRule

	dropped   atomic.Int64
	forwarded atomic.Int64
}

// dropRule decides, reply by reply, whether to lose a reply.
type dropRule struct {
	names    map[string]bool // upper-case command names; empty matches every command
	next     int             // drop the next next matching replies, then fall back to fraction
	fraction float64
	rng      *rand.Rand
}

// NewProxy listens on a free loopback port and forwards every connection to
// target (host:port). It is closed, with all its connections, when the test
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port: give it to clients instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// Retarget forwards the connections accepted from now on to target, as a
// virtual IP moved to another server does; connections already open stay
// with the old one until it or Cut closes them.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// DropReplies loses the reply to the given fraction (0 to 1) of commands, of
// any name, chosen by a random generator seeded with seed. A lost reply's
// command was forwarded and executed: the proxy waits for Redis's reply, then
// closes the client's connection instead of returning it (so a pipelined
// command after it loses its reply too). DropReplies(0, 0) stops dropping.
func (p *Proxy) DropReplies(fraction float64, seed uint64) {
	p.DropRepliesMatching(fraction, seed)
}

// DropRepliesMatching is DropReplies for the commands named in names only
// (case-insensitive, the first word of the command: "EVALSHA", "EVAL",
// "FCALL"); with no names it matches every command.
func (p *Proxy) DropRepliesMatching(fraction float64, seed uint64, names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = dropRule{names: nameSet(names), fraction: fraction, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// DropNextReplies loses the replies to the next n commands named in names
// (all commands if none), deterministically, then stops dropping.
func (p *Proxy) DropNextReplies(n int, names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = dropRule{names: nameSet(names), next: n}
}

func nameSet(names []string) map[string]bool {
	if len(names) == 0 {
		return nil
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[strings.ToUpper(n)] = true
	}
	return m
}

// shouldDrop decides for the reply to a command named name (upper-case).
func (p *Proxy) shouldDrop(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := &p.drop
	if len(d.names) > 0 && !d.names[name] {
		return false
	}
	if d.next > 0 {
		d.next--
		return true
	}
	return d.fraction > 0 && d.rng != nil && d.rng.Float64() < d.fraction
}

// Dropped is the number of replies lost so far (each closed a connection).
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }

// Forwarded is the number of commands forwarded to the target so far
// (commands on a connection forwarded byte for byte are not counted).
func (p *Proxy) Forwarded() int64 { return p.forwarded.Load() }

// Conns is the number of connections currently open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Pause stops forwarding in both directions: connections stay open and
// their bytes wait (in the proxy and in socket buffers) until Resume. New
// connections are still accepted (and wait too).
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// Resume forwards again what Pause held, in order.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}

// Cut closes every current connection, on both sides (bytes the proxy held
// are lost). New connections are accepted unless Refuse(true).
func (p *Proxy) Cut() {
	p.mu.Lock()
	cs := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// Refuse makes the proxy close new connections, with true, as soon as it accepts
// them (existing ones are untouched: see Cut); with false it accepts again.
func (p *Proxy) Refuse(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
}

// Close stops the proxy: it closes the listener and every connection and
// waits for its goroutines. It is called when the test ends; calling it
// earlier, or twice, is fine.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.mu.Lock()
		stop := p.closed || p.refuse
		p.mu.Unlock()
		if stop {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		s, err := net.DialTimeout("tcp", target, 2*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &proxyConn{p: p, client: c, server: s, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || p.refuse {
			p.mu.Unlock()
			_ = c.Close()
			_ = s.Close()
			continue
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go pc.requests()
		go pc.replies()
	}
}

// gate blocks while the proxy is paused; false means the connection closed.
func (p *Proxy) gate(done <-chan struct{}) bool {
	for {
		p.mu.Lock()
		ch := p.resume
		p.mu.Unlock()
		if ch == nil {
			select {
			case <-done:
				return false
			default:
				return true
			}
		}
		select {
		case <-ch:
		case <-done:
			return false
		}
	}
}

// proxyConn is one client connection and its connection to the target.
type proxyConn struct {
	p              *Proxy
	client, server net.Conn
	done           chan struct{}
	once           sync.Once

	mu      sync.Mutex
	pending []pendingCmd // commands forwarded whose reply has not come back yet
}

type pendingCmd struct {
	name string // upper-case
	raw  bool   // forward byte for byte after this command's reply
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.client.Close()
		_ = c.server.Close()
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

// switchesToRaw reports whether, after the command whose first two
// arguments are head, replies stop answering commands one for one.
func switchesToRaw(head []string) bool {
	switch head[0] {
	case "PSYNC", "SYNC", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR":
		return true
	case "CLIENT":
		return len(head) > 1 && head[1] == "REPLY"
	}
	return false
}

// requests forwards commands from the client to the target.
func (c *proxyConn) requests() {
	defer c.p.wg.Done()
	defer c.close()
	rr := &respReader{r: bufio.NewReaderSize(c.client, 64<<10)}
	for {
		f, err := rr.frame(true)
		if err != nil {
			return
		}
		n, head := requestArgs(f)
		raw := n > 0 && len(head) > 0 && switchesToRaw(head)
		if n > 0 { // a command: a reply will answer it
			name := ""
			if len(head) > 0 {
				name = head[0]
			}
			c.mu.Lock()
			c.pending = append(c.pending, pendingCmd{name: name, raw: raw})
			c.mu.Unlock()
		}
		if !c.p.gate(c.done) {
			return
		}
		if _, err := c.server.Write(f); err != nil {
			return
		}
		if n > 0 {
			c.p.forwarded.Add(1)
		}
		if raw {
			c.copyRaw(rr.r, c.server)
			return
		}
	}
}

// replies forwards replies from the target to the client, losing those the
// drop rule picks.
func (c *proxyConn) replies() {
	defer c.p.wg.Done()
	defer c.close()
	rr := &respReader{r: bufio.NewReaderSize(c.server, 64<<10)}
	for {
		f, err := rr.frame(false)
		if err != nil {
			return
		}
		var cmd pendingCmd
		answers := false
		if f[0] != '>' { // a RESP3 push answers no command
			c.mu.Lock()
			if len(c.pending) > 0 {
				cmd, answers = c.pending[0], true
				c.pending = c.pending[1:]
			}
			c.mu.Unlock()
		}
		if answers && !cmd.raw && c.p.shouldDrop(cmd.name) {
			c.p.dropped.Add(1)
			return // executed, reply lost: close the client's connection
		}
		if !c.p.gate(c.done) {
			return
		}
		if _, err := c.client.Write(f); err != nil {
			return
		}
		if answers && cmd.raw {
			c.copyRaw(rr.r, c.client)
			return
		}
	}
}

// copyRaw forwards src (its buffered bytes first) to dst byte for byte,
// honouring Pause, until either side closes.
func (c *proxyConn) copyRaw(src *bufio.Reader, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !c.p.gate(c.done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
