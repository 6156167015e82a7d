package main

import (
	"context"
	"database/sql"
	"sync/atomic"

	"gorm.io/gorm"
)

// The fraction of reads kept off the database is measured where it happens:
// every mode's *gorm.DB is opened on a countingPool, which notes each SQL
// statement in the probe carried by the statement's context. A worker gives
// each operation its probe, so a read that sent no statement was served from
// the cache, whichever library (or none) sits above the pool.

type probeKey struct{}

// probe counts the SQL statements sent on behalf of one worker's current
// operation. It is atomic because a cache library may run the query on
// another goroutine with the caller's context.
type probe struct{ stmts atomic.Int64 }

func withProbe(ctx context.Context, p *probe) context.Context {
	return context.WithValue(ctx, probeKey{}, p)
}

func note(ctx context.Context) {
	if p, ok := ctx.Value(probeKey{}).(*probe); ok {
		p.stmts.Add(1)
	}
}

// countingPool is a gorm.ConnPool over a *sql.DB that notes every statement.
type countingPool struct{ db *sql.DB }

func (c *countingPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return c.db.PrepareContext(ctx, query)
}

func (c *countingPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	note(ctx)
	return c.db.ExecContext(ctx, query, args...)
}

func (c *countingPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	note(ctx)
	return c.db.QueryContext(ctx, query, args...)
}

func (c *countingPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	note(ctx)
	return c.db.QueryRowContext(ctx, query, args...)
}

// BeginTx implements gorm.ConnPoolBeginner, so statements inside
// transactions (GORM wraps every write in one) are noted too.
func (c *countingPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, err := c.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &countingTx{Tx: tx}, nil
}

// GetDBConn implements gorm.GetDBConnector, so db.DB() keeps working.
func (c *countingPool) GetDBConn() (*sql.DB, error) { return c.db, nil }

// countingTx is a transaction begun through a countingPool; it satisfies
// gorm.Tx through the embedded *sql.Tx.
type countingTx struct{ *sql.Tx }

func (t *countingTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	note(ctx)
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *countingTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	note(ctx)
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *countingTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	note(ctx)
	return t.Tx.QueryRowContext(ctx, query, args...)
}
