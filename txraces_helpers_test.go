package writethrough

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Helpers for the transaction, race and write-policy tests: looking at the
// raw Redis keys, letting marker TTLs pass, a second plugin instance on the
// same database and Redis (another process), and a go-redis hook that fails
// chosen commands.

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

// gate stops one goroutine at a seam until the test opens it. It is armed
// once and trips once.
type gate struct {
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func newGate() *gate {
	g := &gate{reached: make(chan struct{}), release: make(chan struct{})}
	g.armed.Store(true)
	return g
}

// pass is called from the seam: the first caller stops there.
func (g *gate) pass() {
	if g.armed.CompareAndSwap(true, false) {
		close(g.reached)
		<-g.release
	}
}

// await waits until a goroutine stopped at the gate.
func (g *gate) await(t testing.TB) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no goroutine reached the gate")
	}
}

func (g *gate) open() { close(g.release) }

// forEachRacingMode runs f per backend and per racing mode.
func forEachRacingMode(t *testing.T, f func(t *testing.T, b backend, m commitMode)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range racingModes() {
			t.Run(m.name, func(t *testing.T) { f(t, b, m) })
		}
	})
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

// goRead reads a product in a goroutine; the result arrives on the channel.
func goRead(e *env, id uint) <-chan asyncRead {
	ch := make(chan asyncRead, 1)
	go func() {
		var got Product
		err := e.db.First(&got, id).Error
		ch <- asyncRead{got, err}
	}()
	return ch
}

type asyncRead struct {
	p   Product
	err error
}

func recvRead(t testing.TB, ch <-chan asyncRead) asyncRead {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not return")
	}
	return asyncRead{}
}

func goWrite(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func recvErr(t testing.TB, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not return")
	}
	return nil
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
