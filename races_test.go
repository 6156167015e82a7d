package writethrough

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// One deterministic test per race of docs/protocol.md: each forces the bad
// interleaving with the plugin's test seams (testHooks) and asserts the
// outcome the protocol promises.
//
// The gate and the async read and write helpers below are theirs.

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

// Race 1: a reader misses, reads the old row, a writer commits and writes
// the cache, then the reader's fill of the old row must be dropped.
func TestRace1StaleFill(t *testing.T) {
	forEachRacingMode(t, func(t *testing.T, b backend, m commitMode) {
		e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
		p, key := newProduct(t, e)
		g := newGate()
		e.plugin.hooks = &testHooks{beforeFill: func(row string) {
			if row == key {
				g.pass()
			}
		}}
		reader := goRead(e, p.ID)
		g.await(t) // the reader holds its lease and the old row
		require.True(t, strings.HasPrefix(peek(t, e, key), "L"), "the reader holds the lease")

		require.NoError(t, m.commit(e, setPrice(p.ID, 200)))
		require.True(t, strings.HasPrefix(peek(t, e, key), "V"), "the writer wrote through")
		g.open()
		r := recvRead(t, reader)
		require.NoError(t, r.err)
		require.Equal(t, int64(100), r.p.Price, "the reader started before the write: the old state is its answer")

		requireFresh(t, e, p.ID, 200, true)
	})
}

// Race 2: two writers commit v1 then v2 but their cache writes land v2 then
// v1. The late finish must not store v1. The second writer fenced over the
// first's live fence, so its token joined a marked fence set: its own finish
// must not store either (the first writer may still commit, or may have
// died after COMMIT), and leaves the key fenced by the first; the first
// writer's finish, the last token out, drops the key. Readers get v2 from
// the database throughout.
func TestRace2ReorderedWriters(t *testing.T) {
	forEachRacingMode(t, func(t *testing.T, b backend, m commitMode) {
		e := newEnvWith(t, b, Config{ContendedTTL: 5 * time.Second}, m.gcfg(), &Product{})
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		g := newGate()
		e.plugin.hooks = &testHooks{beforeFinish: func() bool {
			g.pass() // only the first writer stops: after COMMIT, before its finish
			return true
		}}
		first := goWrite(func() error { return m.commit(e, setPrice(p.ID, 200)) })
		g.await(t)
		require.Equal(t, int64(200), dbPrice(t, e, p.ID), "the first writer committed")

		require.NoError(t, m.commit(e, setPrice(p.ID, 300)), "the second writer commits and finishes")
		require.True(t, strings.HasPrefix(peek(t, e, key), "F!"), "the first writer's fence is still there: the second finish stored nothing, key holds %q", abbrev(peek(t, e, key)))
		got, hit := readPrice(t, e, p.ID)
		require.Equal(t, int64(300), got)
		require.False(t, hit)
		g.open()
		require.NoError(t, recvErr(t, first))

		require.Equal(t, "", peek(t, e, key), "the last finish drops the key")
		got, hit = readPrice(t, e, p.ID)
		require.Equal(t, int64(300), got, "never the older value")
		require.False(t, hit)
		requireFresh(t, e, p.ID, 300, true)
	})
}

// Race 3a: nothing is cached before COMMIT, even by a concurrent reader
// that misses while the transaction is open.
func TestRace3BeforeCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p, key := newProduct(t, e)
		g := newGate()
		e.plugin.hooks = &testHooks{afterCommit: g.pass}
		writer := goWrite(func() error {
			return e.db.Transaction(func(tx *gorm.DB) error {
				if err := setPrice(p.ID, 200)(tx); err != nil {
					return err
				}
				// (not on the test goroutine: report, do not require)
				if v, _ := e.rdb.Get(context.Background(), key).Result(); !strings.HasPrefix(v, "F") {
					return fmt.Errorf("not fenced before COMMIT: key holds %q", abbrev(v))
				}
				// A reader outside misses while the transaction is open.
				var got Product
				if err := e.db.First(&got, p.ID).Error; err != nil || got.Price != 100 {
					return fmt.Errorf("a reader outside the transaction got price %d, %v; want the committed 100", got.Price, err)
				}
				if v, _ := e.rdb.Get(context.Background(), key).Result(); !strings.HasPrefix(v, "F") {
					return fmt.Errorf("the reader filled the key: it holds %q", abbrev(v))
				}
				return nil
			})
		})
		g.await(t) // COMMIT returned, the finish has not run
		require.True(t, strings.HasPrefix(peek(t, e, key), "F"))
		r := recvRead(t, goRead(e, p.ID))
		require.Equal(t, int64(200), r.p.Price, "committed: readers get the new state from the database")
		g.open()
		require.NoError(t, recvErr(t, writer))
		requireFresh(t, e, p.ID, 200, true)
	})
}

