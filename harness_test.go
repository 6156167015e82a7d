package writethrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
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

// Looking at the raw Redis keys, letting marker TTLs pass, a second plugin
// instance on the same database and Redis (another process), the one
// go-redis hook that fails chosen commands, and the products the race,
// transaction and policy tests write.

// peek returns what a key holds in Redis, "" when it does not exist.
func peek(t testing.TB, e *env, key string) string {
	t.Helper()
	v, err := e.rdb.Get(context.Background(), key).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	require.NoError(t, err)
	return v
}

// requireNotNew asserts that a key holds no state newer than old: a fence,
// exactly the entry it held before (old), or nothing.
func requireNotNew(t testing.TB, got, old, where string) {
	t.Helper()
	if got == "" || got == old || strings.HasPrefix(got, "F") {
		return
	}
	t.Fatalf("%s: the key holds %q; want a fence, nothing, or the previous entry %q", where, abbrev(got), abbrev(old))
}

func abbrev(s string) string {
	if len(s) > 48 {
		return s[:48] + "..."
	}
	return s
}

// expireKey makes a marker expire, after checking that it would by itself
// within maxTTL (its TTL is set and bounded): on the in-process Redis by
// moving its clock past the TTL, on a real one by cutting the TTL short, so
// tests need neither short TTLs that a loaded machine could outlive nor
// sleeps.
func expireKey(t testing.TB, e *env, key string, maxTTL time.Duration) {
	t.Helper()
	ctx := context.Background()
	ttl, err := e.rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	if ttl == -2 { // go-redis reports a missing key as -2
		return
	}
	require.Greater(t, ttl, time.Duration(0), "key %s must carry a TTL", key)
	require.LessOrEqual(t, ttl, maxTTL, "key %s lives longer than %v", key, maxTTL)
	if s, ok := miniServers.Load(e.rdb); ok {
		s.(*miniredis.Miniredis).FastForward(ttl + time.Millisecond)
	} else {
		require.NoError(t, e.rdb.PExpire(ctx, key, time.Millisecond).Err())
	}
	awaitTrue(t, 5*time.Second, "key "+key+" to expire", func() bool {
		return e.rdb.Exists(ctx, key).Val() == 0
	})
}

// awaitTrue polls cond until it holds or the deadline passes.
func awaitTrue(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// twinOf opens a second *gorm.DB with its own plugin instance on e's
// database, tables, Redis and key prefix: another process of the same
// deployment. Its statements are counted by e.queries too.
func twinOf(t testing.TB, e *env, cfg Config, gcfg *gorm.Config) *env {
	t.Helper()
	if gcfg == nil {
		gcfg = &gorm.Config{}
	}
	gcfg.NamingStrategy = e.db.NamingStrategy
	if gcfg.Logger == nil {
		gcfg.Logger = logger.Discard
	}
	db, err := gorm.Open(e.b.open(t, e.counter), gcfg)
	require.NoError(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: e.rdb.(*redis.Client).Options().Addr})
	t.Cleanup(func() { rdb.Close() })
	if s, ok := miniServers.Load(e.rdb); ok {
		miniServers.Store(redis.UniversalClient(rdb), s)
		t.Cleanup(func() { miniServers.Delete(redis.UniversalClient(rdb)) })
	}
	cfg.Prefix = e.prefix
	p := New(rdb, cfg)
	require.NoError(t, db.Use(p))
	return &env{t: t, b: e.b, db: db, plugin: p, rdb: rdb, counter: e.counter, prefix: e.prefix}
}

// faultHook is a go-redis hook that fails the commands a test picks, either
// before they are sent (a dropped request) or after Redis ran them (a lost
// reply). It is inert until fail is set.
type faultHook struct {
	fail      atomic.Pointer[func(cmd redis.Cmder) bool]
	afterSend atomic.Bool // true: run the command, then report a failure
	hits      atomic.Int64
}

var errInjected = errors.New("injected Redis fault")

