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
// family index (":s:<hex subject>") and the bucket's marker (":e"), so every
// script touches one slot, on Cluster too. (begin, list, endSubject and
// endOthers reach families through the index, so not every key they touch
// is in KEYS; all share the bucket's hash tag, hence the slot.)
//
// A family is a hash: gen, cur (the refresh jti in force), prev, nonce (of
// the last rotation), at (its last rotation, or its begin: server ms), rot
// ('1' once rotated), mg (the marker generation it lives under), idle (ms),
// exp (absolute end, ms), reused, s (subject), and what a devices page
// shows: c (created, the caller's ms), cl (client), acr, dl and di (device
// label and IP prefix). Its key expires at its idle or absolute end,
// whichever is first, so a missing family is an ended one.
//
// The index is a sorted set of the subject's sids scored by c, so that
// families list oldest first and a page resumes after (score, sid). It may
// hold sids of families that have since ended or expired: every script
// that reads it forgets those it meets, and a family revoked for reuse
// stays in it (not live, never listed) until logout-all or its expiry.
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
// Every marker write also writes the bucket's signal key (":m", the
// marker's g; mark writes it where it is missing): its invalidation tells
// processes that answer locally that the marker changed, which the
// marker's own cannot (every write bumps q), and that the bucket's keys
// left the node (a slot migration deletes them there). A check keeps no
// local answer from a bucket without it.
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
local headLen = 6
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
-- index makes key, a subject's index, a sorted set: an index kept as a
-- set (before families were listed) becomes one, each sid scored by its
-- family's creation (or last rotation). p is the bucket's key prefix.
local function index(key, p)
  if redis.call('TYPE', key).ok ~= 'set' then return end
  local ttl = redis.call('PTTL', key)
  local sids = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  for _, sid in ipairs(sids) do
    local f = redis.call('HMGET', p .. ':f:' .. sid, 'c', 'at')
    if f[1] or f[2] then redis.call('ZADD', key, f[1] or f[2], sid) end
  end
  if ttl > 0 and redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, ttl) end
end
-- famstate is what the index entry sid of subject stands for: 'live',
-- 'reused' (revoked for reuse: not live, but kept for logout-all to end),
-- or false (gone: ended, expired, another subject's, or of a marker
-- generation before this one): the index forgets it.
local function famstate(p, sid, subject)
  local f = redis.call('HMGET', p .. ':f:' .. sid, 's', 'mg', 'reused')
  if f[1] ~= subject or tonumber(f[2]) ~= mk.g then return false end
  if f[3] == '1' then return 'reused' end
  return 'live'
end
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

// check: KEYS jti, marker[, family], the marker's signal; ARGV seen q, no
// stamp, gen, iat (Unix s), '1' on a cluster. After the head: how long a
// local answer may last (ms): the family's remaining time for a Live token
// of a family, -1 (until the token expires) for one of none, 0 (not at
// all) when the signal key is missing (a bucket written before it existed,
// or on its way to another node: its keys could leave unnoticed); on a
// cluster, the id of the node that answered (a local answer is kept only
// from a node whose invalidations this process receives).
const checkSource = "#!lua flags=no-writes\n" + prelude + `
if not open(KEYS[2]) then return lost(3) end
local fam = false
if #KEYS == 4 then fam = KEYS[3] end
local st = state(KEYS[1], fam, ARGV[3], ARGV[4])
local h = head(st)
h[headLen + 1] = -1
if st == 0 and fam then h[headLen + 1] = redis.call('PTTL', fam) end
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then h[headLen + 1] = 0 end
if ARGV[5] == '1' then h[headLen + 2] = redis.call('CLUSTER', 'MYID') end
return h
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

// mark: KEYS marker, its signal; ARGV m (ms), expected g, least g. With an empty
// expected g it writes a missing marker only; otherwise it rewrites the
// marker if its g is still the expected one (so that of several processes
// finding one rollback, one rewrites). The new g is above both the old and
// the least g (what the writer had seen), so no process takes the new
// marker for an old one. Replies {1 if written, m in force}.
var markScript = redis.NewScript("#!lua flags=allow-oom\n" + `
local f = redis.call('HMGET', KEYS[1], 'm', 'g')
if (ARGV[2] == '' and f[1]) or (ARGV[2] ~= '' and f[1] and f[2] ~= ARGV[2]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], f[2] or '0') end
  return {0, tonumber(f[1])}
