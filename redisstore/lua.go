package redisstore

import "github.com/redis/go-redis/v9"

// Every operation is one of these scripts, run atomically by Redis (7.0 or
// later: every script declares its flags, none at all for consume,
// checkConsume and begin, so that Redis refuses them whole when out of
// memory rather than midway). Status codes are store.Status
// values: 0 Live, 1 Revoked, 2 Used, 3 Lost, 4 Ended, 5 Reused,
// 6 Superseded.
//
// All the state of one subject lives under one hash tag, its bucket: the
// jti entries of its tokens (":j:<jti>"), its families (":f:<sid>"), its
// family index (":s:<subject>") and the bucket's marker (":e"), so every
// script touches one slot, on Cluster too. (begin and endSubject reach
// families through the index, so not every key they touch is in KEYS; all
// share the bucket's hash tag, hence the slot.)
//
// The marker is a hash written when the bucket is first used and rewritten
// when a loss or rollback is found:
//
//	m   tokens of no session with iat (Unix ms) below m are Lost: set by the
//	    process that writes the marker, far enough ahead of every clock
//	    that may have issued a token before (see docs/faults.md)
//	g   the marker's generation, raised by every rewrite (to at least the
//	    writer's Unix ms, so that a marker written after a loss comes after
//	    the lost one); a family lives only under the generation it was
//	    begun in (its field mg)
//	q   bumped by every write to the bucket
//	w<i> a random stamp of the write that took q to a value ≡ i (mod 64):
//	    with q, the bucket's recent history
//
// A missing marker means the bucket lost its data (restart without
// persistence, FLUSHALL, failover to an empty replica): every token in it
// is Lost until the marker is written again.
//
// Every script but mark takes ARGV[1] = the q this process saw of the
// bucket last (0: none) and ARGV[2] = a fresh random stamp for its write
// (empty for check), and replies with a head {first, q read, g, the stamp at
// the seen q (if still in the 64-write window), q after, the stamp at q
// after} before anything else, from which the process tells whether the
// bucket went back in history (a rollback: failover to a replica that
// lagged). A missing marker replies {first, -1, -1, '', -1, ''}.

// prelude is shared by the scripts.
const prelude = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(n) return string.format('%.0f', n) end
local mk
-- open reads the marker at key; false when it is missing.
local function open(key)
  local f = redis.call('HMGET', key, 'm', 'q', 'g')
  if not f[1] then return false end
  mk = {key = key, m = tonumber(f[1]), q = tonumber(f[2]) or 0, g = tonumber(f[3]) or 0, hs = ''}
  mk.qr = mk.q
  local qs = tonumber(ARGV[1])
  if qs > 0 and mk.q >= qs and mk.q - qs < 64 then
    mk.hs = redis.call('HGET', key, 'w' .. fmt(qs % 64)) or ''
  end
  return true
end
local function bump()
  mk.q = redis.call('HINCRBY', mk.key, 'q', 1)
  redis.call('HSET', mk.key, 'w' .. fmt(mk.q % 64), ARGV[2])
end
local function head(first)
  local ha = ''
  if mk.q > 0 then ha = redis.call('HGET', mk.key, 'w' .. fmt(mk.q % 64)) or '' end
  return {first, mk.qr, mk.g, mk.hs, mk.q, ha}
end
local function lost(first) return {first, -1, -1, '', -1, ''} end
-- state reports what a token's own entry, its family (fkey false for a
-- token of no session) and the marker make of it.
local function state(jkey, fkey, gen, iat)
  local v = redis.call('GET', jkey)
  if v then
    if v == 'r' then return 1 end
    return 2
  end
  if fkey then
    local f = redis.call('HMGET', fkey, 'gen', 'reused', 'mg')
    if not f[1] then return 4 end
    if tonumber(f[3]) ~= mk.g then return 3 end
    if f[2] == '1' then return 5 end
    if f[1] ~= gen then return 6 end
    return 0
  end
  if tonumber(iat) * 1000 < mk.m then return 3 end
  return 0
