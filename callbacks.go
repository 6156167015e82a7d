package writethrough

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The write path. For every row a statement touches:
//
//  1. fence: SET key F<token>, before the new state can be seen by others —
//     inside the transaction after the SQL, or (auto-commit) before the SQL;
//  2. read the row back as the database now has it (in the same
//     transaction), so defaults, triggers, precision and expressions are
//     what gets cached, never the caller's Go value;
//  3. finish after the outermost COMMIT: store the row if the key still
//     holds our fence, otherwise mark it contended.
//
// Fences and finishes are pipelined: two round trips per statement whatever
// its batch size. Writes whose rows cannot be named (an UPDATE by an
// arbitrary condition) fence and finish the whole table instead.

type writeOp int

const (
	opCreate writeOp = iota
	opUpdate
	opDelete
)

// writeKind is what a finish does with a fenced key.
type writeKind byte

const (
	kindValue   writeKind = 'V' // store the row
	kindAbsent  writeKind = 'N' // store "no such row"
	kindDrop    writeKind = 'D' // store nothing; the next read fills
	kindRelease writeKind = 'R' // rolled back: drop our fence, nothing else
)

// rowWrite is one fenced row and what its finish will do.
type rowWrite struct {
	key   rowKey
	gen   string // the shard's generation when the fence was taken
	kind  writeKind
	fp    string
	entry []byte
	ttl   time.Duration
}

// keyRef is a row key with the primary-key values it was built from, which
// are used to read the row back.
type keyRef struct {
	key  rowKey
	vals []any
}

const instanceState = "writethrough:state" // per-statement write state

// internalQuery marks, in its context, a query the plugin itself runs. It is
// a context value rather than a statement setting because reading a
// statement's Settings (a sync.Map) allocates on every statement.
type internalQuery struct{}

// isInternal reports whether stmt is a query the plugin itself runs.
func isInternal(stmt *gorm.Statement) bool {
	return stmt.Context != nil && stmt.Context.Value(internalQuery{}) != nil
}

// stmtState is a statement's write state, from its before- to its
// after-callback.
type stmtState struct {
	refs  []keyRef // rows named before the SQL ran (the model may change)
	known bool     // false: the rows cannot be named; the table is fenced
	// auto-commit (no transaction): fences are taken before the SQL
	auto   bool
	token  string
	fenced map[string]rowWrite
	tables []pendingTable
}

// pendingCommit is what a statement fenced inside a transaction that GORM
// began on a pool the plugin does not wrap (db.Connection); the
// after-commit callback finishes it.
type pendingCommit struct {
	token  string
	writes []rowWrite
	tables []pendingTable
	// keys whose fence failed (policy Available), invalidated once the
	// transaction has ended
	unfenced    []string
	unfencedErr error
}

const instancePending = "writethrough:pending"

func (p *Plugin) registerCallbacks(db *gorm.DB) error {
	cb := db.Callback()
	return errors.Join(
		cb.Query().Replace("gorm:query", p.query),
		cb.Raw().After("gorm:raw").Register("writethrough:raw", p.afterRaw),

		cb.Create().Before("gorm:create").Register("writethrough:before_create", p.beforeWrite(opCreate)),
		cb.Create().After("gorm:after_create").Before("gorm:commit_or_rollback_transaction").Register("writethrough:after_create", p.afterWrite(opCreate)),
		cb.Create().After("gorm:commit_or_rollback_transaction").Register("writethrough:after_commit_create", p.afterCommit),

		cb.Update().Before("gorm:update").Register("writethrough:before_update", p.beforeWrite(opUpdate)),
		cb.Update().After("gorm:after_update").Before("gorm:commit_or_rollback_transaction").Register("writethrough:after_update", p.afterWrite(opUpdate)),
		cb.Update().After("gorm:commit_or_rollback_transaction").Register("writethrough:after_commit_update", p.afterCommit),

		cb.Delete().Before("gorm:delete").Register("writethrough:before_delete", p.beforeWrite(opDelete)),
		cb.Delete().After("gorm:after_delete").Before("gorm:commit_or_rollback_transaction").Register("writethrough:after_delete", p.afterWrite(opDelete)),
		cb.Delete().After("gorm:commit_or_rollback_transaction").Register("writethrough:after_commit_delete", p.afterCommit),
	)
}