func (h *faultHook) set(pick func(cmd redis.Cmder) bool) { h.fail.Store(&pick) }
func (h *faultHook) clear()                              { h.fail.Store(nil) }

func (h *faultHook) picks(cmds ...redis.Cmder) bool {
	f := h.fail.Load()
	if f == nil {
		return false
	}
	for _, c := range cmds {
		if (*f)(c) {
			return true
		}
	}
	return false
}

func (h *faultHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *faultHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !h.picks(cmd) {
			return next(ctx, cmd)
		}
		h.hits.Add(1)
		if h.afterSend.Load() {
			_ = next(ctx, cmd)
		}
		cmd.SetErr(errInjected)
		return errInjected
	}
}

func (h *faultHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !h.picks(cmds...) {
			return next(ctx, cmds)
		}
		h.hits.Add(1)
		if h.afterSend.Load() {
			_ = next(ctx, cmds)
		}
		for _, c := range cmds {
			c.SetErr(errInjected)
		}
		return errInjected
	}
}

// isScript reports whether cmd runs script s (by hash or by source).
func isScript(cmd redis.Cmder, s *redis.Script) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	name, _ := args[0].(string)
	body, _ := args[1].(string)
	switch strings.ToLower(name) {
	case "evalsha", "evalsha_ro":
		return body == s.Hash()
	case "eval", "eval_ro":
		return body != "" && redis.NewScript(body).Hash() == s.Hash()
	}
	return false
}

// isFence reports whether cmd is a write's fence: SET key F<token>.
func isFence(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	name, _ := args[0].(string)
	switch strings.ToLower(name) {
	case "evalsha":
		return args[1] == fenceScript.Hash() || args[1] == tableFenceScript.Hash()
	case "eval":
		return args[1] == fenceScriptSrc || args[1] == tableFenceScriptSrc
	}
	return false
}

var errRollback = errors.New("test: roll back")

func defaultGorm() *gorm.Config { return &gorm.Config{} }

// readPrice reads a product's price outside any transaction, and reports
// whether the read was served from the cache.
func readPrice(t testing.TB, e *env, id uint) (int64, bool) {
	t.Helper()
	before := e.plugin.Stats().Hits
	var got Product
	require.NoError(t, e.db.First(&got, id).Error)
	return got.Price, e.plugin.Stats().Hits > before
}

// dbPrice reads a product's price straight from the database.
func dbPrice(t testing.TB, e *env, id uint) int64 {
	t.Helper()
	sqlDB, err := e.db.DB()
	require.NoError(t, err)
	var price int64
	q := fmt.Sprintf("SELECT price FROM %s WHERE id = %d", e.stmtSchema(&Product{}).Table, id)
	require.NoError(t, sqlDB.QueryRow(q).Scan(&price))
	return price
}

func setPrice(id uint, price int64) func(*gorm.DB) error {
	return func(tx *gorm.DB) error {
		return tx.Model(&Product{ID: id}).Update("price", price).Error
	}
}

// newProduct inserts a product priced 100 and returns it with its key,
// which is left empty (cold).
func newProduct(t testing.TB, e *env) (Product, string) {
	t.Helper()
	p := Product{Name: "lamp", Price: 100}
	require.NoError(t, e.db.Create(&p).Error)
	key := rowKeyOf(t, e, &Product{ID: p.ID})
	require.NoError(t, e.rdb.Del(context.Background(), key).Err())
	return p, key
}

// requireFresh asserts that the next reads return price, the second one
// served from the cache when cached is set.
func requireFresh(t testing.TB, e *env, id uint, price int64, cached bool) {
	t.Helper()
	got, _ := readPrice(t, e, id)
	require.Equal(t, price, got, "the next read returns the newest committed state")
	got, hit := readPrice(t, e, id)
	require.Equal(t, price, got)
	if cached {
		require.True(t, hit, "and the cache holds it")
	}
}

// Helpers for the write-shape tests: each test writes through GORM with the
// plugin, then reads the rows back through the plugin and compares them
// with what a plain GORM (no plugin) reads from the same database.

