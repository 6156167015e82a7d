package writethrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// The history checker. Writers bump a per-row version under a row lock (in
// transactions that commit, roll back, or roll back a savepoint; in
// auto-commit conditional updates; now and then in a transaction that
// updates a range of rows by a condition the plugin cannot pin to keys)
// through several plugin instances that share one Redis, as separate
// processes would; readers look rows up by primary key (First, and Find by
// a list of ids) through the same instances. Every operation is recorded with
// its start and end on one monotonic clock, and the checker then asserts,
// for every read:
//
//	P1  it returns no version older than one whose write returned before
//	    the read started;
//	P3  it returns no value that was rolled back (a transaction, a
//	    savepoint) or never committed;
//
// and, once the writers stop: no update was lost (the database holds exactly
// the committed increments), and (P2) every value the cache serves equals
// the database, and the cache serves every row again. It also measures how
// many reads the cache answered, and requires most reads of rows that were
// not written recently to be hits: a checker over a cache that never hits
// proves nothing. Its table is HistRow (models_test.go).

const (
	initialPayload = "init"
	// savepointBump is added to the version by writes inside a savepoint that
	// is rolled back: a version this large must never be read.
	savepointBump = 1_000_000
)

// historyOpts describes one run of the checker.
type historyOpts struct {
	duration  time.Duration
	cfg       Config
	redisAddr string // where the plugin instances connect (Redis or a proxy)
	// newClient, when set, makes the instances' Redis clients instead
	// (a cluster client, say); redisAddr is then unused.
	newClient func() redis.UniversalClient
	instances int
	writers   int
	readers   int
	rows      int // rows 1..rows
	hot       int // rows 1..hot take most single-row writes
	// tableWrites adds transactions that update a range of rows with a
	// condition the plugin cannot pin to keys (table-level fences).
	tableWrites bool
	// quietHits is the fraction of quiet re-reads that must be cache hits
	// (0: not required, as under faults that keep the cache cold).
	quietHits float64
	// fault, when set, runs alongside the workload; it must return when ctx
	// ends and leave the fault switched off.
	fault func(ctx context.Context, w *histWorld)
	// hooks, when set, is installed on each instance before the run.
	hooks func(i int) *testHooks
	// jitter delays some fills, finishes and database queries of lookups
	// by a few ms (see withJitter), widening the windows the protocol's
	// races live in so that a broken guard shows.
	jitter bool
}

func defaultHistoryOpts(redisAddr string, d time.Duration) historyOpts {
	return historyOpts{
		duration: d,
		cfg: Config{
			LockTTL:      1500 * time.Millisecond,
			LeaseTTL:     500 * time.Millisecond,
			ContendedTTL: 100 * time.Millisecond,
		},
		redisAddr:   redisAddr,
		instances:   3,
		writers:     3,
		readers:     3,
		rows:        64,
		hot:         8,
		tableWrites: true,
		quietHits:   0.5,
		jitter:      true,
	}
}

// historySeconds is the time budget of one checker run (WT_HISTORY_SECONDS,
// default 3).
func historySeconds(t testing.TB) time.Duration {
	s := os.Getenv("WT_HISTORY_SECONDS")
	if s == "" {
		return 3 * time.Second
	}
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, "WT_HISTORY_SECONDS")
	require.Greater(t, f, 0.0, "WT_HISTORY_SECONDS")
	return time.Duration(f * float64(time.Second))
}

// histInstance is one "process": its own *gorm.DB, plugin and Redis client.
type histInstance struct {
	db     *gorm.DB
	plugin *Plugin
	rdb    redis.UniversalClient
}

// histWorld is the database table, a plugin-free view of it, and the
// instances that share it.
type histWorld struct {
	b         backend
	opts      historyOpts
	direct    *gorm.DB // no plugin: the database's truth
	instances []*histInstance
	prefix    string // Redis key prefix
	base      time.Time
}

// now is the checker's clock: monotonic time since the run began.
func (w *histWorld) now() time.Duration { return time.Since(w.base) }

// historyRedis returns the address of the backend's Redis. The in-process
// one is started here with its TTLs running on the wall clock (by default
// miniredis only expires keys when told to), since the protocol's markers
// must expire for the cache to converge.
func historyRedis(t testing.TB, b backend) string {
	if strings.HasSuffix(b.name, "miniredis") {
		m := miniredis.RunT(t)
		m.ClockTTL(true)
		return m.Addr()
	}
	return os.Getenv("WT_REDIS_ADDR")
}

