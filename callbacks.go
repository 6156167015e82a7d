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

// internalQuery marks, in its context, a query the plugin itself runs. It is
// a context value rather than a statement setting because reading a
// statement's Settings (a sync.Map) allocates on every statement.
type internalQuery struct{}

// isInternal reports whether stmt is a query the plugin itself runs.
func isInternal(stmt *gorm.Statement) bool {
	return stmt.Context != nil && stmt.Context.Value(internalQuery{}) != nil
}

const (
	instanceState   = "writethrough:state"   // per-statement write state
	instanceUnnamed = "writethrough:unnamed" // the statement's rows cannot be named
	instanceSpells  = "writethrough:spells"  // stored spellings of the keys a delete names
	instanceKeys    = "writethrough:keys"    // the keys an update or delete names, before its SQL
)

// namedKeys are the rows an update or delete names, taken before its SQL
// runs: afterwards GORM has changed the model (assigned values, RETURNING
// rows scanned into it), which no longer says which rows were written.
type namedKeys struct {
	refs  []keyRef
	known bool
}

// stmtState carries an auto-commit statement's fences from its before- to
// its after-callback.
type stmtState struct {
	token  string
	fenced map[string]rowWrite // keys fenced before the SQL
	tables []pendingTable      // table shards fenced
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
		// Raw writes (raw.go): db.Exec, and db.Raw read through Find or Rows.
		cb.Raw().Before("gorm:raw").Register("writethrough:before_raw_write", p.beforeRaw(chainRaw)),
		cb.Raw().After("gorm:raw").Register("writethrough:after_raw_write", p.afterRawWrite),
		cb.Query().Before("gorm:query").Register("writethrough:before_raw_query", p.beforeRaw(chainQuery)),
		cb.Query().After("gorm:query").Register("writethrough:after_raw_query", p.afterRawWrite),
		cb.Row().Before("gorm:row").Register("writethrough:before_raw_row", p.beforeRaw(chainRow)),

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
	if !ownTable(stmt) {
		// Table("archive_2024"): rows of another table, which reads never
		// cache either (see otherTables).
		return nil
	}
	return mi
}

