package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/store"
)

// Pages of List.
const (
	// DefaultPageSize is the number of sessions List returns when asked
	// for none (limit <= 0).
	DefaultPageSize = 50
	// MaxPageSize caps the number of sessions one List call returns.
	MaxPageSize = 200
)

// listScan bounds the index entries one List call reads, in pages: a page
// whose entries are mostly of ended families comes back short, with a
// cursor, rather than reading on without bound.
const listScan = 4

// created is the family's creation in Unix ms, or 0 for "now" (the
// server's clock) when the caller left it unset.
func created(f store.Family) int64 {
	if f.Created.IsZero() {
		return 0
	}
	return max(f.Created.UnixMilli(), 1)
}

// List implements store.DeviceStore: one round trip per page, one
// script that reads a page of the subject's index and the families it
// names, skips the families that are not live (ended, expired, revoked for
// reuse, or begun before a data loss) and forgets those that are gone.
// Pages hold up to limit sessions: DefaultPageSize (50) when limit <= 0,
// at most MaxPageSize (200). A page may come back shorter than limit with
// a next cursor when the index held many ended families in a row: keep
// going until the cursor is "". A page resumes after its cursor's place
// in the order (creation, then sid), so sessions ended or begun between
// two pages neither repeat nor shift the others.
//
// A bucket that lost its data lists nothing: none of its families is
// vouched for (their tokens are refused as ErrStateLost).
func (s *Store) List(ctx context.Context, subject, cursor string, limit int) ([]store.Session, string, error) {
	if err := s.fit(); err != nil {
		return nil, "", err
	}
	switch {
	case limit <= 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	score, sid, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	b := bucket(subject)
	tag := s.tag(b)
	vals, _, lost, err := s.read(ctx, b, listScript, []string{s.indexKey(tag, subject), tag + ":e"},
		subject, score, sid, limit, limit*listScan)
	if err != nil {
		return nil, "", wrap("list", err)
	}
	if lost || len(vals) == headLen {
		return nil, "", nil
	}
	page, next, err := parsePage(subject, vals[headLen:])
	if err != nil {
		return nil, "", fmt.Errorf("redisstore: list: %w", err)
	}
	return page, next, nil
}

// A cursor is "<score>.<sid>": the place in the index (creation in Unix
// ms, then sid) after which the next page begins.
func parseCursor(c string) (score, sid string, err error) {
	if c == "" {
		return "", "", nil
	}
	score, sid, ok := strings.Cut(c, ".")
	if _, perr := strconv.ParseInt(score, 10, 64); !ok || perr != nil {
		return "", "", fmt.Errorf("%w: redisstore: not a List cursor", jtiguard.ErrConfig)
	}
	if _, err := jtiguard.ParseJTI(sid); err != nil {
		return "", "", fmt.Errorf("%w: redisstore: not a List cursor", jtiguard.ErrConfig)
	}
	return score, sid, nil
}

// sessionFields is the number of values list replies per session.
const sessionFields = 11

// parsePage reads list's reply after the head: the next cursor, then the
// sessions.
func parsePage(subject string, vals []any) ([]store.Session, string, error) {
	if len(vals) < 2 || (len(vals)-2)%sessionFields != 0 {
		return nil, "", fmt.Errorf("unexpected reply %v", vals)
	}
	str := make([]string, len(vals))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			return nil, "", fmt.Errorf("unexpected reply %v", vals)
		}
		str[i] = s
	}
	var next string
	if str[0] != "" {
		next = str[0] + "." + str[1]
	}
	page := make([]store.Session, 0, (len(str)-2)/sessionFields)
	for f := str[2:]; len(f) > 0; f = f[sessionFields:] {
		id, err := jtiguard.ParseJTI(f[0])
		if err != nil {
			return nil, "", fmt.Errorf("stored sid %q: %w", f[0], err)
		}
		var n [5]int64 // c, at, exp, idle, gen
		for i, v := range [...]string{f[1], f[2], f[4], f[5], f[6]} {
			if n[i], err = strconv.ParseInt(v, 10, 64); err != nil {
				return nil, "", fmt.Errorf("stored family %s: %w", f[0], err)
			}
		}
		ss := store.Session{
			Family: store.Family{
				ID: id, Subject: subject, Generation: uint64(n[4]),
				ExpiresAt: time.UnixMilli(n[2]), IdleTimeout: time.Duration(n[3]) * time.Millisecond,
				Created: time.UnixMilli(n[0]), ClientID: f[7], ACR: f[8],
				Device: store.Device{Label: f[9], IP: f[10]},
			},
			Refreshed: time.UnixMilli(n[0]),
		}
		if f[3] == "1" {
			ss.Refreshed = time.UnixMilli(n[1])
		}
		page = append(page, ss)
	}
	return page, next, nil
}

// EndOthers implements store.DeviceStore: one round trip, one atomic
// script, like EndSubject's but leaving keep as it is. Every family of
// subject but keep begun before it is Ended from the moment it returns. It
// costs O(families of the subject).
func (s *Store) EndOthers(ctx context.Context, subject string, keep jtiguard.JTI) (int, error) {
	if err := s.fit(); err != nil {
		return 0, err
	}
	b := bucket(subject)
	tag := s.tag(b)
	_, n, _, err := s.do(ctx, b, endOthersScript, []string{s.indexKey(tag, subject), tag + ":e"}, subject, keep.String())
	if err == nil {
		err = s.settleKill(ctx, time.Now())
	}
	if err != nil {
		return 0, wrap("end others", err)
	}
	return int(n), nil
}

// read runs a script that writes nothing anyone relies on (list forgets
// dead index entries), without waiting for replicas, and settles the
// reply's head as do does.
func (s *Store) read(ctx context.Context, b byte, sc *redis.Script, keys []string, args ...any) (vals []any, first int64, lost bool, err error) {
	before := s.seen[b].Load()
	res, err := s.run(ctx, sc, keys, append([]any{before.seenQ(), ""}, args...)...)
	if err != nil {
		return nil, 0, false, err
	}
	vals, _ = res.([]any)
	first, lost, err = s.settle(b, before, vals)
	return vals, first, lost, err
}
