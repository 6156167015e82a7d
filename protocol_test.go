package writethrough

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
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

// The round-trip budget: a hit costs one Redis round trip, one native read
// (MGET) and no script, and no database statement; a miss at most three
// round trips (the hit read, the lease script, the fill) and one
// statement; a write statement at most two round trips (fence, finish)
// whatever its batch size.

// requireNoScript fails if any command is a script call.
func requireNoScript(t *testing.T, cmds []string, what string) {
	t.Helper()
	for _, c := range cmds {
		require.NotContains(t, []string{"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"}, c, "%s ran a script: commands %v", what, cmds)
	}
}

func TestHitIsOneRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 10)
		trips := countRedis(e.rdb, e.plugin)
		e.queries()

		var p Product
		require.NoError(t, e.db.First(&p, ids[1]).Error)
		require.Equal(t, "p1", p.Name)
		n, cmds := trips.take()
		require.Equal(t, 1, n, "First hit: commands %v", cmds)
		require.Equal(t, []string{"mget"}, cmds, "First hit")
		require.Zero(t, e.queries(), "First hit ran a database statement")

		var q Product
		require.NoError(t, e.db.Where("id = ?", ids[2]).Take(&q).Error)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "Take hit: commands %v", cmds)
		requireNoScript(t, cmds, "Take hit")
		require.Zero(t, e.queries())

		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error)
		require.Len(t, ps, 10)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "Find of 10 ids: one round trip, got commands %v", cmds)
		requireNoScript(t, cmds, "Find hit")
		require.Zero(t, e.queries(), "Find hit ran a database statement")

		// A cached absence is a hit too.
		const absent = 987654321
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		trips.take()
		e.queries()
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "cached absence: commands %v", cmds)
		requireNoScript(t, cmds, "cached absence")
		require.Zero(t, e.queries())
		require.EqualValues(t, 1+1+10+1, e.plugin.Stats().Hits, "every read above but the first absent one was a hit")
	})
}

// TestHitNeedsNoScriptOnTheServer: a warm hit does not depend on any
// script being loaded: with the server's script cache flushed, hits are
// still hits, and still one MGET.
func TestHitNeedsNoScriptOnTheServer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 3)
		require.NoError(t, e.rdb.ScriptFlush(context.Background()).Err())
		trips := countRedis(e.rdb, e.plugin)
		e.queries()
		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error)
		require.Len(t, ps, 3)
		var p Product
		require.NoError(t, e.db.First(&p, ids[0]).Error)
		n, cmds := trips.take()
		require.Equal(t, 2, n, "two hits: commands %v", cmds)
		requireNoScript(t, cmds, "hits")
		require.Zero(t, e.queries())
		require.Zero(t, e.plugin.Stats().RedisErrors)
	})
}

func TestMissIsAtMostThreeRoundTripsAndOneQuery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 10)
		ctx := context.Background()
		// Warm the scripts up: a miss and its fill.
		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		require.NoError(t, e.db.First(&Product{}, ids[0]).Error)
		trips := countRedis(e.rdb, e.plugin)

		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		trips.take()
		e.queries()
		misses := e.plugin.Stats().Misses

		var p Product
		require.NoError(t, e.db.First(&p, ids[1]).Error)
		require.Equal(t, "p1", p.Name)
		n, cmds := trips.take()
		require.Equal(t, 3, n, "First miss: hit read, lease, fill; commands %v", cmds)
		require.Equal(t, []string{"mget", "evalsha", "evalsha"}, cmds)
		require.EqualValues(t, 1, e.queries())
		require.Equal(t, misses+1, e.plugin.Stats().Misses)

		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error) // ids[1] is cached again, the others miss
		require.Len(t, ps, 10)
		n, cmds = trips.take()
		require.Equal(t, 3, n, "Find of 10 ids, 9 missing: hit read, leases, fills; commands %v", cmds)
		require.Len(t, cmds, 1+9+9, "one MGET, then a lease and a fill for each key that missed: %v", cmds)
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
		require.Equal(t, 3, n, "absent row: commands %v", cmds)
		require.EqualValues(t, 1, e.queries())
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "cached absence: commands %v", cmds)
		require.Zero(t, e.queries(), "the absence First found was cached")
	})
}