// writeModel returns the cache description of the statement's model, or
// nil when the statement writes nothing the plugin caches.
func (p *Plugin) writeModel(db *gorm.DB) *modelInfo {
	stmt := db.Statement
	if stmt.Schema == nil || db.DryRun {
		return nil
	}
	mi := p.model(stmt.Schema)
	if !mi.cached {
		return nil
	}
	if stmt.Table != stmt.Schema.Table {
		// Table("archive_2024"): rows of another table, which reads never
		// cache either.
		return nil
	}
	return mi
}

// beforeWrite names the rows a statement will change, before the SQL runs
// (an UPDATE may change the model's own key), and in auto-commit mode fences
// them before the change becomes visible. Inside a transaction nothing is
// visible before COMMIT, so the fence waits for the after-callback.
func (p *Plugin) beforeWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil {
			return
		}
		mi := p.writeModel(db)
		if mi == nil {
			return
		}
		st := &stmtState{}
		st.refs, st.known = p.affectedKeys(db, mi, op)
		if op == opDelete && st.known && !mi.intKeys {
			st.refs = dedupe(append(st.refs, p.realKeysBeforeDelete(db, mi, st.refs)...))
		}
		db.InstanceSet(instanceState, st)
		if db.Error != nil || inTransaction(db.Statement.ConnPool) {
			return
		}

		ctx := db.Statement.Context
		st.auto, st.token, st.fenced = true, p.newToken(), map[string]rowWrite{}
		if !st.known {
			st.tables = mi.allShards(p)
			if err := p.fenceTables(ctx, st.token, st.tables); err != nil {
				p.fenceFailed(db, nil, err, p.shardRowsOf(st.tables))
			}
			return
		}
		writes := make([]rowWrite, len(st.refs))
		for i, r := range st.refs {
			writes[i] = rowWrite{key: r.key, kind: kindDrop}
		}
		if err := p.fence(ctx, st.token, writes); err != nil {
			p.fenceFailed(db, nil, err, keysOf(writes))
			return
		}
		for _, w := range writes {
			st.fenced[w.key.row] = w
		}
	}
}

// afterWrite reads back the rows a statement changed, fences them (inside a
// transaction) and hands them to whoever finishes: the transaction's
// COMMIT, the after-commit callback, or (auto-commit) itself, right away.
func (p *Plugin) afterWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		mi := p.writeModel(db)
		v, _ := db.InstanceGet(instanceState)
		st, _ := v.(*stmtState)
		if mi == nil || st == nil {
			return
		}
		ctx := db.Statement.Context
		if db.Error != nil {
			if st.auto { // the auto-commit statement failed: nothing changed
				p.finishWrites(ctx, st.token, releaseAll(st.fenced), st.tables)
			}
			return
		}
		if st.auto && st.tables != nil {
			p.finishWrites(ctx, st.token, nil, st.tables)
			return
		}

		refs, known := st.refs, st.known
		if op == opCreate && known { // keys the database assigned are set now
			refs = dedupe(append(refs, p.modelKeys(ctx, mi, db.Statement.ReflectValue)...))
		}
		if known && op == opUpdate && p.changesKey(db, mi, refs) {
			known = false
		}
		if !known {
			if !st.auto {
				p.fenceInTx(db, nil, mi.allShards(p), nil)
				return
			}
			// Auto-commit, committed already: invalidate the table now (a
			// crash before this leaves the row fences to expire) and drop
			// the rows fenced before the SQL.
			tables := mi.allShards(p)
			if err := p.fenceTables(ctx, st.token, tables); err != nil {
				p.queueInvalidation(p.shardRowsOf(tables), err)
			}
			p.finishWrites(ctx, st.token, dropAll(st.fenced), tables)
			return
		}
		if len(refs) == 0 {
			return
		}
		readBack := func() []rowWrite {
			writes, err := p.readBack(db, mi, refs)
			if err != nil {
				// The rows could not be read back: publish nothing, only
				// fences that make the next read go to the database.
				p.cfg.Logger.WarnContext(ctx, "writethrough: reading back written rows failed; invalidating them", "table", mi.schema.Table, "error", err)
				for i := range writes {
					writes[i].kind = kindDrop
				}
			}
			return writes
		}
		if !st.auto {
			// Inside a transaction: fence, then read back. A row the
			// statement names but did not change (its WHERE matched
			// nothing) is not locked by this transaction, so another
			// writer may commit and finish it at any time. Read after our
			// fence, it is that writer's state if its finish came first;
			// a finish after our fence finds it and marks the key
			// contended, and so does ours.
			fenced := make([]rowWrite, len(refs))
			for i, r := range refs {
				fenced[i] = rowWrite{key: r.key, kind: kindDrop}
			}
			p.fenceInTx(db, fenced, nil, func() []rowWrite {
				writes := readBack()
				gens := make(map[string]string, len(fenced))
				for _, f := range fenced {
					gens[f.key.row] = f.gen
				}
				for i := range writes {
					writes[i].gen = gens[writes[i].key.row] // extras get theirs in fenceInTx
				}
				return writes
			})
			return
		}
		writes := readBack()

		// Auto-commit: the SQL has committed. Fence what was not fenced
		// before it (keys the database assigned, other spellings), then
		// finish.
		var late []int
		for i, w := range writes {
			if f, ok := st.fenced[w.key.row]; ok {
				writes[i].gen = f.gen
			} else {
				late = append(late, i)
			}
		}
		if len(late) > 0 {
			lw := make([]rowWrite, len(late))
			for j, i := range late {
				lw[j] = writes[i]
			}
			if err := p.fence(ctx, st.token, lw); err != nil {
				// Committed already: nothing to fail. Invalidate later.
				p.queueInvalidation(keysOf(lw), err)
				p.finishWrites(ctx, st.token, dropAll(st.fenced), nil)
				return
			}
			for j, i := range late {
				writes[i].gen = lw[j].gen
			}
		}
		p.finishWrites(ctx, st.token, writes, nil)
	}
}

