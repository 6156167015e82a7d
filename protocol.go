package writethrough

import (
	"github.com/redis/go-redis/v9"
)

// The consistency protocol as Redis sees it: the key states and the
// scripts here; the commands that send them and what their replies mean in
// protocol_read.go and protocol_write.go; the bounded round trip they all
// go through in roundtrip.go. docs/protocol.md describes it whole
// (promises, key states, the read and write sequences, the races each step
// closes); nothing outside these four files speaks to Redis but through
// them.

// What a row key holds (docs/protocol.md lists every key state and what
// each script does with it):
//
//	V<gen>|<fingerprint><entry>  a cached row, valid while the shard's generation is <gen>
//	N<gen>                       a cached "no such row"
//	L<lease id>|<gen>            a reader is filling the key from the database
//	F<token>                     a writer has fenced the key; readers use the database
//	C                            writers raced; readers use the database until it expires
//
// A shard's generation key counts table-level invalidations; while its fence
// key exists a table-level write is in flight and no key of the shard is
// served or filled. Every script below touches the keys of one shard only.

// genLua defines gen(k): the shard generation at k. A missing generation
// (never set, expired, or evicted under an allkeys-* policy) must not read
// as a value an older entry could carry, or that entry would be served
// again; it is set to the server's clock in microseconds, which is beyond
// any value the lost counter reached unless it was bumped more than once a
// microsecond. A value that is not a decimal integer INCR can count up
// (someone else wrote the key) is replaced the same way, and genRepaired
// set, so that table-level writes keep working and the repair is counted.
//
// A script that knows the generation TTL sets genTTL (ms) before calling
// gen: a generation created then gets that TTL, and touchGen(k) refreshes
// it once less than half of it is left (a write per half-TTL per shard, not
// per call). Scripts that store an entry or move a generation touch it, so
// a generation outlives every entry stored under it (genTTL is at least
// twice the longest entry TTL) and expires only when its shard has been
// idle that long; its expiry is then a loss like any other (above).
const genLua = `
local genTTL
local genRepaired = 0
local function gen(k)
  local g = redis.call('GET', k)
  if g then
    if (g == '0' or string.match(g, '^[1-9][0-9]*$')) and #g <= 18 then return g end
    genRepaired = 1
  end
  local t = redis.call('TIME')
  g = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  if genTTL then
    redis.call('SET', k, g, 'PX', genTTL)
  else
    redis.call('SET', k, g)
  end
  return g
end
local function touchGen(k)
  if not genTTL then return end
  local t = redis.call('PTTL', k)
  if t == -1 or (t >= 0 and t < genTTL / 2) then redis.call('PEXPIRE', k, genTTL) end
end
`

// fenceSetLua defines the helpers for fence sets. A row key fenced by one
// writer holds F<token>; a writer that fences a key another writer's fence
// still holds adds its token instead of replacing it, and marks the set
// with '!': F!<token>,<token>... While any token of a marked set is there,
// a write that may commit has not finished, so no finish stores over it;
// the finish of the last token drops the key instead (docs/protocol.md,
// "fence sets"). A table fence key holds its tokens the same way, without
// the F and the mark.
//
// KEEPTTL is not used, so that Redis before 6.0 runs the scripts: keepPX
// rewrites a key with the TTL it has left (or fallback ms when it has none).
const fenceSetLua = `
local function hasToken(list, tok)
  return string.find(',' .. list .. ',', ',' .. tok .. ',', 1, true) ~= nil
end
local function dropToken(list, tok)
  local out = {}
  local had = false
  for t in string.gmatch(list, '[^,]+') do
    if t == tok then had = true else out[#out + 1] = t end
  end
  return table.concat(out, ','), had
end
local function fenceBody(v)
  if string.sub(v, 2, 2) == '!' then return string.sub(v, 3), true end
  return string.sub(v, 2), false
end
local function keepPX(k, v, fallback)
  local t = redis.call('PTTL', k)
  if t <= 0 then t = fallback end
  redis.call('SET', k, v, 'PX', t)
end
`