// Race 3b: a rollback publishes nothing, and a rollback's late release
// leaves no older state behind a newer writer's.
func TestRace3AfterRollback(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		g := newGate()
		e.plugin.hooks = &testHooks{beforeFinish: func() bool {
			g.pass() // the rolled-back transaction stops before releasing
			return true
		}}
		rolledBack := goWrite(func() error {
			return e.db.Transaction(func(tx *gorm.DB) error {
				if err := setPrice(p.ID, 200)(tx); err != nil {
					return err
				}
				return errRollback
			})
		})
		g.await(t)
		require.True(t, strings.HasPrefix(peek(t, e, key), "F"), "still fenced")
		got, hit := readPrice(t, e, p.ID)
		require.Equal(t, int64(100), got, "rolled back: the committed state")
		require.False(t, hit)

		require.NoError(t, setPrice(p.ID, 300)(e.db), "a newer writer commits meanwhile")
		require.True(t, strings.HasPrefix(peek(t, e, key), "F!"), "the newer writer fenced over the rolled-back one's fence: it cannot know that one will not commit, and stores nothing")
		g.open()
		require.ErrorIs(t, recvErr(t, rolledBack), errRollback)
		require.Equal(t, "", peek(t, e, key), "the late release, the last token out, drops the key")
		requireFresh(t, e, p.ID, 300, true)
	})
}

// Race 3c: a savepoint rolled back inside a committed transaction: its
// state never reaches Redis, neither while the finish is pending (readers
// get the committed state) nor after it (the keys are dropped, not written).
func TestRace3SavepointRollback(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p, key := newProduct(t, e)
		q, qkey := newProduct(t, e)
		warm[Product](t, e, p.ID)
		warm[Product](t, e, q.ID)
		g := newGate()
		e.plugin.hooks = &testHooks{afterCommit: g.pass}
		writer := goWrite(func() error {
			return e.db.Transaction(func(tx *gorm.DB) error {
				if err := setPrice(p.ID, 200)(tx); err != nil {
					return err
				}
				err := tx.Transaction(func(sp *gorm.DB) error {
					if err := setPrice(p.ID, 666)(sp); err != nil {
						return err
					}
					if err := setPrice(q.ID, 666)(sp); err != nil {
						return err
					}
					return errRollback
				})
				if !errors.Is(err, errRollback) {
					return fmt.Errorf("nested transaction: %v", err)
				}
				var inTx Product
				if err := tx.First(&inTx, p.ID).Error; err != nil || inTx.Price != 200 {
					return fmt.Errorf("the savepoint must be rolled back in the database: %v, price %d", err, inTx.Price)
				}
				return nil
			})
		})
		g.await(t) // committed, not finished
		for _, r := range []struct {
			id    uint
			price int64
		}{{p.ID, 200}, {q.ID, 100}} {
			got, hit := readPrice(t, e, r.id)
			require.Equal(t, r.price, got, "the committed state")
			require.False(t, hit)
		}
		g.open()
		require.NoError(t, recvErr(t, writer))
		require.Equal(t, "", peek(t, e, key), "p's last write was rolled back: its key is dropped")
		require.Equal(t, "", peek(t, e, qkey), "q was only written in the rolled-back savepoint: its key is dropped")
		requireFresh(t, e, p.ID, 200, true)
		requireFresh(t, e, q.ID, 100, true)
	})
}

