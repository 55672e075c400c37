package redisstore

import "github.com/redis/go-redis/v9"

// Every mutation is one of these scripts, run atomically by Redis. Status
// codes are jtiguard.Status values: 0 Live, 1 Revoked, 2 Used, 3 Lost,
// 4 Ended, 5 Reused, 6 Superseded. Times are Unix milliseconds from the
// server's clock (TIME), so replicas with skewed clocks agree.

// prelude is shared by the scripts that read a token's state.
//
// famState reports the status of a token's family (mode "s", arg: the
// token's generation) or, for a token of no family, of its bucket (mode
// "b", arg: the token's iat in Unix seconds). A bucket's epoch marker is
// written when the store is created; a missing marker means the data was
// lost (restart without persistence, FLUSHALL, failover to an empty
// replica): the marker is written anew and every token issued before it
// is Lost.
const prelude = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function famState(key, mode, arg)
  if mode == 's' then
    local f = redis.call('HMGET', key, 'gen', 'reused')
    if not f[1] then return 4 end
    if f[2] == '1' then return 5 end
    if f[1] ~= arg then return 6 end
    return 0
  end
  local e = redis.call('GET', key)
  if not e then
    local t = redis.call('TIME')
    redis.call('SET', key, tostring(tonumber(t[1]) + 1))
    return 3
  end
  if tonumber(arg) < tonumber(e) then return 3 end
  return 0
end
`

// check: KEYS jti, family-or-marker; ARGV mode, gen-or-iat.
const checkSource = prelude + `
local v = redis.call('GET', KEYS[1])
if v then
  if v == 'r' then return 1 end
  return 2
end
return famState(KEYS[2], ARGV[1], ARGV[2])
`

var checkScript = redis.NewScript(checkSource)

// consume: KEYS jti, family-or-marker; ARGV mode, gen-or-iat, nonce,
// keep-until (ms). The value of a used jti is 'u' and the nonce of the
// call that used it, so a retry of that call recognizes its own write.
var consumeScript = redis.NewScript(prelude + `
local v = redis.call('GET', KEYS[1])
if v then
  if v == 'r' then return 1 end
  if v == 'u' .. ARGV[3] then return 0 end
  return 2
end
local s = famState(KEYS[2], ARGV[1], ARGV[2])
if s ~= 0 then return s end
redis.call('SET', KEYS[1], 'u' .. ARGV[3], 'PXAT', ARGV[4])
return 0
`)

// revoke: KEYS jti; ARGV keep-until (ms).
var revokeScript = redis.NewScript(`
redis.call('SET', KEYS[1], 'r', 'PXAT', ARGV[1])
return 0
`)

// begin: KEYS family; ARGV gen, refresh jti, idle (ms), absolute end (ms).
// A retried begin finds the family and changes nothing.
var beginScript = redis.NewScript(prelude + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = nowms()
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'cur', ARGV[2], 'prev', '', 'nonce', '0',
  'at', string.format('%.0f', now), 'idle', ARGV[3], 'exp', ARGV[4], 'reused', '0')
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.min(tonumber(ARGV[4]), now + tonumber(ARGV[3]))))
return 1
`)

// index: KEYS subject set; ARGV sid, absolute end (ms). The set lives as
// long as the subject's longest family.
var indexScript = redis.NewScript(prelude + `
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or nowms() + ttl < tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 0
`)

// rotate: KEYS family; ARGV generation, presented jti, next jti, new
// generation ('1' or '0'), nonce, grace (ms). Returns {status, jti in
// force, generation, at (ms), absolute end (ms), repeat (0 or 1)}. The
// family key expires at its idle or absolute end, whichever is first, so a
// missing family is an ended one.
var rotateScript = redis.NewScript(prelude + `
local f = redis.call('HMGET', KEYS[1], 'gen', 'cur', 'prev', 'nonce', 'at', 'idle', 'exp', 'reused')
if not f[1] then return {4, '', 0, 0, 0, 0} end
local gen, at, idle, exp = tonumber(f[1]), tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
if f[8] == '1' then return {5, f[2], gen, at, exp, 0} end
local g = tonumber(ARGV[1])
local now = nowms()
local function put(cur, prev, newgen)
  redis.call('HSET', KEYS[1], 'gen', string.format('%d', newgen), 'cur', cur, 'prev', prev,
    'nonce', ARGV[5], 'at', string.format('%.0f', now))
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.min(exp, now + idle)))
  return {0, cur, newgen, now, exp, 0}
end
if ARGV[4] == '1' then
  if gen == g then return put(ARGV[3], '', gen + 1) end
  if gen == g + 1 and f[4] == ARGV[5] then return {0, f[2], gen, at, exp, 1} end
  return {6, f[2], gen, at, exp, 0}
end
if gen == g and f[2] == ARGV[2] then return put(ARGV[3], ARGV[2], gen) end
if gen == g and f[3] ~= '' and f[3] == ARGV[2] and
   (f[4] == ARGV[5] or (tonumber(ARGV[6]) > 0 and now - at <= tonumber(ARGV[6]))) then
  return {0, f[2], gen, at, exp, 1}
end
redis.call('HSET', KEYS[1], 'reused', '1')
return {5, f[2], gen, at, exp, 0}
`)

// scripts are loaded on every primary when the store is created.
var scripts = []*redis.Script{checkScript, consumeScript, revokeScript, beginScript, indexScript, rotateScript}
