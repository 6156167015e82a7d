package writethrough

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
)

// The read path. A pure primary-key lookup asks Redis once (one script per
// key, pipelined) and either assembles the result from the entries or, if
// any key missed, runs the statement against the database once and fills
// the keys it holds leases on. Everything else goes to the database as if
// the plugin were not there.

// query replaces gorm:query.
func (p *Plugin) query(db *gorm.DB) {
	if db.Error != nil {
		return
	}
	var lk lookup
	if !p.planLookup(db, &lk) {
		if !isInternal(db.Statement) {
			p.stats.bypasses.Add(1)
		}
		callbacks.Query(db)
		return
	}
	p.serve(db, &lk)
}

// readState is what Redis said about one key.
type readState byte

const (
	stateBypass readState = iota // someone is writing or filling: use the database
	stateHit                     // entry holds the row
	stateAbsent                  // the row does not exist
	stateLeased                  // we hold the lease: fill after reading the database
)

func (p *Plugin) serve(db *gorm.DB, lk *lookup) {
	ctx := db.Statement.Context
	n := len(lk.refs)
	if p.dirty.contains(lk.refs) {
		p.stats.bypasses.Add(1)
		callbacks.Query(db)
		return
	}

	leaseID := p.newToken()
	fl := p.flights.start(leaseID)
	defer p.flights.end(fl)

	// A statement of a few keys keeps its per-key state on the stack.
	var small struct {
		states  [4]readState
		entries [4][]byte
		replies [4]string
	}
	states, entries, replies := small.states[:], small.entries[:], small.replies[:]
	if n > len(small.states) {
		states, entries, replies = make([]readState, n), make([][]byte, n), make([]string, n)
	}
	states, entries, replies = states[:n], entries[:n], replies[:n]
	if err := p.readKeys(ctx, lk, leaseID, replies); err != nil {
		p.stats.redisErrors.Add(1)
		p.stats.bypasses.Add(1)
		callbacks.Query(db)
		return
	}
	for i, r := range replies {
		states[i], entries[i] = p.classify(ctx, lk, i, r, leaseID)
	}

	// Rows another statement of this process is filling: wait for its fill.
	for i, s := range states {
		if s == stateBypass && strings.HasPrefix(replies[i], "L"+p.token) {
			if leaseIDOf(replies[i]) == leaseID {
				// Our own lease: the client retried the script after its
				// first reply was lost, and the first run took the lease.
				states[i] = stateLeased
				continue
			}
			if e, absent, ok := p.flights.wait(ctx, lk.refs[i].key.row, leaseIDOf(replies[i]), p.cfg.LeaseTTL); ok {
				states[i], entries[i] = stateHit, e
				if absent {
					states[i] = stateAbsent
				}
			}
		}
	}

	p.awaitForeignFills(ctx, lk, leaseID, states, entries, replies)

	all := true
	for _, s := range states {
		if s != stateHit && s != stateAbsent {
			all = false
			break
		}
	}
	if all {
		if err := p.assemble(db, lk, states, entries); err == nil {
			p.stats.hits.Add(uint64(n))
			return
		}
		p.stats.decodeErrors.Add(1)
		// An entry passed its checksum and still does not fit the model (a
		// Scanner or codec changed without the layout): take the lease on
		// the entries, if they are still the ones read, so that the
		// database read below replaces them instead of leaving them to
		// fail every read until they expire.
		for i, s := range states {
			if s == stateHit && p.reclaim(ctx, lk.refs[i].key, replies[i], leaseID) {
				states[i] = stateLeased
			}
		}
	}

	// Some key missed: one database query for the whole statement.
	for _, s := range states {
		switch s {
		case stateLeased:
			p.stats.misses.Add(1)
		case stateBypass:
			p.stats.bypasses.Add(1)
		}
	}
	if p.hooks != nil && p.hooks.beforeQuery != nil {
		p.hooks.beforeQuery(lk.refs[0].key.row)
	}
	callbacks.Query(db)
	p.fill(db, lk, states, leaseID, fl)
}

