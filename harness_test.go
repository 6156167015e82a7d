package writethrough

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// The test harness. Every test runs against each backend that is switched
// on: SQLite with an in-process Redis always; SQLite with real Redis when
// WT_REDIS_ADDR is set; Postgres when WT_POSTGRES_DSN is set (with real
// Redis if WT_REDIS_ADDR is set too, else in-process).

// backend is one database + Redis combination.
type backend struct {
	name    string
	dialect string // "sqlite", "postgres", "mysql"
	open    func(t testing.TB, pool gorm.ConnPool) gorm.Dialector
	sqlOpen func(t testing.TB) *sql.DB
	redis   func(t testing.TB) redis.UniversalClient
}

func backends(t testing.TB) []backend {
	var out []backend
	out = append(out, backend{name: "sqlite+miniredis", dialect: "sqlite", sqlOpen: openSQLite, open: sqliteDialector, redis: miniRedis})
	if os.Getenv("WT_REDIS_ADDR") != "" {
		out = append(out, backend{name: "sqlite+redis", dialect: "sqlite", sqlOpen: openSQLite, open: sqliteDialector, redis: realRedis})
	}
	if dsn := os.Getenv("WT_POSTGRES_DSN"); dsn != "" {
		r := miniRedis
		name := "postgres+miniredis"
		if os.Getenv("WT_REDIS_ADDR") != "" {
			r, name = realRedis, "postgres+redis"
		}
		out = append(out, backend{name: name, dialect: "postgres", sqlOpen: openPostgres, open: postgresDialector, redis: r})
	}
	if dsn := os.Getenv("WT_MYSQL_DSN"); dsn != "" {
		r := miniRedis
		name := "mysql+miniredis"
		if os.Getenv("WT_REDIS_ADDR") != "" {
			r, name = realRedis, "mysql+redis"
		}
		out = append(out, backend{name: name, dialect: "mysql", sqlOpen: openMySQL, open: mysqlDialector, redis: r})
	}
	return out
}

// forEachBackend runs f as a subtest per backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

func openSQLite(t testing.TB) *sql.DB {
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000&_journal_mode=WAL&_txlock=immediate")
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func sqliteDialector(t testing.TB, pool gorm.ConnPool) gorm.Dialector {
	return sqlite.Dialector{Conn: pool}
}

func openPostgres(t testing.TB) *sql.DB {
	db, err := sql.Open("pgx", os.Getenv("WT_POSTGRES_DSN"))
	require.NoError(t, err)
	require.NoError(t, db.Ping(), "WT_POSTGRES_DSN is set but Postgres cannot be reached")
	t.Cleanup(func() { db.Close() })
	return db
}

func postgresDialector(t testing.TB, pool gorm.ConnPool) gorm.Dialector {
	return postgres.New(postgres.Config{Conn: pool})
}

func openMySQL(t testing.TB) *sql.DB {
	db, err := sql.Open("mysql", os.Getenv("WT_MYSQL_DSN"))
	require.NoError(t, err)
	require.NoError(t, db.Ping(), "WT_MYSQL_DSN is set but MySQL/MariaDB cannot be reached")
	t.Cleanup(func() { db.Close() })
	return db
}

func mysqlDialector(t testing.TB, pool gorm.ConnPool) gorm.Dialector {
	return mysql.New(mysql.Config{Conn: pool})
}

// miniServers maps a client created by miniRedis to its server, so a test
// can let time pass there: miniredis only expires keys when told to (see
// expireKey).
var miniServers sync.Map // redis.UniversalClient -> *miniredis.Miniredis

// miniRedis starts an in-process Redis for one test and returns a client
// of it, tracked in miniServers.
func miniRedis(t testing.TB) redis.UniversalClient {
	s := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	miniServers.Store(redis.UniversalClient(c), s)
	t.Cleanup(func() {
		miniServers.Delete(redis.UniversalClient(c))
		c.Close()
	})
	return c
}

func realRedis(t testing.TB) redis.UniversalClient {
	c := redis.NewClient(&redis.Options{Addr: os.Getenv("WT_REDIS_ADDR")})
	require.NoError(t, c.Ping(context.Background()).Err(), "WT_REDIS_ADDR is set but Redis cannot be reached")
	t.Cleanup(func() { c.Close() })
	return c
}

var testSeq atomic.Int64

// env is one test's world: a database with its own table prefix, a Redis
// key prefix of its own, the plugin, and a count of database round trips.
type env struct {
	t       testing.TB
	b       backend
	db      *gorm.DB
	plugin  *Plugin
	rdb     redis.UniversalClient
	counter *countingPool
	prefix  string
	tables  string // the table prefix of this test's models
}

// newEnv opens the backend with the plugin installed and migrates models.
func newEnv(t testing.TB, b backend, cfg Config, models ...any) *env {
	return newEnvWith(t, b, cfg, &gorm.Config{}, models...)
}

func newEnvWith(t testing.TB, b backend, cfg Config, gcfg *gorm.Config, models ...any) *env {
	t.Helper()
	n := testSeq.Add(1)
	tablePrefix := fmt.Sprintf("wt%d_%d_", os.Getpid()%10000, n)
	sqlDB := b.sqlOpen(t)
	counter := &countingPool{inner: sqlDB}
	gcfg.NamingStrategy = schema.NamingStrategy{TablePrefix: tablePrefix}
	if gcfg.Logger == nil {
		gcfg.Logger = logger.Discard
	}
	db, err := gorm.Open(b.open(t, counter), gcfg)
	require.NoError(t, err)
	require.NoError(t, db.AutoMigrate(models...))
	t.Cleanup(func() {
		// Without the plugin: cleanups run last-registered first, so its
		// Redis client is closed by now, and it fences (under Strict: fails)
		// the tables a DROP TABLE names.
		plain, err := gorm.Open(b.open(t, sqlDB), &gorm.Config{NamingStrategy: gcfg.NamingStrategy, Logger: logger.Discard})
		if err != nil {
			return
		}
		for _, m := range models {
			_ = plain.Migrator().DropTable(m)
		}
	})
	rdb := b.redis(t)
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("wttest%d_%d", os.Getpid(), n) // unique across processes sharing a Redis
	}
	// The plugin's Redis timeouts (100ms / 1s) are enforced: on a loaded CI
	// machine under -race, a slow call would fall back to the database and
	// fail a test that asserts the protocol, not latency. Tests of timeouts
	// set their own.
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	p := New(rdb, cfg)
	require.NoError(t, db.Use(p))
	counter.reset()
	return &env{t: t, b: b, db: db, plugin: p, rdb: rdb, counter: counter, prefix: cfg.Prefix, tables: tablePrefix}
}

