package redisstore

import "github.com/redis/go-redis/v9"

// Every operation is one of these scripts, run atomically by Redis (7.0 or
// later: the scripts declare flags). Status codes are jtiguard.Status
// values: 0 Live, 1 Revoked, 2 Used, 3 Lost, 4 Ended, 5 Reused,
// 6 Superseded.
//
// All the state of one subject lives under one hash tag, its bucket: the
// jti entries of its tokens (":j:<jti>"), its families (":f:<sid>"), its
// family index (":s:<subject>") and the bucket's marker (":e"), so every
// script touches one slot, on Cluster too.
//
// The marker is a hash written when the store is first used and rewritten
// when a loss or rollback is found:
//
//	m  tokens of no session with iat (Unix ms) below m are Lost: the
//	   server's time at the rewrite plus the bound on clock skew, so that
//	   no token issued before the rewrite, by any process whose clock is
//	   within the bound, gets past it
//	r  families created (server time, microseconds) at or before r are
//	   Lost: one clock, no margin needed
//	q  bumped by every write to the bucket; a process that sees it go
//	   backwards has seen the bucket roll back (failover to a lagging
//	   replica)
//	g  bumped by every rewrite
//
// A missing marker means the bucket lost its data (restart without
// persistence, FLUSHALL, failover to an empty replica): every token in it
// is Lost until the marker is written again. Scripts that read state reply
// {status, q, g}; a missing marker replies {3, -1, -1}.

// prelude is shared by the scripts.
const prelude = `
local function nowus()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function nowms() return math.floor(nowus() / 1000) end
local function fmt(n) return string.format('%.0f', n) end
-- marker returns the marker's fields, or nil when it is missing.
local function marker(key)
  local mk = redis.call('HMGET', key, 'm', 'r', 'q', 'g')
  if not mk[1] then return nil end
  return {m = tonumber(mk[1]), r = tonumber(mk[2]), q = tonumber(mk[3]) or 0, g = tonumber(mk[4])}
end
local function bump(key, mk)
  mk.q = redis.call('HINCRBY', key, 'q', 1)
end
-- state reports what a token's own entry, its family (fkey false for a
-- token of no session) and the marker make of it.
local function state(jkey, fkey, mk, gen, iat)
  local v = redis.call('GET', jkey)
  if v then
    if v == 'r' then return 1 end
    return 2
  end
  if fkey then
    local f = redis.call('HMGET', fkey, 'gen', 'reused', 'c')
    if not f[1] then return 4 end
    if tonumber(f[3]) <= mk.r then return 3 end
    if f[2] == '1' then return 5 end
    if f[1] ~= gen then return 6 end
    return 0
  end
  if tonumber(iat) * 1000 < mk.m then return 3 end
  return 0
end
`

// check: KEYS jti, marker[, family]; ARGV gen, iat (Unix seconds).
const checkSource = "#!lua flags=no-writes\n" + prelude + `
local mk = marker(KEYS[2])
if not mk then return {3, -1, -1} end
return {state(KEYS[1], KEYS[3] or false, mk, ARGV[1], ARGV[2]), mk.q, mk.g}
`

var checkScript = redis.NewScript(checkSource)

// consume: KEYS jti, marker[, family]; ARGV gen, iat, nonce, keep-until
// (ms). A used jti holds 'u' and the nonce of the call that used it, so a
// retry of that call recognizes its own write.
var consumeScript = redis.NewScript(prelude + `
local mk = marker(KEYS[2])
if not mk then return {3, -1, -1} end
local v = redis.call('GET', KEYS[1])
if v == 'u' .. ARGV[3] then return {0, mk.q, mk.g} end
local s = state(KEYS[1], KEYS[3] or false, mk, ARGV[1], ARGV[2])
if s ~= 0 then return {s, mk.q, mk.g} end
redis.call('SET', KEYS[1], 'u' .. ARGV[3], 'PXAT', ARGV[4])
bump(KEYS[2], mk)
return {0, mk.q, mk.g}
`)

// revoke: KEYS jti, marker; ARGV keep-until (ms). Never refused for memory
// (allow-oom): a revocation is bounded by its token's lifetime. Recorded
// even in a bucket that lost its marker; the reply says so.
var revokeScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
redis.call('SET', KEYS[1], 'r', 'PXAT', ARGV[1])
local mk = marker(KEYS[2])
if not mk then return {0, -1, -1} end
bump(KEYS[2], mk)
return {0, mk.q, mk.g}
`)

// mark: KEYS marker; ARGV margin (ms), expected g. With an empty expected
// g it writes a missing marker only; otherwise it rewrites the marker if
// its g is still the expected one (so that of several processes finding
// one rollback, one rewrites). Replies {1 if written, m}.
var markScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local g = redis.call('HGET', KEYS[1], 'g')
if (ARGV[2] == '' and g) or (ARGV[2] ~= '' and g and g ~= ARGV[2]) then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'm'))}
end
local now = nowus()
local m = math.floor(now / 1000) + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'm', fmt(m), 'r', fmt(now), 'g', (tonumber(g) or 0) + 1)
return {1, m}
`)