// TestWriteIsAtMostTwoRoundTrips: a write statement costs at most two
// round trips (fence, finish), and each carries at most one script call per
// shard of the table, whatever the batch size: 1000 rows cost at most
// TableShards script calls per phase, not 1000.
func TestWriteIsAtMostTwoRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range modesNamed("Transaction", "Implicit", "AutoCommit") {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				shards := e.plugin.cfg.TableShards
				write := func(f func(db *gorm.DB) error) {
					t.Helper()
					require.NoError(t, m.commit(e, f))
				}
				// Warm the scripts up.
				seedProducts(t, e, 1)
				trips := countRedis(e.rdb, e.plugin)
				// budget checks one statement's Redis traffic.
				budget := func(what string, n int) {
					t.Helper()
					perTrip := trips.takeScripts()
					require.LessOrEqual(t, len(perTrip), 2, "%s of %d rows: %d round trips, script calls per trip %v", what, n, len(perTrip), perTrip)
					for _, calls := range perTrip {
						require.LessOrEqual(t, calls, min(n, shards), "%s of %d rows: script calls per trip %v, TableShards %d", what, n, perTrip, shards)
					}
					t.Logf("%s of %d rows: %d Redis round trips, script calls per trip %v, %d database statements", what, n, len(perTrip), perTrip, e.queries())
				}

				for _, n := range []int{1, 1000} {
					ps := make([]Product, n)
					for i := range ps {
						ps[i] = Product{Name: fmt.Sprintf("n%d", i), Price: 1}
					}
					trips.take()
					e.queries()
					write(func(db *gorm.DB) error { return db.Create(&ps).Error })
					budget("Create", n)

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
					budget("Update by id", n)
					require.NoError(t, e.db.Find(&back, ids).Error)
					require.Len(t, back, n)
					for _, p := range back {
						require.Equal(t, int64(2), p.Price)
					}
					trips.take()

					write(func(db *gorm.DB) error { return db.Delete(&Product{}, ids).Error })
					budget("Delete by id", n)
				}
			})
		}
	})
}