// beforeWrite fences, in auto-commit mode, the keys a statement will change,
// before the change becomes visible. Inside a transaction nothing is visible
// before COMMIT, so the fence waits for the after-callback. In both modes it
// notes, before GORM changes the model, whether the statement's rows can be
// named from it at all (see unnamed).
func (p *Plugin) beforeWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil {
			return
		}
		mi := p.writeModel(db)
		if mi != nil && (op == opUpdate && p.movesKey(db.Statement, mi) || op == opCreate && !p.keysReported(db, mi)) {
			db.InstanceSet(instanceUnnamed, true)
		}
		if mi != nil && op == opDelete && !mi.intKeys {
			p.noteSpellings(db, mi)
		}
		if mi != nil && op != opCreate {
			refs, known := p.affectedKeys(db, mi, op)
			db.InstanceSet(instanceKeys, namedKeys{refs: withSpellings(db, refs), known: known})
		}
		if inTransaction(db.Statement.ConnPool) {
			return
		}
		var other []pendingTable
		if mi == nil {
			if other = p.otherTables(db); other == nil {
				return
			}
		}
		ctx := db.Statement.Context
		st := &stmtState{token: p.newToken(), fenced: map[string]rowWrite{}}
		db.InstanceSet(instanceState, st)
		var refs []keyRef
		known := false
		if mi != nil {
			refs, known = p.statementKeys(db, mi, op)
		}
		if !known {
			st.tables = other
			if mi != nil {
				st.tables = mi.allShards(p)
			}
			if err := p.fenceTables(ctx, st.token, st.tables); err != nil {
				p.fenceFailed(db, nil, err, p.shardRowsOf(st.tables))
			}
			return
		}
		writes := make([]rowWrite, len(refs))
		for i, r := range refs {
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
		var other []pendingTable
		if mi == nil {
			if other = p.otherTables(db); other == nil {
				return
			}
		}
		ctx := db.Statement.Context
		st, _ := db.InstanceGet(instanceState)
		auto, _ := st.(*stmtState)
		if db.Error != nil {
			p.afterFailedWrite(db, mi, other, op, auto)
			return
		}
		if auto != nil && auto.tables != nil {
			p.finishWrites(ctx, auto.token, nil, auto.tables)
			return
		}
		if other != nil { // in a transaction
			p.fenceInTx(db, nil, other)
			return
		}

		refs, known := p.statementKeys(db, mi, op)
		if auto != nil {
			refs = mergeFenced(refs, auto.fenced)
		}
		if !known {
			p.fenceTableInTx(db, mi)
			return
		}
		if len(refs) == 0 {
			return
		}
		if auto != nil && !p.fenceLate(ctx, auto, refs) {
			return
		}
		writes, err := p.readBack(db, mi, refs)
		if err != nil {
			// The row could not be read back: publish nothing, only fences
			// that make the next read go to the database.
			p.cfg.Logger.WarnContext(ctx, "writethrough: reading back written rows failed; invalidating them", "table", mi.schema.Table, "error", err)
			for i := range writes {
				writes[i].kind = kindDrop
			}
		}
		if auto == nil && !wroteAll(db, op, refs) {
			// In a transaction, only rows the statement itself changed are
			// locked by it until COMMIT; see wroteAll.
			for i := range writes {
				writes[i].kind = kindDrop
			}
		}

		if auto != nil {
			// Auto-commit: every key is fenced (before the SQL, or by
			// fenceLate before the read-back) except rows the read-back
			// found under another spelling, which are dropped; finish them.
			var extra []keyRef
			for _, w := range writes {
				if _, ok := auto.fenced[w.key.row]; !ok {
					extra = append(extra, keyRef{key: w.key})
				}
			}
			if len(extra) > 0 && !p.fenceLate(ctx, auto, extra) {
				return
			}
			for i, w := range writes {
				writes[i].gen = auto.fenced[w.key.row].gen
			}
			p.finishWrites(ctx, auto.token, writes, nil)
			return
		}

		p.fenceInTx(db, writes, nil)
	}
}

// afterFailedWrite handles a statement that returned an error. If its SQL
// never ran, nothing changed: auto-commit fences are released. But the
// error may come after the SQL (an AfterUpdate hook, a failed scan of
// RETURNING rows): in auto-commit the change has then committed, and in a
// transaction the caller may commit anyway, ignoring the error. So once the
// SQL was built, every key the statement may have changed is fenced (in
// auto-commit also keys the database assigned) and dropped, never written.
func (p *Plugin) afterFailedWrite(db *gorm.DB, mi *modelInfo, other []pendingTable, op writeOp, auto *stmtState) {
	ctx := db.Statement.Context
	ran := db.Statement.SQL.Len() > 0
	if auto != nil {
		if !ran {
			p.finishWrites(ctx, auto.token, releaseAll(auto.fenced), auto.tables)
			return
		}
		if mi != nil && auto.tables == nil {
			if refs, known := p.statementKeys(db, mi, op); known {
				p.fenceLate(ctx, auto, refs)
			}
		}
		drops := make([]rowWrite, 0, len(auto.fenced))
		for _, w := range auto.fenced {
			w.kind = kindDrop
			drops = append(drops, w)
		}
		p.finishWrites(ctx, auto.token, drops, auto.tables)
		return
	}
	if !ran {
		return
	}
	if other != nil {
		p.fenceInTx(db, nil, other)
		return
	}
	refs, known := p.statementKeys(db, mi, op)
	if !known {
		p.fenceTableInTx(db, mi)
		return
	}
	drops := make([]rowWrite, len(refs))
	for i, r := range refs {
		drops[i] = rowWrite{key: r.key, kind: kindDrop}
	}
	p.fenceInTx(db, drops, nil)
}