// Race 4: reads inside a transaction go to the database: they see the
// transaction's own writes, also ones the plugin cannot see (raw SQL), and
// never fill the cache with uncommitted state.
func TestRace4ReadsInTransaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		warmP, wkey := newProduct(t, e)
		warm[Product](t, e, warmP.ID)
		wold := peek(t, e, wkey)
		cold, ckey := newProduct(t, e)
		table := e.stmtSchema(&Product{}).Table
		err := e.db.Transaction(func(tx *gorm.DB) error {
			for _, id := range []uint{warmP.ID, cold.ID} {
				require.NoError(t, tx.Exec(fmt.Sprintf("UPDATE %s SET price = 300 WHERE id = ?", table), id).Error)
				var got Product
				require.NoError(t, tx.First(&got, id).Error)
				require.Equal(t, int64(300), got.Price, "the transaction sees its own write")
			}
			return errRollback
		})
		require.ErrorIs(t, err, errRollback)
		require.Equal(t, wold, peek(t, e, wkey))
		require.Equal(t, "", peek(t, e, ckey), "no uncommitted state was filled")
		requireFresh(t, e, warmP.ID, 100, true)
		requireFresh(t, e, cold.ID, 100, true)
	})
}

// Race 5a: the process dies between COMMIT and the finish. Readers get the
// database's state (never the pre-commit one) until the fence expires,
// then the cache refills.
func TestRace5CrashBeforeFinish(t *testing.T) {
	forEachRacingMode(t, func(t *testing.T, b backend, m commitMode) {
		e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		var crashed atomic.Bool
		crashed.Store(true)
		e.plugin.hooks = &testHooks{beforeFinish: func() bool { return !crashed.Load() }}
		require.NoError(t, m.commit(e, setPrice(p.ID, 200)))
		require.True(t, strings.HasPrefix(peek(t, e, key), "F"), "the fence outlives the crash")
		crashed.Store(false)
		for i := 0; i < 3; i++ {
			got, hit := readPrice(t, e, p.ID)
			require.Equal(t, int64(200), got, "never the pre-commit state")
			require.False(t, hit)
		}
		expireKey(t, e, key, e.plugin.cfg.LockTTL)
		requireFresh(t, e, p.ID, 200, true)
	})
}

// Race 5b: the finish's round trip fails: its request is lost (nothing
// ran) or its reply is (it ran). The write still returns success, and no
// reader gets the pre-commit state.
func TestRace5LostFinish(t *testing.T) {
	for _, replyLost := range []bool{false, true} {
		t.Run(fmt.Sprintf("replyLost=%v", replyLost), func(t *testing.T) {
			forEachRacingMode(t, func(t *testing.T, b backend, m commitMode) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				hook := &faultHook{}
				hookPlugin(e.plugin, e.rdb, hook)
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				hook.afterSend.Store(replyLost)
				hook.set(func(cmd redis.Cmder) bool { return isScript(cmd, finishScript) })
				errsBefore := e.plugin.Stats().RedisErrors
				require.NoError(t, m.commit(e, setPrice(p.ID, 200)), "a lost finish does not fail the committed write")
				hook.clear()
				require.Equal(t, int64(1), hook.hits.Load(), "the finish was hit by the fault")
				require.Greater(t, e.plugin.Stats().RedisErrors, errsBefore)
				v := peek(t, e, key)
				if replyLost {
					require.True(t, strings.HasPrefix(v, "V"), "the finish ran, only its reply was lost")
					requireFresh(t, e, p.ID, 200, true)
					return
				}
				require.True(t, strings.HasPrefix(v, "F"), "the finish never ran: the fence stays")
				got, hit := readPrice(t, e, p.ID)
				require.Equal(t, int64(200), got)
				require.False(t, hit)
				expireKey(t, e, key, e.plugin.cfg.LockTTL)
				requireFresh(t, e, p.ID, 200, true)
			})
		})
	}
}

