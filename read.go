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
	lk := p.planLookup(db)
	if lk == nil {
		if _, internal := db.Statement.Settings.Load(settingInternal); !internal {
			p.stats.bypasses.Add(1)
		}
		callbacks.Query(db)
		return
	}
	p.serve(db, lk)
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

	states := make([]readState, n)
	entries := make([][]byte, n)
	replies, err := p.readKeys(ctx, lk, leaseID)
	if err != nil {
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

// readKeys runs the read script for every key of the lookup in one round
// trip, bounded by Config.ReadTimeout.
func (p *Plugin) readKeys(ctx context.Context, lk *lookup, leaseID string) ([]string, error) {
	if p.cfg.ReadTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.ReadTimeout)
		defer cancel()
	}
	leaseMS := strconvMS(p.cfg.LeaseTTL)
	replies := make([]string, len(lk.refs))
	if len(lk.refs) == 1 {
		k := lk.refs[0].key
		r, err := bounded(p, ctx, func() (string, error) {
			return readScript.Run(ctx, p.rdb, []string{k.row, k.gen, k.fence}, leaseID, leaseMS, lk.mi.fp).Text()
		})
		replies[0] = r
		return replies, err
	}
	cmds, err := p.pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, r := range lk.refs {
			readScript.EvalSha(ctx, pipe, []string{r.key.row, r.key.gen, r.key.fence}, leaseID, leaseMS, lk.mi.fp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, c := range cmds {
		replies[i], _ = c.(*redis.Cmd).Text()
	}
	return replies, nil
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
	if p.cfg.ReadTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.ReadTimeout)
		defer cancel()
	}
	r, err := bounded(p, ctx, func() (string, error) {
		return reclaimScript.Run(ctx, p.rdb, []string{k.row, k.gen, k.fence}, entry, leaseID, strconvMS(p.cfg.LeaseTTL)).Text()
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
	var rows []*[]any
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
		elemType := rv.Type().Elem()
		isPtr := elemType.Kind() == reflect.Pointer
		out := rv
		if out.Cap() == 0 {
			out = reflect.MakeSlice(rv.Type(), 0, len(rows))
		} else {
			out.SetLen(0)
		}
		for _, vals := range rows {
			elem := reflect.New(mi.schema.ModelType)
			if err := mi.set(ctx, elem, *vals); err != nil {
				return errUndecodable
			}
			if !isPtr {
				elem = elem.Elem()
			}
			out = reflect.Append(out, elem)
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
	found := map[string]reflect.Value{}
	if db.Error == nil {
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
	ttl := p.ttl(mi.ttl)
	for i, s := range states {
		if s != stateLeased {
			continue
		}
		f := fillArgs{key: lk.refs[i].key, kind: kindDrop}
		if db.Error == nil {
			if row, ok := found[f.key.row]; ok {
				if entry, err := p.encode(ctx, mi, row); err == nil {
					f.kind, f.entry, f.ttl = kindValue, entry, ttl
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
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fillTimeout)
	defer cancel()
	cmds, err := p.pipelined(wctx, func(pipe redis.Pipeliner) error {
		for _, f := range fills {
			fillScript.EvalSha(wctx, pipe, []string{f.key.row, f.key.gen, f.key.fence},
				leaseID, string(f.kind), strconvMS(f.ttl), mi.fp, f.entry)
		}
		return nil
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
