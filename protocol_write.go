package writethrough

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The write side of the protocol (docs/protocol.md, section 9): fence,
// finish, bump and poison senders.

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
