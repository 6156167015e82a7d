package writethrough

import (
	"context"
	"errors"
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
// (never set, or evicted under an allkeys-* policy) must not read as a value
// an older entry could carry, or that entry would be served again; it is
// set to the server's clock in microseconds, which is beyond any value the
// lost counter reached unless it was bumped more than once a microsecond.
const genLua = `
local function gen(k)
  local g = redis.call('GET', k)
  if g then return g end
  local t = redis.call('TIME')
  g = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', k, g)
  return g
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
// KEYS: row, gen, fence. ARGV: lease id, lease TTL ms, fingerprint.
var leaseScript = redis.NewScript(genLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'B' end
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
redis.call('SET', KEYS[1], 'L' .. ARGV[1] .. '|' .. g, 'PX', ARGV[2])
return granted
`)

// reclaimScript takes the lease on a key whose entry the caller could not
// decode, provided the entry is still exactly that one. It returns "G" or
// "B" as leaseScript does.
//
// KEYS: row, gen, fence. ARGV: the undecodable entry, lease id, lease TTL ms.
var reclaimScript = redis.NewScript(genLua + `
if redis.call('EXISTS', KEYS[3]) == 1 then return 'B' end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'B' end
local g = gen(KEYS[2])
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
var fillScript = redis.NewScript(genLua + `
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'L' then return 0 end
local p = string.find(v, '|', 2, true)
if not p or string.sub(v, 2, p - 1) ~= ARGV[1] then return 0 end
local g = string.sub(v, p + 1)
if ARGV[2] == 'D' or redis.call('EXISTS', KEYS[3]) == 1 or gen(KEYS[2]) ~= g then
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
var finishScript = redis.NewScript(genLua + `
if redis.call('GET', KEYS[1]) ~= 'F' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'C', 'PX', ARGV[7])
  return 0
end
if ARGV[3] == 'D' or redis.call('EXISTS', KEYS[3]) == 1 or gen(KEYS[2]) ~= ARGV[2] then
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
var tableFinishScript = redis.NewScript(genLua + `
gen(KEYS[1])
redis.call('INCR', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
`)

// fenceScript takes a writer's fence on a row and returns the shard's
// generation as it was when the fence landed.
//
// KEYS: row, gen. ARGV: token, lock TTL ms.
var fenceScript = redis.NewScript(fenceScriptSrc)

const fenceScriptSrc = genLua + `
redis.call('SET', KEYS[1], 'F' .. ARGV[1], 'PX', ARGV[2])
return gen(KEYS[2])
`

// tableFenceScript starts a table-level write on one shard: the generation
// is bumped (no entry of the shard is served any more) and the fence key
// stops fills until the write finishes or the fence expires.
//
// KEYS: gen, fence. ARGV: token, lock TTL ms.
var tableFenceScript = redis.NewScript(tableFenceScriptSrc)

const tableFenceScriptSrc = genLua + `
gen(KEYS[1])
redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
`

// bumpScript bumps a shard's generation: every entry of the shard stops
// being served, and fills that began before are dropped.
//
// KEYS: gen.
var bumpScript = redis.NewScript(genLua + `
gen(KEYS[1])
return redis.call('INCR', KEYS[1])
`)

var allScripts = []*redis.Script{leaseScript, reclaimScript, fillScript, finishScript, releaseScript, tableFinishScript, fenceScript, tableFenceScript, bumpScript}

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
	lease, leaseMS := any(leaseID), p.leaseMSArg
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, len(refs), func(ctx context.Context, s sink, i int) redis.Cmder {
		return s.Do(ctx, leaseArgs(refs[i].key, lease, leaseMS, fp)...)
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
// statement's keys (lease id, lease TTL, fingerprint) and by a shard's
// (generation and fence keys) boxed once instead of per key.
func leaseArgs(k rowKey, lease, leaseMS, fp any) []any {
	if k.shard == nil {
		return []any{"evalsha", leaseScriptSHA, 3, k.row, k.gen, k.fence, lease, leaseMS, fp}
	}
	return []any{"evalsha", leaseScriptSHA, 3, k.row, k.shard.genArg, k.shard.fenceArg, lease, leaseMS, fp}
}

// reclaim takes the lease on a key holding an entry that cannot be decoded.
func (p *Plugin) reclaim(ctx context.Context, k rowKey, entry, leaseID string) bool {
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, 1, func(ctx context.Context, s sink, _ int) redis.Cmder {
		return reclaimScript.EvalSha(ctx, s, []string{k.row, k.gen, k.fence}, entry, leaseID, strconvMS(p.cfg.LeaseTTL))
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
	cmds, err := p.roundTrip(context.WithoutCancel(ctx), timeout, false, len(fills), func(ctx context.Context, s sink, i int) redis.Cmder {
		f := &fills[i]
		return fillScript.EvalSha(ctx, s, []string{f.key.row, f.key.gen, f.key.fence},
			leaseID, string(f.kind), strconvMS(f.ttl), fp, f.entry)
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

// fence takes the writer's fence on every key in one round trip, and
// records each shard's generation as it was when the fence landed.
func (p *Plugin) fence(ctx context.Context, token string, writes []rowWrite) error {
	lockMS := strconvMS(p.cfg.LockTTL)
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(writes), func(ctx context.Context, s sink, i int) redis.Cmder {
		return fenceScript.EvalSha(ctx, s, []string{writes[i].key.row, writes[i].key.gen}, token, lockMS)
	})
	if err != nil {
		return err
	}
	for i, c := range cmds {
		g, err := c.(*redis.Cmd).Text()
		if err != nil {
			return err
		}
		writes[i].gen = g
	}
	return nil
}

// fenceTables starts a table-level write on every shard: the generation is
// bumped (every entry of the shard stops being served) and the fence key
// stops fills until the write finishes or the fence expires.
func (p *Plugin) fenceTables(ctx context.Context, token string, tables []tableShard) error {
	lockMS := strconvMS(p.cfg.LockTTL)
	_, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(tables), func(ctx context.Context, s sink, i int) redis.Cmder {
		return tableFenceScript.EvalSha(ctx, s, []string{tables[i].gen, tables[i].fence}, token, lockMS)
	})
	if err == nil {
		p.stats.invalidations.Add(uint64(len(tables)))
	}
	return err
}

// finishWrites publishes or releases fenced rows and ends table-level
// writes, in one round trip. A failure leaves the fences to expire, which is
// safe: readers use the database until then.
func (p *Plugin) finishWrites(ctx context.Context, token string, writes []rowWrite, tables []tableShard) {
	if len(writes) == 0 && len(tables) == 0 {
		return
	}
	if p.hooks != nil && p.hooks.beforeFinish != nil && !p.hooks.beforeFinish() {
		return // a test pretends the process died here
	}
	lockMS := strconvMS(p.cfg.ContendedTTL)
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(writes)+len(tables), func(ctx context.Context, s sink, i int) redis.Cmder {
		if i >= len(writes) {
			t := tables[i-len(writes)]
			return tableFinishScript.EvalSha(ctx, s, []string{t.gen, t.fence}, token)
		}
		w := &writes[i]
		if w.kind == kindRelease {
			return releaseScript.EvalSha(ctx, s, []string{w.key.row}, token)
		}
		return finishScript.EvalSha(ctx, s, []string{w.key.row, w.key.gen, w.key.fence},
			token, w.gen, string(w.kind), strconvMS(w.ttl), w.fp, w.entry, lockMS)
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
		p.cfg.Logger.WarnContext(ctx, "writethrough: finishing writes failed; their keys are read from the database until Config.LockTTL passes", "error", err)
		return
	}
	for i, w := range writes {
		if w.kind == kindRelease {
			continue
		}
		n, _ := cmds[i].(*redis.Cmd).Int()
		if n == 1 {
			p.stats.writesThrough.Add(1)
		} else {
			p.stats.invalidations.Add(1)
		}
	}
}

// bump bumps the generation of every shard named by gens, in one round
// trip: every entry of those shards stops being served, and fills that
// began before are dropped.
func (p *Plugin) bump(ctx context.Context, gens []string) error {
	_, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(gens), func(ctx context.Context, s sink, i int) redis.Cmder {
		return bumpScript.EvalSha(ctx, s, []string{gens[i]})
	})
	if err == nil {
		p.stats.invalidations.Add(uint64(len(gens)))
	}
	return err
}

// poison marks row keys contended ("C"), in one round trip: any entry,
// lease or fence on them is replaced, so no fill that began before can
// land, and readers use the database until it expires. Shard generation
// keys among them (see isGenKey) are bumped instead.
func (p *Plugin) poison(ctx context.Context, keys []string) error {
	_, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(keys), func(ctx context.Context, s sink, i int) redis.Cmder {
		if isGenKey(keys[i]) {
			return bumpScript.EvalSha(ctx, s, []string{keys[i]})
		}
		return s.Set(ctx, keys[i], "C", p.cfg.ContendedTTL)
	})
	if err == nil {
		p.stats.invalidations.Add(uint64(len(keys)))
	}
	return err
}
