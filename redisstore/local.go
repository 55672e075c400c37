package redisstore

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/jtiguard/jtiguard/store"
)

// Local answers. A process may answer "live" for a token from its own
// memory, with no round trip, only while it provably holds every
// invalidation that could concern the answer. docs/local.md has the whole
// argument; in short:
//
//   - Tracking. One connection per primary has Redis's client tracking on in
//     broadcast mode for the store's prefix: every write to any of its keys,
//     by any process, sends this process the key's name on that connection
//     (an expiry or a FLUSHALL too). Redis sends a write's invalidation
//     before the reply of any command the server reads after the write.
//   - Lease. Every period (lease/5) a heartbeat sends PING on each tracking
//     connection and INFO on a connection of its own to the node, noting when it began (s). When
//     both return (the pong after every invalidation sent before it, the node
//     still a primary), answers may be given locally until s + lease, by this
//     process's monotonic clock.
//   - Writers wait. Every operation that makes a token dead returns only once
//     the lease (the deployment's, see below) has passed since its write was
//     acknowledged at a. An answer given locally at t > a + lease rests on a
//     heartbeat begun after a, so after the write: its pong came after the
//     write's invalidation, which dropped the answer. Only the rates of the
//     processes' clocks matter (bounded drift, a margin of 1%), never their
//     readings.
//   - Entries. An answer fetched by a round trip is kept only if no
//     invalidation of what it read (its jti's key, its family's, its bucket's
//     marker rewritten) and no reconnection came between the moment the
//     request was sent and the moment the answer is read (versions compared
//     on every hit), and never beyond its family's end (the key's remaining
//     time, read by the script, counted from the send).
//   - Anything else drops everything: a tracking connection lost, paused
//     beyond the lease, reconnected, flushed, a primary that is no longer
//     one, a change in the set of primaries.
//
// The lease a writer waits is the largest any process of the deployment
// announced (under prefix+"lease"), re-read every second. A process that
// answers locally announces its lease at New and every second after (a
// loss may take the key); when it finds the key below its lease, it drops
// its local answers and gives none for two seconds, until every writer
// has read the lease again.

// Lease defaults.
const (
	// DefaultLease is how long a local answer may rest on one heartbeat,
	// and so how much longer an operation that kills tokens takes.
	DefaultLease = 150 * time.Millisecond
	// MaxLease bounds Lease.
	MaxLease = 5 * time.Second
)

// drift is the margin for clock-rate drift between processes: a writer
// waits this fraction of the lease more.
const drift = 0.01

// local holds the live answers of one Store and the tracking that keeps
// them true.
type local struct {
	lease time.Duration
	base  time.Time // origin of the monotonic readings

	until atomic.Int64  // monotonic ns: local answers allowed before this
	epoch atomic.Uint64 // bumped by every reconnection and reset
	ver   [buckets]atomic.Uint64
	from  atomic.Int64 // monotonic ns: no local answer before (a lease announced late)
	// jver and fver are versions of jti and family keys, by a hash of the
	// id the key names (see invalidate).
	jver, fver [keyVersions]atomic.Uint64

	// suspects counts the signs that the deployment's lease key may have
	// been lost or lowered (a flush, the key's own invalidation, a
	// tracking connection lost or back after a loss, a primary no longer
	// listed); confirmed is the count an announce read before it found
	// the key and raised it if need be. No answer is kept while they
	// differ, and each sign wakes the announce (kick) rather than
	// waiting for the next second. An announce that finds the key below
	// this lease, or written again since (its birth changed), holds
	// answers back for two seconds more (from): writers that read the
	// lower value re-read it within a second.
	suspects, confirmed atomic.Uint64
	kick                chan struct{}
	born                string // the lease key's birth at the last announce (announce's alone)

	slots []atomic.Pointer[liveEntry]
	mask  uint64

	prefix string
	mu     sync.Mutex // over trackers
	tracks map[string]*tracker
	stop   chan struct{}
	wg     sync.WaitGroup

	// cluster: answers are kept only from a node with a confirmed
	// tracker (the check script names the node that answered).
	cluster bool
	// onDemoted, if set, is called when a tracked node is found to be no
	// longer a primary: the topology must be reloaded.
	onDemoted func()
}