// Race 6: a cached "not found" must not outlive an insert, whether the
// insert names its key or the database assigns it, and also when a reader's
// fill of the absence races the insert.
func TestRace6CachedAbsenceThenInsert(t *testing.T) {
	forEachRacingMode(t, func(t *testing.T, b backend, m commitMode) {
		e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
		seed, _ := newProduct(t, e)
		for _, assigned := range []bool{true, false} { // Postgres: explicit ids do not advance the sequence
			t.Run(fmt.Sprintf("dbAssignsKey=%v", assigned), func(t *testing.T) {
				var last Product
				require.NoError(t, e.db.Unscoped().Order("id desc").Take(&last).Error)
				id := last.ID + 1
				// Cached absence, served from the cache, for a bounded time.
				require.ErrorIs(t, e.db.First(&Product{}, id).Error, gorm.ErrRecordNotFound)
				key := rowKeyOf(t, e, &Product{ID: id})
				require.True(t, strings.HasPrefix(peek(t, e, key), "N"), "the absence is cached")
				ttl := e.rdb.PTTL(context.Background(), key).Val()
				require.Greater(t, ttl, time.Duration(0))
				require.LessOrEqual(t, ttl, e.plugin.cfg.NotFoundTTL, "briefly")
				e.queries()
				require.ErrorIs(t, e.db.First(&Product{}, id).Error, gorm.ErrRecordNotFound)
				require.Zero(t, e.queries(), "the absence is served from the cache")

				p := Product{Name: "new", Price: 100}
				if !assigned {
					p.ID = id
				}
				require.NoError(t, e.db.Create(&p).Error)
				require.Equal(t, id, p.ID)
				requireFresh(t, e, id, 100, true)
			})
		}
		t.Run("racingFill", func(t *testing.T) {
			id := seed.ID + 1000
			key := rowKeyOf(t, e, &Product{ID: id})
			g := newGate()
			e.plugin.hooks = &testHooks{beforeFill: func(row string) {
				if row == key {
					g.pass()
				}
			}}
			defer func() { e.plugin.hooks = nil }()
			reader := goRead(e, id)
			g.await(t) // the reader saw no row and is about to cache that
			require.NoError(t, e.db.Create(&Product{ID: id, Name: "late", Price: 100}).Error)
			g.open()
			require.ErrorIs(t, recvRead(t, reader).err, gorm.ErrRecordNotFound)
			require.False(t, strings.HasPrefix(peek(t, e, key), "N"), "the stale absence was dropped")
			requireFresh(t, e, id, 100, true)
		})
	})
}

