package writethrough

import (
	"context"
	"errors"
	"reflect"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
)

// The read path. A pure primary-key lookup asks Redis once (one MGET of
// each key with its shard's generation and fence) and either assembles the
// result from the entries or, if any key missed, takes the leases it can
// (the lease script), runs the statement against the database once and
// fills the keys it holds leases on. Everything else goes to the database
// as if the plugin were not there.

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

// serve answers a lookup. The hit path is one MGET and nothing else: no
// script, no lease id, no flight, no timer (see snapshot). Only when some
// key is not a hit does the statement become a miss (serveMiss).
func (p *Plugin) serve(db *gorm.DB, lk *lookup) {
	ctx := db.Statement.Context
	n := len(lk.refs)
	if p.dirty.contains(lk.refs) {
		p.stats.bypasses.Add(1)
		callbacks.Query(db)
		return
	}

	// A statement of a few keys keeps its per-key state on the stack.
	var small struct {
		states  [4]readState
		entries [4][]byte
		values  [4]string
	}
	states, entries, values := small.states[:], small.entries[:], small.values[:]
	if n > len(small.states) {
		states, entries, values = make([]readState, n), make([][]byte, n), make([]string, n)
	}
	states, entries, values = states[:n], entries[:n], values[:n]
	if err := p.snapshot(ctx, lk.refs, lk.mi.fp, states, entries, values); err != nil {
		p.stats.redisErrors.Add(1)
		p.stats.bypasses.Add(1)
		callbacks.Query(db)
		return
	}
	if allServed(states) {
		if err := p.assemble(db, lk, states, entries); err == nil {
			p.stats.hits.Add(uint64(n))
			return
		}
		// An entry passed its checksum and still does not fit the model (a
		// Scanner or codec changed without the layout): reclaim the entries,
		// so that the database read replaces them instead of leaving them
		// to fail every read until they expire.
		p.stats.decodeErrors.Add(1)
		for i, s := range states {
			if s == stateHit {
				states[i] = stateCorrupt
			}
		}
	} else {
		for _, s := range states {
			if s == stateCorrupt {
				p.stats.decodeErrors.Add(1)
			}
		}
	}
	p.serveMiss(db, lk, states, entries, values)
}

// allServed reports whether every key is a hit or a cached absence.
func allServed(states []readState) bool {
	for _, s := range states {
		if s != stateHit && s != stateAbsent {
			return false
		}
	}
	return true
}