// fenceInTx fences rows or table shards from inside a transaction and
// records them where the transaction's end will find them. values, if set,
// runs once the fences are in place and returns what the finish will
// publish for the fenced rows, in their order.
func (p *Plugin) fenceInTx(db *gorm.DB, writes []rowWrite, tables []pendingTable, values func() []rowWrite) {
	ctx := db.Statement.Context
	tx := txOf(db.Statement.ConnPool)
	token := ""
	if tx != nil {
		token = tx.token
	} else {
		token = p.newToken()
	}
	err := p.fence(ctx, token, writes)
	if err == nil {
		err = p.fenceTables(ctx, token, tables)
	}
	if err != nil {
		keys := keysOf(writes)
		if len(tables) > 0 {
			keys = append(keys, p.shardRowsOf(tables)...)
		}
		p.fenceFailed(db, tx, err, keys)
		return
	}
	if values != nil {
		fenced := make(map[string]bool, len(writes))
		for _, w := range writes {
			fenced[w.key.row] = true
		}
		writes = values()
		// The read-back may find rows under another spelling of their key
		// (a case-insensitive collation): fence those too.
		var extra []int
		for i, w := range writes {
			if !fenced[w.key.row] {
				extra = append(extra, i)
			}
		}
		if len(extra) > 0 {
			ew := make([]rowWrite, len(extra))
			for j, i := range extra {
				ew[j] = writes[i]
			}
			if err := p.fence(ctx, token, ew); err != nil {
				p.fenceFailed(db, tx, err, keysOf(ew))
				return
			}
			for j, i := range extra {
				writes[i].gen = ew[j].gen
			}
		}
	}
	switch {
	case tx != nil:
		tx.record(writes, tables)
	case startedTransaction(db):
		// GORM began this statement's transaction on a pool the plugin does
		// not wrap (db.Connection): finish after its COMMIT callback.
		db.InstanceSet(instancePending, &pendingCommit{token: token, writes: writes, tables: tables})
	default:
		// A transaction the plugin cannot see end (begun on a db.Connection).
		// The fences stay until LockTTL: readers use the database meanwhile.
		p.warnOnce.Do(func() {
			p.cfg.Logger.Warn("writethrough: write inside a transaction the plugin cannot track (begun on db.Connection?); its rows are read from the database until Config.LockTTL passes")
		})
	}
}

func startedTransaction(db *gorm.DB) bool {
	v, ok := db.InstanceGet("gorm:started_transaction")
	started, _ := v.(bool)
	return ok && started
}