// keyVersions is how many versions jti keys and family keys each share:
// an invalidation of one drops the answers of the ids that share its
// version, about one in 4,096 of those held.
const keyVersions = 1 << 12

// keyVersion picks the version of a jti or sid: its bytes are random, and
// the entries' table uses the other half.
func keyVersion(id store.JTI) uint64 {
	return binary.LittleEndian.Uint64(id[8:]) & (keyVersions - 1)
}

// liveEntry is a Live answer for one token, immutable once published.
type liveEntry struct {
	id, sid  store.JTI
	gen      uint64
	b        byte
	deadline int64 // monotonic ns
	versions
}

// versions are what an answer rests on; all must be unchanged for it to
// be used.
type versions struct {
	ver, jver, fver uint64 // of the bucket, the jti, the family
	epoch           uint64
}

// snapshot is what a round trip must find unchanged to be kept.
type snapshot struct {
	ok   bool
	sent int64
	versions
}

func newLocal(prefix string, lease time.Duration, size int) *local {
	n := max(4, 1<<bits.Len(uint(2*size-1)))
	return &local{
		lease:  lease,
		base:   time.Now(),
		slots:  make([]atomic.Pointer[liveEntry], n),
		mask:   uint64(n-1) &^ 3,
		prefix: prefix,
		tracks: map[string]*tracker{},
		stop:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
	}
}

// mono is this process's monotonic clock.
func (l *local) mono() int64 { return int64(time.Since(l.base)) }

func (l *local) set(id store.JTI) uint64 { return binary.LittleEndian.Uint64(id[:8]) & l.mask }

// live reports whether t may be answered Live without a round trip.
func (l *local) live(t store.TokenRef, b byte) bool {
	if l == nil {
		return false
	}
	e := l.entry(t.ID)
	if e == nil || e.sid != t.Session || e.gen != t.Generation || e.b != b {
		return false
	}
	now := l.mono()
	return now < l.until.Load() && now < e.deadline && e.versions == l.versionsOf(t, b)
}

// entry returns the entry held for id, if any.
func (l *local) entry(id store.JTI) *liveEntry {
	i := l.set(id)
	for j := range uint64(4) {
		if e := l.slots[i+j].Load(); e != nil && e.id == id {
			return e
		}
	}
	return nil
}

// versionsOf reads the versions an answer about t rests on.
func (l *local) versionsOf(t store.TokenRef, b byte) versions {
	v := versions{ver: l.ver[b].Load(), jver: l.jver[keyVersion(t.ID)].Load(), epoch: l.epoch.Load()}
	if !t.Session.IsZero() {
		v.fver = l.fver[keyVersion(t.Session)].Load()
	}
	return v
}

// snap is taken before a round trip about t whose Live answer may be kept.
func (l *local) snap(t store.TokenRef, b byte) snapshot {
	if l == nil {
		return snapshot{}
	}
	now := l.mono()
	// Versions first, then the lease: a reset after these reads changes
	// the epoch; one before leaves no lease.
	sn := snapshot{versions: l.versionsOf(t, b), sent: now}
	sn.ok = now >= l.from.Load() && now < l.until.Load() && l.confirmed.Load() == l.suspects.Load()
	return sn
}