// awaitForeignFills gives keys that another process is filling (its lease
// is on them) a short while to be filled, re-reading them with backoff for
// at most min(ReadTimeout, LeaseTTL), so that a stampede spread over many
// processes costs about one database query instead of one per reader of
// every process but the lease holder's. A re-read that finds the entry is
// as fresh as any hit (it happens after this read started); one that finds
// the key empty takes the lease itself. Keys still leased at the end go to
// the database, as before.
func (p *Plugin) awaitForeignFills(ctx context.Context, lk *lookup, leaseID string, states []readState, entries [][]byte, replies []string) {
	budget := min(p.cfg.ReadTimeout, p.cfg.LeaseTTL)
	if budget <= 0 {
		return
	}
	var idx []int
	foreign := func() []int {
		idx = idx[:0]
		for i, s := range states {
			if s == stateBypass && len(replies[i]) > 0 && replies[i][0] == 'L' && !strings.HasPrefix(replies[i], "L"+p.token) {
				idx = append(idx, i)
			}
		}
		return idx
	}
	if len(foreign()) == 0 {
		return
	}
	deadline := time.Now().Add(budget)
	delay := time.Millisecond
	for len(foreign()) > 0 && time.Now().Add(delay).Before(deadline) {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay *= 2
		sub := &lookup{mi: lk.mi, refs: make([]keyRef, len(idx))}
		for j, i := range idx {
			sub.refs[j] = lk.refs[i]
		}
		again := make([]string, len(idx))
		if err := p.readKeys(ctx, sub, leaseID, again); err != nil {
			p.stats.redisErrors.Add(1)
			return
		}
		for j, i := range idx {
			replies[i] = again[j]
			states[i], entries[i] = p.classify(ctx, lk, i, again[j], leaseID)
		}
	}
}