// afterCommit finishes the writes of a statement whose own transaction the
// plugin could not wrap, once GORM has committed or rolled it back.
func (p *Plugin) afterCommit(db *gorm.DB) {
	v, _ := db.InstanceGet(instancePending)
	pc, _ := v.(*pendingCommit)
	if pc == nil {
		return
	}
	writes := pc.writes
	if db.Error != nil { // rolled back
		writes = make([]rowWrite, len(pc.writes))
		for i, w := range pc.writes {
			w.kind = kindRelease
			writes[i] = w
		}
	}
	p.finishWrites(context.WithoutCancel(db.Statement.Context), pc.token, writes, pc.tables)
	if len(pc.unfenced) > 0 {
		p.queueInvalidation(pc.unfenced, pc.unfencedErr)
	}
}

// fenceFailed applies the write policy to a fence that could not be taken.
func (p *Plugin) fenceFailed(db *gorm.DB, tx *txConn, err error, keys []string) {
	p.stats.redisErrors.Add(1)
	if p.cfg.OnRedisError == Strict {
		err = fmt.Errorf("writethrough: cannot fence the cache before writing (policy strict): %w", err)
		if tx != nil {
			tx.poison(err)
		}
		db.AddError(err)
		return
	}
	// Available: the write goes on unfenced, and its keys are invalidated
	// once Redis answers. Inside a transaction, not before it has ended: an
	// invalidation landing earlier could expire while the transaction is
	// still open, and a reader would then fill the old row for good.
	switch {
	case tx != nil:
		tx.deferInvalidation(keys, err)
	case inTransaction(db.Statement.ConnPool) && startedTransaction(db):
		db.InstanceSet(instancePending, &pendingCommit{unfenced: keys, unfencedErr: err})
	default:
		// Auto-commit (its after-callback fences again once the SQL ran),
		// or a transaction the plugin cannot see end.
		p.queueInvalidation(keys, err)
	}
}

// affectedKeys names the rows a statement writes. For a create they are the
// rows being inserted; for an update or delete, the model's own key when it
// is set (GORM then restricts the statement to it), else the primary-key
// values its WHERE clause pins down. It reports false when the rows cannot
// be named (the caller then works on the whole table).
func (p *Plugin) affectedKeys(db *gorm.DB, mi *modelInfo, op writeOp) ([]keyRef, bool) {
	stmt := db.Statement
	if op == opCreate {
		if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert && !supportsReturning(db) {
			// Without RETURNING an upsert that hit a conflict on another
			// unique column does not tell which row it updated.
			return nil, false
		}
		return p.modelKeys(stmt.Context, mi, stmt.ReflectValue), true
	}
	return p.namedKeys(db, mi)
}

// namedKeys names the rows an update or delete may touch: the model's own
// keys when set (GORM then restricts the statement to them), else the keys
// its WHERE clause pins down.
func (p *Plugin) namedKeys(db *gorm.DB, mi *modelInfo) ([]keyRef, bool) {
	stmt := db.Statement
	if refs := p.modelKeys(stmt.Context, mi, stmt.ReflectValue); len(refs) > 0 {
		return refs, true
	}
	if stmt.Model != nil && stmt.Model != stmt.Dest {
		if refs := p.modelKeys(stmt.Context, mi, reflect.ValueOf(stmt.Model)); len(refs) > 0 {
			return refs, true
		}
	}
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil, false
	}
	where, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, false
	}
	var pins pkPins
	if !pins.addAll(p, mi, stmt, where.Exprs, false) {
		return nil, false
	}
	refs, ok := pins.refs(p, mi)
	return refs, ok
}

// modelKeys returns the keys of the rows in rv (a struct or a slice of them)
// whose primary key is set.
func (p *Plugin) modelKeys(ctx context.Context, mi *modelInfo, rv reflect.Value) []keyRef {
	rv = reflect.Indirect(rv)
	var refs []keyRef
	add := func(row reflect.Value) {
		row = reflect.Indirect(row)
		if row.Kind() != reflect.Struct || row.Type() != mi.schema.ModelType {
			return
		}
		vals := make([]any, len(mi.pks))
		parts := make([]string, len(mi.pks))
		for i, f := range mi.pks {
			v, zero := f.ValueOf(ctx, row)
			if zero {
				return
			}
			part, ok := keyPart(f, v)
			if !ok {
				return
			}
			vals[i], parts[i] = v, part
		}
		refs = append(refs, keyRef{key: mi.key(p.cfg.Prefix, p.cfg.TableShards, parts), vals: vals})
	}
	switch rv.Kind() {
	case reflect.Struct:
		add(rv)
	case reflect.Slice, reflect.Array:
		for i := 0; i < rv.Len(); i++ {
			add(rv.Index(i))
		}
	}
	return dedupe(refs)
}