// writeEnv is a test's world plus the plain database and the write mode.
type writeEnv struct {
	*env
	plain *gorm.DB
	mode  commitMode
}

// forEachWriteMode runs f per backend and per write mode.
func forEachWriteMode(t *testing.T, models []any, f func(t *testing.T, w *writeEnv)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range writeModes() {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), models...)
				f(t, &writeEnv{env: e, plain: e.plainDB(), mode: m})
			})
		}
	})
}

// newWriteEnv is forEachWriteMode's env for tests that need one mode only.
func newWriteEnv(t *testing.T, b backend, cfg Config, gcfg *gorm.Config, models ...any) *writeEnv {
	e := newEnvWith(t, b, cfg, gcfg, models...)
	return &writeEnv{env: e, plain: e.plainDB(), mode: modesNamed("Implicit")[0]}
}

// write runs one write the way the mode says and requires it to succeed.
func (w *writeEnv) write(t *testing.T, f func(db *gorm.DB) error) {
	t.Helper()
	require.NoError(t, w.mode.commit(w.env, f))
}

// check reads every id through the plugin and from the plain database and
// requires the same answer (the same row, or not found for both). With hit
// set, every plugin read must also be served without a database query.
func check[T any](t *testing.T, w *writeEnv, hit bool, ids ...any) {
	t.Helper()
	for _, id := range ids {
		var want, got T
		wantErr := w.plain.First(&want, id).Error
		w.queries()
		before := w.plugin.Stats()
		gotErr := w.db.First(&got, id).Error
		n := w.queries()
		after := w.plugin.Stats()
		if wantErr != nil {
			require.ErrorIs(t, wantErr, gorm.ErrRecordNotFound, "plain read of %v", id)
			require.ErrorIs(t, gotErr, gorm.ErrRecordNotFound, "id %v: the database has no row but the plugin served %s", id, canon(got))
		} else {
			require.NoError(t, gotErr, "id %v", id)
			require.Equal(t, canon(want), canon(got), "id %v: the plugin serves a row the database does not hold", id)
		}
		if hit {
			// Statements are not counted under PrepareStmt; the plugin's
			// own counters are, in every mode.
			require.Zero(t, n, "id %v: expected a cache hit (write-through), the read went to the database", id)
			require.True(t, after.Hits == before.Hits+1 && after.Misses == before.Misses && after.Bypasses == before.Bypasses,
				"id %v: expected a cache hit (write-through); stats before %+v after %+v", id, before, after)
		}
	}
}

// checkMany reads ids (at most 1000, integer keys) through the plugin with
// one Find and from the plain database, requires the same rows, and with
// hit set requires every row to be served from the cache.
func checkMany[T any](t *testing.T, w *writeEnv, hit bool, ids ...any) {
	t.Helper()
	var want, got []T
	require.NoError(t, w.plain.Order("id").Find(&want, ids).Error)
	w.queries()
	before := w.plugin.Stats()
	require.NoError(t, w.db.Find(&got, ids).Error)
	n := w.queries()
	after := w.plugin.Stats()
	require.Equal(t, canon(want), canon(got), "the plugin serves rows the database does not hold")
	if hit {
		require.Zero(t, n, "expected cache hits (write-through), the read went to the database")
		require.Equal(t, before.Hits+uint64(len(ids)), after.Hits, "expected every row to be a hit")
	}
}

// checkAll compares every row of T (plain read, Unscoped) through the
// plugin, keyed by primary key, so no row a write may have touched is left out.
func checkAll[T any](t *testing.T, w *writeEnv, hit bool, extra ...any) {
	t.Helper()
	var rows []T
	require.NoError(t, w.plain.Unscoped().Find(&rows).Error)
	ids := append([]any{}, extra...)
	for i := range rows {
		ids = append(ids, pkOf(t, w, &rows[i]))
	}
	check[T](t, w, hit, ids...)
}