// leaseScript is the read on a miss: it decides again, atomically, what
// the hit read (snapshot) could not serve, and takes the lease ARGV[1] where
// the caller may fill. It returns the entry ("V..." or "N") when it is
// current (a fill landed since the hit read), "G" when the key was empty or
// stale and the caller now holds the lease, "X" likewise but it replaced a
// value this binary cannot use (an entry of another layout, or bytes the
// protocol never writes: garbage, an empty string, a lease, fence or "C"
// without a TTL), "B" while a table-level write is in flight, and anything
// else (a lease, a fence, "C", each with its TTL) when the caller must read
// the database without filling.
//
// KEYS: row, gen, fence. ARGV: lease id, lease TTL ms, fingerprint,
// generation TTL ms.
var leaseScript = redis.NewScript(genLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'B' end
genTTL = tonumber(ARGV[4])
local g = gen(KEYS[2])
local v = redis.call('GET', KEYS[1])
local granted = 'G'
if v then
  local t = string.sub(v, 1, 1)
  if t == 'V' then
    local p = string.find(v, '|', 2, true)
    if p and string.sub(v, 2, p - 1) == g then
      if string.sub(v, p + 1, p + 8) == ARGV[3] then return v end
      granted = 'X'
    end
  elseif t == 'N' then
    if string.sub(v, 2) == g then return 'N' end
  elseif t == 'L' or t == 'F' or t == 'C' then
    if redis.call('PTTL', KEYS[1]) ~= -1 then return v end
    granted = 'X'
  else
    granted = 'X'
  end
end
touchGen(KEYS[2])
redis.call('SET', KEYS[1], 'L' .. ARGV[1] .. '|' .. g, 'PX', ARGV[2])
return granted
`)

// reclaimScript takes the lease on a key whose entry the caller could not
// decode, provided the entry is still exactly that one. It returns "G" or
// "B" as leaseScript does.
//
// KEYS: row, gen, fence. ARGV: the undecodable entry, lease id, lease TTL
// ms, generation TTL ms.
var reclaimScript = redis.NewScript(genLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'B' end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'B' end
genTTL = tonumber(ARGV[4])
local g = gen(KEYS[2])
touchGen(KEYS[2])
redis.call('SET', KEYS[1], 'L' .. ARGV[2] .. '|' .. g, 'PX', ARGV[3])
return 'G'
`)

// fillScript stores what a lease holder read from the database, but only if
// the key still holds its lease and no table-level write began since the
// lease was taken: any write in between replaced the lease, so a fill that
// may carry an older state is dropped. Kind "D" only releases the lease.
// It returns 1 when it stored the entry.
//
// KEYS: row, gen, fence. ARGV: lease id, kind (V, N or D), TTL ms,
// fingerprint, entry, generation TTL ms.
var fillScript = redis.NewScript(genLua + `
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'L' then return 0 end
local p = string.find(v, '|', 2, true)
if not p or string.sub(v, 2, p - 1) ~= ARGV[1] then return 0 end
local g = string.sub(v, p + 1)
genTTL = tonumber(ARGV[6])
if ARGV[2] == 'D' or redis.call('EXISTS', KEYS[3]) == 1 or gen(KEYS[2]) ~= g then
  redis.call('DEL', KEYS[1])
  return 0
end
touchGen(KEYS[2])
if ARGV[2] == 'N' then
  redis.call('SET', KEYS[1], 'N' .. g, 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], 'V' .. g .. '|' .. ARGV[4] .. ARGV[5], 'PX', ARGV[3])
end
return 1
`)

// fenceScript takes a writer's fence on every row key of one shard and
// returns the shard's generation as it was when the fences landed, and 1
// if the generation key held junk and was replaced (see genLua). A key
// that already holds another writer's fence keeps it: the token joins the
// fence set, which is marked (see fenceSetLua).
//
// KEYS: row..., gen, fence (every row key of the shard the statement
// fences). ARGV: token, lock TTL ms, generation TTL ms.
var fenceScript = redis.NewScript(fenceScriptSrc)

const fenceScriptSrc = genLua + fenceSetLua + `
local n = #KEYS - 2
local own = 'F' .. ARGV[1]
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  local nv = own
  if v and v ~= own and string.byte(v, 1) == 70 then
    local body = fenceBody(v)
    if hasToken(body, ARGV[1]) then
      nv = v
    elseif body == '' then
      nv = 'F!' .. ARGV[1]
    else
      nv = 'F!' .. body .. ',' .. ARGV[1]
    end
  end
  redis.call('SET', KEYS[i], nv, 'PX', ARGV[2])
end
genTTL = tonumber(ARGV[3])
local g = gen(KEYS[n + 1])
touchGen(KEYS[n + 1])
return {g, genRepaired}
`