// The lease script's arguments built by leaseArgs are exactly those
// leaseScript.EvalSha sends.
func TestLeaseArgsAreEvalShaArgs(t *testing.T) {
	mi := &modelInfo{tableEsc: "t", fp: "abcdefgh", fpArg: "abcdefgh"}
	mi.buildShards("p", 4)
	k := mi.key("p", 4, []string{"12"})
	var sent []any
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	rdb.AddHook(argsHook{&sent})
	_ = leaseScript.EvalSha(context.Background(), rdb, []string{k.row, k.gen, k.fence}, "lease.1", "2000", mi.fp, "7200000").Err()
	require.Equal(t, sent, leaseArgs(k, "lease.1", "2000", mi.fpArg, "7200000"))
	bare := k
	bare.shard = nil
	require.Equal(t, sent, leaseArgs(bare, "lease.1", "2000", mi.fpArg, "7200000"))
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

// TestSnapshotDecidesAsTheLeaseScript: what the hit read decides on the
// client from its MGET is what the lease script decides on the server from
// the same keys. For every state a row key, its generation and its table
// fence can be in, the snapshot's verdict is checked against the script's
// reply on the same keys: a hit is the entry the script returns, an
// absence its "N", a table fence its "B", and a lease of this process or a
// corrupt entry the value the script returns as it is. Everything else the
// snapshot leaves to the script.
func TestSnapshotDecidesAsTheLeaseScript(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{TableShards: 1}, &Product{})
		ctx := context.Background()
		p := Product{Name: "lamp", Price: 1}
		require.NoError(t, e.db.Create(&p).Error)
		mi, err := e.plugin.modelOf(&p)
		require.NoError(t, err)
		k := mi.key(e.prefix, 1, []string{strconv.FormatUint(uint64(p.ID), 10)})
		good := peek(t, e, k.row)
		bar := strings.IndexByte(good, '|')
		g := good[1:bar]
		body := good[bar+1+fingerprintLen:]
		other := g + "0"

		rows := map[string]string{
			"absent":           "",
			"entry":            good,
			"entry, old gen":   "V" + other + "|" + mi.fp + body,
			"entry, other fp":  "V" + g + "|deadbeef" + body,
			"entry, corrupt":   "V" + g + "|" + mi.fp + flipByte(body, len(body)/2),
			"entry, no bar":    "V" + g,
			"absence":          "N" + g,
			"absence, old gen": "N" + other,
			"own lease":        "L" + e.plugin.token + ".zz|" + g,
			"foreign lease":    "Lfeedfacecafebeef.1|" + g,
			"fence":            "Ffeedfacecafebeef.2",
			"contended":        "C",
			"junk":             "?junk",
		}
		for name, row := range rows {
			for _, fenced := range []bool{false, true} {
				for _, hasGen := range []bool{true, false} {
					t.Run(fmt.Sprintf("%s/fenced=%v/gen=%v", name, fenced, hasGen), func(t *testing.T) {
						require.NoError(t, e.rdb.Del(ctx, k.row, k.gen, k.fence).Err())
						if row != "" {
							require.NoError(t, e.rdb.Set(ctx, k.row, row, time.Minute).Err())
						}
						if hasGen {
							require.NoError(t, e.rdb.Set(ctx, k.gen, g, 0).Err())
						}
						if fenced {
							require.NoError(t, e.rdb.Set(ctx, k.fence, "tabletoken", time.Minute).Err())
						}
						refs := []keyRef{{key: k}}
						states, entries, values := make([]readState, 1), make([][]byte, 1), make([]string, 1)
						require.NoError(t, e.plugin.snapshot(ctx, refs, mi.fp, states, entries, values))
						replies := make([]string, 1)
						require.NoError(t, e.plugin.leaseKeys(ctx, refs, mi.fpArg, e.plugin.newToken(), replies))
						reply := replies[0]
						switch s := states[0]; {
						case s == stateHit:
							require.Equal(t, row, reply, "a hit is the entry the script would serve")
							want, _ := parseRead(reply)
							require.Equal(t, stateHit, want)
						case s == stateAbsent:
							require.Equal(t, "N", reply)
						case s == stateBypass && fenced:
							require.Equal(t, "B", reply)
						case s == stateBypass:
							require.True(t, e.plugin.ownLease(values[0]), "a bypass without a table fence is this process's lease: %q", values[0])
							require.Equal(t, row, reply)
						case s == stateCorrupt:
							require.Equal(t, row, reply, "the script serves a corrupt entry as it is; the reader reclaims it")
							want, _ := parseRead(reply)
							require.Equal(t, stateCorrupt, want)
						case s == stateAsk:
							require.NotEqual(t, "B", reply, "the snapshot saw no table fence")
							if st, _ := parseRead(reply); st == stateHit {
								t.Fatalf("the script served %q, which the snapshot did not", reply)
							}
						default:
							t.Fatalf("unexpected state %d", s)
						}
						if name == "entry" && !fenced && hasGen {
							require.Equal(t, stateHit, states[0])
						}
						if name == "absence" && !fenced && hasGen {
							require.Equal(t, stateAbsent, states[0])
						}
					})
				}
			}
		}
	})
}