// put keeps a Live answer for t, read by a round trip taken after sn, for
// at most ttl from when the round trip was sent (ttl <= 0: until t
// expires).
//
// On a cluster, node is the id of the node that answered: an answer is
// kept only from a node this process tracks under a live lease, since a
// node it does not track (one its view of the topology has yet to show)
// would send it no invalidation.
func (l *local) put(t store.TokenRef, b byte, sn snapshot, ttl time.Duration, node string) {
	if l == nil || !sn.ok || (l.cluster && !l.tracked(node)) {
		return
	}
	left := time.Until(t.ExpiresAt)
	if ttl <= 0 || ttl > left {
		ttl = left
	}
	if ttl <= 0 {
		return
	}
	e := &liveEntry{id: t.ID, sid: t.Session, gen: t.Generation, b: b, versions: sn.versions, deadline: sn.sent + int64(ttl)}
	i := l.set(t.ID)
	for j := range uint64(4) {
		old := l.slots[i+j].Load()
		if old == nil || old.id == t.ID || l.mono() >= old.deadline {
			l.slots[i+j].Store(e)
			return
		}
	}
	l.slots[i+uint64(e.deadline)&3].Store(e)
}

// tracked reports whether node is the cluster node of a tracker whose
// lease holds.
func (l *local) tracked(node string) bool {
	if node == "" {
		return false
	}
	now := l.mono()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.tracks {
		if t.ready && t.node == node && now < t.until {
			return true
		}
	}
	return false
}

// invalidate takes one invalidation message: the keys one pass of the
// server's event loop wrote under the prefix (Redis sends a broadcast
// tracking client each pass's keys together), or a flush. A jti's key
// (":j:<jti>") drops the answers of that jti, a family's (":f:<sid>")
// those of its tokens, the marker's signal (":m": written with every
// rewrite, deleted when a migration moves the bucket) those of its bucket. The marker itself (":e") is bumped by
// every write, beside the key the write is about: it drops its bucket
// only when it comes without a jti or family key of the bucket (a write
// about nothing an answer reads, or the marker deleted). A subject's
// index (":s:") is read by no check. Anything else drops everything.
func (l *local) invalidate(keys []string) {
	var marker, named [buckets / 64]uint64 // bit sets of buckets
	for _, key := range keys {
		rest, ok := strings.CutPrefix(key, l.prefix)
		if !ok || rest == leaseKeySuffix {
			// A flush (no key), or the lease key written: another process
			// raised it, or it was lowered (deleted).
			l.suspect()
			continue
		}
		b, kind, id, ok := parseKey(rest)
		if !ok {
			l.reset()
			continue
		}
		switch kind {
		case "j":
			l.jver[keyVersion(id)].Add(1)
			named[b/64] |= 1 << (b % 64)
		case "f":
			l.fver[keyVersion(id)].Add(1)
			named[b/64] |= 1 << (b % 64)
		case "e":
			marker[b/64] |= 1 << (b % 64)
		case "m":
			l.ver[b].Add(1)
		case "s":
		}
	}
	for i := range marker {
		for alone := marker[i] &^ named[i]; alone != 0; alone &= alone - 1 {
			l.ver[i*64+bits.TrailingZeros64(alone)].Add(1)
		}
	}
}

// parseKey reads a key of a bucket, without the prefix: "{bXX}:e", "{bXX}:m",
// "{bXX}:j:<jti>", "{bXX}:f:<sid>" or "{bXX}:s:<hex subject>". The id is
// that of a jti or family key.
func parseKey(k string) (b byte, kind string, id store.JTI, ok bool) {
	if len(k) < 7 || k[0] != '{' || k[1] != 'b' || k[4] != '}' || k[5] != ':' {
		return 0, "", id, false
	}
	var bb [1]byte
	if _, err := hex.Decode(bb[:], []byte(k[2:4])); err != nil {
		return 0, "", id, false
	}
	switch rest := k[6:]; {
	case rest == "e" || rest == "m":
		return bb[0], rest, id, true
	case strings.HasPrefix(rest, "s:"):
		return bb[0], "s", id, true
	case strings.HasPrefix(rest, "j:") || strings.HasPrefix(rest, "f:"):
		id, err := store.ParseJTI(rest[2:])
		return bb[0], rest[:1], id, err == nil
	}
	return 0, "", id, false
}

// reset drops every local answer.
func (l *local) reset() { l.epoch.Add(1) }