end
local g = math.max((tonumber(f[2]) or 0) + 1, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'm', ARGV[1], 'g', string.format('%.0f', g))
redis.call('SET', KEYS[2], string.format('%.0f', g))
return {1, tonumber(ARGV[1])}
`)

// begin: KEYS family, index, marker; ARGV seen q, stamp, gen, refresh jti,
// idle (ms), absolute end (ms), subject, the bucket's key prefix, sid,
// created (ms; 0: now), limit (0: none), client, acr, device label, device
// IP. The family and its index entry are written together, the family
// under the marker's generation. A retried begin finds the family and
// changes nothing. After the head: how many live families the limit ended.
//
// The index forgets a few gone families at random each time (a login
// costs the same however many families the subject has: families expire
// on their own and their entries go here). With a limit, once the index
// holds limit sids it is read whole (O(limit): the scan leaves only live
// ones), gone ones are forgotten and the oldest live ones ended so that,
// with this one, at most limit are live.
var beginScript = redis.NewScript("#!lua\n" + prelude + `
if not open(KEYS[3]) then return lost(3) end
if redis.call('EXISTS', KEYS[1]) == 1 then return head(0) end
local p, subject, limit = ARGV[8], ARGV[7], tonumber(ARGV[11])
local ended = 0
index(KEYS[2], p)
for _, sid in ipairs(redis.call('ZRANDMEMBER', KEYS[2], 8)) do
  if not famstate(p, sid, subject) then redis.call('ZREM', KEYS[2], sid) end
end
if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then
  local live = {}
  for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local st = famstate(p, sid, subject)
    if st == 'live' then live[#live + 1] = sid
    elseif not st then redis.call('ZREM', KEYS[2], sid) end
  end
  for i = 1, #live - limit + 1 do
    redis.call('DEL', p .. ':f:' .. live[i])
    redis.call('ZREM', KEYS[2], live[i])
    ended = ended + 1
  end
end
local now = nowms()
local created = tonumber(ARGV[10])
if created <= 0 then created = now end
redis.call('ZADD', KEYS[2], fmt(created), ARGV[9])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 or now + ttl < tonumber(ARGV[6]) then redis.call('PEXPIREAT', KEYS[2], ARGV[6]) end
redis.call('HSET', KEYS[1], 'gen', ARGV[3], 'cur', ARGV[4], 'prev', '', 'nonce', '0', 'at', fmt(now),
  'mg', fmt(mk.g), 'idle', ARGV[5], 'exp', ARGV[6], 'reused', '0', 's', subject,
  'c', fmt(created), 'cl', ARGV[12], 'acr', ARGV[13], 'dl', ARGV[14], 'di', ARGV[15])
redis.call('PEXPIREAT', KEYS[1], fmt(math.min(tonumber(ARGV[6]), now + tonumber(ARGV[5]))))
bump()
local h = head(0)
h[headLen + 1] = ended
return h
`)

// rotate: KEYS family, presented jti, marker; ARGV seen q, stamp,
// generation, presented jti, next jti, new generation ('1' or '0'), nonce,
// grace (ms), subject, the new acr (with a new generation; empty keeps
// it). Replies the head, then {jti in force, generation,
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
  redis.call('HSET', KEYS[1], 'gen', fmt(newgen), 'cur', cur, 'prev', prev, 'nonce', ARGV[7], 'at', fmt(now), 'rot', '1')
  if newgen ~= gen and ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'acr', ARGV[10]) end
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
  index(KEYS[2], string.sub(KEYS[3], 1, -3))
  redis.call('ZREM', KEYS[2], ARGV[3])
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
index(KEYS[1], ARGV[4])
local n = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
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

// endOthers: KEYS index, marker; ARGV seen q, stamp, subject, the sid to
// keep. endSubject but for one family, left as it is (and in the index if
// it was there). The head's first value is the number of live families
// ended (not those revoked for reuse, nor those of a lost generation).
var endOthersScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
local ok = open(KEYS[2])
local p = string.sub(KEYS[2], 1, -3)
index(KEYS[1], p)
local n = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if sid ~= ARGV[4] then
    local fk = p .. ':f:' .. sid
    local f = redis.call('HMGET', fk, 's', 'reused', 'mg')
    if f[1] == ARGV[3] then
      redis.call('DEL', fk)
      if f[2] ~= '1' and (not ok or tonumber(f[3]) == mk.g) then n = n + 1 end
    end
    redis.call('ZREM', KEYS[1], sid)
  end
end
if not ok then return lost(n) end
bump()
return head(n)
`)