// A shard's generation key that holds something INCR cannot count up (junk
// written by someone else) is replaced as a lost generation is, and
// counted: table-level writes keep working with Redis up, and no entry
// stored under the junk is served.
func TestJunkGenerationIsRepaired(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, junk := range []string{"garbage", "", "12abc", "-5", "007", "99999999999999999999"} {
			t.Run(fmt.Sprintf("%q", junk), func(t *testing.T) {
				e := newEnv(t, b, Config{TableShards: 1}, &Product{})
				mi, err := e.plugin.modelOf(&Product{})
				require.NoError(t, err)
				gen, _ := mi.shardKeys(e.prefix, 0)
				p, _ := newProduct(t, e)
				warm[Product](t, e, p.ID)
				require.NoError(t, e.rdb.Set(ctx, gen, junk, 0).Err())
				before := e.plugin.Stats().GenerationsRepaired

				require.NoError(t, e.db.Model(&Product{}).Where("price > ?", 0).Update("price", 200).Error, "a table-level write with junk in the generation key")
				require.Greater(t, e.plugin.Stats().GenerationsRepaired, before, "the repair is counted")
				g, err := e.rdb.Get(ctx, gen).Int64()
				require.NoError(t, err, "the generation is an integer again")
				require.Greater(t, g, int64(1_000_000_000_000_000), "restarted from the server clock in microseconds")
				requireFresh(t, e, p.ID, 200, true)

				require.NoError(t, e.rdb.Set(ctx, gen, junk, 0).Err())
				require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}), "InvalidateTable with junk in the generation key")
				require.NoError(t, e.rdb.Set(ctx, gen, junk, 0).Err())
				require.NoError(t, setPrice(p.ID, 300)(e.db), "a row write with junk in the generation key")
				requireFresh(t, e, p.ID, 300, true)
			})
		}
	})
}

// Generation and table fence keys carry a TTL, so tables that are written
// once (raw DELETE FROM tmp_import_N) do not leave keys behind for good; a
// generation's TTL is refreshed by use, at least twice the longest entry
// TTL, so it outlives the entries under it; and one that expires restarts
// beyond its last value, as a lost generation does.
func TestGenerationKeysExpire(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		e := newEnv(t, b, Config{TableShards: 4}, &Product{})
		genTTL := time.Duration(parseMS(e.plugin.genTTLArg().(string))) * time.Millisecond
		require.GreaterOrEqual(t, genTTL, 2*e.plugin.cfg.TTL, "at least twice the entry TTL")

		// Raw writes of tables no model maps: their shards' keys expire.
		plain := e.plainDB()
		for i := 0; i < 3; i++ {
			table := fmt.Sprintf("%stmp_import_%d", e.tables, i)
			require.NoError(t, plain.Exec("CREATE TABLE "+table+" (id integer)").Error)
			t.Cleanup(func() { _ = plain.Exec("DROP TABLE " + table).Error })
			require.NoError(t, e.db.Exec("DELETE FROM "+table).Error)
		}
		// A model's table: reads, fills, row and table-level writes.
		p, key := newProduct(t, e)
		warm[Product](t, e, p.ID)
		require.NoError(t, e.db.Model(&Product{}).Where("price > ?", 0).Update("stock", 3).Error)
		warm[Product](t, e, p.ID)
		keys := keysUnder(t, e.rdb, e.prefix)
		gens := 0
		for _, k := range keys {
			ttl, err := e.rdb.PTTL(ctx, k).Result()
			require.NoError(t, err)
			require.Greater(t, ttl, time.Duration(0), "key %s has no TTL", k)
			if isGenKey(k) {
				gens++
				require.LessOrEqual(t, ttl, genTTL)
			}
		}
		require.GreaterOrEqual(t, gens, 3*4+4, "the shards of every table written have generation keys")

		// A generation left without a TTL (written by an older version) gets
		// one on use.
		mi, err := e.plugin.modelOf(&Product{})
		require.NoError(t, err)
		rk := mi.key(e.prefix, 4, []string{fmt.Sprint(p.ID)})
		require.Equal(t, key, rk.row)
		require.NoError(t, e.rdb.Persist(ctx, rk.gen).Err())
		require.NoError(t, setPrice(p.ID, 150)(e.db))
		require.Greater(t, e.rdb.PTTL(ctx, rk.gen).Val(), time.Duration(0), "a generation without a TTL gets one on use")
		requireFresh(t, e, p.ID, 150, true)

		// An expired generation restarts beyond its last value: the entry
		// under the old one is not served again.
		old, err := e.rdb.Get(ctx, rk.gen).Int64()
		require.NoError(t, err)
		if s, ok := miniServers.Load(e.rdb); ok {
			// The in-process server's clock moves only when told, and then
			// for every key: the entry expires with its generation.
			s.(*miniredis.Miniredis).FastForward(genTTL + time.Millisecond)
		} else {
			require.NoError(t, e.rdb.PExpire(ctx, rk.gen, time.Millisecond).Err())
		}
		awaitTrue(t, 5*time.Second, "the generation to expire", func() bool { return e.rdb.Exists(ctx, rk.gen).Val() == 0 })
		require.NoError(t, e.plainDB().Model(&Product{}).Where("id = ?", p.ID).Update("price", 175).Error, "a write the plugin does not see")
		got, hit := readPrice(t, e, p.ID)
		require.Equal(t, int64(175), got, "the entry under the expired generation is not served")
		require.False(t, hit)
		g, err := e.rdb.Get(ctx, rk.gen).Int64()
		require.NoError(t, err)
		require.Greater(t, g, old, "the generation restarted beyond its last value")
		require.Greater(t, e.rdb.PTTL(ctx, rk.gen).Val(), time.Duration(0))
	})
}

