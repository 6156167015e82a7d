package writethrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"gorm.io/gorm"
)

// GORM runs after-create/update/delete callbacks before COMMIT, and nothing
// in GORM runs when a transaction commits or rolls back. So the plugin wraps
// the connection pool: every transaction begun through it is a *txConn, which
// holds the fences its statements took and the values they will publish, and
// publishes them only once the outermost COMMIT has succeeded.

// connPool wraps the pool GORM was opened with.
type connPool struct {
	gorm.ConnPool
	p *Plugin
}

// wrapConnPool installs the wrapper under db, and under a prepared-statement
// pool if GORM was opened with PrepareStmt, so that prepared statements,
// db.DB() and every session see the same wrapped pool.
func (p *Plugin) wrapConnPool(db *gorm.DB) {
	if ps, ok := db.ConnPool.(*gorm.PreparedStmtDB); ok {
		if _, done := ps.ConnPool.(*connPool); !done {
			ps.ConnPool = &connPool{ConnPool: ps.ConnPool, p: p}
		}
		return
	}
	if _, done := db.ConnPool.(*connPool); done {
		return
	}
	w := &connPool{ConnPool: db.ConnPool, p: p}
	db.ConnPool = w
	db.Statement.ConnPool = w
}

// BeginTx implements gorm.ConnPoolBeginner.
func (c *connPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	var inner gorm.Tx
	switch b := c.ConnPool.(type) {
	case gorm.TxBeginner:
		tx, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		inner = tx
	case gorm.ConnPoolBeginner:
		cp, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		tx, ok := cp.(gorm.Tx)
		if !ok {
			return nil, fmt.Errorf("writethrough: %T began a transaction that is not a gorm.Tx: %w", b, gorm.ErrInvalidTransaction)
		}
		inner = tx
	default:
		return nil, gorm.ErrInvalidTransaction
	}
	return &txConn{Tx: inner, p: c.p, ctx: ctx, token: c.p.newToken(), parent: c}, nil
}

// GetDBConn implements gorm.GetDBConnector, so db.DB() keeps working.
func (c *connPool) GetDBConn() (*sql.DB, error) { return getDBConn(c.ConnPool) }

func getDBConn(cp gorm.ConnPool) (*sql.DB, error) {
	switch x := cp.(type) {
	case *sql.DB:
		return x, nil
	case gorm.GetDBConnector:
		return x.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// txConn is a transaction begun through the plugin.
type txConn struct {
	gorm.Tx
	p      *Plugin
	ctx    context.Context
	token  string // fences taken by this transaction carry it
	parent *connPool

	mu         sync.Mutex
	rows       map[string]*pendingRow // by row key
	tables     map[string]tableShard  // by gen key
	seq        int                    // bumped by every recorded change
	savepoints []savepoint
	blind      bool  // a savepoint statement was not understood: publish nothing
	poisoned   error // strict policy: a fence failed, COMMIT must not happen
	// available policy: keys whose fence failed, invalidated after COMMIT
	unfenced    []string
	unfencedErr error
}

// pendingRow is a fenced row and the state to publish after COMMIT.
type pendingRow struct {
	write rowWrite
	seq   int
}

type savepoint struct {
	name string
	seq  int
}

// GetDBConn implements gorm.GetDBConnector, so db.DB() works inside a
// transaction as it does on a *sql.Tx.
func (t *txConn) GetDBConn() (*sql.DB, error) { return t.parent.GetDBConn() }

// record keeps fenced rows and shards until the transaction ends. A later
// write of the same row replaces the earlier one: its value was read after.
func (t *txConn) record(rows []rowWrite, tables []tableShard) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	if t.rows == nil {
		t.rows = map[string]*pendingRow{}
		t.tables = map[string]tableShard{}
	}
	for _, w := range rows {
		t.rows[w.key.row] = &pendingRow{write: w, seq: t.seq}
	}
	for _, tb := range tables {
		t.tables[tb.gen] = tb
	}
}

// poison makes Commit roll back instead: a write in the transaction could
// not be fenced and the policy is Strict.
func (t *txConn) poison(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.poisoned == nil {
		t.poisoned = err
	}
}

// deferInvalidation queues keys whose fence failed (policy Available) for
// invalidation once the transaction has committed.
func (t *txConn) deferInvalidation(keys []string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unfenced = append(t.unfenced, keys...)
	t.unfencedErr = err
}

// savepointCreated, savepointRolledBack and savepointReleased follow
// SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT statements, which
// GORM (or the caller) issues through Exec. name is canonical (see
// savepointName). replaces says a new savepoint deletes an older one of the
// same name (MySQL); elsewhere it hides it until released.
func (t *txConn) savepointCreated(name string, replaces bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	if replaces {
		for i, sp := range t.savepoints {
			if sp.name == name {
				t.savepoints = append(t.savepoints[:i], t.savepoints[i+1:]...)
				break
			}
		}
	}
	t.savepoints = append(t.savepoints, savepoint{name: name, seq: t.seq})
}

func (t *txConn) savepointRolledBack(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.findSavepoint(name)
	if i < 0 {
		// Created where the plugin did not see it: which writes it undid
		// is unknown.
		t.blind = true
		return
	}
	sp := t.savepoints[i]
	// State written after the savepoint is gone from the database, but
	// its fences stay: the finish drops them instead of publishing.
	for _, r := range t.rows {
		if r.seq > sp.seq {
			r.write.kind = kindDrop
		}
	}
	t.savepoints = t.savepoints[:i+1] // the savepoint itself survives ROLLBACK TO
}

// savepointReleased forgets the savepoint and every later one; their writes
// now belong to the enclosing savepoint (or the transaction).
func (t *txConn) savepointReleased(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.findSavepoint(name)
	if i < 0 {
		t.blind = true
		return
	}
	t.savepoints = t.savepoints[:i]
}

// findSavepoint returns the index of the newest savepoint named name, or -1.
// t.mu is held.
func (t *txConn) findSavepoint(name string) int {
	for i := len(t.savepoints) - 1; i >= 0; i-- {
		if t.savepoints[i].name == name {
			return i
		}
	}
	return -1
}

// blindfold makes the transaction invalidate-only: a savepoint or
// transaction statement the plugin could not follow ran in it, so which of
// its writes survive is unknown. Every row it fenced, before or after, is
// dropped after COMMIT instead of published.
func (t *txConn) blindfold() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.blind = true
}

