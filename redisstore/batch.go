package redisstore

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// batcher sends concurrent checks to Redis as one pipeline. Under load,
// many verifications then share one write and one read, instead of a
// system call pair each, which is what a loopback round trip mostly costs.
// Each check is still one command and needs no other: one round trip, shared.
//
// Only checks are batched. A check changes nothing a caller could lose, so
// a caller that gives up (its context ends) while its check is in flight
// loses nothing; consumes and rotations go straight through go-redis.
type batcher struct {
	c    redis.UniversalClient
	reqs chan *call
	stop chan struct{}
	wg   sync.WaitGroup
	pool sync.Pool
}

type call struct {
	keys  []string
	args  []any
	res   []any
	err   error
	ready chan struct{}
}

const (
	batchWorkers = 4   // batches in flight at once
	maxBatch     = 128 // calls per pipeline
)

func newBatcher(c redis.UniversalClient) *batcher {
	b := &batcher{c: c, reqs: make(chan *call), stop: make(chan struct{})}
	b.pool.New = func() any { return &call{ready: make(chan struct{}, 1)} }
	for range batchWorkers {
		b.wg.Go(b.work)
	}
	return b
}

func (b *batcher) close() {
	close(b.stop)
	b.wg.Wait()
}

// check runs the check script for keys and args through a batch.
func (b *batcher) check(ctx context.Context, keys []string, args []any) ([]any, error) {
	c := b.pool.Get().(*call)
	c.keys, c.args = keys, args
	select {
	case b.reqs <- c:
	case <-ctx.Done():
		b.pool.Put(c)
		return nil, ctx.Err()
	case <-b.stop:
		b.pool.Put(c)
		return nil, errClosed
	}
	select {
	case <-c.ready:
		res, err := c.res, c.err
		c.keys, c.args, c.res = nil, nil, nil
		b.pool.Put(c)
		return res, err
	case <-ctx.Done():
		// The worker still owns c and will signal it; it is not reused.
		return nil, ctx.Err()
	}
}

func (b *batcher) work() {
	batch := make([]*call, 0, maxBatch)
	cmds := make([]*redis.Cmd, 0, maxBatch)
	for {
		select {
		case c := <-b.reqs:
			batch = append(batch[:0], c)
		case <-b.stop:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case c := <-b.reqs:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		// The pipeline runs under the client's own read and write timeouts;
		// each caller waits only as long as its own context allows.
		ctx := context.Background()
		if len(batch) == 1 {
			c := batch[0]
			c.res, c.err = checkScript.Run(ctx, b.c, c.keys, c.args...).Slice()
			c.ready <- struct{}{}
			continue
		}
		pipe := b.c.Pipeline()
		cmds = cmds[:0]
		for _, c := range batch {
			cmds = append(cmds, checkScript.EvalSha(ctx, pipe, c.keys, c.args...))
		}
		_, _ = pipe.Exec(ctx) // errors are per command
		for i, c := range batch {
			c.res, c.err = cmds[i].Slice()
			if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
				// The server lost its scripts (a restart): EVAL loads it again.
				c.res, c.err = checkScript.Run(ctx, b.c, c.keys, c.args...).Slice()
			}
			c.ready <- struct{}{}
		}
	}
}