func dedupe(refs []keyRef) []keyRef {
	if len(refs) < 2 {
		return refs
	}
	seen := make(map[string]bool, len(refs))
	out := refs[:0]
	for _, r := range refs {
		if !seen[r.key.row] {
			seen[r.key.row] = true
			out = append(out, r)
		}
	}
	return out
}

// readBack reads the written rows as the database now has them, through the
// statement's own connection (so inside its transaction), and returns one
// write per key: the row's entry, or its absence.
func (p *Plugin) readBack(db *gorm.DB, mi *modelInfo, refs []keyRef) ([]rowWrite, error) {
	ctx := db.Statement.Context
	writes := make([]rowWrite, len(refs))
	have := make(map[string]bool, len(refs))
	for i, r := range refs {
		writes[i] = rowWrite{key: r.key, kind: kindAbsent, fp: mi.fp}
		have[r.key.row] = true
		if r.vals == nil {
			writes[i].kind = kindDrop // fenced by an earlier step, values unknown
		}
	}
	exprs := pkExprs(mi, refs)
	if len(exprs) == 0 {
		return writes, nil
	}
	found, err := p.loadRows(db, mi, exprs, false)
	if err != nil {
		return writes, err
	}
	// A row found under another spelling of its key (a case-insensitive
	// collation matched "abc" to the stored "ABC") is written under its
	// real key, which the fence that follows covers too.
	for k, row := range found {
		if !have[k] {
			key, _ := mi.keyOf(ctx, p, row)
			writes = append(writes, rowWrite{key: key, kind: kindAbsent, fp: mi.fp})
		}
	}
	for i := range writes {
		w := &writes[i]
		if w.kind == kindDrop {
			continue
		}
		row, ok := found[w.key.row]
		if !ok {
			if p.cfg.NotFoundTTL < 0 || !mi.intKeys {
				// A string key may match another spelling of itself (MySQL's
				// case-insensitive collations): its absence is not cached,
				// as on the read path (see fill).
				w.kind = kindDrop
			}
			w.ttl = p.cfg.NotFoundTTL
			continue
		}
		entry, err := p.encode(ctx, mi, row)
		if err != nil {
			p.cfg.Logger.WarnContext(ctx, "writethrough: cannot encode row; invalidating it", "table", mi.schema.Table, "error", err)
			w.kind = kindDrop
			continue
		}
		// Jitter per row: a batch must not expire all at once.
		w.kind, w.entry, w.ttl = kindValue, entry, p.ttl(mi.ttl)
	}
	return writes, nil
}

// loadRows reads the rows matching any of exprs through the statement's
// own connection, by their real key. lock adds FOR UPDATE where the dialect
// has it, so that rows read before a DELETE are the rows it deletes.
func (p *Plugin) loadRows(db *gorm.DB, mi *modelInfo, exprs []clause.Expression, lock bool) (map[string]reflect.Value, error) {
	ctx := db.Statement.Context
	rows := reflect.New(reflect.SliceOf(reflect.PointerTo(mi.schema.ModelType)))
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: context.WithValue(ctx, internalQuery{}, true)})
	q = q.Model(rows.Interface()).Where(clause.Or(exprs...))
	if lock && db.Dialector.Name() != "sqlite" {
		q = q.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate})
	}
	if err := q.Find(rows.Interface()).Error; err != nil {
		return nil, err
	}
	found := make(map[string]reflect.Value, rows.Elem().Len())
	for i := 0; i < rows.Elem().Len(); i++ {
		row := rows.Elem().Index(i)
		if k, ok := mi.keyOf(ctx, p, row); ok {
			found[k.row] = row
		}
	}
	return found, nil
}