// fenceLate fences, after an auto-commit statement ran, the keys of refs
// that could not be fenced before it (the database assigned them, or an
// upsert found another row), and records them with the others. It runs
// before the rows are read back: a writer that commits one of those rows
// after this statement either committed before the read-back, which then
// sees its state, or fences after this fence, so this finish finds the key
// taken and leaves it contended. Fenced after the read-back instead, the
// older state read back would overwrite the newer one the other writer had
// already published. It reports false when the fence failed.
func (p *Plugin) fenceLate(ctx context.Context, auto *stmtState, refs []keyRef) bool {
	var late []rowWrite
	for _, r := range refs {
		if _, ok := auto.fenced[r.key.row]; !ok {
			late = append(late, rowWrite{key: r.key, kind: kindDrop})
		}
	}
	if len(late) == 0 {
		return true
	}
	if err := p.fence(ctx, auto.token, late); err != nil {
		// Committed already: nothing to fail. Invalidate later.
		p.queueInvalidation(keysOf(late), err)
		return false
	}
	for _, w := range late {
		auto.fenced[w.key.row] = w
	}
	return true
}

// wroteAll reports whether a statement inside a transaction changed every
// row of refs itself. Only then are the values it read back safe to
// publish: it holds those rows' locks until COMMIT, so no other writer can
// commit a newer state first. A row it named but left alone (its condition
// excluded it, ON CONFLICT DO NOTHING found it) was read back from the
// transaction's snapshot, which under REPEATABLE READ may predate a state
// another writer has committed and cached since, and even under READ
// COMMITTED such a writer may commit between the read-back and the fence.
// Those keys are fenced and dropped, never written. (Auto-commit statements
// fence before the SQL and read back after COMMIT, so this does not apply.)
func wroteAll(db *gorm.DB, op writeOp, refs []keyRef) bool {
	if op == opCreate {
		c, upsert := db.Statement.Clauses["ON CONFLICT"]
		if !upsert {
			return true // every row was inserted by this statement
		}
		oc, ok := c.Expression.(clause.OnConflict)
		// DO UPDATE without a WHERE inserts or updates (and locks) every row.
		return ok && !oc.DoNothing && len(oc.Where.Exprs) == 0 && (oc.UpdateAll || len(oc.DoUpdates) > 0)
	}
	n := 0
	for _, r := range refs {
		if r.vals != nil {
			n++
		}
	}
	// Each named key matches at most one row, so as many affected rows as
	// keys means every one was changed. (MySQL counts changed rows, not
	// matched ones: a row updated to the values it had is dropped too.)
	return db.RowsAffected >= int64(n)
}

// fenceTableInTx fences every shard of the table for a write whose rows
// cannot be named.
func (p *Plugin) fenceTableInTx(db *gorm.DB, mi *modelInfo) {
	p.fenceInTx(db, nil, mi.allShards(p))
}

