package writethrough

import (
	"context"
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

// readScript serves a read. It returns the entry ("V..." or "N") when it is
// current, "G" when the key was empty or stale and the caller now holds the
// lease ARGV[1], "X" likewise but it replaced an entry of another layout,
// "B" while a table-level write is in flight, and anything else (a lease, a
// fence, "C") when the caller must read the database without filling.
//
// KEYS: row, gen, fence. ARGV: lease id, lease TTL ms, fingerprint.
var readScript = redis.NewScript(genLua + `
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

var allScripts = []*redis.Script{readScript, reclaimScript, fillScript, finishScript, releaseScript, tableFinishScript, fenceScript, tableFenceScript, bumpScript}

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
// costs a hit allocations (and go-redis keeps pipelines on connections of
// their own). Writes always pipeline.
func (p *Plugin) roundTrip(ctx context.Context, d time.Duration, alone bool, n int, cmd func(ctx context.Context, s sink, i int) redis.Cmder) ([]redis.Cmder, error) {
	if n == 0 {
		return nil, nil
	}
	var cmds []redis.Cmder
	err := p.withTimeout(ctx, d, func(ctx context.Context) error {
		var err error
		cmds, err = p.issue(ctx, alone, n, cmd)
		if !hasNoScript(cmds, err) {
			return err
		}
		for _, s := range allScripts {
			if err := s.Load(ctx, p.rdb).Err(); err != nil {
				return err
			}
		}
		cmds, err = p.issue(ctx, alone, n, cmd)
		return err
	})
	if err != nil {
		return nil, err
	}
	return cmds, nil
}

// issue sends the commands once (see roundTrip).
func (p *Plugin) issue(ctx context.Context, alone bool, n int, cmd func(ctx context.Context, s sink, i int) redis.Cmder) ([]redis.Cmder, error) {
	if alone && n == 1 {
		c := cmd(ctx, p.rdb, 0)
		return []redis.Cmder{c}, c.Err()
	}
	return p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := 0; i < n; i++ {
			cmd(ctx, pipe, i)
		}
		return nil
	})
}

// withTimeout runs fn bounded by d (none when d <= 0). go-redis ends a call
// at its context's deadline only with Options.ContextTimeoutEnabled;
// otherwise a Redis that accepted the connection and stopped answering
// holds the call for the client's own read timeout (seconds). Then fn runs
// aside and the caller stops waiting for it at the deadline. The client's
// pool, whose waits do end at the deadline, bounds how many such calls can
// be left behind. Every call the plugin makes is safe to land late: fences
// expire, and the scripts check the lease or fence they were given.
func (p *Plugin) withTimeout(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	if d <= 0 {
		return fn(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if p.ctxDeadlines {
		return fn(ctx)
	}
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
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

// readState is what the read script said about one key.
type readState byte

const (
	stateBypass   readState = iota // someone is writing or filling: use the database
	stateHit                       // entry holds the row
	stateAbsent                    // the row does not exist
	stateLeased                    // we hold the lease: fill after reading the database
	stateReplaced                  // leased, replacing an entry of another layout ("X")
	stateCorrupt                   // a current entry that does not open (see openEntry)
)

// parseRead interprets one reply of the read script. A hit's entry is the
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

// readKeys runs the read script for every key in one round trip, bounded by
// Config.ReadTimeout, and puts the replies in replies. fp is the model's
// fingerprint argument (modelInfo.fpArg).
func (p *Plugin) readKeys(ctx context.Context, refs []keyRef, fp any, leaseID string, replies []string) error {
	// Arguments every key of the statement shares are boxed once.
	lease, leaseMS := any(leaseID), p.leaseMSArg
	cmds, err := p.roundTrip(ctx, p.cfg.ReadTimeout, true, len(refs), func(ctx context.Context, s sink, i int) redis.Cmder {
		return s.Do(ctx, readArgs(refs[i].key, lease, leaseMS, fp)...)
	})
	if err != nil {
		return err
	}
	for i, c := range cmds {
		replies[i], _ = c.(*redis.Cmd).Text()
	}
	return nil
}

// readScriptSHA is the read script's hash, boxed once.
var readScriptSHA any = readScript.Hash()

// readArgs is the EVALSHA command of the read script for one key. It is
// what readScript.EvalSha sends, built with the arguments shared by a
// statement's keys (lease id, lease TTL, fingerprint) and by a shard's
// (generation and fence keys) boxed once instead of per key: a hit on one
// key then allocates the argument list and the row key's box, not nine.
func readArgs(k rowKey, lease, leaseMS, fp any) []any {
	if k.shard == nil {
		return []any{"evalsha", readScriptSHA, 3, k.row, k.gen, k.fence, lease, leaseMS, fp}
	}
	return []any{"evalsha", readScriptSHA, 3, k.row, k.shard.genArg, k.shard.fenceArg, lease, leaseMS, fp}
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

// fenceAll fences rows (as fence) and table shards (as fenceTables) in one
// round trip: a write whose foreign-key actions reach other tables fences
// them with its own rows.
func (p *Plugin) fenceAll(ctx context.Context, token string, writes []rowWrite, tables []tableShard) error {
	if len(tables) == 0 {
		return p.fence(ctx, token, writes)
	}
	if len(writes) == 0 {
		return p.fenceTables(ctx, token, tables)
	}
	lockMS := strconvMS(p.cfg.LockTTL)
	cmds, err := p.roundTrip(ctx, p.cfg.WriteTimeout, false, len(writes)+len(tables), func(ctx context.Context, s sink, i int) redis.Cmder {
		if i < len(writes) {
			return fenceScript.EvalSha(ctx, s, []string{writes[i].key.row, writes[i].key.gen}, token, lockMS)
		}
		t := tables[i-len(writes)]
		return tableFenceScript.EvalSha(ctx, s, []string{t.gen, t.fence}, token, lockMS)
	})
	if err != nil {
		return err
	}
	for i := range writes {
		g, err := cmds[i].(*redis.Cmd).Text()
		if err != nil {
			return err
		}
		writes[i].gen = g
	}
	p.stats.invalidations.Add(uint64(len(tables)))
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
