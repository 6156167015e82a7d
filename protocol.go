package writethrough

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// The consistency protocol as Redis sees it: the scripts, the commands that
// send them, and what their replies mean. docs/protocol.md describes it
// whole (promises, key states, the read and write sequences, the races each
// step closes); nothing outside this file speaks to Redis but through it.

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

// sink is where a round trip's commands go: the client itself for a lone
// command, a pipeline for several.
type sink interface {
	redis.Scripter
	Do(ctx context.Context, args ...any) *redis.Cmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
}

// roundTrip sends n commands in one round trip bounded by d (see
// withTimeout) and returns them, answered, in order; on error it returns
// none. cmd(ctx, s, i) issues command i on s. Scripts go by hash (EVALSHA):
// if the server does not know one (it restarted or was flushed) every
// script is loaded and the commands are issued once more, so every command
// must be safe to repeat.
//
// The commands go in one pipeline, except that with alone set a lone
// command is sent by itself: the read path does so, because a pipeline
// costs allocations (and go-redis keeps pipelines on connections of their
// own). Writes always pipeline.
func (p *Plugin) roundTrip(ctx context.Context, d time.Duration, alone bool, n int, cmd func(ctx context.Context, s sink, i int) redis.Cmder) ([]redis.Cmder, error) {
	if n == 0 {
		return nil, nil
	}
	var cmds []redis.Cmder
	err := p.withTimeout(ctx, p.boundedBy(d), func(ctx context.Context, rdb redis.UniversalClient) error {
		var err error
		cmds, err = issue(ctx, rdb, alone, n, cmd)
		if !hasNoScript(cmds, err) {
			return err
		}
		for _, s := range allScripts {
			if err := s.Load(ctx, rdb).Err(); err != nil {
				return err
			}
		}
		cmds, err = issue(ctx, rdb, alone, n, cmd)
		return err
	})
	if err != nil {
		return nil, err
	}
	return cmds, nil
}

// issue sends the commands once (see roundTrip).
func issue(ctx context.Context, rdb redis.UniversalClient, alone bool, n int, cmd func(ctx context.Context, s sink, i int) redis.Cmder) ([]redis.Cmder, error) {
	if alone && n == 1 {
		c := cmd(ctx, rdb, 0)
		return []redis.Cmder{c}, c.Err()
	}
	return rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := 0; i < n; i++ {
			cmd(ctx, pipe, i)
		}
		return nil
	})
}

// boundedBy returns the client whose calls end within d: the read or the
// write one (see newBounded), or, for a limit neither has, the user's
// client with its calls run aside.
func (p *Plugin) boundedBy(d time.Duration) bounded {
	switch d {
	case p.read.d:
		return p.read
	case p.write.d:
		return p.write
	}
	return bounded{rdb: p.rdb, d: d}
}