// newHistWorld creates the table with rows 1..opts.rows at version 0 and
// opens the plugin instances on it.
func newHistWorld(t testing.TB, b backend, opts historyOpts) *histWorld {
	t.Helper()
	n := testSeq.Add(1)
	naming := schema.NamingStrategy{TablePrefix: fmt.Sprintf("wth%d_%d_", os.Getpid()%10000, n)}
	sqlDB := b.sqlOpen(t)
	sqlDB.SetMaxOpenConns(16)
	direct, err := gorm.Open(b.open(t, sqlDB), &gorm.Config{NamingStrategy: naming, Logger: logger.Discard})
	require.NoError(t, err)
	require.NoError(t, direct.AutoMigrate(&HistRow{}))
	t.Cleanup(func() { _ = direct.Migrator().DropTable(&HistRow{}) })
	rows := make([]HistRow, opts.rows)
	for i := range rows {
		rows[i] = HistRow{ID: int64(i + 1), Payload: initialPayload}
	}
	require.NoError(t, direct.CreateInBatches(rows, 100).Error)

	w := &histWorld{b: b, opts: opts, direct: direct,
		prefix: fmt.Sprintf("wthist%d_%d", os.Getpid()%10000, n)}
	for i := 0; i < opts.instances; i++ {
		db, err := gorm.Open(b.open(t, &probePool{inner: sqlDB}), &gorm.Config{NamingStrategy: naming, Logger: logger.Discard})
		require.NoError(t, err)
		var rdb redis.UniversalClient
		if opts.newClient != nil {
			rdb = opts.newClient()
		} else {
			rdb = redis.NewClient(&redis.Options{Addr: opts.redisAddr})
		}
		t.Cleanup(func() { rdb.Close() })
		cfg := opts.cfg
		cfg.Prefix = w.prefix
		p := New(rdb, cfg)
		if opts.hooks != nil {
			p.hooks = opts.hooks(i)
		}
		if opts.jitter {
			p.hooks = withJitter(p.hooks)
		}
		require.NoError(t, db.Use(p))
		w.instances = append(w.instances, &histInstance{db: db, plugin: p, rdb: rdb})
	}
	// Leave nothing behind in a shared Redis (generation keys never expire).
	keys := w.keys(t)
	rdb := w.instances[0].rdb
	t.Cleanup(func() {
		ctx := context.Background()
		for _, k := range keys {
			rdb.Del(ctx, k) // one key per call: on Redis Cluster they live in different slots
		}
	})
	return w
}

// withJitter returns hooks that sleep now and then at the points where the
// protocol races, on top of h's own: a quarter of the fills wait up to 5ms
// after the database read (the stale-fill window), a quarter of the commits
// up to 3ms before their finish (reordered finishes), and a tenth of the
// lookups up to 2ms before the database read.
func withJitter(h *testHooks) *testHooks {
	out := &testHooks{}
	if h != nil {
		*out = *h
	}
	pause := func(oneIn int, upTo time.Duration) {
		if rand.IntN(oneIn) == 0 {
			time.Sleep(rand.N(upTo))
		}
	}
	fill, query, commit := out.beforeFill, out.beforeQuery, out.afterCommit
	out.beforeFill = func(row string) {
		pause(4, 5*time.Millisecond)
		if fill != nil {
			fill(row)
		}
	}
	out.beforeQuery = func(row string) {
		pause(10, 2*time.Millisecond)
		if query != nil {
			query(row)
		}
	}
	out.afterCommit = func() {
		pause(4, 3*time.Millisecond)
		if commit != nil {
			commit()
		}
	}
	return out
}

// keys lists every Redis key the run can touch: each row's key, and each
// shard's generation and table-fence keys.
func (w *histWorld) keys(t testing.TB) []string {
	p := w.instances[0].plugin
	mi, err := p.modelOf(&HistRow{})
	require.NoError(t, err)
	var keys []string
	for id := 1; id <= w.opts.rows; id++ {
		keys = append(keys, mi.key(p.cfg.Prefix, p.cfg.TableShards, []string{strconv.Itoa(id)}).row)
	}
	for shard := 0; shard < p.cfg.TableShards; shard++ {
		gen, fence := mi.shardKeys(p.cfg.Prefix, shard)
		keys = append(keys, gen, fence)
	}
	return keys
}

// probeKey carries a *atomic.Int64 in a context: probePool counts the
// database statements run under it, so each read knows whether the cache
// answered it.
type probeKey struct{}

func withProbe(ctx context.Context) (context.Context, *atomic.Int64) {
	n := new(atomic.Int64)
	return context.WithValue(ctx, probeKey{}, n), n
}

// probePool is the instances' connection pool: *sql.DB plus per-context
// statement counting.
type probePool struct{ inner *sql.DB }

func (p *probePool) note(ctx context.Context) {
	if n, ok := ctx.Value(probeKey{}).(*atomic.Int64); ok {
		n.Add(1)
	}
}

