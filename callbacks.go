package writethrough

import (
	"context"
	"errors"

	"gorm.io/gorm"
)

// GORM wiring: the callbacks the plugin registers, the statement state they
// hand each other, and how the plugin's own queries are told apart.

// registerCallbacks installs the plugin's callbacks. Their names are part of
// the plugin's interface: applications order their own callbacks around them.
func (p *Plugin) registerCallbacks(db *gorm.DB) error {
	cb := db.Callback()
	return errors.Join(
		cb.Query().Replace("gorm:query", p.query),
		cb.Raw().After("gorm:raw").Register("writethrough:raw", p.afterRaw),
		// Savepoint statements sent through Raw(...).Find, Rows or Row.
		cb.Query().After("gorm:query").Register("writethrough:query_savepoints", p.afterRaw),
		cb.Row().After("gorm:row").Register("writethrough:row_savepoints", p.afterRaw),
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

// Keys of the state a statement's callbacks hand each other (db.InstanceSet).
const (
	instanceState   = "writethrough:state"   // per-statement write state
	instanceUnnamed = "writethrough:unnamed" // the statement's rows cannot be named
	instanceSpells  = "writethrough:spells"  // stored spellings of the keys a delete names
	instanceKeys    = "writethrough:keys"    // the keys an update or delete names, before its SQL
	instanceFKs     = "writethrough:fks"     // the table shards its foreign-key actions reach
	instancePending = "writethrough:pending" // fences to finish after GORM's own COMMIT (pendingCommit)
)

// internalQuery marks, in its context, a query the plugin itself runs. It is
// a context value rather than a statement setting because reading a
// statement's Settings (a sync.Map) allocates on every statement.
type internalQuery struct{}

// isInternal reports whether stmt is a query the plugin itself runs.
func isInternal(stmt *gorm.Statement) bool {
	return stmt.Context != nil && stmt.Context.Value(internalQuery{}) != nil
}

// internalSession returns a session of db for a query the plugin itself
// runs in the statement's connection (so inside its transaction): no hooks,
// and marked so that no callback of the plugin acts on it.
func internalSession(db *gorm.DB) *gorm.DB {
	ctx := context.WithValue(db.Statement.Context, internalQuery{}, true)
	return db.Session(&gorm.Session{NewDB: true, SkipHooks: true, Context: ctx})
}