// withTimeout runs fn on b's client, bounded by b.d (none when it is <= 0).
// The context gets that deadline, which bounds what go-redis waits for by
// context whatever its options (a pool slot, a dial, a retry's backoff).
// The socket reads and writes are bounded by the client itself: a
// WithTimeout clone's deadlines are b.d, and a client with
// ContextTimeoutEnabled ends them at the context's deadline. Any other
// client would hold a call to a Redis that accepted the connection and
// stopped answering for its own read timeout (seconds): there fn runs
// aside, and the caller stops waiting for it at the deadline; the client's
// pool, whose waits do end at the deadline, bounds how many such calls can
// be left behind. Every call the plugin makes is safe to land late: fences
// expire, and the scripts check the lease or fence they were given.
func (p *Plugin) withTimeout(ctx context.Context, b bounded, fn func(context.Context, redis.UniversalClient) error) error {
	if b.d <= 0 {
		return fn(ctx, b.rdb)
	}
	ctx, cancel := context.WithTimeout(b.route(ctx), b.d)
	defer cancel()
	if b.socket || b.ctxDeadlines {
		return fn(ctx, b.rdb)
	}
	done := make(chan error, 1)
	go func() { done <- fn(ctx, b.rdb) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// isNoScript reports a NOSCRIPT reply: the server has not seen the script.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
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

// readState is what the hit read or the lease script said about one key.
type readState byte

const (
	stateBypass   readState = iota // someone is writing or filling: use the database
	stateHit                       // entry holds the row
	stateAbsent                    // the row does not exist
	stateLeased                    // we hold the lease: fill after reading the database
	stateReplaced                  // leased, replacing a value this binary cannot use ("X")
	stateCorrupt                   // a current entry that does not open (see openEntry)
	stateAsk                       // the hit read cannot serve it: ask the lease script
)

// errSnapshotReply is a hit read answered with the wrong number of values
// (not a Redis, or a broken one): the read goes to the database.
var errSnapshotReply = errors.New("writethrough: MGET answered with the wrong number of values")

// snapshot is the hit read: one MGET of each key's row, its shard's
// generation and its shard's table fence, in one round trip, with no
// script and, on a WithTimeout clone, no timer (see newBounded). MGET
// reads its keys atomically, so what classifySnapshot decides from the
// reply is what the lease script would decide at that instant, without
// the writes it would make. Each key's state, its entry (a hit) and its
// row value (for reclaim and lease checks) are put in states, entries and
// values.
//
// One key is one "MGET row gen fence". Several go in one MGET when the
// client is a single server, which can read keys of any slot together;
// other clients (Cluster, Ring) get one MGET per shard (one slot each) in
// one pipeline.
func (p *Plugin) snapshot(ctx context.Context, refs []keyRef, fp string, states []readState, entries [][]byte, values []string) error {
	if len(refs) == 1 {
		vals, err := p.mget(ctx, snapshotArgs(refs[0].key))
		if err != nil {
			return err
		}
		if len(vals) != 3 {
			return errSnapshotReply
		}
		states[0], entries[0], values[0] = p.classifySnapshot(vals[0], vals[1], vals[2], fp)
		return nil
	}

	// The shards the keys are in, in order of first appearance.
	n := len(refs)
	shardOf := make([]int, n)
	var shards []rowKey
	var index map[string]int
	if n > 16 {
		index = make(map[string]int)
	}
	for i, r := range refs {
		j := -1
		if index != nil {
			if at, ok := index[r.key.gen]; ok {
				j = at
			}
		} else {
			for at, s := range shards {
				if s.gen == r.key.gen {
					j = at
					break
				}
			}
		}
		if j < 0 {
			j = len(shards)
			shards = append(shards, r.key)
			if index != nil {
				index[r.key.gen] = j
			}
		}
		shardOf[i] = j
	}

	if p.crossSlot || len(shards) == 1 {
		args := make([]any, 0, 1+n+2*len(shards))
		args = append(args, "mget")
		for _, r := range refs {
			args = append(args, r.key.row)
		}
		for _, k := range shards {
			args = appendShardArgs(args, k)
		}
		vals, err := p.mget(ctx, args)
		if err != nil {
			return err
		}
		if len(vals) != len(args)-1 {
			return errSnapshotReply
		}
		for i := range refs {
			g := n + 2*shardOf[i]
			states[i], entries[i], values[i] = p.classifySnapshot(vals[i], vals[g], vals[g+1], fp)
		}
		return nil
	}

	perShard := make([][]any, len(shards))
	at := make([]int, n) // where key i's row is in its shard's reply
	for i, r := range refs {
		j := shardOf[i]
		if perShard[j] == nil {
			perShard[j] = []any{"mget"}
		}
		at[i] = len(perShard[j]) - 1
		perShard[j] = append(perShard[j], r.key.row)
	}
	for j, k := range shards {
		perShard[j] = appendShardArgs(perShard[j], k)
	}
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, false, len(perShard), func(ctx context.Context, s sink, j int) redis.Cmder {
		return s.Do(ctx, perShard[j]...)
	})
	if err != nil {
		return err
	}
	replies := make([][]any, len(cmds))
	for j, c := range cmds {
		vals, err := c.(*redis.Cmd).Slice()
		if err != nil {
			return err
		}
		if len(vals) != len(perShard[j])-1 {
			return errSnapshotReply
		}
		replies[j] = vals
	}
	for i := range refs {
		vals := replies[shardOf[i]]
		states[i], entries[i], values[i] = p.classifySnapshot(vals[at[i]], vals[len(vals)-2], vals[len(vals)-1], fp)
	}
	return nil
}

// snapshotArgs is "MGET row gen fence" for one key, with the shard's keys
// boxed once per shard rather than per read.
func snapshotArgs(k rowKey) []any {
	if k.shard == nil {
		return []any{"mget", k.row, k.gen, k.fence}
	}
	return []any{"mget", k.row, k.shard.genArg, k.shard.fenceArg}
}

// appendShardArgs appends the generation and fence keys of k's shard.
func appendShardArgs(args []any, k rowKey) []any {
	if k.shard == nil {
		return append(args, k.gen, k.fence)
	}
	return append(args, k.shard.genArg, k.shard.fenceArg)
}

// mget sends one MGET on the read client and returns its values. On a
// WithTimeout clone (or with ReadTimeout off) it is sent as it is: the
// clone's socket deadlines bound it, so a hit costs no timer and no
// goroutine. Other clients get withTimeout.
func (p *Plugin) mget(ctx context.Context, args []any) ([]any, error) {
	if p.read.socket || p.read.d <= 0 {
		return p.read.rdb.Do(p.read.route(ctx), args...).Slice()
	}
	return p.mgetBounded(ctx, args)
}

// mgetBounded is mget through withTimeout, apart so that the hit path's
// variables do not escape into its closure.
func (p *Plugin) mgetBounded(ctx context.Context, args []any) ([]any, error) {
	var vals []any
	err := p.withTimeout(ctx, p.read, func(ctx context.Context, rdb redis.UniversalClient) error {
		var err error
		vals, err = rdb.Do(ctx, args...).Slice()
		return err
	})
	if err != nil {
		return nil, err
	}
	return vals, nil
}

// classifySnapshot decides, from one key's row value, its shard's
// generation and its shard's table fence as MGET read them together, what
// the lease script would: a table fence: bypass; a current entry of this
// layout: a hit (or corrupt, if its checksum fails); a current absence:
// absent; a lease of this process: bypass (serve waits for that fill).
// Everything else is asked of the lease script, which decides again and
// changes the key atomically: a missing generation (the script sets it), a
// missing, stale or other-layout entry (it takes the lease), another
// process's lease, a fence, "C" (it replaces those that have no TTL, which
// the protocol never writes), and any value the protocol does not write
// (it replaces it). It returns the state, the entry of a hit, and the row
// value.
func (p *Plugin) classifySnapshot(row, gen, fence any, fp string) (readState, []byte, string) {
	if fence != nil {
		return stateBypass, nil, ""
	}
	v, _ := row.(string)
	g, ok := gen.(string)
	if !ok || v == "" {
		return stateAsk, nil, v
	}
	switch v[0] {
	case 'V':
		bar := strings.IndexByte(v, '|')
		if bar < 0 || v[1:bar] != g || len(v) < bar+1+fingerprintLen || v[bar+1:bar+1+fingerprintLen] != fp {
			return stateAsk, nil, v
		}
		entry, err := openEntry(stringBytes(v[bar+1+fingerprintLen:]))
		if err != nil {
			return stateCorrupt, nil, v
		}
		return stateHit, entry, v
	case 'N':
		if v[1:] == g {
			return stateAbsent, nil, v
		}
	case 'L':
		if p.ownLease(v) {
			return stateBypass, nil, v
		}
	}
	return stateAsk, nil, v
}

// parseRead interprets one reply of the lease script. A hit's entry is the
// reply's own bytes, past the generation and the fingerprint.
func parseRead(reply string) (readState, []byte) {
	switch {
	case reply == "G":
		return stateLeased, nil
	case reply == "X":
		return stateReplaced, nil
	case reply == "N":
		return stateAbsent, nil
	case len(reply) > 0 && reply[0] == 'V':
		bar := strings.IndexByte(reply, '|')
		if bar < 0 || len(reply) < bar+1+fingerprintLen {
			return stateCorrupt, nil
		}
		entry, err := openEntry(stringBytes(reply[bar+1+fingerprintLen:]))
		if err != nil {
			return stateCorrupt, nil
		}
		return stateHit, entry
	}
	return stateBypass, nil
}

// isLease reports whether a read reply is another reader's lease,
// "L<lease id>|<gen>".
func isLease(reply string) bool { return len(reply) > 0 && reply[0] == 'L' }

// ownLease reports whether a read reply is a lease taken by this process.
func (p *Plugin) ownLease(reply string) bool {
	return isLease(reply) && strings.HasPrefix(reply[1:], p.token)
}

// leaseIDOf extracts the lease id from a lease reply "L<id>|<gen>".
func leaseIDOf(reply string) string {
	if i := strings.IndexByte(reply, '|'); i > 1 {
		return reply[1:i]
	}
	return ""
}

// stringBytes views a string's bytes without copying. The codec contract
// forbids retaining or modifying them.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// leaseKeys runs the lease script for every key in one round trip, bounded
// by Config.ReadTimeout, and puts the replies in replies. fp is the model's
// fingerprint argument (modelInfo.fpArg).
func (p *Plugin) leaseKeys(ctx context.Context, refs []keyRef, fp any, leaseID string, replies []string) error {
	// Arguments every key of the statement shares are boxed once.
	lease, leaseMS, genMS := any(leaseID), p.leaseMSArg, p.genTTLArg()
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, len(refs), func(ctx context.Context, s sink, i int) redis.Cmder {
		return s.Do(ctx, leaseArgs(refs[i].key, lease, leaseMS, fp, genMS)...)
	})
	if err != nil {
		return err
	}
	for i, c := range cmds {
		replies[i], _ = c.(*redis.Cmd).Text()
	}
	return nil
}