// readKeys runs the read script for every key of the lookup in one round
// trip, bounded by Config.ReadTimeout, and puts the replies in replies.
func (p *Plugin) readKeys(ctx context.Context, lk *lookup, leaseID string, replies []string) error {
	// Arguments every key of the statement shares are boxed once.
	lease, leaseMS := any(leaseID), p.leaseMSArg
	refs, fp := lk.refs, lk.mi.fpArg // not lk: the closure would move it to the heap
	return p.withReadTimeout(ctx, func(ctx context.Context) error {
		if len(refs) == 1 {
			args := readArgs(refs[0].key, lease, leaseMS, fp)
			cmd := p.rdb.Do(ctx, args...)
			if isNoScript(cmd.Err()) { // a restarted or flushed server
				if err := readScript.Load(ctx, p.rdb).Err(); err != nil {
					return err
				}
				cmd = p.rdb.Do(ctx, args...)
			}
			r, err := cmd.Text()
			replies[0] = r
			return err
		}
		cmds, err := p.pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, r := range refs {
				pipe.Do(ctx, readArgs(r.key, lease, leaseMS, fp)...)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, c := range cmds {
			replies[i], _ = c.(*redis.Cmd).Text()
		}
		return nil
	})
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

// withReadTimeout runs fn bounded by Config.ReadTimeout (see withTimeout).
func (p *Plugin) withReadTimeout(ctx context.Context, fn func(context.Context) error) error {
	return p.withTimeout(ctx, p.cfg.ReadTimeout, fn)
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

// classify interprets one reply of the read script.
func (p *Plugin) classify(ctx context.Context, lk *lookup, i int, reply, leaseID string) (readState, []byte) {
	switch {
	case reply == "G":
		return stateLeased, nil
	case reply == "X":
		p.stats.decodeErrors.Add(1) // an entry of another layout, replaced
		return stateLeased, nil
	case reply == "N":
		return stateAbsent, nil
	case len(reply) > 0 && reply[0] == 'V':
		bar := strings.IndexByte(reply, '|')
		if bar < 0 || len(reply) < bar+1+fingerprintLen {
			break
		}
		entry, err := openEntry(stringBytes(reply[bar+1+fingerprintLen:]))
		if err == nil {
			return stateHit, entry
		}
	default:
		return stateBypass, nil
	}
	// A corrupt entry: count it, and take the lease to replace it.
	p.stats.decodeErrors.Add(1)
	if p.reclaim(ctx, lk.refs[i].key, reply, leaseID) {
		return stateLeased, nil
	}
	return stateBypass, nil
}

// reclaim takes the lease on a key holding an entry that cannot be decoded.
func (p *Plugin) reclaim(ctx context.Context, k rowKey, entry, leaseID string) bool {
	var r string
	err := p.withReadTimeout(ctx, func(ctx context.Context) error {
		var err error
		r, err = reclaimScript.Run(ctx, p.rdb, []string{k.row, k.gen, k.fence}, entry, leaseID, strconvMS(p.cfg.LeaseTTL)).Text()
		return err
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
		return false
	}
	return r == "G"
}

// errUndecodable makes serve fall back to the database.
var errUndecodable = errors.New("writethrough: cached entry does not decode")

// assemble builds the statement's result from cache entries exactly as
// gorm.Scan would from rows: the same destination handling, RowsAffected
// and ErrRecordNotFound. Entries are decoded before the destination is
// touched, so a bad entry leaves it as it was.
func (p *Plugin) assemble(db *gorm.DB, lk *lookup, states []readState, entries [][]byte) error {
	stmt := db.Statement
	ctx := stmt.Context
	mi := lk.mi
	var one [1]*[]any
	rows := one[:0]
	if !lk.one && !lk.limit && len(states) > 1 {
		rows = make([]*[]any, 0, len(states))
	}
	defer func() {
		for _, r := range rows {
			putValues(r)
		}
	}()
	for i, s := range states {
		if s != stateHit {
			continue
		}
		buf := getValues(len(mi.fields))
		rows = append(rows, buf)
		*buf = (*buf)[:len(mi.fields)]
		if err := p.cfg.Codec.Decode(entries[i], *buf); err != nil {
			return errUndecodable
		}
		if lk.one || lk.limit {
			break
		}
	}

	rv := stmt.ReflectValue
	if lk.one {
		if len(rows) == 1 {
			if err := mi.set(ctx, rv, *rows[0]); err != nil {
				return errUndecodable
			}
		}
	} else {
		// Like gorm.Scan: the caller's slice is reused when its capacity
		// holds the rows; each element starts from zero, as a scanned row
		// does. Rows are set in place rather than built and appended.
		isPtr := rv.Type().Elem().Kind() == reflect.Pointer
		out := rv
		if n := len(rows); out.Cap() == 0 || out.Cap() < n {
			out = reflect.MakeSlice(rv.Type(), n, n)
		} else {
			out.SetLen(n)
		}
		for i, vals := range rows {
			elem := out.Index(i)
			if isPtr {
				ptr := reflect.New(mi.schema.ModelType)
				if err := mi.set(ctx, ptr, *vals); err != nil {
					return errUndecodable
				}
				elem.Set(ptr)
				continue
			}
			elem.SetZero()
			if err := mi.set(ctx, elem, *vals); err != nil {
				return errUndecodable
			}
		}
		rv.Set(out)
	}
	db.RowsAffected = int64(len(rows))
	if stmt.Result != nil {
		stmt.Result.RowsAffected = db.RowsAffected
	}
	if len(rows) == 0 && stmt.RaiseErrorOnNotFound {
		db.AddError(gorm.ErrRecordNotFound)
	}
	return nil
}

// fill stores what the database returned for the keys we hold leases on.
// A key missing from the answer is cached as absent only when the query
// would have returned it (no LIMIT cut it off) and the key is an integer:
// a string key can match another spelling of itself in the database
// (case-insensitive collations), which a later insert would not fence.
func (p *Plugin) fill(db *gorm.DB, lk *lookup, states []readState, leaseID string, fl *flight) {
	leased := 0
	for _, s := range states {
		if s == stateLeased {
			leased++
		}
	}
	if leased == 0 {
		return
	}
	ctx := db.Statement.Context
	mi := lk.mi
	// First, Take and Last report an empty answer as ErrRecordNotFound: the
	// query worked, and said the row does not exist. (Compared exactly: any
	// other error is joined to it.)
	answered := db.Error == nil || db.Error == gorm.ErrRecordNotFound
	found := map[string]reflect.Value{}
	if answered {
		rv := reflect.Indirect(db.Statement.ReflectValue)
		switch {
		case lk.one && db.RowsAffected > 0:
			if k, ok := mi.keyOf(ctx, p, rv); ok {
				found[k.row] = rv
			}
		case !lk.one:
			for i := 0; i < rv.Len(); i++ {
				row := reflect.Indirect(rv.Index(i))
				if k, ok := mi.keyOf(ctx, p, row); ok {
					found[k.row] = row
				}
			}
		}
	}

	type fillArgs struct {
		key   rowKey
		kind  writeKind
		ttl   time.Duration
		entry []byte
	}
	fills := make([]fillArgs, 0, leased)
	for i, s := range states {
		if s != stateLeased {
			continue
		}
		f := fillArgs{key: lk.refs[i].key, kind: kindDrop}
		if answered {
			if row, ok := found[f.key.row]; ok {
				if entry, err := p.encode(ctx, mi, row); err == nil {
					// Jitter per row: a warm-up must not expire all at once.
					f.kind, f.entry, f.ttl = kindValue, entry, p.ttl(mi.ttl)
				} else {
					p.cfg.Logger.WarnContext(ctx, "writethrough: cannot encode row; not caching it", "table", mi.schema.Table, "error", err)
				}
			} else if lk.complete && mi.intKeys && p.cfg.NotFoundTTL > 0 {
				f.kind, f.ttl = kindAbsent, p.cfg.NotFoundTTL
			}
		}
		fills = append(fills, f)
	}
	if p.hooks != nil && p.hooks.beforeFill != nil {
		p.hooks.beforeFill(fills[0].key.row)
	}

	// The fill is part of the read: bounded by ReadTimeout like the rest of
	// it (a fill that times out leaves the lease to expire, which is safe).
	fillTimeout := p.cfg.WriteTimeout
	if p.cfg.ReadTimeout > 0 {
		fillTimeout = p.cfg.ReadTimeout
	}
	var cmds []redis.Cmder
	err := p.withTimeout(context.WithoutCancel(ctx), fillTimeout, func(wctx context.Context) error {
		var err error
		cmds, err = p.pipelined(wctx, func(pipe redis.Pipeliner) error {
			for _, f := range fills {
				fillScript.EvalSha(wctx, pipe, []string{f.key.row, f.key.gen, f.key.fence},
					leaseID, string(f.kind), strconvMS(f.ttl), mi.fp, f.entry)
			}
			return nil
		})
		return err
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
		return
	}
	for i, c := range cmds {
		if n, _ := c.(*redis.Cmd).Int(); n == 1 {
			p.stats.fills.Add(1)
			fl.publish(fills[i].key.row, fills[i].entry, fills[i].kind == kindAbsent)
		}
	}
}

// stringBytes views a string's bytes without copying. The codec contract
// forbids retaining or modifying them.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// leaseIDOf extracts the lease id from a lease reply "L<id>|<gen>".
func leaseIDOf(reply string) string {
	if i := strings.IndexByte(reply, '|'); i > 1 {
		return reply[1:i]
	}
	return ""
}

// values buffers are pooled: the hit path decodes into them and GORM's
// setters copy out.
var valuesPool = sync.Pool{New: func() any { s := make([]any, 0, 16); return &s }}

func getValues(n int) *[]any {
	b := valuesPool.Get().(*[]any)
	if cap(*b) < n {
		*b = make([]any, 0, n)
	}
	return b
}

func putValues(b *[]any) {
	clear((*b)[:cap(*b)])
	*b = (*b)[:0]
	valuesPool.Put(b)
}