// Invalidate over a live fence marks the fence instead of replacing it
// with "C": once "C" expired, a reader would fill the row from before the
// fenced transaction's COMMIT, and the writer dying after that COMMIT would
// leave it cached. Marked, the key stays fenced until the writer's fence
// expires, and the writer's finish drops it rather than storing.
func TestInvalidateKeepsALiveFence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, crash := range []bool{false, true} {
			t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, b, Config{}, &Product{})
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				e.plugin.hooks = &testHooks{beforeFinish: func() bool { return !crash }}
				require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
					if err := setPrice(p.ID, 200)(tx); err != nil {
						return err
					}
					require.NoError(t, e.plugin.Invalidate(ctx, &Product{ID: p.ID}))
					v := peek(t, e, key)
					require.True(t, strings.HasPrefix(v, "F!"), "the fence stays, marked; key holds %q", abbrev(v))
					got, hit := readPrice(t, e, p.ID)
					require.Equal(t, int64(100), got, "not committed yet")
					require.False(t, hit)
					require.True(t, strings.HasPrefix(peek(t, e, key), "F!"), "the reader filled nothing")
					return nil
				}))
				if crash {
					require.True(t, strings.HasPrefix(peek(t, e, key), "F!"), "the dead writer's fence keeps readers on the database")
					got, hit := readPrice(t, e, p.ID)
					require.Equal(t, int64(200), got)
					require.False(t, hit)
					expireKey(t, e, key, e.plugin.cfg.LockTTL)
				} else {
					require.Equal(t, "", peek(t, e, key), "the marked fence's writer dropped the key instead of storing")
				}
				requireFresh(t, e, p.ID, 200, true)
			})
		}
	})
}