// suspect drops every local answer, and keeps none until an announce
// begun after this call has found the deployment's lease key at least
// this process's lease (or raised it, and the wait that follows a raise
// is over). Writers that read the key while it was missing or lower wait
// less than this lease; the sooner it is announced again, the fewer do.
func (l *local) suspect() {
	l.suspects.Add(1) // before the reset: a snap that sees the new epoch sees this
	l.reset()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// recompute sets the lease to the earliest of the trackers'. The caller
// holds l.mu.
func (l *local) recompute() {
	if len(l.tracks) == 0 {
		l.until.Store(0)
		return
	}
	until := int64(1<<63 - 1)
	for _, t := range l.tracks {
		until = min(until, t.until)
	}
	l.until.Store(until)
}

// wait is how long an operation that kills tokens waits after its write
// was acknowledged, for a deployment whose longest lease is lease.
func wait(lease time.Duration) time.Duration {
	if lease <= 0 {
		return 0
	}
	return lease + time.Duration(float64(lease)*drift) + time.Millisecond
}

// leaseKeySuffix follows the prefix in the key that holds the deployment's
// longest lease: "<ms>:<birth>", the birth a random id given when the key
// is created, so that a key lost and written again is told from one
// raised.
const leaseKeySuffix = "lease"

// announceScript raises the deployment's lease to ARGV[1] (ms) if it is
// below, creating the key with birth ARGV[2] if it is missing, and returns
// the lease and birth as they were (0 and an empty birth when missing),
// then the birth the key has now.
var announceScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1]) or ''
local ms, born = string.match(v, '^(%d+):?(.*)$')
ms, born = tonumber(ms) or 0, born or ''
if ms < tonumber(ARGV[1]) then
  local b = born
  if v == '' then b = ARGV[2] end
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. b)
  return {ms, born, b}