// fenceInTx fences rows or table shards from inside a transaction and
// records them where the transaction's end will find them.
func (p *Plugin) fenceInTx(db *gorm.DB, writes []rowWrite, tables []pendingTable) {
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
	if unnamed, _ := db.InstanceGet(instanceUnnamed); unnamed == true {
		return nil, false
	}
	if op == opCreate {
		if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert && !supportsReturning(db) {
			// Without RETURNING an upsert that hit a conflict on another
			// unique column does not tell which row it updated.
			return nil, false
		}
		return p.modelKeys(stmt.Context, mi, stmt.ReflectValue), true
	}
	if c, ok := stmt.Clauses["WHERE"]; ok {
		// GORM appends the model's key to the conditions with AND, which
		// binds tighter than an OR before it: Where(a).Or(b) on a model
		// with key 7 runs "a OR b AND id = 7" and may change rows other
		// than 7. The model's key bounds nothing then.
		if where, ok := c.Expression.(clause.Where); ok && joinsWithOr(where.Exprs) {
			return nil, false
		}
	}
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

// noteSpellings looks up, before a delete by string keys runs, how the
// database spells the keys it will match. MySQL compares strings without
// regard to case or trailing spaces, so Delete(&T{Code: "abc"}) removes the
// row stored as "ABC", whose key the statement does not name and whose row
// no read-back can find afterwards. The keys found are fenced with the
// named ones (withSpellings); if the lookup fails, the delete fences the
// table. It costs one indexed query per delete by string key.
func (p *Plugin) noteSpellings(db *gorm.DB, mi *modelInfo) {
	refs, known := p.affectedKeys(db, mi, opDelete)
	if !known || len(refs) == 0 {
		return
	}
	ctx := db.Statement.Context
	named := make(map[string]bool, len(refs))
	var keys []any
	for _, r := range refs {
		named[r.key.row] = true
		if len(mi.pks) == 1 {
			keys = append(keys, r.vals[0])
		} else {
			keys = append(keys, r.vals)
		}
	}
	cols := make([]clause.Column, len(mi.pks))
	names := make([]string, len(mi.pks))
	for j, f := range mi.pks {
		cols[j] = clause.Column{Table: clause.CurrentTable, Name: f.DBName}
		names[j] = f.DBName
	}
	var column any = cols
	if len(cols) == 1 {
		column = cols[0]
	}
	rows := reflect.New(reflect.SliceOf(reflect.PointerTo(mi.schema.ModelType)))
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: context.WithValue(ctx, internalQuery{}, true)}).Unscoped()
	if err := q.Model(rows.Interface()).Select(names).Where(clause.IN{Column: column, Values: keys}).Find(rows.Interface()).Error; err != nil {
		p.cfg.Logger.WarnContext(ctx, "writethrough: looking up the keys a delete matches failed; invalidating the table", "table", mi.schema.Table, "error", err)
		db.InstanceSet(instanceUnnamed, true)
		return
	}
	var extra []keyRef
	for i := 0; i < rows.Elem().Len(); i++ {
		if k, ok := mi.keyOf(ctx, p, rows.Elem().Index(i)); ok && !named[k.row] {
			named[k.row] = true
			extra = append(extra, keyRef{key: k})
		}
	}
	if len(extra) > 0 {
		db.InstanceSet(instanceSpells, extra)
	}
}

// statementKeys returns the rows a statement writes: for an update or a
// delete those named before its SQL ran, for a create those it inserted.
func (p *Plugin) statementKeys(db *gorm.DB, mi *modelInfo, op writeOp) ([]keyRef, bool) {
	if op != opCreate {
		if v, ok := db.InstanceGet(instanceKeys); ok {
			k := v.(namedKeys)
			return append([]keyRef(nil), k.refs...), k.known
		}
	}
	refs, known := p.affectedKeys(db, mi, op)
	return withSpellings(db, refs), known
}

// withSpellings adds to refs the keys noteSpellings found.
func withSpellings(db *gorm.DB, refs []keyRef) []keyRef {
	v, ok := db.InstanceGet(instanceSpells)
	extra, _ := v.([]keyRef)
	if !ok || len(extra) == 0 || len(refs) == 0 {
		return refs
	}
	return dedupe(append(refs, extra...))
}