// leaseScriptSHA is the lease script's hash, boxed once.
var leaseScriptSHA any = leaseScript.Hash()

// leaseArgs is the EVALSHA command of the lease script for one key. It is
// what leaseScript.EvalSha sends, built with the arguments shared by a
// statement's keys (lease id, lease TTL, fingerprint, generation TTL) and
// by a shard's (generation and fence keys) boxed once instead of per key.
func leaseArgs(k rowKey, lease, leaseMS, fp, genMS any) []any {
	if k.shard == nil {
		return []any{"evalsha", leaseScriptSHA, 3, k.row, k.gen, k.fence, lease, leaseMS, fp, genMS}
	}
	return []any{"evalsha", leaseScriptSHA, 3, k.row, k.shard.genArg, k.shard.fenceArg, lease, leaseMS, fp, genMS}
}

// reclaim takes the lease on a key holding an entry that cannot be decoded.
func (p *Plugin) reclaim(ctx context.Context, k rowKey, entry, leaseID string) bool {
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, 1, func(ctx context.Context, s sink, _ int) redis.Cmder {
		return reclaimScript.EvalSha(ctx, s, []string{k.row, k.gen, k.fence}, entry, leaseID, strconvMS(p.cfg.LeaseTTL), p.genTTLArg())
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
		return false
	}
	r, err := cmds[0].(*redis.Cmd).Text()
	if err != nil {
		p.stats.redisErrors.Add(1)
		return false
	}
	return r == "G"
}