// finishScript ends a statement's or transaction's writes on one shard,
// after the outermost COMMIT (or the ROLLBACK). For each row key, by kind:
//
//   - V or N, and the key still holds exactly the writer's own fence: the
//     row's new state is stored, unless a table-level write began after the
//     fence (the table fence exists or the generation moved): then the key
//     is dropped. Kind D drops it in any case.
//   - the key holds a fence set with the writer's token (another writer
//     fenced it meanwhile): the token is taken out and nothing is stored,
//     since the others may still commit; the last token out drops the key.
//   - the key holds a fence set without the writer's token (its fence
//     expired, or was evicted, and others fenced since): the set is marked,
//     so that its last writer drops instead of storing.
//   - anything else (a value, a lease, "C", nothing): the key is set to "C"
//     so readers use the database until it expires.
//   - R (rolled back): the writer's own token is taken out, or its own
//     fence dropped; nothing else is touched.
//
// With ARGV[5] = "1" it then ends the writer's table-level write on the
// shard: the generation is bumped once more (fills taken while an
// overlapping table write was in flight must not survive this one) and the
// token leaves the table fence.
//
// It returns, per row key, 1 stored (R: released), 2 dropped, 0 contended;
// then 1 if the generation key held junk and was replaced.
//
// KEYS: row..., gen, fence. ARGV: token, contended TTL ms, lock TTL ms,
// generation TTL ms, "1" or "0" (table finish), then per row key five:
// generation at fence time, kind, TTL ms, fingerprint, entry.
var finishScript = redis.NewScript(genLua + fenceSetLua + `
local n = #KEYS - 2
local tok = ARGV[1]
local own = 'F' .. tok
local tabled = redis.call('EXISTS', KEYS[n + 2]) == 1
genTTL = tonumber(ARGV[4])
local g
local out = {}
for i = 1, n do
  local a = 5 + (i - 1) * 5
  local k, fg, kind = KEYS[i], ARGV[a + 1], ARGV[a + 2]
  local v = redis.call('GET', k)
  local r = 0
  if v == own then
    if kind == 'R' then
      redis.call('DEL', k)
      r = 1
    else
      if not g then g = gen(KEYS[n + 1]) end
      if kind == 'D' or tabled or g ~= fg then
        redis.call('DEL', k)
        r = 2
      elseif kind == 'N' then
        redis.call('SET', k, 'N' .. fg, 'PX', ARGV[a + 3])
        r = 1
      else
        redis.call('SET', k, 'V' .. fg .. '|' .. ARGV[a + 4] .. ARGV[a + 5], 'PX', ARGV[a + 3])
        r = 1
      end
    end
  elseif v and string.byte(v, 1) == 70 then
    local body, marked = fenceBody(v)
    local rest, had = dropToken(body, tok)
    if had then
      if rest == '' then redis.call('DEL', k) else keepPX(k, 'F!' .. rest, ARGV[3]) end
      if kind == 'R' then r = 1 end
    elseif kind ~= 'R' and not marked then
      keepPX(k, 'F!' .. body, ARGV[3])
    end
  elseif kind ~= 'R' then
    redis.call('SET', k, 'C', 'PX', ARGV[2])
  end
  out[i] = r
end
if ARGV[5] == '1' then
  gen(KEYS[n + 1])
  redis.call('INCR', KEYS[n + 1])
  local f = redis.call('GET', KEYS[n + 2])
  if f then
    local rest, had = dropToken(f, tok)
    if had then
      if rest == '' then redis.call('DEL', KEYS[n + 2]) else keepPX(KEYS[n + 2], rest, ARGV[3]) end
    end
  end
end
if g or ARGV[5] == '1' then touchGen(KEYS[n + 1]) end
out[n + 1] = genRepaired
return out
`)

// tableFenceScript starts a table-level write on one shard: the generation
// is bumped (no entry of the shard is served any more) and the token joins
// the fence key, which stops fills until every table-level write in it
// finishes or the fence expires. It returns 1 if the generation key held
// junk and was replaced, else 0.
//
// KEYS: gen, fence. ARGV: token, lock TTL ms, generation TTL ms.
var tableFenceScript = redis.NewScript(tableFenceScriptSrc)

const tableFenceScriptSrc = genLua + fenceSetLua + `
genTTL = tonumber(ARGV[3])
gen(KEYS[1])
redis.call('INCR', KEYS[1])
touchGen(KEYS[1])
local f = redis.call('GET', KEYS[2])
if not f or f == '' then
  f = ARGV[1]
elseif not hasToken(f, ARGV[1]) then
  f = f .. ',' .. ARGV[1]
end
redis.call('SET', KEYS[2], f, 'PX', ARGV[2])
return genRepaired
`

// bumpScript bumps a shard's generation: every entry of the shard stops
// being served, and fills that began before are dropped. It returns 1 if
// the generation key held junk and was replaced, else 0.
//
// KEYS: gen. ARGV: generation TTL ms.
var bumpScript = redis.NewScript(genLua + `
genTTL = tonumber(ARGV[1])
gen(KEYS[1])
redis.call('INCR', KEYS[1])
touchGen(KEYS[1])
return genRepaired
`)

// poisonScript marks a row key contended: "C" replaces a value, a lease or
// nothing, so no fill that began before can land. A fence (set) stays, and
// is marked, so that its writers drop the key instead of storing: replacing
// it would end their crash protection (docs/protocol.md, fence sets).
//
// KEYS: row. ARGV: contended TTL ms, lock TTL ms.
var poisonScript = redis.NewScript(fenceSetLua + `
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) == 70 then
  local body, marked = fenceBody(v)
  if not marked then keepPX(KEYS[1], 'F!' .. body, ARGV[2]) end
  return 0
end
redis.call('SET', KEYS[1], 'C', 'PX', ARGV[1])
return 1
`)

var allScripts = []*redis.Script{leaseScript, reclaimScript, fillScript, finishScript, fenceScript, tableFenceScript, bumpScript, poisonScript}