// pkExprs turns keys into conditions on the primary key.
func pkExprs(mi *modelInfo, refs []keyRef) []clause.Expression {
	var exprs []clause.Expression
	for _, r := range refs {
		if r.vals == nil {
			continue
		}
		eqs := make([]clause.Expression, len(mi.pks))
		for j, f := range mi.pks {
			eqs[j] = clause.Eq{Column: clause.Column{Table: clause.CurrentTable, Name: f.DBName}, Value: r.vals[j]}
		}
		exprs = append(exprs, clause.And(eqs...))
	}
	return exprs
}

// realKeysBeforeDelete reads, before a DELETE on a model with string keys,
// the real keys of the rows it will remove: "abc" may match a stored "ABC"
// under a case-insensitive collation, and once the row is gone its real key
// cannot be learnt any more. The rows are locked (FOR UPDATE) where the
// dialect can, so that they are the rows the DELETE removes.
func (p *Plugin) realKeysBeforeDelete(db *gorm.DB, mi *modelInfo, refs []keyRef) []keyRef {
	exprs := pkExprs(mi, refs)
	if len(exprs) == 0 {
		return nil
	}
	found, err := p.loadRows(db, mi, exprs, true)
	if err != nil {
		db.AddError(fmt.Errorf("writethrough: reading the rows a delete removes: %w", err))
		return nil
	}
	var real []keyRef
	for _, row := range found {
		real = append(real, p.modelKeys(db.Statement.Context, mi, row)...)
	}
	return real
}

// changesKey reports whether an UPDATE moved a row to a primary key outside
// the keys it was fenced on (refs, named before the SQL). Nobody fenced the
// new key, so the caller falls back to the table. GORM drops the SET clause
// once the UPDATE ran, so this looks at what it leaves: the values given
// (a map or another struct) and the model, which GORM updates in place.
func (p *Plugin) changesKey(db *gorm.DB, mi *modelInfo, refs []keyRef) bool {
	stmt := db.Statement
	fenced := make(map[string]bool, len(refs))
	for _, r := range refs {
		fenced[r.key.row] = true
	}
	outside := func(rv reflect.Value) bool {
		for _, r := range p.modelKeys(stmt.Context, mi, rv) {
			if !fenced[r.key.row] {
				return true
			}
		}
		return false
	}
	if m, ok := stmt.Dest.(map[string]any); ok {
		for _, f := range mi.pks {
			v, ok := m[f.DBName]
			if !ok {
				v, ok = m[f.Name]
			}
			if !ok {
				continue
			}
			part, ok := keyPart(f, v)
			if !ok || len(mi.pks) > 1 || !fenced[mi.key(p.cfg.Prefix, p.cfg.TableShards, []string{part}).row] {
				return true
			}
		}
	} else if stmt.Dest != nil && stmt.Dest != stmt.Model && outside(reflect.ValueOf(stmt.Dest)) {
		return true
	}
	return outside(stmt.ReflectValue)
}

// dropAll turns fenced keys into drops.
func dropAll(fenced map[string]rowWrite) []rowWrite {
	out := make([]rowWrite, 0, len(fenced))
	for _, w := range fenced {
		w.kind = kindDrop
		out = append(out, w)
	}
	return out
}

// encode turns a row into a sealed entry.
func (p *Plugin) encode(ctx context.Context, mi *modelInfo, row reflect.Value) ([]byte, error) {
	buf := getValues(len(mi.fields))
	defer putValues(buf)
	values, err := mi.values(ctx, row, (*buf)[:0])
	if err != nil {
		return nil, err
	}
	b, err := p.cfg.Codec.Append(make([]byte, 0, 64+16*len(values)), values)
	if err != nil {
		return nil, err
	}
	return sealEntry(b), nil
}