// queries returns how many database round trips ran since the last call.
func (e *env) queries() int64 { return e.counter.reset() }

// plainDB opens a second *gorm.DB on the same database and tables as e.db
// (its naming strategy), without the plugin and outside the query count, so
// tests can compare what the cache serves with what the database itself
// returns, and change rows behind the cache's back.
func (e *env) plainDB() *gorm.DB {
	e.t.Helper()
	db, err := gorm.Open(e.b.open(e.t, e.counter.inner), &gorm.Config{NamingStrategy: e.db.NamingStrategy, Logger: logger.Discard})
	require.NoError(e.t, err)
	return db
}

// countingPool wraps *sql.DB and counts every statement sent to the
// database, so tests assert "served from the cache" instead of assuming it.
type countingPool struct {
	inner *sql.DB
	n     atomic.Int64
}

func (c *countingPool) reset() int64 { return c.n.Swap(0) }

func (c *countingPool) count(query string) {
	c.n.Add(1)
	if os.Getenv("WT_TRACE_SQL") != "" {
		fmt.Println("SQL:", strings.TrimSpace(query))
	}
}

func (c *countingPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return c.inner.PrepareContext(ctx, query)
}

func (c *countingPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	c.count(query)
	return c.inner.ExecContext(ctx, query, args...)
}

func (c *countingPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	c.count(query)
	return c.inner.QueryContext(ctx, query, args...)
}

func (c *countingPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	c.count(query)
	return c.inner.QueryRowContext(ctx, query, args...)
}

func (c *countingPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, err := c.inner.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &countingTx{Tx: tx, c: c}, nil
}

func (c *countingPool) GetDBConn() (*sql.DB, error) { return c.inner, nil }

func (c *countingPool) Ping() error { return c.inner.Ping() }

// countingTx counts statements inside a transaction.
type countingTx struct {
	*sql.Tx
	c *countingPool
}

func (t *countingTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	t.c.count(query)
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *countingTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	t.c.count(query)
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *countingTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	t.c.count(query)
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// stmtSchema parses a model's schema as the test's DB does.
func (e *env) stmtSchema(model any) *schema.Schema {
	stmt := &gorm.Statement{DB: e.db}
	require.NoError(e.t, stmt.Parse(model))
	return stmt.Schema
}
