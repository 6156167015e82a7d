package writethrough

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// The conversation with Redis: the round-trip budgets, the arguments the
// senders build, the script reload on NOSCRIPT, and what the generation
// keys promise when Redis evicts them.

// TestEvictedGenerationServesNothingStale: a table-level write bumps the
// shard generations; if Redis then evicts a generation key, entries from
// before the write must still not be served.
func TestEvictedGenerationServesNothingStale(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{TableShards: 1}, &Product{})
		p := Product{Name: "old", Price: 10}
		require.NoError(t, e.db.Create(&p).Error) // cached under the current generation
		require.NoError(t, e.db.Model(&Product{}).Where("price > ?", 0).Update("name", "new").Error)

		mi := e.plugin.model(e.stmtSchema(&Product{}))
		gen, _ := mi.shardKeys(e.prefix, 0)
		require.NoError(t, e.rdb.Del(context.Background(), gen).Err()) // evicted

		var got Product
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Equal(t, "new", got.Name)
		// and once refilled, it is served from the cache
		require.NoError(t, e.db.First(&got, p.ID).Error)
		e.queries()
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Zero(t, e.queries())
		require.Equal(t, "new", got.Name)
	})
}

// The round-trip budget: a hit costs one Redis round trip and no database
// statement; a miss two round trips (read, fill) and one statement; a write
// statement at most two round trips (fence, finish) whatever its batch size.

func TestHitIsOneRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 10)
		// A first read loads the read script into a fresh server (EVALSHA,
		// NOSCRIPT, EVAL): steady state starts after it.
		require.NoError(t, e.db.First(&Product{}, ids[0]).Error)
		trips := countRedis(e.rdb)
		e.queries()

		var p Product
		require.NoError(t, e.db.First(&p, ids[1]).Error)
		require.Equal(t, "p1", p.Name)
		n, cmds := trips.take()
		require.Equal(t, 1, n, "First hit: commands %v", cmds)
		require.Len(t, cmds, 1)
		require.Zero(t, e.queries(), "First hit ran a database statement")

		var q Product
		require.NoError(t, e.db.Where("id = ?", ids[2]).Take(&q).Error)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "Take hit: commands %v", cmds)
		require.Zero(t, e.queries())

		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error)
		require.Len(t, ps, 10)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "Find of 10 ids: one pipeline, got commands %v", cmds)
		require.Len(t, cmds, 10)
		require.Zero(t, e.queries(), "Find hit ran a database statement")

		// A cached absence is a hit too.
		const absent = 987654321
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		trips.take()
		e.queries()
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "cached absence: commands %v", cmds)
		require.Zero(t, e.queries())
		require.EqualValues(t, 1+1+1+10+1, e.plugin.Stats().Hits, "every read above but the first absent one was a hit")
	})
}

func TestMissIsTwoRoundTripsAndOneQuery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 10)
		ctx := context.Background()
		// Warm the scripts up: a miss and its fill.
		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		require.NoError(t, e.db.First(&Product{}, ids[0]).Error)
		trips := countRedis(e.rdb)

		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		trips.take()
		e.queries()
		misses := e.plugin.Stats().Misses

		var p Product
		require.NoError(t, e.db.First(&p, ids[1]).Error)
		require.Equal(t, "p1", p.Name)
		n, cmds := trips.take()
		require.Equal(t, 2, n, "First miss: read, then fill; commands %v", cmds)
		require.EqualValues(t, 1, e.queries())
		require.Equal(t, misses+1, e.plugin.Stats().Misses)

		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error) // ids[1] is cached again, the others miss
		require.Len(t, ps, 10)
		n, cmds = trips.take()
		require.Equal(t, 2, n, "Find of 10 ids, 9 missing: read, then fill; commands %v", cmds)
		require.Len(t, cmds, 10+9)
		require.EqualValues(t, 1, e.queries(), "one statement for every key that missed")

		// The fills landed: the next reads are hits.
		require.NoError(t, e.db.Find(&ps, ids).Error)
		n, _ = trips.take()
		require.Equal(t, 1, n)
		require.Zero(t, e.queries())

		// A missing row: one statement, and its absence is cached.
		const absent = 987654321
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 2, n, "absent row: commands %v", cmds)
		require.EqualValues(t, 1, e.queries())
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "cached absence: commands %v", cmds)
		require.Zero(t, e.queries(), "the absence First found was cached")
	})
}

func TestWriteIsAtMostTwoRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range modesNamed("Transaction", "Implicit", "AutoCommit") {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				write := func(f func(db *gorm.DB) error) {
					t.Helper()
					require.NoError(t, m.commit(e, f))
				}
				// Warm the scripts up.
				seedProducts(t, e, 1)
				trips := countRedis(e.rdb)

				for _, n := range []int{1, 500} {
					ps := make([]Product, n)
					for i := range ps {
						ps[i] = Product{Name: fmt.Sprintf("n%d", i), Price: 1}
					}
					trips.take()
					e.queries()
					write(func(db *gorm.DB) error { return db.Create(&ps).Error })
					got, cmds := trips.take()
					require.LessOrEqual(t, got, 2, "Create of %d rows: %d round trips, %d commands", n, got, len(cmds))
					t.Logf("Create of %d rows: %d Redis round trips (%d commands), %d database statements", n, got, len(cmds), e.queries())

					// The rows were written through: reading them is all hits.
					ids := make([]uint, n)
					for i, p := range ps {
						ids[i] = p.ID
					}
					var back []Product
					require.NoError(t, e.db.Find(&back, ids).Error)
					require.Len(t, back, n)
					require.Zero(t, e.queries(), "rows created are served from the cache")
					trips.take()

					write(func(db *gorm.DB) error {
						return db.Model(&Product{}).Where("id IN ?", ids).Update("price", 2).Error
					})
					got, cmds = trips.take()
					require.LessOrEqual(t, got, 2, "Update of %d rows: %d round trips, %d commands", n, got, len(cmds))
					t.Logf("Update of %d rows by id: %d Redis round trips (%d commands), %d database statements", n, got, len(cmds), e.queries())

					write(func(db *gorm.DB) error { return db.Delete(&Product{}, ids).Error })
					got, cmds = trips.take()
					require.LessOrEqual(t, got, 2, "Delete of %d rows: %d round trips, %d commands", n, got, len(cmds))
					t.Logf("Delete of %d rows by id: %d Redis round trips (%d commands), %d database statements", n, got, len(cmds), e.queries())
				}
			})
		}
	})
}