// stampede runs n concurrent reads of one cold key spread over the given
// plugin instances (each with counter installed on its Redis client) and
// returns how many database queries they made. With forced set, whoever
// reads the database waits until every reader has had its answer from
// Redis: the worst case, all miss before any fill lands.
func stampede(t *testing.T, envs []*env, counter *redisCounter, id uint, key string, n int, forced bool) int64 {
	t.Helper()
	counter.reads.Store(0)
	for _, e := range envs {
		e.plugin.hooks = &testHooks{beforeQuery: func(row string) {
			if !forced || row != key {
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for counter.reads.Load() < int64(n) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}}
	}
	require.NoError(t, envs[0].rdb.Del(context.Background(), key).Err())
	envs[0].queries()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		e := envs[i%len(envs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var got Product
			if err := e.db.First(&got, id).Error; err != nil {
				errs <- err
			} else if got.Price != 100 {
				errs <- fmt.Errorf("read price %d", got.Price)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, e := range envs {
		e.plugin.hooks = nil
	}
	if forced {
		require.GreaterOrEqual(t, counter.reads.Load(), int64(n), "every reader asked Redis")
	}
	return envs[0].queries()
}

// Race 7: a stampede of concurrent misses on one hot key.
func TestRace7Stampede(t *testing.T) {
	const n = 50
	// Generous Redis timeouts: 50 goroutines on a loaded machine must not
	// fall back to the database for being slow.
	cfg := Config{ReadTimeout: 5 * time.Second, LeaseTTL: 5 * time.Second}
	forEachBackend(t, func(t *testing.T, b backend) {
		t.Run("oneProcess", func(t *testing.T) {
			e := newEnv(t, b, cfg, &Product{})
			counter := countRedis(e.rdb, e.plugin)
			p, key := newProduct(t, e)
			q := stampede(t, []*env{e}, counter, p.ID, key, n, true)
			t.Logf("%s: %d concurrent misses in one process (forced: all miss before the fill) made %d database queries", b.name, n, q)
			require.Equal(t, int64(1), q, "one process: exactly one database query")
			var unforced []int64
			for i := 0; i < 5; i++ {
				unforced = append(unforced, stampede(t, []*env{e}, counter, p.ID, key, n, false))
			}
			t.Logf("%s: one process, %d unforced concurrent misses, 5 runs: %v database queries", b.name, n, unforced)
			for _, q := range unforced {
				require.LessOrEqual(t, q, int64(1))
			}
		})
		t.Run("twoProcesses", func(t *testing.T) {
			e := newEnv(t, b, cfg, &Product{})
			twin := twinOf(t, e, cfg, nil)
			counter := countRedis(e.rdb, e.plugin, twin.rdb, twin.plugin)
			p, key := newProduct(t, e)
			q := stampede(t, []*env{e, twin}, counter, p.ID, key, n, true)
			t.Logf("%s: %d concurrent misses over two processes (forced) made %d database queries", b.name, n, q)
			var unforced []int64
			for i := 0; i < 5; i++ {
				unforced = append(unforced, stampede(t, []*env{e, twin}, counter, p.ID, key, n, false))
			}
			t.Logf("%s: two processes, %d unforced concurrent misses, 5 runs: %v database queries", b.name, n, unforced)
			// The process holding the lease makes one query for all its
			// readers. Readers in the other process see a lease that is not
			// theirs and re-read Redis with backoff until it is filled
			// (awaitForeignFills), instead of each reading the database:
			// a few queries in all, not one per reader. (Sharing one
			// reader's database answer between processes would not be
			// safe: a table-level write leaves a lease in place, so seeing
			// the same lease does not prove both reads started after it.)
			const few = 3
			require.LessOrEqual(t, q, int64(few))
			for _, q := range unforced {
				require.LessOrEqual(t, q, int64(few))
			}
		})
	})
}

// Race 8a: the writer's fence is evicted while its transaction is open,
// and a reader takes the lease and reads the old row meanwhile. Its fill
// lands after the write returned, on the contended marker the finish left
// (or on nothing, when that marker was evicted too): it must be dropped.
func TestRace8EvictedFence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, evictContended := range []bool{false, true} {
			t.Run(fmt.Sprintf("evictContended=%v", evictContended), func(t *testing.T) {
				e := newEnv(t, b, Config{}, &Product{})
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				g := newGate()
				e.plugin.hooks = &testHooks{beforeFill: func(row string) {
					if row == key {
						g.pass()
					}
				}}
				var reader <-chan asyncRead
				require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
					if err := setPrice(p.ID, 200)(tx); err != nil {
						return err
					}
					require.True(t, strings.HasPrefix(peek(t, e, key), "F"))
					require.NoError(t, e.rdb.Del(context.Background(), key).Err(), "evict the fence")
					reader = goRead(e, p.ID)
					g.await(t) // the reader holds a lease and the old row
					return nil
				}))
				require.Equal(t, "C", peek(t, e, key), "the finish found no fence of its own")
				if evictContended {
					require.NoError(t, e.rdb.Del(context.Background(), key).Err(), "evict the contended marker")
				}
				g.open() // the stale fill lands after the write returned
				require.Equal(t, int64(100), recvRead(t, reader).p.Price)
				v := peek(t, e, key)
				require.False(t, strings.HasPrefix(v, "V"), "the stale fill was dropped, key holds %q", abbrev(v))
				got, _ := readPrice(t, e, p.ID)
				require.Equal(t, int64(200), got)
			})
		}
	})
}

// Race 8b: the written-through value is evicted while a stale fill is in
// flight: the fill finds no lease of its own and is dropped.
func TestRace8EvictedValue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p, key := newProduct(t, e)
		g := newGate()
		e.plugin.hooks = &testHooks{beforeFill: func(row string) {
			if row == key {
				g.pass()
			}
		}}
		reader := goRead(e, p.ID)
		g.await(t)
		require.NoError(t, setPrice(p.ID, 200)(e.db))
		require.NoError(t, e.rdb.Del(context.Background(), key).Err(), "evict the new value")
		g.open()
		require.Equal(t, int64(100), recvRead(t, reader).p.Price)
		require.Equal(t, "", peek(t, e, key), "the stale fill was dropped")
		requireFresh(t, e, p.ID, 200, true)
	})
}