// fence takes the writer's fence on every key, pipelined, and records each
// shard's generation as it was when the fence landed.
func (p *Plugin) fence(ctx context.Context, token string, writes []rowWrite) error {
	if len(writes) == 0 {
		return nil
	}
	lockMS := strconvMS(p.cfg.LockTTL)
	var cmds []redis.Cmder
	err := p.withTimeout(ctx, p.cfg.WriteTimeout, func(ctx context.Context) error {
		var err error
		cmds, err = p.pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, w := range writes {
				fenceScript.EvalSha(ctx, pipe, []string{w.key.row, w.key.gen}, token, lockMS)
			}
			return nil
		})
		return err
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
func (p *Plugin) fenceTables(ctx context.Context, token string, tables []pendingTable) error {
	if len(tables) == 0 {
		return nil
	}
	lockMS := strconvMS(p.cfg.LockTTL)
	err := p.withTimeout(ctx, p.cfg.WriteTimeout, func(ctx context.Context) error {
		_, err := p.pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, t := range tables {
				tableFenceScript.EvalSha(ctx, pipe, []string{t.gen, t.fence}, token, lockMS)
			}
			return nil
		})
		return err
	})
	if err == nil {
		p.stats.invalidations.Add(uint64(len(tables)))
	}
	return err
}

// finishWrites publishes or releases fenced rows and ends table-level
// writes, in one round trip. A failure leaves the fences to expire, which is
// safe: readers use the database until then.
func (p *Plugin) finishWrites(ctx context.Context, token string, writes []rowWrite, tables []pendingTable) {
	if len(writes) == 0 && len(tables) == 0 {
		return
	}
	if p.hooks != nil && p.hooks.beforeFinish != nil && !p.hooks.beforeFinish() {
		return // a test pretends the process died here
	}
	lockMS := strconvMS(p.cfg.ContendedTTL)
	var cmds []redis.Cmder
	err := p.withTimeout(ctx, p.cfg.WriteTimeout, func(ctx context.Context) error {
		var err error
		cmds, err = p.pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, w := range writes {
				if w.kind == kindRelease {
					releaseScript.EvalSha(ctx, pipe, []string{w.key.row}, token)
					continue
				}
				finishScript.EvalSha(ctx, pipe, []string{w.key.row, w.key.gen, w.key.fence},
					token, w.gen, string(w.kind), strconvMS(w.ttl), w.fp, w.entry, lockMS)
			}
			for _, t := range tables {
				tableFinishScript.EvalSha(ctx, pipe, []string{t.gen, t.fence}, token)
			}
			return nil
		})
		return err
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

// releaseAll turns fenced keys into releases.
func releaseAll(fenced map[string]rowWrite) []rowWrite {
	out := make([]rowWrite, 0, len(fenced))
	for _, w := range fenced {
		w.kind = kindRelease
		out = append(out, w)
	}
	return out
}

func keysOf(writes []rowWrite) []string {
	out := make([]string, len(writes))
	for i, w := range writes {
		out[i] = w.key.row
	}
	return out
}

// allShards lists the table's shards, for a table-level write.
func (mi *modelInfo) allShards(p *Plugin) []pendingTable {
	out := make([]pendingTable, p.cfg.TableShards)
	for i := range out {
		out[i].gen, out[i].fence = mi.shardKeys(p.cfg.Prefix, i)
	}
	return out
}

// allShardRows names the generation keys of every shard; the invalidation
// queue bumps them when a table-level fence could not be taken.
func (mi *modelInfo) allShardRows(p *Plugin) []string {
	return p.shardRowsOf(mi.allShards(p))
}

func (p *Plugin) shardRowsOf(tables []pendingTable) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = t.gen
	}
	return out
}

// supportsReturning reports whether the dialect can return rows from
// INSERT/UPDATE/DELETE.
func supportsReturning(db *gorm.DB) bool {
	switch db.Dialector.Name() {
	case "postgres", "sqlite":
		return true
	}
	return false
}

// afterRaw follows savepoints, which GORM creates and rolls back through Exec.
func (p *Plugin) afterRaw(db *gorm.DB) {
	if db.Error != nil {
		return
	}
	tx := txOf(db.Statement.ConnPool)
	if tx == nil {
		return
	}
	sql := strings.TrimSpace(db.Statement.SQL.String())
	if name, ok := cutPrefixFold(sql, "ROLLBACK TO SAVEPOINT "); ok {
		tx.savepointRolledBack(unquoteIdent(name))
	} else if name, ok := cutPrefixFold(sql, "SAVEPOINT "); ok {
		tx.savepointCreated(unquoteIdent(name))
	}
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return strings.TrimSpace(s[len(prefix):]), true
	}
	return "", false
}

func unquoteIdent(s string) string {
	return strings.Trim(strings.TrimSuffix(s, ";"), "`\"")
}