// Commit implements gorm.TxCommitter: COMMIT, then publish.
func (t *txConn) Commit() error {
	t.mu.Lock()
	poisoned := t.poisoned
	t.mu.Unlock()
	if poisoned != nil {
		rbErr := t.Tx.Rollback()
		t.finish(false)
		return errors.Join(fmt.Errorf("writethrough: transaction rolled back: %w", poisoned), rbErr)
	}
	err := t.Tx.Commit()
	if t.p.hooks != nil && t.p.hooks.afterCommit != nil {
		t.p.hooks.afterCommit()
	}
	t.finish(err == nil)
	t.mu.Lock()
	unfenced, cause := t.unfenced, t.unfencedErr
	t.unfenced = nil
	t.mu.Unlock()
	if len(unfenced) > 0 {
		// Also when COMMIT failed: it may have happened all the same.
		t.p.queueInvalidation(unfenced, cause)
	}
	return err
}

// Rollback implements gorm.TxCommitter: ROLLBACK, then drop the fences.
func (t *txConn) Rollback() error {
	err := t.Tx.Rollback()
	t.finish(false)
	return err
}

// finish publishes (committed) or releases (rolled back) everything the
// transaction fenced, in one round trip. A COMMIT that returned an error may
// or may not have happened, so it publishes nothing: the fences are dropped
// and the next reads fill from the database.
func (t *txConn) finish(committed bool) {
	t.mu.Lock()
	rows, tables, blind := t.rows, t.tables, t.blind
	t.rows, t.tables = nil, nil
	t.mu.Unlock()
	if len(rows) == 0 && len(tables) == 0 {
		return
	}
	writes := make([]rowWrite, 0, len(rows))
	for _, r := range rows {
		w := r.write
		switch {
		case !committed:
			w.kind = kindRelease
		case blind:
			w.kind = kindDrop
		}
		writes = append(writes, w)
	}
	shards := make([]tableShard, 0, len(tables))
	for _, tb := range tables {
		shards = append(shards, tb)
	}
	t.p.finishWrites(context.WithoutCancel(t.ctx), t.token, writes, shards)
}

// txOf returns the plugin's transaction behind a statement's pool, if any.
func txOf(cp gorm.ConnPool) *txConn {
	switch x := cp.(type) {
	case *txConn:
		return x
	case *gorm.PreparedStmtTX:
		if t, ok := x.Tx.(*txConn); ok {
			return t
		}
	}
	return nil
}

// inTransaction reports whether a statement runs inside any transaction,
// the plugin's or one it cannot see (begun on a db.Connection, say).
func inTransaction(cp gorm.ConnPool) bool {
	_, ok := cp.(gorm.TxCommitter)
	return ok
}
