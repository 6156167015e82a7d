package writethrough

import (
	"strings"
	"sync"

	"github.com/gormcache/writethrough/internal/sqltext"
	"gorm.io/gorm"
)

// Raw SQL. db.Exec, and db.Raw(...) read with Rows, Row, Scan or Find, run
// no model callback, so the plugin cannot see which rows they change. It
// recognises the simple write statements by their leading words, in any
// case, after comments and WITH clauses (internal/sqltext reads them):
//
//	UPDATE [LOW_PRIORITY] [IGNORE] [ONLY] [OR ...] t [, t2 | JOIN t2 ...] SET ...
//	DELETE [...] FROM t [, t2 | JOIN t2 ...]   DELETE t1, t2 FROM ...
//	INSERT [IGNORE] [OR ...] [INTO] t          REPLACE [INTO] t
//	MERGE INTO t   TRUNCATE [TABLE] [ONLY] t [, t2]   ALTER TABLE t   DROP TABLE [IF EXISTS] t
//
// with table names bare, quoted ("t", `t`, [t]) or schema-qualified, and
// several statements separated by ';'; also EXPLAIN ANALYZE / ANALYZE of a
// write, DO blocks, COPY ... FROM, LOAD DATA, RENAME TABLE, MySQL
// executable comments, and EXECUTE of a statement whose PREPARE this
// process saw (preparedNames). Each table such a statement names is
// fenced whole, on every shard and under every name a model may key it by
// (see tableNameCandidates), exactly as a model write whose rows cannot be
// named: inside a transaction the fence is recorded on the transaction and
// finished after COMMIT; in auto-commit it is taken before the SQL and
// finished after it. SELECTs and anything not recognised do nothing.
//
// A raw write the detector cannot parse — a stored procedure, a trigger on
// another table, dynamic SQL with a computed table name, EXECUTE of a
// statement prepared where the plugin did not see it, a statement whose
// target hides behind a view —
// leaves the cache of the rows it changes stale: after it commits, call
// (*Plugin).Invalidate with the changed rows or (*Plugin).InvalidateTable
// with their model.

// rawChain says which callback chain a raw statement runs through.
type rawChain int

const (
	chainRaw   rawChain = iota // db.Exec: done when the callback returns
	chainQuery                 // db.Raw(...).Find: rows read and closed in the callback
	chainRow                   // db.Raw(...).Rows/Row/Scan: rows read after the callback
)

// beforeRaw fences the tables a raw write names: in a transaction on the
// transaction, in auto-commit before the SQL runs.
func (p *Plugin) beforeRaw(chain rawChain) func(*gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil || db.DryRun || db.Statement.SQL.Len() == 0 {
			return
		}
		if isInternal(db.Statement) {
			return
		}
		sql := db.Statement.SQL.String()
		if chain != chainRaw && !sqltext.MayWrite(sql) {
			return // the common raw SELECT: no tokenizing
		}
		rules := sqlRulesOf(db)
		names := sqltext.WriteTables(sql, rules)
		names = append(names, p.prepared.executed(p, db, sql, rules)...)
		if len(names) == 0 {
			return
		}
		tables := p.tableShards(p.withCascades(p.tableNameCandidates(names)))
		if inTransaction(db.Statement.ConnPool) {
			p.fenceInTx(db, nil, tables)
			return
		}
		st := &stmtState{token: p.newToken(), tables: tables, fenced: map[string]rowWrite{}}
		if err := p.fenceTables(db.Statement.Context, st.token, tables); err != nil {
			p.fenceFailed(db, nil, err, genKeys(tables))
			return
		}
		if chain == chainRow {
			// The statement completes when the caller has read its rows,
			// which no callback sees: the fence stays until LockTTL, and
			// the table is read from the database until then.
			return
		}
		db.Statement.Settings.Store(rawState{db.Statement}, st)
	}
}

// afterRawWrite finishes an auto-commit raw write's table fences once the
// statement has run (whether or not it succeeded).
func (p *Plugin) afterRawWrite(db *gorm.DB) {
	v, ok := db.Statement.Settings.LoadAndDelete(rawState{db.Statement})
	st, _ := v.(*stmtState)
	if !ok || st == nil {
		return
	}
	p.finishWrites(db.Statement.Context, st.token, nil, st.tables)
}