func (p *probePool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return p.inner.PrepareContext(ctx, query)
}

func (p *probePool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	p.note(ctx)
	return p.inner.ExecContext(ctx, query, args...)
}

func (p *probePool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	p.note(ctx)
	return p.inner.QueryContext(ctx, query, args...)
}

func (p *probePool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	p.note(ctx)
	return p.inner.QueryRowContext(ctx, query, args...)
}

func (p *probePool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	tx, err := p.inner.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return probeTx{tx}, nil
}

// afterTxQueryKey carries a func(query string) in a context: a query run
// inside a transaction under that context calls it once the database has
// answered, before the rows are read, so a test can stop a statement
// right after its snapshot was taken.
type afterTxQueryKey struct{}

// probeTx is a transaction of probePool.
type probeTx struct{ *sql.Tx }

func (t probeTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	rows, err := t.Tx.QueryContext(ctx, query, args...)
	if f, ok := ctx.Value(afterTxQueryKey{}).(func(string)); ok && err == nil {
		f(query)
	}
	return rows, err
}

func (p *probePool) GetDBConn() (*sql.DB, error) { return p.inner, nil }

func (p *probePool) Ping() error { return p.inner.Ping() }

// The history.

// writeOutcome says whether a write's values may ever be seen.
type writeOutcome int

const (
	committed  writeOutcome = iota // returned success: its values are the row's state
	notVisible                     // rolled back, failed, or a no-op: never to be read
)

// histWrite is one row's part of one write operation.
type histWrite struct {
	row        int64
	start, end time.Duration
	version    int64
	payload    string
	outcome    writeOutcome
	kind       string
}

// histRead is one row returned by one read operation.
type histRead struct {
	row        int64
	start, end time.Duration
	version    int64
	payload    string
	hit        bool // the statement ran no database query
}

// histLog is one goroutine's record; logs are merged after the run.
type histLog struct {
	writes   []histWrite
	reads    []histRead
	readErrs []string
	writeErr map[string]int // by operation kind and error, for the report
	maxRead  time.Duration  // slowest read call
}

func (l *histLog) writeFailed(kind string, err error) {
	if l.writeErr == nil {
		l.writeErr = map[string]int{}
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	l.writeErr[kind+": "+msg]++
}

var (
	errHistoryRollback   = errors.New("history: roll back on purpose")
	errSavepointRollback = errors.New("history: roll back the savepoint on purpose")
)

// historyResult is what one run measured.
type historyResult struct {
	tableWrites             int // committed table-level (range) writes
	reads, hits             int
	quietReads, quietHits   int
	writes, committedWrites int
	maxRead                 time.Duration
	violations              []string
	readErrs                []string
	writeErrs               map[string]int
	stats                   Stats // summed over the instances
}

func (r historyResult) String() string {
	return fmt.Sprintf("reads checked %d, cache hits %.1f%%, quiet reads %d (hits %.1f%%), row writes %d (%d committed, %d table-level), max read latency %v, violations %d",
		r.reads, pct(r.hits, r.reads), r.quietReads, pct(r.quietHits, r.quietReads), r.writes, r.committedWrites, r.tableWrites,
		r.maxRead.Round(time.Millisecond), len(r.violations))
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// runHistory runs the workload, stops it, and checks the history and the
// final state. It returns what it measured; the caller asserts.
func runHistory(t *testing.T, b backend, opts historyOpts) historyResult {
	t.Helper()
	return newHistWorld(t, b, opts).run()
}

func (w *histWorld) run() historyResult {
	opts := w.opts
	var stop atomic.Bool
	var wg sync.WaitGroup
	logs := make([]*histLog, 0, opts.writers+opts.readers)
	w.base = time.Now()
	for i := 0; i < opts.writers; i++ {
		l := &histLog{}
		logs = append(logs, l)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w.writer(i, l, &stop)
		}(i)
	}
	for i := 0; i < opts.readers; i++ {
		l := &histLog{}
		logs = append(logs, l)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w.reader(i, l, &stop)
		}(i)
	}
	faultDone := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), opts.duration)
	defer cancel()
	go func() {
		defer close(faultDone)
		if opts.fault != nil {
			opts.fault(ctx, w)
		}
	}()
	<-ctx.Done()
	stop.Store(true)
	wg.Wait()
	<-faultDone

	var res historyResult
	var writes []histWrite
	var reads []histRead
	res.writeErrs = map[string]int{}
	for _, l := range logs {
		writes = append(writes, l.writes...)
		reads = append(reads, l.reads...)
		res.readErrs = append(res.readErrs, l.readErrs...)
		for k, v := range l.writeErr {
			res.writeErrs[k] += v
		}
		res.maxRead = max(res.maxRead, l.maxRead)
	}
	for _, inst := range w.instances {
		st := inst.plugin.Stats()
		res.stats.Hits += st.Hits
		res.stats.Misses += st.Misses
		res.stats.Fills += st.Fills
		res.stats.Bypasses += st.Bypasses
		res.stats.WritesThrough += st.WritesThrough
		res.stats.Invalidations += st.Invalidations
		res.stats.RedisErrors += st.RedisErrors
		res.stats.DecodeErrors += st.DecodeErrors
	}
	w.check(&res, writes, reads)
	w.checkFinal(&res, writes)
	w.checkConverged(&res)
	return res
}