// pkOf returns the single primary-key value of a row.
func pkOf(t *testing.T, w *writeEnv, row any) any {
	t.Helper()
	stmt := &gorm.Statement{DB: w.plain}
	require.NoError(t, stmt.Parse(row))
	require.Len(t, stmt.Schema.PrimaryFields, 1)
	v, _ := stmt.Schema.PrimaryFields[0].ValueOf(context.Background(), reflect.ValueOf(row).Elem())
	return v
}

// warm reads ids through the plugin twice, so they are cached (rows, and
// "not found" for absent ids), and requires the second read to be a hit.
// It reads with Find: a First that finds nothing does not cache the absence.
func warm[T any](t testing.TB, e *env, ids ...any) {
	t.Helper()
	for _, id := range ids {
		var r []T
		require.NoError(t, e.db.Find(&r, id).Error)
		e.queries()
		before := e.plugin.Stats()
		require.NoError(t, e.db.Find(&r, id).Error)
		require.Zero(t, e.queries(), "warming id %v: the second read must be a hit", id)
		require.Equal(t, before.Hits+1, e.plugin.Stats().Hits, "warming id %v: the second read must be a hit", id)
	}
}

// canon renders a value for comparison: exported fields by name, times in
// UTC with full precision, pointers followed.
func canon(v any) string {
	var b strings.Builder
	canonValue(&b, reflect.ValueOf(v), 0)
	return b.String()
}

var timeType = reflect.TypeOf(time.Time{})

func canonValue(b *strings.Builder, v reflect.Value, depth int) {
	if depth > 6 {
		b.WriteString("…")
		return
	}
	if !v.IsValid() {
		b.WriteString("nil")
		return
	}
	if v.Type() == timeType {
		b.WriteString(v.Interface().(time.Time).UTC().Format(time.RFC3339Nano))
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("nil")
			return
		}
		canonValue(b, v.Elem(), depth+1)
	case reflect.Struct:
		b.WriteString("{")
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			fmt.Fprintf(b, "%s:", f.Name)
			canonValue(b, v.Field(i), depth+1)
			b.WriteString(" ")
		}
		b.WriteString("}")
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			fmt.Fprintf(b, "%q", v.Bytes())
			return
		}
		b.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			canonValue(b, v.Index(i), depth+1)
			b.WriteString(",")
		}
		b.WriteString("]")
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		b.WriteString("map[")
		for _, k := range keys {
			fmt.Fprintf(b, "%v:", k)
			canonValue(b, v.MapIndex(k), depth+1)
			b.WriteString(" ")
		}
		b.WriteString("]")
	default:
		fmt.Fprintf(b, "%v", v.Interface())
	}
}

// redisCounter is the tests' one go-redis hook that counts: the round
// trips a client makes (one per command sent alone, one per pipeline), the
// commands it sends, and the hit reads (MGET, the first thing every
// cached read asks Redis) that it got an answer to.
type redisCounter struct {
	mu    sync.Mutex
	trips int
	cmds  []string
	// scripts holds, per round trip, how many script calls it carried.
	scripts []int
	reads   atomic.Int64
}

// countRedis installs one redisCounter on every client given, and on the
// clients every plugin given makes its calls with (see addHook).
func countRedis(on ...any) *redisCounter {
	c := &redisCounter{}
	for _, x := range on {
		addHook(x, c)
	}
	return c
}

// addHook adds h to a client, or to the clients a plugin's calls are
// carried out by: a hook added to the client after New (as tests do) sits
// inside the plugin's cloneRouter and does not see its calls, so it is
// added to the plugin's WithTimeout clones as well.
func addHook(on any, h redis.Hook) {
	switch x := on.(type) {
	case redis.UniversalClient:
		x.AddHook(h)
	case *Plugin:
		seen := map[*redis.Client]bool{}
		for _, b := range []bounded{x.read, x.write} {
			if b.clone != nil && !seen[b.clone] {
				seen[b.clone] = true
				b.clone.AddHook(h)
			}
		}
	default:
		panic(fmt.Sprintf("addHook: %T", on))
	}
}