// rawState keys an auto-commit raw write's fences in the statement's
// settings. It is what db.InstanceSet does, without formatting a string key
// on every query the after-callback sees.
type rawState struct{ stmt *gorm.Statement }

// sqlRulesOf returns the lexical rules of the statement's dialect.
func sqlRulesOf(db *gorm.DB) sqltext.Rules {
	switch db.Dialector.Name() {
	case "mysql":
		return sqltext.Rules{Backslash: true, OrOperators: true}
	case "postgres":
		return sqltext.Rules{Dollar: true}
	}
	return sqltext.Rules{}
}

// afterRaw follows savepoints, which GORM creates, rolls back and releases
// through Exec, in every spelling the dialects accept (sqltext.Savepoints).
// A savepoint or transaction statement it cannot follow makes the
// transaction invalidate-only (txConn.blindfold), as does one among several
// statements that failed: how far it got is unknown.
func (p *Plugin) afterRaw(db *gorm.DB) {
	tx := txOf(db.Statement.ConnPool)
	if tx == nil || db.Statement.SQL.Len() == 0 {
		return
	}
	sps := sqltext.Savepoints(db.Statement.SQL.String(), sqlRulesOf(db))
	if len(sps) == 0 {
		return
	}
	if db.Error != nil {
		// One statement that failed changed nothing; a failure among
		// several may come after some of them ran.
		if len(sps) > 1 || strings.Contains(strings.TrimRight(db.Statement.SQL.String(), "; \t\r\n"), ";") {
			tx.blindfold()
		}
		return
	}
	dialect := db.Dialector.Name()
	for _, sp := range sps {
		name := sessionName(dialect, sp.Name)
		switch sp.Kind {
		case sqltext.SavepointCreate:
			tx.savepointCreated(name, dialect == "mysql")
		case sqltext.SavepointRollback:
			tx.savepointRolledBack(name)
		case sqltext.SavepointRelease:
			tx.savepointReleased(name)
		default:
			tx.blindfold()
		}
	}
}

// sessionName is a savepoint's or prepared statement's name as the dialect
// compares it: Postgres folds unquoted names to lower case and compares
// exactly; MySQL and SQLite compare them without regard to ASCII case.
func sessionName(dialect string, id sqltext.Ident) string {
	if dialect == "postgres" && id.Quoted {
		return id.Name
	}
	return strings.ToLower(id.Name)
}

// maxPreparedNames bounds how many prepared statement names the plugin
// remembers.
const maxPreparedNames = 1024

// preparedNames remembers, per prepared statement name, the tables the
// statements prepared under it write, so that EXECUTE name fences them.
// Prepared statements belong to a database session, but the plugin does not
// know which session a statement runs on: a name's tables are the union of
// every PREPARE of it seen, on any connection.
type preparedNames struct {
	mu       sync.Mutex
	byName   map[string][]sqltext.TableName
	fullOnce sync.Once
}

// executed learns the PREPARE statements in sql and returns the tables the
// EXECUTE statements in it write. An EXECUTE of a name whose PREPARE was
// not seen, or prepared from a variable, writes what the plugin cannot
// know (README, Raw SQL).
func (pn *preparedNames) executed(p *Plugin, db *gorm.DB, sql string, rules sqltext.Rules) []sqltext.TableName {
	prepares, executes := sqltext.PreparedStatements(sql, rules)
	if len(prepares) == 0 && len(executes) == 0 {
		return nil
	}
	dialect := db.Dialector.Name()
	pn.mu.Lock()
	defer pn.mu.Unlock()
	for _, pr := range prepares {
		name := sessionName(dialect, pr.Name)
		if _, ok := pn.byName[name]; !ok && len(pn.byName) >= maxPreparedNames {
			pn.fullOnce.Do(func() {
				p.cfg.Logger.Warn("writethrough: too many prepared statement names; EXECUTE of new ones is not seen", "limit", maxPreparedNames)
			})
			continue
		}
		if pn.byName == nil {
			pn.byName = map[string][]sqltext.TableName{}
		}
		pn.byName[name] = append(pn.byName[name], pr.Tables...)
	}
	var out []sqltext.TableName
	for _, e := range executes {
		out = append(out, pn.byName[sessionName(dialect, e)]...)
	}
	return out
}