end
`

// check: KEYS jti, marker[, family]; ARGV seen q, no stamp, gen, iat (Unix
// s).
const checkSource = "#!lua flags=no-writes\n" + prelude + `
if not open(KEYS[2]) then return lost(3) end
return head(state(KEYS[1], KEYS[3] or false, ARGV[3], ARGV[4]))
`

var checkScript = redis.NewScript(checkSource)

// consume: KEYS jti, marker[, family]; ARGV seen q, stamp, gen, iat,
// nonce, keep-until (ms). A used jti holds 'u' and the nonce of the call
// that used it, so a retry of that call recognizes its own write.
var consumeScript = redis.NewScript("#!lua\n" + prelude + `
if not open(KEYS[2]) then return lost(3) end
if redis.call('GET', KEYS[1]) == 'u' .. ARGV[5] then return head(0) end
local s = state(KEYS[1], KEYS[3] or false, ARGV[3], ARGV[4])
if s ~= 0 then return head(s) end
redis.call('SET', KEYS[1], 'u' .. ARGV[5], 'PXAT', ARGV[6])
bump()
return head(0)
`)

// checkConsume: KEYS token jti, marker, proof jti[, token's family]; ARGV
// seen q, stamp, gen, token iat (Unix s), proof iat (Unix s), nonce, the
// proof's keep-until (ms). check of the token and, only if it is Live,
// consume of the proof (a token of no session), in the token's bucket.
// Replies the head, its first value the token's status, then the proof's
// status (the token's when the token is not Live: nothing is written). A
// retried call finds its nonce in the proof's entry: its own write, made
// while the token was Live.
var checkConsumeScript = redis.NewScript("#!lua\n" + prelude + `
local function reply(h, p)
  h[7] = p
  return h
end
if not open(KEYS[2]) then return reply(lost(3), 3) end
if redis.call('GET', KEYS[3]) == 'u' .. ARGV[6] then return reply(head(0), 0) end
local s = state(KEYS[1], KEYS[4] or false, ARGV[3], ARGV[4])
if s ~= 0 then return reply(head(s), s) end
local p = state(KEYS[3], false, '', ARGV[5])
if p ~= 0 then return reply(head(0), p) end
redis.call('SET', KEYS[3], 'u' .. ARGV[6], 'PXAT', ARGV[7])
bump()
return reply(head(0), 0)
`)

// revoke: KEYS jti, marker; ARGV seen q, stamp, keep-until (ms). Never
// refused for memory (allow-oom): a revocation is bounded by its token's
// lifetime. Recorded even in a bucket that lost its marker; the reply says
// so.
var revokeScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
redis.call('SET', KEYS[1], 'r', 'PXAT', ARGV[3])
if not open(KEYS[2]) then return lost(0) end
bump()
return head(0)
`)

// mark: KEYS marker; ARGV m (ms), expected g, least g. With an empty
// expected g it writes a missing marker only; otherwise it rewrites the
// marker if its g is still the expected one (so that of several processes
// finding one rollback, one rewrites). The new g is above both the old and
// the least g (what the writer had seen), so no process takes the new
// marker for an old one. Replies {1 if written, m in force}.
var markScript = redis.NewScript("#!lua flags=allow-oom\n" + `
local f = redis.call('HMGET', KEYS[1], 'm', 'g')
if (ARGV[2] == '' and f[1]) or (ARGV[2] ~= '' and f[1] and f[2] ~= ARGV[2]) then
  return {0, tonumber(f[1])}
end
local g = math.max((tonumber(f[2]) or 0) + 1, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'm', ARGV[1], 'g', string.format('%.0f', g))
return {1, tonumber(ARGV[1])}
`)

// begin: KEYS family, index, marker; ARGV seen q, stamp, gen, refresh jti,
// idle (ms), absolute end (ms), subject, the bucket's key prefix, sid. The
// family and its index entry are written together, the family under the
// marker's generation; the index forgets ended families a few at a time. A
// retried begin
// finds the family and changes nothing.
var beginScript = redis.NewScript("#!lua\n" + prelude + `
if not open(KEYS[3]) then return lost(3) end
if redis.call('EXISTS', KEYS[1]) == 1 then return head(0) end
-- A few members at random, not all: a login costs the same however many
-- families the subject has, and the index stays within a small factor of
-- its live families (families expire on their own; their entries go here).
for _, sid in ipairs(redis.call('SRANDMEMBER', KEYS[2], 8)) do
  if redis.call('EXISTS', ARGV[8] .. ':f:' .. sid) == 0 then redis.call('SREM', KEYS[2], sid) end
end
local now = nowms()
redis.call('SADD', KEYS[2], ARGV[9])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 or now + ttl < tonumber(ARGV[6]) then redis.call('PEXPIREAT', KEYS[2], ARGV[6]) end
redis.call('HSET', KEYS[1], 'gen', ARGV[3], 'cur', ARGV[4], 'prev', '', 'nonce', '0', 'at', fmt(now),
  'mg', fmt(mk.g), 'idle', ARGV[5], 'exp', ARGV[6], 'reused', '0', 's', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], fmt(math.min(tonumber(ARGV[6]), now + tonumber(ARGV[5]))))
bump()
return head(0)
`)