// hookPlugin adds h to rdb and to the clients p calls Redis through.
func hookPlugin(p *Plugin, rdb redis.UniversalClient, h redis.Hook) {
	addHook(rdb, h)
	addHook(p, h)
}

func (c *redisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *redisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd)
		err := next(ctx, cmd)
		c.noteRead(cmd, err)
		return err
	}
}

func (c *redisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add(cmds...)
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			c.noteRead(cmd, cmd.Err())
		}
		return err
	}
}

func (c *redisCounter) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips++
	n := 0
	for _, cmd := range cmds {
		c.cmds = append(c.cmds, cmd.Name())
		if name := strings.ToLower(cmd.Name()); name == "evalsha" || name == "eval" {
			n++
		}
	}
	c.scripts = append(c.scripts, n)
}

func (c *redisCounter) noteRead(cmd redis.Cmder, err error) {
	if strings.EqualFold(cmd.Name(), "mget") && err == nil {
		c.reads.Add(1)
	}
}

// take returns the round trips and commands since the last call.
func (c *redisCounter) take() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	trips, cmds := c.trips, c.cmds
	c.trips, c.cmds, c.scripts = 0, nil, nil
	return trips, cmds
}

// takeScripts returns, per round trip since the last take, how many script
// calls it carried, and resets the count like take.
func (c *redisCounter) takeScripts() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	scripts := c.scripts
	c.trips, c.cmds, c.scripts = 0, nil, nil
	return scripts
}

// keysUnder lists the Redis keys that start with prefix (SCAN, not KEYS:
// the server is shared).
func keysUnder(t testing.TB, rdb redis.UniversalClient, prefix string) []string {
	var out []string
	iter := rdb.Scan(context.Background(), 0, prefix+":*", 1000).Iterator()
	for iter.Next(context.Background()) {
		out = append(out, iter.Val())
	}
	require.NoError(t, iter.Err())
	return out
}

// seedProducts creates n products through the plugin and returns their ids.
func seedProducts(t *testing.T, e *env, n int) []uint {
	t.Helper()
	ps := make([]Product, n)
	for i := range ps {
		ps[i] = Product{Name: fmt.Sprintf("p%d", i), Price: int64(i)}
	}
	require.NoError(t, e.db.Create(&ps).Error)
	ids := make([]uint, n)
	for i, p := range ps {
		ids[i] = p.ID
	}
	return ids
}

// newProxiedEnv is newEnvWith whose plugin reaches Redis through a
// faultProxy. e.rdb is a direct client, so the test can look at keys
// while the plugin cannot; the plugin's own client is returned as well.
func newProxiedEnv(t *testing.T, b backend, cfg Config, gcfg *gorm.Config) (*env, *faultProxy) {
	t.Helper()
	var px *faultProxy
	var direct redis.UniversalClient
	inner := b.redis
	b.redis = func(t testing.TB) redis.UniversalClient {
		direct = inner(t)
		px = newFaultProxy(t, direct.(*redis.Client).Options().Addr)
		c := redis.NewClient(&redis.Options{Addr: px.Addr(), MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	e := newEnvWith(t, b, cfg, gcfg, &Product{})
	e.rdb = direct
	return e, px
}

// newItems returns n items with database-assigned keys.
func newItems(n int, tag string) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Name: fmt.Sprintf("%s-%d", tag, i), Stock: i, Price: int64(i)}
	}
	return items
}

// seedItems creates n items (ids 1..n) and returns their ids.
func seedItems(t *testing.T, w *writeEnv, n int) []any {
	t.Helper()
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Name: "item" + strings.Repeat("x", i), Stock: i + 1, Price: int64(100 * (i + 1))}
	}
	w.write(t, func(db *gorm.DB) error { return db.Create(&items).Error })
	ids := make([]any, n)
	for i, it := range items {
		require.NotZero(t, it.ID)
		ids[i] = it.ID
	}
	return ids
}

// The commit modes: every way a write can commit, in one table, and the
// inspector that lets a test look inside an implicit transaction.