// writeKind is what a fill or a finish does with a key.
type writeKind byte

const (
	kindValue   writeKind = 'V' // store the row
	kindAbsent  writeKind = 'N' // store "no such row"
	kindDrop    writeKind = 'D' // store nothing; the next read fills
	kindRelease writeKind = 'R' // rolled back: drop our fence, nothing else
)

// rowFill is what a lease holder stores on one key.
type rowFill struct {
	key   rowKey
	kind  writeKind // kindValue, kindAbsent or kindDrop
	ttl   time.Duration
	entry []byte
}

// storeFills stores what the lease holder leaseID read from the database,
// in one round trip, and calls stored(i) for each fill that landed. The
// fill is part of the read: it is bounded by ReadTimeout like the rest of
// it (a fill that times out leaves the lease to expire, which is safe), and
// it is sent even if the reader's context ends meanwhile.
func (p *Plugin) storeFills(ctx context.Context, leaseID, fp string, fills []rowFill, stored func(i int)) error {
	timeout := p.cfg.WriteTimeout
	if p.cfg.ReadTimeout > 0 {
		timeout = p.cfg.ReadTimeout
	}
	genMS := p.genTTLArg()
	cmds, err := p.roundTrip(context.WithoutCancel(ctx), timeout, false, len(fills), func(ctx context.Context, s sink, i int) redis.Cmder {
		f := &fills[i]
		return fillScript.EvalSha(ctx, s, []string{f.key.row, f.key.gen, f.key.fence},
			leaseID, string(f.kind), strconvMS(f.ttl), fp, f.entry, genMS)
	})
	if err != nil {
		return err
	}
	for i, c := range cmds {
		if n, _ := c.(*redis.Cmd).Int(); n == 1 {
			stored(i)
		}
	}
	return nil
}

// rowWrite is one fenced row and what its finish will do.
type rowWrite struct {
	key   rowKey
	gen   string // the shard's generation when the fence was taken
	kind  writeKind
	fp    string
	entry []byte
	ttl   time.Duration
}