// The fence-set rules of docs/protocol.md section 4.1, script by script:
// a fence joins another writer's instead of replacing it, the same token
// twice is one token, no finish stores over a marked set, the last token
// out drops the key, and table fences hold their tokens the same way.
func TestFenceSets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		e := newEnv(t, b, Config{TableShards: 1}, &Product{})
		mi, err := e.plugin.modelOf(&Product{})
		require.NoError(t, err)
		p := e.plugin
		row := func(id int) rowWrite {
			return rowWrite{key: mi.key(e.prefix, 1, []string{fmt.Sprint(id)}), kind: kindValue, fp: mi.fp, entry: []byte("entry"), ttl: time.Minute}
		}
		a, bb := p.newToken(), p.newToken()
		fence := func(token string, ws ...rowWrite) []rowWrite {
			t.Helper()
			require.NoError(t, p.fence(ctx, token, ws))
			return ws
		}

		// One writer alone stores.
		w := fence(a, row(1))
		require.Equal(t, "F"+a, peek(t, e, w[0].key.row))
		p.finishWrites(ctx, a, w, nil)
		require.True(t, strings.HasPrefix(peek(t, e, w[0].key.row), "V"))

		// Two writers: a marked set; neither stores; the last out drops.
		wa := fence(a, row(2))
		wb := fence(bb, row(2))
		k := wa[0].key.row
		require.Equal(t, "F!"+a+","+bb, peek(t, e, k))
		fence(bb, row(2))
		require.Equal(t, "F!"+a+","+bb, peek(t, e, k), "the same token twice is one token")
		ttl := e.rdb.PTTL(ctx, k).Val()
		p.finishWrites(ctx, bb, wb, nil)
		require.Equal(t, "F!"+a, peek(t, e, k), "the finish took its own token out and stored nothing")
		require.Greater(t, e.rdb.PTTL(ctx, k).Val(), time.Duration(0))
		require.LessOrEqual(t, e.rdb.PTTL(ctx, k).Val(), ttl, "the set keeps its TTL")
		p.finishWrites(ctx, a, wa, nil)
		require.Equal(t, "", peek(t, e, k), "the last token out drops the key")

		// A finish whose fence is gone marks the set others took since.
		wa = fence(a, row(3))
		k = wa[0].key.row
		require.NoError(t, e.rdb.Del(ctx, k).Err(), "a's fence is evicted")
		wb = fence(bb, row(3))
		p.finishWrites(ctx, a, wa, nil)
		require.Equal(t, "F!"+bb, peek(t, e, k), "marked, b's fence kept")
		p.finishWrites(ctx, bb, wb, nil)
		require.Equal(t, "", peek(t, e, k), "b drops instead of storing")

		// A finish that finds no fence at all writes C; a release leaves it.
		wa = fence(a, row(4))
		k = wa[0].key.row
		require.NoError(t, e.rdb.Del(ctx, k).Err())
		rel := append([]rowWrite(nil), wa...)
		rel[0].kind = kindRelease
		p.finishWrites(ctx, a, rel, nil)
		require.Equal(t, "", peek(t, e, k), "a release touches nothing but its own fence")
		p.finishWrites(ctx, a, wa, nil)
		require.Equal(t, "C", peek(t, e, k))

		// A rolled-back writer's release takes only its own token out.
		wa = fence(a, row(5))
		wb = fence(bb, row(5))
		k = wa[0].key.row
		rel = append([]rowWrite(nil), wa...)
		rel[0].kind = kindRelease
		p.finishWrites(ctx, a, rel, nil)
		require.Equal(t, "F!"+bb, peek(t, e, k))

		// Table fences: tokens join; each finish takes its own out.
		tables := mi.allShards(p)
		require.NoError(t, p.fenceTables(ctx, a, tables))
		require.NoError(t, p.fenceTables(ctx, bb, tables))
		require.NoError(t, p.fenceTables(ctx, a, tables))
		require.Equal(t, a+","+bb, peek(t, e, tables[0].fence))
		p.finishWrites(ctx, a, nil, tables)
		require.Equal(t, bb, peek(t, e, tables[0].fence), "the other table-level write still holds the fence")
		p.finishWrites(ctx, bb, nil, tables)
		require.Equal(t, "", peek(t, e, tables[0].fence))
	})
}