// Race 8c: a shard's generation key is evicted after a table-level write
// made the entries filled before it stale. The stale entries must not come
// back to life.
func TestRace8EvictedGeneration(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{TableShards: 1}, &Product{})
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		require.NoError(t, e.db.Model(&Product{}).Where("price > ?", 0).Update("stock", 9).Error, "a write the plugin cannot name rows for")
		mi, err := e.plugin.modelOf(&Product{})
		require.NoError(t, err)
		gen, _ := mi.shardKeys(e.prefix, 0)
		require.NotEqual(t, "", peek(t, e, gen))
		require.NoError(t, e.rdb.Del(context.Background(), gen).Err(), "evict the generation")
		var got Product
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Equal(t, 9, got.Stock, "the entry from before the table write is stale")
		require.NotEqual(t, "", peek(t, e, key))
	})
}

// Race 9: two plugins on one table with different model layouts never
// decode each other's entries, and both stay correct after writes from
// either.
func TestRace9SchemaSkew(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		oldBin := newEnv(t, b, Config{})
		oldBin.db.NamingStrategy = gadgetNamer{oldBin.db.NamingStrategy.(schema.NamingStrategy)}
		require.NoError(t, oldBin.db.AutoMigrate(&GadgetV1{}))
		require.NoError(t, oldBin.db.AutoMigrate(&GadgetV2{}), "the new binary adds its column")
		t.Cleanup(func() { _ = oldBin.db.Migrator().DropTable(&GadgetV1{}) })
		newBin := twinOf(t, oldBin, Config{}, nil)
		require.Equal(t, oldBin.stmtSchema(&GadgetV1{}).Table, newBin.stmtSchema(&GadgetV2{}).Table)
		mi1, err := oldBin.plugin.modelOf(&GadgetV1{})
		require.NoError(t, err)
		mi2, err := newBin.plugin.modelOf(&GadgetV2{})
		require.NoError(t, err)
		require.NotEqual(t, mi1.fp, mi2.fp)

		g := GadgetV1{Name: "g", Price: 100}
		require.NoError(t, oldBin.db.Create(&g).Error)
		key := rowKeyOf(t, oldBin, &GadgetV1{ID: g.ID})
		require.Equal(t, key, rowKeyOf(t, newBin, &GadgetV2{ID: g.ID}), "both binaries use the same key")

		readOld := func() (GadgetV1, bool) {
			before := oldBin.plugin.Stats().Hits
			var got GadgetV1
			require.NoError(t, oldBin.db.First(&got, g.ID).Error)
			return got, oldBin.plugin.Stats().Hits > before
		}
		readNew := func() (GadgetV2, bool) {
			before := newBin.plugin.Stats().Hits
			var got GadgetV2
			require.NoError(t, newBin.db.First(&got, g.ID).Error)
			return got, newBin.plugin.Stats().Hits > before
		}
		check := func(price, stock int64) {
			t.Helper()
			// Each binary in turn reads the row right after the other one
			// cached it: it must not take the other's entry for its own.
			for i := 0; i < 2; i++ {
				o, _ := readOld()
				require.Equal(t, price, o.Price)
				o, hit := readOld()
				require.Equal(t, price, o.Price)
				require.True(t, hit, "the old binary's own entry is served")
				n, hit := readNew()
				require.Equal(t, stock, n.Stock, "the new binary never decodes the old layout")
				require.False(t, hit)
				n, hit = readNew()
				require.Equal(t, stock, n.Stock)
				require.True(t, hit, "the new binary's own entry is served")
			}
		}
		check(100, 5)
		require.NoError(t, oldBin.db.Model(&GadgetV1{ID: g.ID}).Update("price", 200).Error, "a write from the old binary")
		check(200, 5)
		require.NoError(t, newBin.db.Model(&GadgetV2{ID: g.ID}).Update("stock", 7).Error, "a write from the new binary")
		check(200, 7)
		require.NotZero(t, newBin.plugin.Stats().DecodeErrors+oldBin.plugin.Stats().DecodeErrors, "entries of the other layout were seen and replaced")
	})
}