// shardGroups groups the indexes of writes by shard (their generation key),
// in the order the shards first appear: each group is one script call.
func shardGroups(writes []rowWrite) [][]int {
	if len(writes) == 1 {
		return [][]int{{0}}
	}
	at := make(map[string]int)
	var groups [][]int
	for i, w := range writes {
		g, ok := at[w.key.gen]
		if !ok {
			g = len(groups)
			at[w.key.gen] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// shardKeys lists the row keys of one shard's writes followed by the
// shard's generation and table fence keys: the KEYS of the fence and
// finish scripts.
func shardKeys(writes []rowWrite, group []int) []string {
	keys := make([]string, 0, len(group)+2)
	for _, i := range group {
		keys = append(keys, writes[i].key.row)
	}
	k := writes[group[0]].key
	return append(keys, k.gen, k.fence)
}

// fence takes the writer's fence on every key in one round trip, one script
// call per shard, and records each shard's generation as it was when the
// fences landed.
func (p *Plugin) fence(ctx context.Context, token string, writes []rowWrite) error {
	return p.fenceAll(ctx, token, writes, nil)
}

// fenceAll fences rows (as fence) and table shards (as fenceTables) in one
// round trip: one fence script call per shard of the rows, one table fence
// call per table shard. A write whose foreign-key actions reach other
// tables fences them with its own rows.
func (p *Plugin) fenceAll(ctx context.Context, token string, writes []rowWrite, tables []tableShard) error {
	if len(writes) == 0 && len(tables) == 0 {
		return nil
	}
	groups := shardGroups(writes)
	lockMS, genMS := strconvMS(p.cfg.LockTTL), p.genTTLArg()
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(groups)+len(tables), func(ctx context.Context, s sink, i int) redis.Cmder {
		if i < len(groups) {
			return fenceScript.EvalSha(ctx, s, shardKeys(writes, groups[i]), token, lockMS, genMS)
		}
		t := tables[i-len(groups)]
		return tableFenceScript.EvalSha(ctx, s, []string{t.gen, t.fence}, token, lockMS, genMS)
	})
	if err != nil {
		return err
	}
	for i, g := range groups {
		reply, err := cmds[i].(*redis.Cmd).Slice()
		if err != nil {
			return err
		}
		var gen string
		ok := len(reply) == 2
		if ok {
			gen, ok = reply[0].(string)
		}
		if !ok {
			return fmt.Errorf("writethrough: unexpected fence reply %v", reply)
		}
		p.noteRepaired(reply[1])
		for _, j := range g {
			writes[j].gen = gen
		}
	}
	if len(tables) > 0 {
		p.stats.invalidations.Add(uint64(len(tables)))
		for _, c := range cmds[len(groups):] {
			p.noteRepaired(c.(*redis.Cmd).Val())
		}
	}
	return nil
}

// fenceTables starts a table-level write on every shard: the generation is
// bumped (every entry of the shard stops being served) and the fence key
// stops fills until the write finishes or the fence expires.
func (p *Plugin) fenceTables(ctx context.Context, token string, tables []tableShard) error {
	return p.fenceAll(ctx, token, nil, tables)
}

// finishWrites publishes or releases fenced rows and ends table-level
// writes, in one round trip: one finish script call per shard, carrying
// every row of that shard and, when the writer also fenced the shard
// table-level, the end of that table fence. A failure leaves the fences to
// expire, which is safe: readers use the database until then.
func (p *Plugin) finishWrites(ctx context.Context, token string, writes []rowWrite, tables []tableShard) {
	if len(writes) == 0 && len(tables) == 0 {
		return
	}
	if p.hooks != nil && p.hooks.beforeFinish != nil && !p.hooks.beforeFinish() {
		return // a test pretends the process died here
	}
	var groups [][]int
	if len(writes) > 0 {
		groups = shardGroups(writes)
	}
	// A table shard is finished in the call of its rows, or in one of its own.
	tableAt := make(map[string]bool, len(tables))
	for _, t := range tables {
		tableAt[t.gen] = true
	}
	calls := make([]finishCall, 0, len(groups)+len(tables))
	for _, g := range groups {
		gen := writes[g[0]].key.gen
		calls = append(calls, finishCall{rows: g, keys: shardKeys(writes, g), table: tableAt[gen]})
		delete(tableAt, gen)
	}
	for _, t := range tables {
		if tableAt[t.gen] {
			calls = append(calls, finishCall{keys: []string{t.gen, t.fence}, table: true})
			delete(tableAt, t.gen)
		}
	}
	contendedMS, lockMS, genMS := strconvMS(p.cfg.ContendedTTL), strconvMS(p.cfg.LockTTL), p.genTTLArg()
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(calls), func(ctx context.Context, s sink, i int) redis.Cmder {
		c := &calls[i]
		table := "0"
		if c.table {
			table = "1"
		}
		args := make([]any, 0, 5+5*len(c.rows))
		args = append(args, token, contendedMS, lockMS, genMS, table)
		for _, j := range c.rows {
			w := &writes[j]
			args = append(args, w.gen, string(w.kind), strconvMS(w.ttl), w.fp, w.entry)
		}
		return finishScript.EvalSha(ctx, s, c.keys, args...)
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
		p.cfg.Logger.WarnContext(ctx, "writethrough: finishing writes failed; their keys are read from the database until Config.LockTTL passes", "error", err)
		return
	}
	for i, cmd := range cmds {
		reply, _ := cmd.(*redis.Cmd).Slice()
		rows := calls[i].rows
		if len(reply) != len(rows)+1 {
			p.stats.redisErrors.Add(1)
			continue
		}
		p.noteRepaired(reply[len(rows)])
		for k, j := range rows {
			if writes[j].kind == kindRelease {
				continue
			}
			if n, _ := reply[k].(int64); n == 1 {
				p.stats.writesThrough.Add(1)
			} else {
				p.stats.invalidations.Add(1)
			}
		}
	}
}

// finishCall is one finish script call: the rows of one shard (indexes
// into the writes being finished) and its keys, and whether it also ends
// the writer's table-level write on that shard.
type finishCall struct {
	rows  []int
	keys  []string
	table bool
}

// bump bumps the generation of every shard named by gens, in one round
// trip: every entry of those shards stops being served, and fills that
// began before are dropped.
func (p *Plugin) bump(ctx context.Context, gens []string) error {
	genMS := p.genTTLArg()
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(gens), func(ctx context.Context, s sink, i int) redis.Cmder {
		return bumpScript.EvalSha(ctx, s, []string{gens[i]}, genMS)
	})
	if err != nil {
		return err
	}
	p.stats.invalidations.Add(uint64(len(gens)))
	for _, c := range cmds {
		p.noteRepaired(c.(*redis.Cmd).Val())
	}
	return nil
}

// poison marks row keys contended ("C"), in one round trip: any entry or
// lease on them is replaced, so no fill that began before can land, and
// readers use the database until it expires; a fence stays and is marked,
// so that its writers drop the key instead of storing. Shard generation
// keys among them (see isGenKey) are bumped instead.
func (p *Plugin) poison(ctx context.Context, keys []string) error {
	contendedMS, lockMS, genMS := strconvMS(p.cfg.ContendedTTL), strconvMS(p.cfg.LockTTL), p.genTTLArg()
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(keys), func(ctx context.Context, s sink, i int) redis.Cmder {
		if isGenKey(keys[i]) {
			return bumpScript.EvalSha(ctx, s, []string{keys[i]}, genMS)
		}
		return poisonScript.EvalSha(ctx, s, []string{keys[i]}, contendedMS, lockMS)
	})
	if err != nil {
		return err
	}
	p.stats.invalidations.Add(uint64(len(keys)))
	for i, c := range cmds {
		if isGenKey(keys[i]) {
			p.noteRepaired(c.(*redis.Cmd).Val())
		}
	}
	return nil
}