end
return {ms, born, born}
`)

// parseLease reads the lease key's value: its milliseconds.
func parseLease(v string) (int64, error) {
	ms, _, _ := strings.Cut(v, ":")
	return strconv.ParseInt(ms, 10, 64)
}

// tracker keeps one primary's tracking connection and its heartbeats.
type tracker struct {
	l     *local
	addr  string
	opt   *redis.Options // of the tracking connection
	probe *redis.Client  // a connection of its own to the same node, for INFO

	// Under l.mu.
	until  int64 // monotonic ns: this primary's lease
	gen    uint64
	ready  bool
	failed bool   // the connection was lost: its next subscription is a sign (see suspect)
	runID  string // of the node the tracking connection is on
	node   string // its cluster node id (on a cluster)
	dialed string // run_id read by the connection being opened
	// dialedNode is the cluster node id read by the connection being
	// opened.
	dialedNode string
	seq        uint64
	rounds     map[uint64]*round
	ps         *redis.PubSub

	stop chan struct{}
}

type round struct {
	sent int64
	need int // confirmations still to come: the pong and the role
}

// track starts tracking the primary node, unless it is tracked. The
// caller holds l.mu.
func (l *local) track(addr string, node *redis.Client, dial func(*redis.Options)) {
	if _, ok := l.tracks[addr]; ok {
		return
	}
	opt := *node.Options()
	opt.Protocol = 2 // invalidations as Pub/Sub messages on a redirect connection
	opt.PoolSize = 1
	opt.MinIdleConns = 0
	opt.MaxIdleConns = 0
	opt.ReadTimeout = -1 // the receiver waits with its own timeout
	opt.ContextTimeoutEnabled = true
	// A config of its own: the node's client writes its own as it
	// connects. Maintenance notifications need RESP3; these use RESP2.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if dial != nil {
		dial(&opt)
	}
	prefix := l.prefix
	popt := opt // the application's OnConnect, not the tracking one
	t := &tracker{l: l, addr: addr, opt: &opt, probe: redis.NewClient(&popt), rounds: map[uint64]*round{}, stop: make(chan struct{})}
	user := opt.OnConnect // the application's (credentials, say), first
	opt.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if user != nil {
			if err := user(ctx, cn); err != nil {
				return err
			}
		}
		info, err := cn.Info(ctx, "server").Result()
		if err != nil {
			return err
		}
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		if err := cn.Do(ctx, "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX", prefix).Err(); err != nil {
			return err
		}
		var node string
		if l.cluster {
			if node, err = cn.Do(ctx, "CLUSTER", "MYID").Text(); err != nil {
				return err
			}
		}
		l.mu.Lock()
		t.dialed, t.dialedNode = infoField(info, "run_id"), node
		l.mu.Unlock()
		return nil
	}
	l.tracks[addr] = t
	l.recompute()
	l.wg.Add(2)
	go t.receive()
	go t.beat()
}

// untrack stops tracking addr. The caller holds l.mu.
func (l *local) untrack(addr string) {
	t, ok := l.tracks[addr]
	if !ok {
		return
	}
	delete(l.tracks, addr)
	close(t.stop)
	// A primary gone from the listing: failed over, say, to a replica
	// that may have lacked the lease key.
	l.suspect()
	l.recompute()
}

// receive reads the tracking connection until the tracker stops: each
// (re)subscription starts a new epoch, each invalidation message drops
// what it names (invalidate), each pong confirms a heartbeat. Any error, a silence longer
// than the heartbeats allow or a demotion drops everything and opens a
// new connection.
func (t *tracker) receive() {
	defer t.l.wg.Done()
	defer t.probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.stop:
		case <-t.l.stop:
		}
		cancel()
	}()
	const first = 5 * time.Millisecond // a dropped connection is usually back at once
	backoff := first
	for ctx.Err() == nil {
		if t.connection(ctx) {
			backoff = first
		}
		if ctx.Err() != nil {
			return // stopped: untrack or close has dropped what it must
		}
		t.fail()
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// connection opens one tracking connection and reads it until it fails;
// it reports whether it was ever subscribed.
func (t *tracker) connection(ctx context.Context) (subscribed bool) {
	c := redis.NewClient(t.opt)
	defer c.Close()
	ps := c.Subscribe(ctx, "__redis__:invalidate")
	defer ps.Close()
	// go-redis reads with the context's deadline only: a cancellation
	// alone would not end a read while messages keep coming.
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
	t.l.mu.Lock()
	t.ps = ps
	t.l.mu.Unlock()
	silence := max(time.Second, 4*t.l.lease)
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, silence)
		if err != nil {
			return subscribed
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				return subscribed
			}
			subscribed = true
			t.subscribed(ps)
		case *redis.Message:
			keys := m.PayloadSlice
			if m.Payload != "" || len(keys) == 0 {
				keys = append(keys, m.Payload) // one key, or a flush ("")
			}
			t.l.invalidate(keys)
		case *redis.Pong:
			t.pong(m.Payload)
		}
	}
	return subscribed
}

// subscribed starts a new epoch: invalidations flow from here.
func (t *tracker) subscribed(ps *redis.PubSub) {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	if t.ps != ps {
		return
	}
	t.gen++
	t.ready = t.dialed != ""
	t.runID, t.node = t.dialed, t.dialedNode
	t.rounds = map[uint64]*round{}
	if t.failed {
		// Back after a loss of the connection (a restart, say): the lease
		// key may be gone with the data.
		t.failed = false
		t.l.suspect()
		return
	}
	t.l.reset()
}

// fail drops this primary's lease and every local answer.
func (t *tracker) fail() {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	t.gen++
	t.ready = false
	t.failed = true
	t.until = 0
	t.rounds = map[uint64]*round{}
	t.l.suspect()
	if t.l.tracks[t.addr] == t {
		t.l.recompute()
	}
}

// beat sends the heartbeats until the tracker stops.
func (t *tracker) beat() {
	defer t.l.wg.Done()
	tick := time.NewTicker(max(t.l.lease/5, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.l.stop:
			return
		case <-tick.C:
		}
		t.heartbeat()
	}
}

// heartbeat is one round, begun at sent: PING on the tracking connection,
// and INFO on a second connection dialed as this process's commands are
// (the node's options), which must reach the same node (its run_id),
// still a primary: a failover behind one address (a proxy, a virtual IP)
// fails it. Neither goes through the application's client, so its hooks
// and metrics see only the store's operations.
func (t *tracker) heartbeat() {
	l := t.l
	l.mu.Lock()
	if !t.ready || t.ps == nil {
		l.mu.Unlock()
		return
	}
	t.seq++
	gen, seq, ps, runID := t.gen, t.seq, t.ps, t.runID
	t.rounds[seq] = &round{sent: l.mono(), need: 2}
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), max(l.lease, 100*time.Millisecond))
	defer cancel()
	if err := ps.Ping(ctx, strconv.FormatUint(gen, 10)+":"+strconv.FormatUint(seq, 10)); err != nil {
		return // the receiver sees the connection fail
	}
	info, err := t.probe.Info(ctx, "server", "replication").Result()
	if err != nil {
		return
	}
	if infoField(info, "role") != "master" || infoField(info, "run_id") != runID {
		t.demoted()
		return
	}
	t.confirm(gen, seq)
}

// demoted: the node is no longer a primary. Its tracking tells nothing of
// the writes that now go elsewhere: drop everything, close the connection
// (a new one is opened, and confirmed only while the node is a primary
// again) and have the caller reload the topology.
func (t *tracker) demoted() {
	t.fail()
	t.l.mu.Lock()
	ps := t.ps
	t.l.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	if t.l.onDemoted != nil {
		t.l.onDemoted()
	}
}

// pong confirms the heartbeat whose payload it carries.
func (t *tracker) pong(payload string) {
	g, s, ok := strings.Cut(payload, ":")
	if !ok {
		return
	}
	gen, err1 := strconv.ParseUint(g, 10, 64)
	seq, err2 := strconv.ParseUint(s, 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	t.confirm(gen, seq)
}

// confirm counts one confirmation of round seq of connection gen; the
// second extends the lease to the round's start plus the lease.
func (t *tracker) confirm(gen, seq uint64) {
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := t.rounds[seq]
	if !ok || gen != t.gen || !t.ready {
		return
	}
	if r.need--; r.need > 0 {
		return
	}
	for s := range t.rounds {
		if s <= seq {
			delete(t.rounds, s)
		}
	}
	if u := r.sent + int64(l.lease); u > t.until {
		t.until = u
		if l.tracks[t.addr] == t {
			l.recompute()
		}
	}
}

// close stops every tracker and waits for them.
func (l *local) close() {
	close(l.stop)
	l.wg.Wait()
}

// errLeaseWait: an operation that kills tokens was applied, but its
// caller's context ended before the lease had passed.
var errLeaseWait = errors.New("redisstore: applied, but the context ended before every process's local answers expired")

// settleKill returns once every process's local answers that the write
// acknowledged at acked may have invalidated have expired.
func (s *Store) settleKill(ctx context.Context, acked time.Time) error {
	lease := time.Duration(s.leaseAll.Load())
	if time.Since(time.Unix(0, s.leaseRead.Load())) > 3*healthEvery {
		lease = MaxLease // not read lately: it may have grown
	}
	d := wait(lease) - time.Since(acked)
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errLeaseWait, ctx.Err())
	}
}

// startLocal turns local answers on, for a client whose primaries can be
// tracked: a *redis.Client (one server, or one address that fails over)
// or a *redis.ClusterClient. With any other client the Store answers by
// round trips only. It announces the lease first (see local).
func (s *Store) startLocal(ctx context.Context, lease time.Duration, size int, dial func(*redis.Options)) error {
	switch s.c.(type) {
	case *redis.Client, *redis.ClusterClient:
	default:
		return nil
	}
	s.local = newLocal(s.prefix, lease, size)
	if err := s.announce(ctx); err != nil {
		s.local = nil
		return err
	}
	l := s.local
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		l.cluster = true
		l.onDemoted = func() { cc.ReloadState(context.Background()) }
	}
	l.wg.Add(1)
	go s.watchPrimaries(dial)
	return nil
}

// watchPrimaries keeps one tracker per primary, as the client's topology
// changes, until the store closes. While the primaries cannot be listed,
// none is tracked and nothing is answered locally.
func (s *Store) watchPrimaries(dial func(*redis.Options)) {
	l := s.local
	defer l.wg.Done()
	// Once a second: a listing reloads the cluster's topology (CLUSTER
	// SLOTS). A primary not yet tracked only costs round trips meanwhile:
	// nothing it answers is kept.
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for {
		primaries := map[string]*redis.Client{}
		switch c := s.c.(type) {
		case *redis.Client:
			primaries[c.Options().Addr] = c
		case *redis.ClusterClient:
			var mu sync.Mutex
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := c.ForEachMaster(ctx, func(_ context.Context, n *redis.Client) error {
				mu.Lock()
				primaries[n.Options().Addr] = n
				mu.Unlock()
				return nil
			})
			cancel()
			if err != nil {
				clear(primaries)
			}
		}
		l.mu.Lock()
		for addr, n := range primaries {
			l.track(addr, n, dial)
		}
		for addr := range l.tracks {
			if primaries[addr] == nil {
				l.untrack(addr)
			}
		}
		l.mu.Unlock()
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
	}
}

// announce raises the deployment's lease to this process's, if it is
// below (a first use of the prefix, or a loss that took the key), and
// learns the deployment's. If it was below, writers may have killed tokens
// without waiting this lease: every local answer is dropped, and none is
// given until every writer has re-read the lease (within a second).
func (s *Store) announce(ctx context.Context) error {
	l := s.local
	seq := l.suspects.Load()
	res, err := announceScript.Run(ctx, s.c, []string{s.prefix + leaseKeySuffix}, l.lease.Milliseconds(), strconv.FormatUint(rand.Uint64(), 36)).Slice()
	if err != nil {
		return wrap("announcing the lease", err)
	}
	prev, _ := res[0].(int64)
	born, _ := res[1].(string)
	now, _ := res[2].(string)
	// The key below this lease (missing: a first use, or a loss), or
	// written again since the last announce (lost, or deleted to lower
	// it, then written by another process): writers may have read a lower
	// lease meanwhile, and keep it for up to a second.
	below := time.Duration(prev)*time.Millisecond < l.lease
	if below || l.born != "" && born != l.born {
		l.from.Store(l.mono() + int64(2*healthEvery+100*time.Millisecond))
	}
	if below {
		l.reset()
	}
	l.born = now // what this announce left: a rebirth right after is seen
	for c := l.confirmed.Load(); c < seq && !l.confirmed.CompareAndSwap(c, seq); c = l.confirmed.Load() {
	}
	s.leaseAll.Store(int64(max(time.Duration(prev)*time.Millisecond, l.lease)))
	s.leaseRead.Store(time.Now().UnixNano())
	return nil
}

// refreshLease re-reads the deployment's lease every second, for the
// writes' waits, and announces this process's again (a loss may have
// taken the key).
func (s *Store) refreshLease(ctx context.Context) error {
	if s.local != nil {
		return s.announce(ctx)
	}
	var v int64
	raw, err := s.c.Get(ctx, s.prefix+leaseKeySuffix).Result()
	if err == nil {
		v, err = parseLease(raw)
	}
	if errors.Is(err, redis.Nil) {
		v, err = 0, nil
	}
	if err != nil {
		return err
	}
	s.leaseAll.Store(int64(time.Duration(v) * time.Millisecond))
	s.leaseRead.Store(time.Now().UnixNano())
	return nil
}