// serveMiss goes on with a lookup the hit read could not serve whole: it
// draws a lease id, asks the lease script about the keys the hit read
// could not decide, reclaims corrupt entries, waits briefly for fills in
// flight, and, if some key is still not served, reads the database once
// for the whole statement and fills the keys it holds leases on. values
// holds each key's row value as the hit read saw it.
func (p *Plugin) serveMiss(db *gorm.DB, lk *lookup, states []readState, entries [][]byte, values []string) {
	ctx := db.Statement.Context
	n := len(lk.refs)
	leaseID := p.newToken()
	fl := p.flights.start(leaseID)
	defer p.flights.end(fl)

	// The keys the hit read could not decide, in one round trip.
	var ask []int
	for i, s := range states {
		if s == stateAsk {
			ask = append(ask, i)
		}
	}
	if len(ask) > 0 {
		sub, again := lk.refs, values
		if len(ask) < n {
			sub, again = make([]keyRef, len(ask)), make([]string, len(ask))
			for j, i := range ask {
				sub[j] = lk.refs[i]
			}
		}
		if err := p.leaseKeys(ctx, sub, lk.mi.fpArg, leaseID, again); err != nil {
			p.stats.redisErrors.Add(1)
			for _, i := range ask {
				states[i] = stateBypass
			}
		} else {
			for j, i := range ask {
				values[i] = again[j]
				states[i], entries[i] = p.classify(ctx, lk, i, again[j], leaseID)
			}
		}
	}
	for i, s := range states {
		if s == stateCorrupt {
			states[i] = stateBypass
			if p.reclaim(ctx, lk.refs[i].key, values[i], leaseID) {
				states[i] = stateLeased
			}
		}
	}

	// Rows another statement of this process is filling: wait for its fill.
	for i, s := range states {
		if s == stateBypass && p.ownLease(values[i]) {
			if leaseIDOf(values[i]) == leaseID {
				// Our own lease: the client retried the script after its
				// first reply was lost, and the first run took the lease.
				states[i] = stateLeased
				continue
			}
			if e, absent, ok := p.flights.wait(ctx, lk.refs[i].key.row, leaseIDOf(values[i]), p.cfg.LeaseTTL); ok {
				states[i], entries[i] = stateHit, e
				if absent {
					states[i] = stateAbsent
				}
			}
		}
	}

	p.awaitForeignFills(ctx, lk, leaseID, states, entries, values)

	if allServed(states) {
		if err := p.assemble(db, lk, states, entries); err == nil {
			p.stats.hits.Add(uint64(n))
			return
		}
		p.stats.decodeErrors.Add(1)
		// As in serve: reclaim the entries that do not fit the model, if
		// they are still the ones read.
		for i, s := range states {
			if s == stateHit && p.reclaim(ctx, lk.refs[i].key, values[i], leaseID) {
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
			if s == stateBypass && isLease(replies[i]) && !p.ownLease(replies[i]) {
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
		sub := make([]keyRef, len(idx))
		for j, i := range idx {
			sub[j] = lk.refs[i]
		}
		again := make([]string, len(idx))
		if err := p.leaseKeys(ctx, sub, lk.mi.fpArg, leaseID, again); err != nil {
			p.stats.redisErrors.Add(1)
			return
		}
		for j, i := range idx {
			replies[i] = again[j]
			states[i], entries[i] = p.classify(ctx, lk, i, again[j], leaseID)
		}
	}
}

// classify interprets one reply of the lease script: an entry that cannot
// be used is counted, and its lease taken to replace it.
func (p *Plugin) classify(ctx context.Context, lk *lookup, i int, reply, leaseID string) (readState, []byte) {
	state, entry := parseRead(reply)
	switch state {
	case stateReplaced: // an entry of another layout, replaced
		p.stats.decodeErrors.Add(1)
		return stateLeased, nil
	case stateCorrupt:
		p.stats.decodeErrors.Add(1)
		if p.reclaim(ctx, lk.refs[i].key, reply, leaseID) {
			return stateLeased, nil
		}
		return stateBypass, nil
	}
	return state, entry
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
		if p.cfg.MaxEntryBytes > 0 && len(entries[i]) > p.cfg.MaxEntryBytes {
			// Written by a process with a larger limit, or by hand: not
			// decoded, and replaced like a corrupt entry.
			p.stats.oversized.Add(1)
			return errUndecodable
		}
		if err := p.cfg.Codec.Decode(entries[i], *buf); err != nil {
			return errUndecodable
		}
		if !mi.keyMatches(lk.refs[i].key.row, *buf) {
			// Another row's entry under this key (copied by hand, or by a
			// bug): served, it would answer First(&r, 1) with row 2.
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

	fills := make([]rowFill, 0, leased)
	for i, s := range states {
		if s != stateLeased {
			continue
		}
		f := rowFill{key: lk.refs[i].key, kind: kindDrop}
		if answered {
			if row, ok := found[f.key.row]; ok {
				if entry, err := p.encode(ctx, mi, row); err == nil {
					// Jitter per row: a warm-up must not expire all at once.
					f.kind, f.entry, f.ttl = kindValue, entry, p.ttl(mi.ttl)
				} else if !errors.Is(err, errEntryTooLarge) { // counted, expected
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
	err := p.storeFills(ctx, leaseID, mi.fp, fills, func(i int) {
		p.stats.fills.Add(1)
		fl.publish(fills[i].key.row, fills[i].entry, fills[i].kind == kindAbsent)
	})
	if err != nil {
		p.stats.redisErrors.Add(1)
	}
}
