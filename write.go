package writethrough

import (
	"context"
	"fmt"

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
// The steps and the races each one closes are in docs/protocol.md (the
// write sequence). Fences and finishes are pipelined: two round trips per
// statement whatever its batch size. Writes whose rows cannot be named (an
// UPDATE by an arbitrary condition) fence and finish the whole table
// instead.

// stmtState carries an auto-commit statement's fences from its before- to
// its after-callback.
type stmtState struct {
	token  string
	fenced map[string]rowWrite // keys fenced before the SQL
	tables []tableShard        // table shards fenced
	// fks are the shards of other tables its foreign-key actions reach,
	// fenced with its rows (when tables is set, they are in it).
	fks []tableShard
}

// pendingCommit is what a statement fenced inside a transaction that GORM
// began on a pool the plugin does not wrap (db.Connection); the
// after-commit callback finishes it.
type pendingCommit struct {
	token  string
	writes []rowWrite
	tables []tableShard
	// keys whose fence failed (policy Available), invalidated once the
	// transaction has ended
	unfenced    []string
	unfencedErr error
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
		// Named before the SQL, like the keys: it looks at what the
		// statement will assign.
		fks := p.cascades(db, mi, op)
		if fks != nil {
			db.InstanceSet(instanceFKs, fks)
		}
		if inTransaction(db.Statement.ConnPool) {
			return
		}
		var other []tableShard
		if mi == nil {
			if other = p.otherTables(db); other == nil && fks == nil {
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
			st.tables = append(st.tables, fks...)
			if err := p.fenceTables(ctx, st.token, st.tables); err != nil {
				p.fenceFailed(db, nil, err, genKeys(st.tables))
				return
			}
			p.fenced()
			return
		}
		writes := make([]rowWrite, len(refs))
		for i, r := range refs {
			writes[i] = rowWrite{key: r.key, kind: kindDrop}
		}
		if err := p.fenceAll(ctx, st.token, writes, fks); err != nil {
			p.fenceFailed(db, nil, err, append(keysOf(writes), genKeys(fks)...))
			return
		}
		st.fks = fks
		for _, w := range writes {
			st.fenced[w.key.row] = w
		}
		p.fenced()
	}
}

// fenced is the test seam after an auto-commit statement's fences landed.
func (p *Plugin) fenced() {
	if p.hooks != nil && p.hooks.afterFence != nil {
		p.hooks.afterFence()
	}
}

// fksOf returns the foreign-key shards beforeWrite found for a statement.
func fksOf(db *gorm.DB) []tableShard {
	v, _ := db.InstanceGet(instanceFKs)
	fks, _ := v.([]tableShard)
	return fks
}

// afterWrite reads back the rows a statement changed, fences them (inside a
// transaction) and hands them to whoever finishes: the transaction's
// COMMIT, the after-commit callback, or (auto-commit) itself, right away.
func (p *Plugin) afterWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		mi := p.writeModel(db)
		fks := fksOf(db)
		var other []tableShard
		if mi == nil {
			if other = p.otherTables(db); other == nil && fks == nil {
				return
			}
		}
		ctx := db.Statement.Context
		st, _ := db.InstanceGet(instanceState)
		auto, _ := st.(*stmtState)
		if db.Error != nil {
			p.afterFailedWrite(db, mi, append(other, fks...), op, auto)
			return
		}
		if auto != nil && auto.tables != nil {
			p.finishWrites(ctx, auto.token, nil, auto.tables)
			return
		}
		if mi == nil { // in a transaction
			p.fenceInTx(db, nil, append(other, fks...))
			return
		}

		refs, known := p.statementKeys(db, mi, op)
		if auto != nil {
			refs = mergeFenced(refs, auto.fenced)
		}
		if !known {
			p.fenceInTx(db, nil, append(mi.allShards(p), fks...))
			return
		}
		if len(refs) == 0 {
			if auto != nil {
				p.finishWrites(ctx, auto.token, nil, auto.fks)
			} else if fks != nil {
				p.fenceInTx(db, nil, fks)
			}
			return
		}
		if auto != nil && !p.fenceLate(ctx, auto, refs) {
			p.finishWrites(ctx, auto.token, nil, auto.fks)
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
				p.finishWrites(ctx, auto.token, nil, auto.fks)
				return
			}
			for i, w := range writes {
				writes[i].gen = auto.fenced[w.key.row].gen
			}
			p.finishWrites(ctx, auto.token, writes, auto.fks)
			return
		}

		p.fenceInTx(db, writes, fks)
	}
}

// afterFailedWrite handles a statement that returned an error. If its SQL
// never ran, nothing changed: auto-commit fences are released. But the
// error may come after the SQL (an AfterUpdate hook, a failed scan of
// RETURNING rows): in auto-commit the change has then committed, and in a
// transaction the caller may commit anyway, ignoring the error. So once the
// SQL was built, every key the statement may have changed is fenced (in
// auto-commit also keys the database assigned) and dropped, never written.
func (p *Plugin) afterFailedWrite(db *gorm.DB, mi *modelInfo, other []tableShard, op writeOp, auto *stmtState) {
	ctx := db.Statement.Context
	ran := db.Statement.SQL.Len() > 0
	if auto != nil {
		tables := auto.tables
		if tables == nil {
			tables = auto.fks
		}
		if !ran {
			p.finishWrites(ctx, auto.token, releaseAll(auto.fenced), tables)
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
		p.finishWrites(ctx, auto.token, drops, tables)
		return
	}
	if !ran {
		return
	}
	fks := fksOf(db)
	if mi == nil {
		p.fenceInTx(db, nil, other) // other holds the foreign-key shards too
		return
	}
	refs, known := p.statementKeys(db, mi, op)
	if !known {
		p.fenceInTx(db, nil, append(mi.allShards(p), fks...))
		return
	}
	drops := make([]rowWrite, len(refs))
	for i, r := range refs {
		drops[i] = rowWrite{key: r.key, kind: kindDrop}
	}
	p.fenceInTx(db, drops, fks)
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

// fenceInTx fences rows or table shards from inside a transaction and
// records them where the transaction's end will find them.
func (p *Plugin) fenceInTx(db *gorm.DB, writes []rowWrite, tables []tableShard) {
	ctx := db.Statement.Context
	tx := txOf(db.Statement.ConnPool)
	token := ""
	if tx != nil {
		token = tx.token
	} else {
		token = p.newToken()
	}
	err := p.fenceAll(ctx, token, writes, tables)
	if err != nil {
		keys := keysOf(writes)
		if len(tables) > 0 {
			keys = append(keys, genKeys(tables)...)
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