// list: KEYS index, marker; ARGV seen q, no stamp, subject, the cursor's
// score and sid (both empty for the first page), limit, scan (the most
// index entries one call reads). Replies the head, then the next page's
// cursor (score, sid; both empty when there is none), then 11 values per
// live family, oldest first: sid, c, at, rot, exp, idle, gen, cl, acr, dl,
// di. Families revoked for reuse are skipped; gone ones are skipped and
// forgotten (no bump: forgetting a dead entry acknowledges nothing). A
// page resumes after its cursor's place in the order (score, then sid),
// whether or not that family is still there. A missing marker lists
// nothing: no family of the bucket is live.
var listScript = redis.NewScript("#!lua flags=allow-oom\n" + prelude + `
if not open(KEYS[2]) then return lost(0) end
local p, subject = string.sub(KEYS[2], 1, -3), ARGV[3]
local limit, scan = tonumber(ARGV[6]), tonumber(ARGV[7])
index(KEYS[1], p)
local start = 0
if ARGV[4] ~= '' then
  local sc = redis.call('ZSCORE', KEYS[1], ARGV[5])
  if sc and tonumber(sc) == tonumber(ARGV[4]) then
    start = redis.call('ZRANK', KEYS[1], ARGV[5]) + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[4])
    for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[4], ARGV[4], 'BYSCORE')) do
      if sid < ARGV[5] then start = start + 1 end
    end
  end
end
local ms = redis.call('ZRANGE', KEYS[1], start, start + scan, 'WITHSCORES')
local h = head(0)
h[7], h[8] = '', ''
local n = 0
for k = 1, #ms / 2 do
  if k > scan or n == limit then
    h[7], h[8] = ms[2 * k - 2], ms[2 * k - 3]
    break
  end
  local sid = ms[2 * k - 1]
  local f = redis.call('HMGET', p .. ':f:' .. sid, 's', 'mg', 'reused', 'c', 'at', 'rot', 'exp', 'idle', 'gen', 'cl', 'acr', 'dl', 'di')
  if f[1] ~= subject or tonumber(f[2]) ~= mk.g then
    redis.call('ZREM', KEYS[1], sid)
  elseif f[3] ~= '1' then
    n = n + 1
    for _, v in ipairs({sid, f[4] or f[5], f[5], f[6] or '', f[7], f[8], f[9], f[10] or '', f[11] or '', f[12] or '', f[13] or ''}) do
      h[#h + 1] = v
    end
  end
end
return h
`)

// scripts are loaded on every primary when the store is created.
var scripts = []*redis.Script{checkScript, consumeScript, checkConsumeScript, revokeScript, markScript, beginScript, rotateScript, endScript, endSubjectScript, endOthersScript, listScript}