// begin: KEYS family, index, marker; ARGV gen, refresh jti, idle (ms),
// absolute end (ms), subject, the bucket's key prefix, sid. The family and its
// index entry are written together; the index forgets ended families. A
// retried begin finds the family and changes nothing.
var beginScript = redis.NewScript(prelude + `
local mk = marker(KEYS[3])
if not mk then return {3, -1, -1} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, mk.q, mk.g} end
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[6] .. ':f:' .. sid) == 0 then redis.call('SREM', KEYS[2], sid) end
end
local us = nowus()
local now = math.floor(us / 1000)
redis.call('SADD', KEYS[2], ARGV[7])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 or now + ttl < tonumber(ARGV[4]) then redis.call('PEXPIREAT', KEYS[2], ARGV[4]) end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'cur', ARGV[2], 'prev', '', 'nonce', '0', 'at', fmt(now),
  'c', fmt(us), 'idle', ARGV[3], 'exp', ARGV[4], 'reused', '0', 's', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], fmt(math.min(tonumber(ARGV[4]), now + tonumber(ARGV[3]))))
bump(KEYS[3], mk)
return {0, mk.q, mk.g}
`)

// rotate: KEYS family, presented jti, marker; ARGV generation, presented
// jti, next jti, new generation ('1' or '0'), nonce, grace (ms), subject.
// Replies {status, q, g, jti in force, generation, at (ms), absolute end
// (ms), repeat (0 or 1)}. The family key expires at its idle or absolute
// end, whichever is first, so a missing family is an ended one.
var rotateScript = redis.NewScript(prelude + `
local mk = marker(KEYS[3])
if not mk then return {3, -1, -1, '', 0, 0, 0, 0} end
if redis.call('GET', KEYS[2]) == 'r' then return {1, mk.q, mk.g, '', 0, 0, 0, 0} end
local f = redis.call('HMGET', KEYS[1], 'gen', 'cur', 'prev', 'nonce', 'at', 'idle', 'exp', 'reused', 'c', 's')
if not f[1] or f[10] ~= ARGV[7] then return {4, mk.q, mk.g, '', 0, 0, 0, 0} end
if tonumber(f[9]) <= mk.r then return {3, mk.q, mk.g, '', 0, 0, 0, 0} end
local gen, at, idle, exp = tonumber(f[1]), tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
local function answer(st, rep) return {st, mk.q, mk.g, f[2], gen, at, exp, rep} end
if f[8] == '1' then return answer(5, 0) end
local g = tonumber(ARGV[1])
local now = nowms()
local function put(cur, prev, newgen)
  redis.call('HSET', KEYS[1], 'gen', fmt(newgen), 'cur', cur, 'prev', prev, 'nonce', ARGV[5], 'at', fmt(now))
  redis.call('PEXPIREAT', KEYS[1], fmt(math.min(exp, now + idle)))
  bump(KEYS[3], mk)
  return {0, mk.q, mk.g, cur, newgen, now, exp, 0}
end
if ARGV[4] == '1' then
  if gen == g then return put(ARGV[3], '', gen + 1) end
  if gen == g + 1 and f[4] == ARGV[5] then return answer(0, 1) end
  return answer(6, 0)
end
if gen == g and f[2] == ARGV[2] then return put(ARGV[3], ARGV[2], gen) end
if gen == g and f[3] ~= '' and f[3] == ARGV[2] and
   (f[4] == ARGV[5] or (tonumber(ARGV[6]) > 0 and now - at <= tonumber(ARGV[6]))) then
  return answer(0, 1)
end
redis.call('HSET', KEYS[1], 'reused', '1')
bump(KEYS[3], mk)
return answer(5, 0)
`)

// end: KEYS family, index, marker; ARGV sid, subject. Ends the family if
// it is the subject's.
var endScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local mk = marker(KEYS[3])
if redis.call('HGET', KEYS[1], 's') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  if mk then bump(KEYS[3], mk) end
end
if not mk then return {0, -1, -1} end
return {0, mk.q, mk.g}
`)

// endSubject: KEYS index, marker; ARGV subject, the bucket's key prefix.
// Ends every family in the subject's index, atomically. Replies {live
// families ended (not those already revoked for reuse), q, g}.
var endSubjectScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local mk = marker(KEYS[2])
local n = 0
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fk = ARGV[2] .. ':f:' .. sid
  local f = redis.call('HMGET', fk, 's', 'reused')
  if f[1] == ARGV[1] then
    redis.call('DEL', fk)
    if f[2] ~= '1' then n = n + 1 end
  end
end
redis.call('DEL', KEYS[1])
if not mk then return {n, -1, -1} end
bump(KEYS[2], mk)
return {n, mk.q, mk.g}
`)

// scripts are loaded on every primary when the store is created.
var scripts = []*redis.Script{checkScript, consumeScript, revokeScript, markScript, beginScript, rotateScript, endScript, endSubjectScript}