// movesKey reports whether an update may set a primary-key column to
// something other than the model's own key (Update("id", 5), Updates of a
// map or of another struct with a key). The row then leaves its key for
// another, and GORM copies the new value into the model, so neither key can
// be named from the statement afterwards; the write works on the table.
func (p *Plugin) movesKey(stmt *gorm.Statement, mi *modelInfo) bool {
	ctx := stmt.Context
	assigned := map[int]any{} // primary field index -> value assigned
	if c, ok := stmt.Clauses["SET"]; ok {
		set, ok := c.Expression.(clause.Set)
		if !ok {
			return true
		}
		for _, a := range set {
			if i := pkIndex(mi, stmt, a.Column.Name); i >= 0 {
				assigned[i] = a.Value
			}
		}
	}
	dest := stmt.Dest
	if m, ok := dest.(*map[string]any); ok && m != nil {
		dest = *m
	}
	if m, ok := dest.(map[string]any); ok {
		// GORM maps these keys to fields by name or column name, as
		// LookUpField does, not by the SQL rules pkIndex follows.
		for k, v := range m {
			if f := mi.schema.LookUpField(k); f != nil && f.PrimaryKey {
				for i, pk := range mi.pks {
					if pk == f {
						assigned[i] = v
					}
				}
			}
		}
	} else if dv := reflect.Indirect(reflect.ValueOf(dest)); dv.Kind() == reflect.Struct && (dest != stmt.Model || !dv.CanAddr()) {
		// A struct other than the model: GORM assigns its non-zero key.
		ds := &gorm.Statement{DB: stmt.DB}
		if dv.Type() != mi.schema.ModelType {
			if ds.Parse(dest) != nil {
				return true
			}
		} else {
			ds.Schema = mi.schema
		}
		for i, f := range mi.pks {
			if df := ds.Schema.LookUpField(f.DBName); df != nil {
				if v, zero := df.ValueOf(ctx, dv); !zero {
					assigned[i] = v
				}
			}
		}
	}
	if len(assigned) == 0 {
		return false
	}
	// Assigning the model's own key (Model(&t).Updates(T{ID: t.ID, ...}))
	// moves nothing.
	mv := reflect.Indirect(reflect.ValueOf(stmt.Model))
	if mv.Kind() != reflect.Struct || mv.Type() != mi.schema.ModelType {
		return true
	}
	for i, v := range assigned {
		own, zero := mi.pks[i].ValueOf(ctx, mv)
		if zero {
			return true
		}
		a, ok := keyPart(mi.pks[i], v)
		b, ok2 := keyPart(mi.pks[i], own)
		if !ok || !ok2 || a != b {
			return true
		}
	}
	return false
}