// inspector runs test code at two points of an Update statement: right
// after its SQL, and after the plugin's after-update callback but before
// GORM's own commit of the statement's implicit transaction. It can also
// fail the statement there, so that GORM rolls its transaction back.
type inspector struct {
	inside atomic.Pointer[func()]
	fail   atomic.Bool
}

func installInspector(t testing.TB, db *gorm.DB) *inspector {
	t.Helper()
	ins := &inspector{}
	run := func(db *gorm.DB) {
		if f := ins.inside.Load(); f != nil && db.Error == nil {
			(*f)()
		}
	}
	cb := db.Callback().Update()
	require.NoError(t, cb.After("gorm:update").Before("writethrough:after_update").Register("txtest:after_sql", run))
	require.NoError(t, cb.After("writethrough:after_update").Before("gorm:commit_or_rollback_transaction").Register("txtest:before_commit", func(db *gorm.DB) {
		if inTransaction(db.Statement.ConnPool) { // in auto-commit the write has finished here
			run(db)
		}
		if ins.fail.Load() && db.Error == nil {
			db.AddError(errRollback)
		}
	}))
	return ins
}

// commitMode is one way a write reaches the database and commits. It is
// the one table of such ways: the transaction tests run every mode, the
// write-shape, race, policy and round-trip tests the subsets they name
// (modesNamed).
type commitMode struct {
	name string
	gcfg func() *gorm.Config
	// tracked: the plugin sees the COMMIT and writes the new state through.
	// Otherwise (a transaction begun on db.Connection) the fences stay and
	// readers use the database until Config.LockTTL.
	tracked bool
	// autocommit: no transaction at all; the change is visible to others
	// as soon as its SQL ran, so the key must be fenced by then.
	autocommit bool
	// nests: the mode runs an explicit transaction that can hold savepoints.
	nests bool
	// run performs write in this mode, calls inside while the transaction
	// is open (after the write, before COMMIT) and then commits, or rolls
	// back when rollback is set and returns the error that caused it. ins
	// (installInspector) is needed only by the implicit modes, and only to
	// run inside or to roll back: it may be nil otherwise.
	run func(e *env, ins *inspector, write func(*gorm.DB) error, inside func(), rollback bool) error
}

// commit runs write in mode m and commits it, as an application would:
// nothing runs in between, nothing is rolled back.
func (m commitMode) commit(e *env, write func(*gorm.DB) error) error {
	return m.run(e, nil, write, func() {}, false)
}

func explicitTx(db func(*env) *gorm.DB) func(*env, *inspector, func(*gorm.DB) error, func(), bool) error {
	return func(e *env, _ *inspector, write func(*gorm.DB) error, inside func(), rollback bool) error {
		return db(e).Transaction(func(tx *gorm.DB) error {
			if err := write(tx); err != nil {
				return err
			}
			inside()
			if rollback {
				return errRollback
			}
			return nil
		})
	}
}

func implicitTx(db func(*env) *gorm.DB) func(*env, *inspector, func(*gorm.DB) error, func(), bool) error {
	return func(e *env, ins *inspector, write func(*gorm.DB) error, inside func(), rollback bool) error {
		if ins == nil {
			return write(db(e))
		}
		ins.inside.Store(&inside)
		ins.fail.Store(rollback)
		defer func() {
			ins.inside.Store(nil)
			ins.fail.Store(false)
		}()
		return write(db(e))
	}
}

// pluginDB is the test's DB, with the plugin.
func pluginDB(e *env) *gorm.DB { return e.db }

func preparedSession(e *env) *gorm.DB { return e.db.Session(&gorm.Session{PrepareStmt: true}) }