// pickRow returns a row for a single-row write: mostly a hot one.
func (w *histWorld) pickRow(rng *rand.Rand) int64 {
	if rng.IntN(100) < 85 {
		return int64(rng.IntN(w.opts.hot) + 1)
	}
	return int64(rng.IntN(w.opts.rows) + 1)
}

func (w *histWorld) lockable() bool { return w.b.dialect != "sqlite" }

// locked makes a read inside a transaction take the rows' locks
// (SQLite serializes writing transactions anyway).
func (w *histWorld) locked(tx *gorm.DB) *gorm.DB {
	if w.lockable() {
		return tx.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	return tx
}

// writer runs write operations until stop, on instance i % instances.
func (w *histWorld) writer(i int, l *histLog, stop *atomic.Bool) {
	inst := w.instances[i%len(w.instances)]
	rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	ctx := context.Background() // writes are never cancelled: their outcome must be known
	seq := 0
	for !stop.Load() {
		seq++
		tok := fmt.Sprintf("w%d.%d", i, seq)
		if w.opts.tableWrites && rng.IntN(100) == 0 {
			// Rare: each one invalidates the whole table's cache.
			w.rangeWrite(ctx, inst, rng, l, "t"+tok)
			continue
		}
		id := w.pickRow(rng)
		switch r := rng.IntN(100); {
		case r < 40:
			w.txWrite(ctx, inst, id, l, "c"+tok, false)
		case r < 52:
			w.txWrite(ctx, inst, id, l, "r"+tok, true)
		case r < 67:
			w.savepointWrite(ctx, inst, id, l, tok, rng.IntN(2) == 0)
		default:
			w.conditionalWrite(ctx, inst, id, l, "a"+tok)
		}
	}
}

// txWrite bumps a row's version in a transaction that commits, or rolls
// back when rollback is set.
func (w *histWorld) txWrite(ctx context.Context, inst *histInstance, id int64, l *histLog, tok string, rollback bool) {
	kind := "tx"
	if rollback {
		kind = "rollback"
	}
	var next int64
	start := w.now()
	err := inst.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r HistRow
		if err := w.locked(tx).First(&r, id).Error; err != nil {
			return err
		}
		next = r.Version + 1
		if err := tx.Model(&HistRow{ID: id}).Updates(map[string]any{"version": next, "payload": tok}).Error; err != nil {
			return err
		}
		if rollback {
			return errHistoryRollback
		}
		return nil
	})
	end := w.now()
	out := committed
	if err != nil {
		out = notVisible
		if !errors.Is(err, errHistoryRollback) {
			l.writeFailed(kind, err)
		}
	}
	l.writes = append(l.writes, histWrite{row: id, start: start, end: end, version: next, payload: tok, outcome: out, kind: kind})
}

// savepointWrite writes a marker inside a savepoint and rolls the savepoint
// back; the outer transaction then commits, with a real bump of the same
// row when bump is set.
func (w *histWorld) savepointWrite(ctx context.Context, inst *histInstance, id int64, l *histLog, tok string, bump bool) {
	var marker, next int64
	start := w.now()
	err := inst.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var r HistRow
		if err := w.locked(tx).First(&r, id).Error; err != nil {
			return err
		}
		marker, next = r.Version+savepointBump, r.Version+1
		spErr := tx.Transaction(func(sp *gorm.DB) error {
			if err := sp.Model(&HistRow{ID: id}).Updates(map[string]any{"version": marker, "payload": "s" + tok}).Error; err != nil {
				return err
			}
			return errSavepointRollback
		})
		if !errors.Is(spErr, errSavepointRollback) {
			return fmt.Errorf("savepoint: %w", spErr)
		}
		if bump {
			return tx.Model(&HistRow{ID: id}).Updates(map[string]any{"version": next, "payload": "c" + tok}).Error
		}
		return nil
	})
	end := w.now()
	l.writes = append(l.writes, histWrite{row: id, start: start, end: end, version: marker, payload: "s" + tok, outcome: notVisible, kind: "savepoint"})
	switch {
	case err != nil:
		l.writeFailed("savepoint", err)
		if bump {
			l.writes = append(l.writes, histWrite{row: id, start: start, end: end, version: next, payload: "c" + tok, outcome: notVisible, kind: "savepoint"})
		}
	case bump:
		l.writes = append(l.writes, histWrite{row: id, start: start, end: end, version: next, payload: "c" + tok, outcome: committed, kind: "savepoint"})
	}
}