// keysReported reports, before a create runs, whether GORM will tell the
// key of every row it changes. It does not for maps (a generated key lands
// in the map under a name of GORM's choosing, if at all), nor when some
// rows get their key from the database and GORM must guess which key is
// whose: without RETURNING it numbers them on from LAST_INSERT_ID, which a
// caller-chosen key above the counter breaks, and under ON CONFLICT DO
// NOTHING it skips every struct that has a defaulted field set and hands
// its returned key to the next one. Such a create fences the table.
func (p *Plugin) keysReported(db *gorm.DB, mi *modelInfo) bool {
	stmt := db.Statement
	if c, ok := stmt.Clauses["INSERT"]; ok {
		// INSERT IGNORE / OR IGNORE skip rows without saying which (and
		// shift the keys numbered from LAST_INSERT_ID); OR REPLACE deletes
		// whatever row conflicts, on any unique column.
		if ins, _ := c.Expression.(clause.Insert); ins.Modifier != "" {
			return false
		}
	}
	rv := reflect.Indirect(stmt.ReflectValue)
	switch rv.Kind() {
	case reflect.Struct:
		return true
	case reflect.Slice, reflect.Array:
	default:
		return false
	}
	assigned, chosen := 0, 0
	for i := 0; i < rv.Len(); i++ {
		row := reflect.Indirect(rv.Index(i))
		if row.Kind() != reflect.Struct {
			return false
		}
		if _, ok := mi.keyOf(stmt.Context, p, row); ok {
			chosen++
		} else {
			assigned++
		}
	}
	if assigned == 0 {
		return true
	}
	if c, ok := stmt.Clauses["ON CONFLICT"]; ok {
		if oc, _ := c.Expression.(clause.OnConflict); oc.DoNothing {
			return false
		}
	}
	return chosen == 0 || supportsReturning(db)
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

// mergeFenced adds to refs the keys fenced before an auto-commit SQL ran.
func mergeFenced(refs []keyRef, fenced map[string]rowWrite) []keyRef {
	if len(fenced) == 0 {
		return refs
	}
	have := make(map[string]bool, len(refs))
	for _, r := range refs {
		have[r.key.row] = true
	}
	for k, w := range fenced {
		if !have[k] {
			refs = append(refs, keyRef{key: w.key})
		}
	}
	return refs
}

// readBackChunk bounds the keys one read-back query names.
const readBackChunk = 1000

// readBack reads the written rows as the database now has them, through the
// statement's own connection (so inside its transaction), and returns one
// write per key: the row's entry, or its absence.
func (p *Plugin) readBack(db *gorm.DB, mi *modelInfo, refs []keyRef) ([]rowWrite, error) {
	ctx := db.Statement.Context
	writes := make([]rowWrite, len(refs))
	var keys []any // one value per key, or one []any per composite key
	for i, r := range refs {
		writes[i] = rowWrite{key: r.key, kind: kindAbsent, fp: mi.fp}
		if r.vals == nil {
			writes[i].kind = kindDrop // fenced by an earlier step, values unknown
			continue
		}
		if len(mi.pks) == 1 {
			keys = append(keys, r.vals[0])
		} else {
			keys = append(keys, r.vals)
		}
	}
	if len(keys) == 0 {
		return writes, nil
	}
	// The keys go in one IN list per readBackChunk of them: an OR of one
	// condition per key hits SQLite's expression depth limit (1000) on big
	// batches, and every database bounds the parameters of one statement.
	var column any
	if len(mi.pks) == 1 {
		column = clause.Column{Table: clause.CurrentTable, Name: mi.pks[0].DBName}
	} else {
		cols := make([]clause.Column, len(mi.pks))
		for j, f := range mi.pks {
			cols[j] = clause.Column{Table: clause.CurrentTable, Name: f.DBName}
		}
		column = cols
	}
	found := make(map[string]reflect.Value, len(keys))
	foundKeys := make(map[string]rowKey, len(keys))
	for start := 0; start < len(keys); start += readBackChunk {
		chunk := keys[start:min(start+readBackChunk, len(keys))]
		rows := reflect.New(reflect.SliceOf(reflect.PointerTo(mi.schema.ModelType)))
		q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: context.WithValue(ctx, internalQuery{}, true)})
		if err := q.Model(rows.Interface()).Where(clause.IN{Column: column, Values: chunk}).Find(rows.Interface()).Error; err != nil {
			return writes, err
		}
		for i := 0; i < rows.Elem().Len(); i++ {
			row := rows.Elem().Index(i)
			if k, ok := mi.keyOf(ctx, p, row); ok {
				found[k.row] = row
				foundKeys[k.row] = k
			}
		}
	}
	named := make(map[string]bool, len(writes))
	for i := range writes {
		w := &writes[i]
		named[w.key.row] = true
		if w.kind == kindDrop {
			continue
		}
		row, ok := found[w.key.row]
		if !ok {
			// An absence is cached for integer keys only: a string key may
			// match a row spelled otherwise (see below), and an insert of
			// such a row would fence its own key, not this one.
			if p.cfg.NotFoundTTL < 0 || !mi.intKeys {
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
		w.kind, w.entry, w.ttl = kindValue, entry, p.ttl(mi.ttl) // jitter per row
	}
	// Rows the database matched under another spelling of a key (MySQL
	// compares strings regardless of case and trailing spaces) were
	// changed by the statement too: their own keys are fenced and dropped.
	for k, key := range foundKeys {
		if !named[k] {
			writes = append(writes, rowWrite{key: key, kind: kindDrop, fp: mi.fp})
		}
	}
	return writes, nil
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

// shardRowsOf names the generation keys of table shards; the invalidation
// queue bumps them when a table-level fence could not be taken.
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
