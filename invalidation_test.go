package writethrough

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Invalidate and InvalidateTable, and the invalidation queue: keys a write
// could not fence stay dirty (bypassed in this process) until their queued
// invalidation lands, and it lands only after the write committed.

// TestPolicyAvailableDirtyKeysBypassTheCache: Redis answers reads but not
// writes (a replica promoted late, say): the write commits unfenced, and
// while its invalidation cannot land, this process does not serve the old
// entry still in Redis.
func TestPolicyAvailableDirtyKeysBypassTheCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := Config{OnRedisError: Available, ContendedTTL: 5 * time.Second}
		e := newEnv(t, b, cfg, &Product{})
		hook := &faultHook{}
		hookPlugin(e.plugin, e.rdb, hook)
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		old := peek(t, e, key)
		writes := func(cmd redis.Cmder) bool {
			switch strings.ToLower(cmd.Name()) {
			case "set", "incr", "setnx":
				return true
			case "evalsha", "eval": // every script but the lease script
				args := cmd.Args()
				return len(args) > 1 && args[1] != leaseScript.Hash()
			}
			return false
		}
		hook.set(writes)
		require.NoError(t, setPrice(p.ID, 200)(e.db))
		require.Equal(t, old, peek(t, e, key), "the old entry is still in Redis")
		for i := 0; i < 3; i++ {
			got, hit := readPrice(t, e, p.ID)
			require.Equal(t, int64(200), got)
			require.False(t, hit, "a dirty key is not served from the cache")
		}
		hook.clear()
		awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
			return e.plugin.dirty.n.Load() == 0
		})
		require.Equal(t, "C", peek(t, e, key))
		expireKey(t, e, key, cfg.ContendedTTL)
		requireFresh(t, e, p.ID, 200, true)
	})
}

// TestPolicyAvailableQueueIsBounded: while Redis refuses writes, concurrent
// writers queue more keys than MaxQueuedInvalidations. The queue falls back
// to the tables of the keys (bounded memory), this process reads every row
// of those tables from the database meanwhile, and once Redis answers the
// tables are invalidated whole: no entry from before the writes is served.
func TestPolicyAvailableQueueIsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const bound = 4
		cfg := Config{OnRedisError: Available, MaxQueuedInvalidations: bound, TableShards: 4}
		e := newEnv(t, b, cfg, &Product{})
		hook := &faultHook{}
		hookPlugin(e.plugin, e.rdb, hook)
		const n = 8
		ids := make([]uint, n+1)
		for i := range ids {
			p, _ := newProduct(t, e)
			ids[i] = p.ID
		}
		warm[Product](t, e, toAny(ids)...)
		untouched := ids[n]
		writes := func(cmd redis.Cmder) bool {
			switch strings.ToLower(cmd.Name()) {
			case "set", "incr", "setnx":
				return true
			case "evalsha", "eval": // every script but the lease script
				args := cmd.Args()
				return len(args) > 1 && args[1] != leaseScript.Hash()
			}
			return false
		}
		hook.set(writes)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs[i] = setPrice(ids[i], 200+int64(i))(e.db)
			}(i)
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}

		d := &e.plugin.dirty
		d.mu.Lock()
		queued, tables := len(d.keys), len(d.tables)
		d.mu.Unlock()
		require.LessOrEqual(t, queued, bound, "the queue holds at most MaxQueuedInvalidations keys")
		require.Equal(t, 1, tables, "and fell back to the table")
		for i := 0; i < n; i++ {
			got, hit := readPrice(t, e, ids[i])
			require.Equal(t, 200+int64(i), got)
			require.False(t, hit, "a row of a dirty table is not served from the cache")
		}
		_, hit := readPrice(t, e, untouched)
		require.False(t, hit, "not even one the writes did not name")

		hook.clear()
		awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
			return d.n.Load() == 0
		})
		for i := 0; i < n; i++ {
			got, _ := readPrice(t, e, ids[i])
			require.Equal(t, 200+int64(i), got, "the committed write is read, not the old entry")
			// (Keys queued after the fallback were marked contended.)
			requireFresh(t, e, ids[i], 200+int64(i), false)
		}
		misses := e.plugin.Stats().Misses
		got, _ := readPrice(t, e, untouched)
		require.Equal(t, int64(100), got)
		require.Equal(t, misses+1, e.plugin.Stats().Misses, "the table was invalidated whole")
	})
}

func toAny[T any](s []T) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// TestPolicyAvailableInvalidationWaitsForCommit: the fence of a write in a
// transaction fails, and Redis comes back before the transaction commits.
// The queued invalidation must not land (and expire) before the COMMIT, or
// a reader fills the old row in between and it is served for good.
func TestPolicyAvailableInvalidationWaitsForCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := Config{OnRedisError: Available, ContendedTTL: 5 * time.Second}
		e, px := newProxiedEnv(t, b, cfg, &gorm.Config{})
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
			px.setDown(true)
			if err := setPrice(p.ID, 200)(tx); err != nil {
				return err
			}
			px.setDown(false)
			// Give a premature invalidation every chance to land and expire,
			// then let a reader outside fill the committed (old) row.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) && e.plugin.dirty.n.Load() != 0 {
				time.Sleep(5 * time.Millisecond)
			}
			if v := peek(t, e, key); v == "C" {
				expireKey(t, e, key, cfg.ContendedTTL)
			}
			got, _ := readPrice(t, e, p.ID)
			require.Equal(t, int64(100), got, "not committed yet")
			return nil
		}))
		awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
			return e.plugin.dirty.n.Load() == 0
		})
		got, _ := readPrice(t, e, p.ID)
		require.Equal(t, int64(200), got, "the committed write is read, not the old row")
		expireKey(t, e, key, cfg.ContendedTTL)
		requireFresh(t, e, p.ID, 200, true)
	})
}

// Writes the detector does not see (here: another process writing the
// database directly) are repaired with Invalidate and InvalidateTable.
func TestInvalidateAndInvalidateTable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
		ids := seedItems(t, w, 4)
		ctx := context.Background()
		table := w.db.NamingStrategy.TableName("Item")
		u := func(i int) uint { return ids[i].(uint) }
		warm[Item](t, w.env, ids...)

		// The cache cannot know about this write: it is stale now.
		require.NoError(t, w.plain.Exec("UPDATE "+table+" SET name = 'behind your back'").Error)
		var stale Item
		require.NoError(t, w.db.First(&stale, ids[0]).Error)
		require.NotEqual(t, "behind your back", stale.Name, "the test needs a stale entry to repair")

		require.NoError(t, w.plugin.Invalidate(ctx, &Item{ID: u(0)}, []Item{{ID: u(1)}}, []*Item{{ID: u(2)}}, Item{}))
		check[Item](t, w, false, ids[0], ids[1], ids[2])
		var still Item
		require.NoError(t, w.db.First(&still, ids[3]).Error)
		require.NotEqual(t, "behind your back", still.Name, "Invalidate touches only the rows it is given")

		require.NoError(t, w.plugin.InvalidateTable(ctx, &Item{}))
		checkAll[Item](t, w, false)

		// Bad input gets an error, not a panic.
		require.Error(t, w.plugin.Invalidate(ctx, 42))
		require.Error(t, w.plugin.InvalidateTable(ctx, "items"))
		require.Error(t, New(w.rdb, Config{}).InvalidateTable(ctx, &Item{}), "a plugin that is not installed")
		require.NoError(t, w.plugin.Invalidate(ctx))
	})
}