// conditionalWrite reads the row through the cache and bumps it in
// auto-commit with "WHERE version = <what was read>".
func (w *histWorld) conditionalWrite(ctx context.Context, inst *histInstance, id int64, l *histLog, tok string) {
	var r HistRow
	if !w.readOne(ctx, inst, id, &r, l) {
		return
	}
	next := r.Version + 1
	start := w.now()
	res := inst.db.WithContext(ctx).Model(&HistRow{ID: id}).Where("version = ?", r.Version).
		Updates(map[string]any{"version": next, "payload": tok})
	end := w.now()
	out := notVisible
	switch {
	case res.Error != nil:
		l.writeFailed("conditional", res.Error)
	case res.RowsAffected == 1:
		out = committed
	}
	l.writes = append(l.writes, histWrite{row: id, start: start, end: end, version: next, payload: tok, outcome: out, kind: "conditional"})
}

// rangeWrite bumps four consecutive rows in one transaction with a WHERE the
// plugin cannot turn into keys, so it fences the whole table.
func (w *histWorld) rangeWrite(ctx context.Context, inst *histInstance, rng *rand.Rand, l *histLog, tok string) {
	lo := int64(rng.IntN(w.opts.rows-3) + 1)
	hi := lo + 3
	var before []HistRow
	start := w.now()
	err := inst.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		before = before[:0]
		if err := w.locked(tx).Where("id >= ? AND id <= ?", lo, hi).Order("id").Find(&before).Error; err != nil {
			return err
		}
		res := tx.Model(&HistRow{}).Where("id >= ? AND id <= ?", lo, hi).
			Updates(map[string]any{"version": gorm.Expr("version + 1"), "payload": tok})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != int64(len(before)) {
			return fmt.Errorf("range update changed %d rows, locked %d", res.RowsAffected, len(before))
		}
		return nil
	})
	end := w.now()
	out := committed
	if err != nil {
		out = notVisible
		l.writeFailed("range", err)
	}
	for _, r := range before {
		l.writes = append(l.writes, histWrite{row: r.ID, start: start, end: end, version: r.Version + 1, payload: tok, outcome: out, kind: "range"})
	}
}