// The read script's arguments built by readArgs are exactly those
// readScript.EvalSha sends.
func TestReadArgsAreEvalShaArgs(t *testing.T) {
	mi := &modelInfo{tableEsc: "t", fp: "abcdefgh", fpArg: "abcdefgh"}
	mi.buildShards("p", 4)
	k := mi.key("p", 4, []string{"12"})
	var sent []any
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	rdb.AddHook(argsHook{&sent})
	_ = readScript.EvalSha(context.Background(), rdb, []string{k.row, k.gen, k.fence}, "lease.1", "2000", mi.fp).Err()
	require.Equal(t, sent, readArgs(k, "lease.1", "2000", mi.fpArg))
	bare := k
	bare.shard = nil
	require.Equal(t, sent, readArgs(bare, "lease.1", "2000", mi.fpArg))
}

// argsHook records a command's arguments and answers it without a server.
type argsHook struct{ sent *[]any }

func (h argsHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h argsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		*h.sent = cmd.Args()
		return nil
	}
}
func (h argsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A server that does not know the read script (new, restarted or flushed)
// gets it loaded, and the read goes on: nothing falls back to the database
// for want of a script.
func TestReadLoadsTheScriptOnNoScript(t *testing.T) {
	b := backend{name: "sqlite+miniredis", dialect: "sqlite", sqlOpen: openSQLite, open: sqliteDialector, redis: miniRedis}
	for _, n := range []int{1, 3} { // one key: a single EVALSHA; several: a pipeline
		e := newEnv(t, b, Config{}, &Product{})
		for i := 1; i <= n; i++ {
			require.NoError(t, e.db.Exec("INSERT INTO "+e.db.NamingStrategy.TableName("Product")+" (id, name, price, stock) VALUES (?, ?, 1, 1)", i, "x").Error)
		}
		ids := []int{1, 2, 3}[:n]
		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error) // no script on the server yet
		require.Len(t, ps, n)
		st := e.plugin.Stats()
		require.Zero(t, st.RedisErrors)
		require.EqualValues(t, n, st.Misses)
		require.EqualValues(t, n, st.Fills)
		e.queries()
		require.NoError(t, e.db.Find(&ps, ids).Error)
		require.Zero(t, e.queries())
		require.EqualValues(t, n, e.plugin.Stats().Hits)
	}
}

// TestEvictedGenerationKeepsTableWrites pins down what the maxmemory and
// delete-keys runs found: a shard's generation key evicted after a
// table-level write must not bring back entries that write invalidated,
// neither at once nor once later table writes count the generation up again.
func TestEvictedGenerationKeepsTableWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, name := range []string{"evicted", "evicted then counted up"} {
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, b, Config{TableShards: 1}, &Product{})
				mi, err := e.plugin.modelOf(&Product{})
				require.NoError(t, err)
				gen, _ := mi.shardKeys(e.prefix, 0)
				p := Product{Name: "lamp", Price: 1}
				require.NoError(t, e.db.Create(&p).Error)
				// tableWrite changes the price with a condition the plugin
				// cannot pin to keys, so it moves the generation on, and
				// then caches the row again.
				tableWrite := func(from, to int64) {
					t.Helper()
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", from).Update("price", to).Error)
					require.NoError(t, e.db.First(&Product{}, p.ID).Error)
					e.queries()
					var got Product
					require.NoError(t, e.db.First(&got, p.ID).Error)
					require.Zero(t, e.queries(), "the row is cached again")
					require.Equal(t, to, got.Price)
				}
				var want int64
				if name == "evicted" {
					// The entry was cached before any table write, when the
					// shard had no generation key yet.
					e.queries()
					require.NoError(t, e.db.First(&Product{}, p.ID).Error)
					require.Zero(t, e.queries(), "the row is cached")
					want = 2
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", 1).Update("price", want).Error)
					require.NoError(t, e.rdb.Del(ctx, gen).Err(), "evict the generation")
				} else {
					tableWrite(1, 2)
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", 2).Update("price", 3).Error)
					require.NoError(t, e.rdb.Del(ctx, gen).Err(), "evict the generation")
					want = 4
					require.NoError(t, e.db.Model(&Product{}).Where("price = ?", 3).Update("price", want).Error)
				}
				var got Product
				require.NoError(t, e.db.First(&got, p.ID).Error)
				require.Equal(t, want, got.Price, "a table write that returned was undone by evicting the generation key")
			})
		}
	})
}