// rotate: KEYS family, presented jti, marker; ARGV seen q, stamp,
// generation, presented jti, next jti, new generation ('1' or '0'), nonce,
// grace (ms), subject. Replies the head, then {jti in force, generation,
// at (ms), absolute end (ms), repeat (0 or 1)}. The family key expires at
// its idle or absolute end, whichever is first, so a missing family is an
// ended one. allow-oom: it only overwrites fields of an existing family,
// and reuse detection must never be refused for memory.
var rotateScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local function reply(h, cur, gen, at, exp, rep)
  h[7], h[8], h[9], h[10], h[11] = cur, gen, at, exp, rep
  return h
end
if not open(KEYS[3]) then return reply(lost(3), '', 0, 0, 0, 0) end
if redis.call('GET', KEYS[2]) == 'r' then return reply(head(1), '', 0, 0, 0, 0) end
local f = redis.call('HMGET', KEYS[1], 'gen', 'cur', 'prev', 'nonce', 'at', 'idle', 'exp', 'reused', 'mg', 's')
if not f[1] or f[10] ~= ARGV[9] then return reply(head(4), '', 0, 0, 0, 0) end
if tonumber(f[9]) ~= mk.g then return reply(head(3), '', 0, 0, 0, 0) end
local gen, at, idle, exp = tonumber(f[1]), tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
if f[8] == '1' then return reply(head(5), f[2], gen, at, exp, 0) end
local g = tonumber(ARGV[3])
local now = nowms()
local function put(cur, prev, newgen)
  redis.call('HSET', KEYS[1], 'gen', fmt(newgen), 'cur', cur, 'prev', prev, 'nonce', ARGV[7], 'at', fmt(now))
  redis.call('PEXPIREAT', KEYS[1], fmt(math.min(exp, now + idle)))
  bump()
  return reply(head(0), cur, newgen, now, exp, 0)
end
if ARGV[6] == '1' then
  if gen == g then return put(ARGV[5], '', gen + 1) end
  if gen == g + 1 and f[4] == ARGV[7] then return reply(head(0), f[2], gen, at, exp, 1) end
  return reply(head(6), f[2], gen, at, exp, 0)
end
if gen == g and f[2] == ARGV[4] then return put(ARGV[5], ARGV[4], gen) end
if gen == g and f[3] ~= '' and f[3] == ARGV[4] and
   (f[4] == ARGV[7] or (tonumber(ARGV[8]) > 0 and now - at <= tonumber(ARGV[8]))) then
  return reply(head(0), f[2], gen, at, exp, 1)
end
redis.call('HSET', KEYS[1], 'reused', '1')
bump()
return reply(head(5), f[2], gen, at, exp, 0)
`)

// end: KEYS family, index, marker; ARGV seen q, stamp, sid, subject. Ends
// the family if it is the subject's.
var endScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local ok = open(KEYS[3])
if redis.call('HGET', KEYS[1], 's') == ARGV[4] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  if ok then bump() end
end
if not ok then return lost(0) end
return head(0)
`)

// endSubject: KEYS index, marker; ARGV seen q, stamp, subject, the
// bucket's key prefix. Ends every family in the subject's index,
// atomically. The head's first value is the number of live families ended
// (not those already revoked for reuse).
var endSubjectScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local n = 0
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fk = ARGV[4] .. ':f:' .. sid
  local f = redis.call('HMGET', fk, 's', 'reused')
  if f[1] == ARGV[3] then
    redis.call('DEL', fk)
    if f[2] ~= '1' then n = n + 1 end
  end
end
redis.call('DEL', KEYS[1])
if not open(KEYS[2]) then return lost(n) end
bump()
return head(n)
`)

// scripts are loaded on every primary when the store is created.
var scripts = []*redis.Script{checkScript, consumeScript, checkConsumeScript, revokeScript, markScript, beginScript, rotateScript, endScript, endSubjectScript}
