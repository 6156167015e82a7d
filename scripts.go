package writethrough

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// What a row key holds (see consistency.md, "One protocol that meets them"):
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
//
// A generation key that is missing (never created, or evicted under an
// allkeys-* maxmemory policy) is created from the clock in microseconds,
// never from zero: counting up from zero again would make entries stored
// under an earlier generation match again after the table writes that
// invalidated them.

// ensureGenLua defines ensure_gen(key): the shard's generation, created
// from the server clock if it is missing.
const ensureGenLua = `
local function ensure_gen(k)
  local g = redis.call('GET', k)
  if g then return g end
  local t = redis.call('TIME')
  g = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', k, g)
  return g
end
`

// freshGeneration is the client-side twin of ensure_gen, for pipelines that
// bump a generation with SETNX + INCR.
func freshGeneration() string { return strconv.FormatInt(time.Now().UnixMicro(), 10) }

// readScript serves a read. It returns the entry ("V..." or "N") when it is
// current, "G" when the key was empty or stale and the caller now holds the
// lease ARGV[1], "X" likewise but it replaced an entry of another layout,
// "B" while a table-level write is in flight, and anything else (a lease, a
// fence, "C") when the caller must read the database without filling.
//
// KEYS: row, gen, fence. ARGV: lease id, lease TTL ms, fingerprint.
var readScript = redis.NewScript(ensureGenLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'B' end
local g = ensure_gen(KEYS[2])
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
  else
    return v
  end
end
redis.call('SET', KEYS[1], 'L' .. ARGV[1] .. '|' .. g, 'PX', ARGV[2])
return granted
`)

// reclaimScript takes the lease on a key whose entry the caller could not
// decode, provided the entry is still exactly that one. It returns "G" or
// "B" as readScript does.
//
// KEYS: row, gen, fence. ARGV: the undecodable entry, lease id, lease TTL ms.
var reclaimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return 'B' end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'B' end
local g = redis.call('GET', KEYS[2]) or '0'
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
// fingerprint, entry.
var fillScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'L' then return 0 end
local p = string.find(v, '|', 2, true)
if not p or string.sub(v, 2, p - 1) ~= ARGV[1] then return 0 end
local g = string.sub(v, p + 1)
if ARGV[2] == 'D' or redis.call('EXISTS', KEYS[3]) == 1 or (redis.call('GET', KEYS[2]) or '0') ~= g then
  redis.call('DEL', KEYS[1])
  return 0
end
if ARGV[2] == 'N' then
  redis.call('SET', KEYS[1], 'N' .. g, 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], 'V' .. g .. '|' .. ARGV[4] .. ARGV[5], 'PX', ARGV[3])
end
return 1
`)

// finishScript runs after the outermost COMMIT. If the key still holds the
// writer's own fence, it stores the row's new state (kind V or N) or, for
// kind D, drops the fence so the next read fills from the database; it also
// drops instead of storing when a table-level write began after the fence.
// If the key holds anything else, another writer or an expiry raced this one,
// and it writes "C" so readers use the database until it expires.
// It returns 1 stored, 2 dropped, 0 contended.
//
// KEYS: row, gen, fence. ARGV: token, generation read at fence time, kind,
// TTL ms, fingerprint, entry, contended TTL ms.
var finishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= 'F' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'C', 'PX', ARGV[7])
  return 0
end
if ARGV[3] == 'D' or redis.call('EXISTS', KEYS[3]) == 1 or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 2
end
if ARGV[3] == 'N' then
  redis.call('SET', KEYS[1], 'N' .. ARGV[2], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], 'V' .. ARGV[2] .. '|' .. ARGV[5] .. ARGV[6], 'PX', ARGV[4])
end
return 1
`)

// releaseScript drops the writer's own fence after a rollback.
//
// KEYS: row. ARGV: token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == 'F' .. ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`)

// tableFinishScript ends a table-level write: it bumps the shard's
// generation once more (fills taken while an overlapping table write was in
// flight must not survive this one) and drops the fence if it is its own.
//
// KEYS: gen, fence. ARGV: token.
var tableFinishScript = redis.NewScript(ensureGenLua + `
ensure_gen(KEYS[1])
redis.call('INCR', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
`)

var allScripts = []*redis.Script{readScript, reclaimScript, fillScript, finishScript, releaseScript, tableFinishScript}

// isNoScript reports a NOSCRIPT reply: the server has not seen the script.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// pipelined runs fn's commands in one round trip. Scripts are sent by hash
// (EVALSHA); if the server does not know one yet they are loaded and the
// pipeline is sent once more. Every command fn queues must be safe to repeat.
func (p *Plugin) pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	return bounded(p, ctx, func() ([]redis.Cmder, error) {
		cmds, err := p.rdb.Pipelined(ctx, fn)
		if err == nil || !hasNoScript(cmds, err) {
			return cmds, err
		}
		for _, s := range allScripts {
			if err := s.Load(ctx, p.rdb).Err(); err != nil {
				return cmds, err
			}
		}
		return p.rdb.Pipelined(ctx, fn)
	})
}

func hasNoScript(cmds []redis.Cmder, err error) bool {
	if isNoScript(err) {
		return true
	}
	for _, c := range cmds {
		if isNoScript(c.Err()) {
			return true
		}
	}
	return false
}