// reader runs primary-key reads until stop, on instance i % instances.
func (w *histWorld) reader(i int, l *histLog, stop *atomic.Bool) {
	inst := w.instances[i%len(w.instances)]
	rng := rand.New(rand.NewPCG(uint64(100+i), uint64(time.Now().UnixNano())))
	ctx := context.Background()
	for !stop.Load() {
		if rng.IntN(100) < 60 {
			var r HistRow
			w.readOne(ctx, inst, int64(rng.IntN(w.opts.rows)+1), &r, l)
			continue
		}
		n := 2 + rng.IntN(3)
		ids := make([]int64, 0, n)
		for len(ids) < n {
			id := int64(rng.IntN(w.opts.rows) + 1)
			if !containsID(ids, id) {
				ids = append(ids, id)
			}
		}
		w.readMany(ctx, inst, ids, l)
	}
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// readOne reads one row with First and records it.
func (w *histWorld) readOne(ctx context.Context, inst *histInstance, id int64, r *HistRow, l *histLog) bool {
	pctx, probe := withProbe(ctx)
	start := w.now()
	err := inst.db.WithContext(pctx).First(r, id).Error
	end := w.now()
	l.maxRead = max(l.maxRead, end-start)
	if err != nil {
		l.readErrs = append(l.readErrs, fmt.Sprintf("First(%d): %v", id, err))
		return false
	}
	if r.ID != id {
		l.readErrs = append(l.readErrs, fmt.Sprintf("First(%d) returned row %d", id, r.ID))
		return false
	}
	l.reads = append(l.reads, histRead{row: r.ID, start: start, end: end, version: r.Version, payload: r.Payload, hit: probe.Load() == 0})
	return true
}

// readMany reads rows with Find by a list of ids and records each.
func (w *histWorld) readMany(ctx context.Context, inst *histInstance, ids []int64, l *histLog) {
	pctx, probe := withProbe(ctx)
	var rows []HistRow
	start := w.now()
	err := inst.db.WithContext(pctx).Find(&rows, ids).Error
	end := w.now()
	l.maxRead = max(l.maxRead, end-start)
	if err != nil {
		l.readErrs = append(l.readErrs, fmt.Sprintf("Find(%v): %v", ids, err))
		return
	}
	if len(rows) != len(ids) {
		l.readErrs = append(l.readErrs, fmt.Sprintf("Find(%v) returned %d rows", ids, len(rows)))
	}
	hit := probe.Load() == 0
	for _, r := range rows {
		if !containsID(ids, r.ID) {
			l.readErrs = append(l.readErrs, fmt.Sprintf("Find(%v) returned row %d", ids, r.ID))
			continue
		}
		l.reads = append(l.reads, histRead{row: r.ID, start: start, end: end, version: r.Version, payload: r.Payload, hit: hit})
	}
}

// The checker.

type rowHistory struct {
	byEnd     []histWrite // committed, by end
	prefixMax []int64     // max version among byEnd[:i+1]
	byStart   []histWrite // committed, by start
	startMax  []int64
	all       []histWrite // every write, by start (for quietness)
	allEndMax []time.Duration
	reads     []histRead // by start
	readEnds  []time.Duration
	payloads  map[int64]string
}

// maxEndedBefore returns the highest version written by a committed write that
// ended before t (0 if none).
func (h *rowHistory) maxEndedBefore(t time.Duration) int64 {
	i := sort.Search(len(h.byEnd), func(i int) bool { return h.byEnd[i].end >= t })
	if i == 0 {
		return 0
	}
	return h.prefixMax[i-1]
}

// describe tells which write committed a version, for a violation report.
func (h *rowHistory) describe(version int64) string {
	for _, wr := range h.byEnd {
		if wr.version == version {
			return fmt.Sprintf("%s write %q [%v,%v]", wr.kind, wr.payload, wr.start, wr.end)
		}
	}
	return "unknown write"
}

// around lists the row's writes that overlap [from, to], for a violation
// report.
func (h *rowHistory) around(from, to time.Duration) string {
	var b strings.Builder
	for _, wr := range h.all {
		if wr.end >= from && wr.start <= to {
			fmt.Fprintf(&b, "[%s %q v%d outcome %d %v-%v] ", wr.kind, wr.payload, wr.version, wr.outcome, wr.start, wr.end)
		}
	}
	return b.String()
}

// maxStartedBefore returns the highest version written by a committed write
// that started before t (0 if none).
func (h *rowHistory) maxStartedBefore(t time.Duration) int64 {
	i := sort.Search(len(h.byStart), func(i int) bool { return h.byStart[i].start >= t })
	if i == 0 {
		return 0
	}
	return h.startMax[i-1]
}

// settledSince reports whether no write of the row ran in [start-window,
// end], and if so since when (the last write's end plus window) the row has
// been left alone.
func (h *rowHistory) settledSince(start, end, window time.Duration) (time.Duration, bool) {
	i := sort.Search(len(h.all), func(i int) bool { return h.all[i].start >= end })
	if i == 0 {
		return 0, true
	}
	since := h.allEndMax[i-1] + window
	return since, since <= start
}

func (w *histWorld) histories(writes []histWrite, res *historyResult) map[int64]*rowHistory {
	hs := map[int64]*rowHistory{}
	get := func(id int64) *rowHistory {
		h := hs[id]
		if h == nil {
			h = &rowHistory{payloads: map[int64]string{0: initialPayload}}
			hs[id] = h
		}
		return h
	}
	for id := int64(1); id <= int64(w.opts.rows); id++ {
		get(id)
	}
	tableWrites := map[string]bool{}
	for _, wr := range writes {
		h := get(wr.row)
		if wr.kind == "range" {
			// A table-level write invalidates every row of the table: for
			// quietness it counts as a write of each.
			if !tableWrites[wr.payload] {
				tableWrites[wr.payload] = true
				if wr.outcome == committed {
					res.tableWrites++
				}
				for _, other := range hs {
					other.all = append(other.all, wr)
				}
			}
		} else {
			h.all = append(h.all, wr)
		}
		if wr.outcome != committed {
			continue
		}
		res.committedWrites++
		if prev, dup := h.payloads[wr.version]; dup {
			res.violations = append(res.violations, fmt.Sprintf("lost update: row %d version %d committed by both %s and %s", wr.row, wr.version, prev, wr.payload))
		}
		h.payloads[wr.version] = wr.payload
		h.byEnd = append(h.byEnd, wr)
		h.byStart = append(h.byStart, wr)
	}
	res.writes = len(writes)
	for _, h := range hs {
		sort.Slice(h.all, func(i, j int) bool { return h.all[i].start < h.all[j].start })
		sort.Slice(h.byEnd, func(i, j int) bool { return h.byEnd[i].end < h.byEnd[j].end })
		sort.Slice(h.byStart, func(i, j int) bool { return h.byStart[i].start < h.byStart[j].start })
		h.prefixMax = prefixMax(h.byEnd)
		h.startMax = prefixMax(h.byStart)
		h.allEndMax = make([]time.Duration, len(h.all))
		var m time.Duration
		for i, wr := range h.all {
			m = max(m, wr.end)
			h.allEndMax[i] = m
		}
	}
	return hs
}

func prefixMax(ws []histWrite) []int64 {
	out := make([]int64, len(ws))
	var m int64
	for i, w := range ws {
		m = max(m, w.version)
		out[i] = m
	}
	return out
}

// check asserts P1 and P3 for every read.
func (w *histWorld) check(res *historyResult, writes []histWrite, reads []histRead) {
	hs := w.histories(writes, res)
	invisible := map[string]string{}
	for _, wr := range writes {
		if wr.outcome == notVisible {
			invisible[wr.payload] = wr.kind
		}
	}
	for _, r := range reads {
		if h := hs[r.row]; h != nil {
			h.reads = append(h.reads, r)
		}
	}
	for _, h := range hs {
		sort.Slice(h.reads, func(i, j int) bool { return h.reads[i].start < h.reads[j].start })
		// readEnds[i] is the earliest end among reads[i:].
		h.readEnds = make([]time.Duration, len(h.reads))
		for i := len(h.reads) - 1; i >= 0; i-- {
			h.readEnds[i] = h.reads[i].end
			if i+1 < len(h.reads) {
				h.readEnds[i] = min(h.readEnds[i], h.readEnds[i+1])
			}
		}
	}
	quietWindow := w.opts.cfg.ContendedTTL + 100*time.Millisecond
	for _, r := range reads {
		res.reads++
		if r.hit {
			res.hits++
		}
		h := hs[r.row]
		if h == nil {
			res.violations = append(res.violations, fmt.Sprintf("read of unknown row %d", r.row))
			continue
		}
		// A quiet re-read: no write of the row near it, and another read of
		// the row ran entirely after the last write and before this one
		// (that read may fill; this one should hit).
		if since, quiet := h.settledSince(r.start, r.end, quietWindow); quiet {
			i := sort.Search(len(h.reads), func(i int) bool { return h.reads[i].start >= since })
			if i < len(h.reads) && h.readEnds[i] < r.start {
				res.quietReads++
				if r.hit {
					res.quietHits++
				}
			}
		}
		where := fmt.Sprintf("row %d read [%v,%v] hit=%v saw version %d %q", r.row, r.start, r.end, r.hit, r.version, r.payload)
		switch kind, bad := invisible[r.payload]; {
		case bad:
			res.violations = append(res.violations, fmt.Sprintf("P3: %s, written by a %s write that never committed", where, kind))
			continue
		case r.version >= savepointBump:
			res.violations = append(res.violations, fmt.Sprintf("P3: %s, a rolled-back savepoint's marker", where))
			continue
		case h.payloads[r.version] != r.payload:
			res.violations = append(res.violations, fmt.Sprintf("P3: %s, but version %d was committed as %q", where, r.version, h.payloads[r.version]))
			continue
		}
		if floor := h.maxEndedBefore(r.start); r.version < floor {
			res.violations = append(res.violations, fmt.Sprintf("P1: %s, but version %d (%s) had committed and returned before the read started; writes of the row around it: %s",
				where, floor, h.describe(floor), h.around(r.start-200*time.Millisecond, r.end)))
		}
		if ceil := h.maxStartedBefore(r.end); r.version > ceil {
			res.violations = append(res.violations, fmt.Sprintf("P1: %s, but no write of version %d had started before the read ended", where, r.version))
		}
	}
}

// checkFinal asserts that no update was lost: each row holds exactly as
// many increments as committed, with the payload of the last one.
func (w *histWorld) checkFinal(res *historyResult, writes []histWrite) {
	want := map[int64]int64{}
	payload := map[int64]string{}
	for _, wr := range writes {
		if wr.outcome == committed && wr.version >= want[wr.row] {
			want[wr.row], payload[wr.row] = wr.version, wr.payload
		}
	}
	count := map[int64]int64{}
	for _, wr := range writes {
		if wr.outcome == committed {
			count[wr.row]++
		}
	}
	var rows []HistRow
	if err := w.direct.Order("id").Find(&rows).Error; err != nil {
		res.violations = append(res.violations, fmt.Sprintf("final read: %v", err))
		return
	}
	for _, r := range rows {
		if r.Version != count[r.ID] || r.Version != want[r.ID] {
			res.violations = append(res.violations, fmt.Sprintf("lost update: row %d is at version %d, %d increments committed (highest %d)", r.ID, r.Version, count[r.ID], want[r.ID]))
		}
		if p, ok := payload[r.ID]; ok && p != r.Payload {
			res.violations = append(res.violations, fmt.Sprintf("row %d holds payload %q, last commit wrote %q", r.ID, r.Payload, p))
		}
	}
}

// checkServed reads every row through every instance and directly. A read
// the cache answered must equal the database (P2). It reports whether every
// read was a hit.
func (w *histWorld) checkServed(res *historyResult) bool {
	var truth []HistRow
	if err := w.direct.Order("id").Find(&truth).Error; err != nil {
		res.violations = append(res.violations, fmt.Sprintf("P2 truth: %v", err))
		return false
	}
	allHit := true
	for i, inst := range w.instances {
		for _, want := range truth {
			ctx, probe := withProbe(context.Background())
			var got HistRow
			if err := inst.db.WithContext(ctx).First(&got, want.ID).Error; err != nil {
				res.violations = append(res.violations, fmt.Sprintf("P2: instance %d row %d: %v", i, want.ID, err))
				continue
			}
			hit := probe.Load() == 0
			if !hit {
				allHit = false
			}
			if !reflect.DeepEqual(got, want) {
				res.violations = append(res.violations, fmt.Sprintf("P2: instance %d row %d (hit=%v) served %+v, database has %+v", i, want.ID, hit, got, want))
			}
		}
	}
	return allHit
}

// checkConverged checks what the cache serves right after the writers
// stopped, then waits (bounded by the markers' TTLs) until every row is
// served from the cache again, equal to the database.
func (w *histWorld) checkConverged(res *historyResult) {
	before := len(res.violations)
	if w.checkServed(res) {
		return
	}
	cfg := w.instances[0].plugin.cfg
	deadline := time.Now().Add(cfg.LockTTL + cfg.LeaseTTL + cfg.ContendedTTL + 5*time.Second)
	for len(res.violations) == before {
		if w.checkServed(res) {
			return
		}
		if time.Now().After(deadline) {
			res.violations = append(res.violations, "P2: the cache did not serve every row again after writes stopped and every marker's TTL passed")
			return
		}
		time.Sleep(20 * time.Millisecond) // poll: markers expire on Redis's clock
	}
}

// minQuietSample is how many quiet re-reads the hit-rate requirement needs
// to mean anything.
const minQuietSample = 30

// requireHistory asserts a run's result and logs its numbers.
func requireHistory(t *testing.T, name string, res historyResult, minQuietHits float64) {
	t.Helper()
	t.Logf("%s: %s", name, res)
	t.Logf("%s: plugin stats during the run: %+v", name, res.stats)
	if len(res.writeErrs) > 0 {
		t.Logf("%s: failed writes (not committed, checked as such): %v", name, res.writeErrs)
	}
	for i, v := range res.violations {
		if i == 20 {
			t.Errorf("... and %d more violations", len(res.violations)-20)
			break
		}
		t.Errorf("violation: %s", v)
	}
	if len(res.readErrs) > 0 {
		t.Errorf("%d reads returned an error while the database was up; first: %s", len(res.readErrs), strings.Join(res.readErrs[:min(5, len(res.readErrs))], "; "))
	}
	require.Positive(t, res.reads, "no reads were checked")
	require.Positive(t, res.committedWrites, "no writes committed")
	require.Positive(t, res.hits, "no read was a cache hit: a checker over a cache that never hits proves nothing")
	switch {
	case minQuietHits <= 0:
	case res.quietReads < minQuietSample:
		t.Logf("%s: only %d quiet re-reads (machine too slow?): the hit-rate requirement needs %d", name, res.quietReads, minQuietSample)
	default:
		require.GreaterOrEqual(t, pct(res.quietHits, res.quietReads), 100*minQuietHits,
			"too few quiet re-reads were cache hits: a checker over a cache that never hits proves nothing")
	}
}

// skipMiniredisWithServers skips the in-process Redis when a real one is
// configured: the real servers are what the history is checked against,
// and the time budget goes to them.
func skipMiniredisWithServers(t *testing.T, b backend) {
	if strings.HasSuffix(b.name, "miniredis") && os.Getenv("WT_REDIS_ADDR") != "" {
		t.Skip("checked against real Redis, which is configured")
	}
}

func TestHistory(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		skipMiniredisWithServers(t, b)
		opts := defaultHistoryOpts(historyRedis(t, b), historySeconds(t))
		res := runHistory(t, b, opts)
		requireHistory(t, b.name, res, opts.quietHits)
	})
}