// noteRepaired counts a script's report that a shard's generation key held
// something other than a generation and was replaced (see genLua).
func (p *Plugin) noteRepaired(flag any) {
	if n, _ := flag.(int64); n == 1 {
		p.stats.generationsRepaired.Add(1)
		p.cfg.Logger.Warn("writethrough: a shard's generation key held a value that is not a generation; replaced it")
	}
}

// genTTLArg is the generation TTL in milliseconds, as a script argument:
// twice the longest entry TTL this plugin can write (with jitter) and at
// least twice LockTTL, so that a generation outlives every entry and fence
// stored under it while it is refreshed (see genLua).
func (p *Plugin) genTTLArg() any { return p.genTTLms.Load() }

// noteEntryTTL raises the generation TTL to cover entries of lifetime d.
func (p *Plugin) noteEntryTTL(d time.Duration) {
	if p.cfg.TTLJitter > 0 {
		d += time.Duration(p.cfg.TTLJitter * float64(d))
	}
	want := 2 * max(d, p.cfg.LockTTL, p.cfg.NotFoundTTL)
	for {
		cur := p.genTTLms.Load()
		if cur != nil && parseMS(cur.(string)) >= want.Milliseconds() {
			return
		}
		if p.genTTLms.CompareAndSwap(cur, any(strconvMS(want))) {
			return
		}
	}
}