// commitModes returns every way of committing a write.
func commitModes() []commitMode {
	return []commitMode{
		{name: "Transaction", gcfg: defaultGorm, tracked: true, nests: true, run: explicitTx(pluginDB)},
		{name: "BeginCommit", gcfg: defaultGorm, tracked: true, nests: true,
			run: func(e *env, _ *inspector, write func(*gorm.DB) error, inside func(), rollback bool) error {
				tx := e.db.Begin()
				if tx.Error != nil {
					return tx.Error
				}
				if err := write(tx); err != nil {
					tx.Rollback()
					return err
				}
				inside()
				if rollback {
					if err := tx.Rollback().Error; err != nil {
						return err
					}
					return errRollback
				}
				return tx.Commit().Error
			}},
		{name: "Implicit", gcfg: defaultGorm, tracked: true, run: implicitTx(pluginDB)},
		{name: "AutoCommit", gcfg: func() *gorm.Config { return &gorm.Config{SkipDefaultTransaction: true} },
			tracked: true, autocommit: true, run: implicitTx(pluginDB)},
		{name: "PrepareStmt/Transaction", gcfg: func() *gorm.Config { return &gorm.Config{PrepareStmt: true} },
			tracked: true, nests: true, run: explicitTx(pluginDB)},
		{name: "PrepareStmt/Implicit", gcfg: func() *gorm.Config { return &gorm.Config{PrepareStmt: true} },
			tracked: true, run: implicitTx(pluginDB)},
		{name: "SessionPrepareStmt/Transaction", gcfg: defaultGorm, tracked: true, nests: true, run: explicitTx(preparedSession)},
		{name: "SessionPrepareStmt/Implicit", gcfg: defaultGorm, tracked: true, run: implicitTx(preparedSession)},
		{name: "Connection/Implicit", gcfg: defaultGorm, tracked: true,
			run: func(e *env, ins *inspector, write func(*gorm.DB) error, inside func(), rollback bool) error {
				return e.db.Connection(func(c *gorm.DB) error {
					return implicitTx(func(*env) *gorm.DB { return c })(e, ins, write, inside, rollback)
				})
			}},
		{name: "Connection/Transaction", gcfg: defaultGorm, tracked: false, nests: true,
			run: func(e *env, ins *inspector, write func(*gorm.DB) error, inside func(), rollback bool) error {
				return e.db.Connection(func(c *gorm.DB) error {
					return explicitTx(func(*env) *gorm.DB { return c })(e, ins, write, inside, rollback)
				})
			}},
	}
}

// modesNamed picks modes by name, in the order given.
func modesNamed(names ...string) []commitMode {
	all := commitModes()
	var out []commitMode
	for _, n := range names {
		found := false
		for _, m := range all {
			if m.name == n {
				out, found = append(out, m), true
			}
		}
		if !found {
			panic("no commit mode named " + n)
		}
	}
	return out
}

// writeModes are the modes the write-shape tests run each shape in: GORM's
// own transaction around the statement, auto-commit, a transaction the
// caller opened, and that with prepared statements.
func writeModes() []commitMode {
	return modesNamed("Implicit", "AutoCommit", "Transaction", "PrepareStmt/Transaction")
}

// racingModes are the ways a writer that races a reader or another writer
// commits.
func racingModes() []commitMode {
	return modesNamed("AutoCommit", "Implicit", "Transaction")
}

// policyModes are the ways a write meets an unreachable Redis (see
// policyWrite).
func policyModes() []commitMode {
	return modesNamed("AutoCommit", "Implicit", "Transaction", "Connection/Implicit", "BeginCommit")
}

// rowKeyOf returns the Redis key of a row of a cached model whose primary
// key is set.
func rowKeyOf(t testing.TB, e *env, row any) string {
	t.Helper()
	mi, err := e.plugin.modelOf(row)
	require.NoError(t, err)
	require.True(t, mi.cached, "model %T is not cached: %s", row, mi.reason)
	k, ok := mi.keyOf(context.Background(), e.plugin, reflect.ValueOf(row))
	require.True(t, ok, "the row's primary key must be set")
	return k.row
}

// qualified returns the table name qualified by its schema (Postgres), its
// database (MySQL) or "main" (SQLite).
func qualified(w *writeEnv, table string) string {
	switch w.b.dialect {
	case "postgres":
		return "public." + table
	case "mysql":
		return "test." + table
	}
	return "main." + table
}