// A fence over another writer's live fence (docs/protocol.md, fence sets):
// auto-commit writer A fences and stalls before its SQL; writer B (another
// process, in every commit mode) fences the same row, commits 200 and
// finishes; then A's SQL commits 300 and A dies before its finish. Had B's
// fence replaced A's, B's finish would have stored 200 over its own fence
// and 200 would be served after 300 committed (P4 broken). B's token joins
// A's in a marked fence set instead, so B stores nothing and the key stays
// fenced until A's fence expires.
func TestRaceFenceOverLiveFence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range racingModes() {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, &gorm.Config{SkipDefaultTransaction: true}, &Product{})
				other := twinOf(t, e, Config{}, m.gcfg())
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				g := newGate()
				var crashed atomic.Bool
				e.plugin.hooks = &testHooks{
					afterFence:   g.pass, // A stops between its fence and its SQL
					beforeFinish: func() bool { return !crashed.Load() },
				}
				a := goWrite(func() error { return setPrice(p.ID, 300)(e.db) })
				g.await(t)
				require.True(t, strings.HasPrefix(peek(t, e, key), "F"), "A fenced the row")

				require.NoError(t, m.commit(other, setPrice(p.ID, 200)), "B commits and finishes")
				afterB := peek(t, e, key)

				crashed.Store(true) // A dies after its COMMIT, before its finish
				g.open()
				require.NoError(t, recvErr(t, a))
				require.Equal(t, int64(300), dbPrice(t, e, p.ID))
				for _, r := range []*env{e, other} {
					got, hit := readPrice(t, r, p.ID)
					require.Equal(t, int64(300), got, "never the state from before A's commit")
					require.False(t, hit)
				}
				require.True(t, strings.HasPrefix(afterB, "F!"), "A's fence still held the key (marked) after B finished; it held %q", abbrev(afterB))
				crashed.Store(false)
				expireKey(t, e, key, e.plugin.cfg.LockTTL)
				requireFresh(t, e, p.ID, 300, true)
			})
		}
	})
}

// The same for table-level writes: A's table fence stalls before its SQL,
// B's table-level write runs whole (its table fence joins A's), then a
// reader misses. Had B's table fence replaced A's and its finish deleted
// it, the reader would take a lease, read the state before A's commit and
// fill it, and A's commit, followed by A's death, would leave it cached.
func TestRaceTableFenceOverLiveTableFence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, Config{TableShards: 1}, &gorm.Config{SkipDefaultTransaction: true}, &Product{})
		other := twinOf(t, e, Config{TableShards: 1}, nil)
		p, _ := newProduct(t, e)
		warm[Product](t, e, p.ID)
		g := newGate()
		var crashed atomic.Bool
		e.plugin.hooks = &testHooks{
			afterFence:   g.pass,
			beforeFinish: func() bool { return !crashed.Load() },
		}
		byCondition := func(price int64) func(*gorm.DB) error {
			return func(db *gorm.DB) error {
				return db.Model(&Product{}).Where("price > ?", 0).Update("price", price).Error
			}
		}
		a := goWrite(func() error { return byCondition(300)(e.db) })
		g.await(t)
		require.NoError(t, byCondition(200)(other.db), "B's table-level write")
		got, hit := readPrice(t, other, p.ID)
		require.Equal(t, int64(200), got)
		require.False(t, hit, "A's table fence is still there: no lease, no fill")

		crashed.Store(true)
		g.open()
		require.NoError(t, recvErr(t, a))
		for _, r := range []*env{e, other} {
			got, hit := readPrice(t, r, p.ID)
			require.Equal(t, int64(300), got, "never the state from before A's commit")
			require.False(t, hit)
		}
		crashed.Store(false)
		mi, err := e.plugin.modelOf(&Product{})
		require.NoError(t, err)
		_, fence := mi.shardKeys(e.prefix, 0)
		expireKey(t, e, fence, e.plugin.cfg.LockTTL)
		requireFresh(t, e, p.ID, 300, true)
	})
}
