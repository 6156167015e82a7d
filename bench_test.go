package writethrough

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// Benchmarks of the plugin against plain GORM on the same database, and of
// a cache hit against the floor a hand-written cache could reach (one GET
// and a decode). Names are benchstat-friendly. On a shared machine, run
// every benchmark once per round and repeat the rounds, so that load
// changes hit all modes alike, then compare the modes:
//
//	go test -c -o wt.test .
//	for i in $(seq 8); do
//	  ./wt.test -test.run '^$' -test.bench . -test.benchmem -test.cpu 1 -test.count 1 -test.benchtime 0.5s >> new.txt
//	done
//	benchstat -col /mode new.txt
//
// SQLite with an in-process Redis always runs; the real-server variants run
// when WT_REDIS_ADDR, WT_POSTGRES_DSN and WT_MYSQL_DSN are set and skip
// otherwise. The in-process Redis (miniredis) runs its Lua in this process,
// so its allocation counts include the server's: read allocations from the
// real-Redis variants or from BenchmarkHitCPU. The write benchmarks are at
// the end of the file. The row is BenchRow (models_test.go).

func newBenchRow(i int) BenchRow {
	pub := time.Date(2024, 3, 1, 12, 30, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	return BenchRow{
		SKU:         fmt.Sprintf("SKU-%08d", i),
		Name:        fmt.Sprintf("Stainless steel water bottle %d", i),
		Description: strings.Repeat("Double-walled, vacuum insulated, keeps drinks cold for 24 hours. ", 3),
		PriceCents:  int64(1999 + i),
		Currency:    "EUR",
		Stock:       100 + i,
		WeightKg:    0.35,
		Active:      true,
		Tags:        "kitchen,outdoor,bottle",
		OwnerID:     int64(42 + i%7),
		PublishedAt: &pub,
	}
}

// benchBackendNames are the combinations the benchmarks report; a missing
// one is skipped with the reason.
var benchBackendNames = []struct{ name, needs string }{
	{"sqlite+miniredis", ""},
	{"sqlite+redis", "WT_REDIS_ADDR"},
	{"postgres+redis", "WT_POSTGRES_DSN and WT_REDIS_ADDR"},
	{"mysql+redis", "WT_MYSQL_DSN and WT_REDIS_ADDR"},
}

// forEachBenchBackend runs f as a sub-benchmark "backend=<name>" per
// backend, skipping those whose servers are not configured.
func forEachBenchBackend(b *testing.B, f func(b *testing.B, be backend)) {
	have := map[string]backend{}
	for _, be := range backends(b) {
		have[be.name] = be
	}
	for _, want := range benchBackendNames {
		b.Run("backend="+want.name, func(b *testing.B) {
			be, ok := have[want.name]
			if !ok {
				b.Skipf("needs %s", want.needs)
			}
			f(b, be)
		})
	}
}

// benchEnv is one database table seen twice: through a *gorm.DB with the
// plugin installed and through one without it, on the same *sql.DB.
type benchEnv struct {
	plugin *gorm.DB
	plain  *gorm.DB
	p      *Plugin
	rdb    redis.UniversalClient
	mi     *modelInfo
	ids    []uint
	newDB  func(cfg Config) (*gorm.DB, *Plugin) // another plugin on the same table
	open   func() *gorm.DB                      // another plain GORM on the same table
}

// newBenchEnv creates the table and rows rows through the plugin, so that
// every row is cached (written through).
func newBenchEnv(b *testing.B, be backend, rows int) *benchEnv {
	b.Helper()
	n := testSeq.Add(1)
	tablePrefix := fmt.Sprintf("wtb%d_%d_", os.Getpid()%10000, n)
	sqlDB := be.sqlOpen(b)
	gcfg := func() *gorm.Config {
		return &gorm.Config{Logger: logger.Discard, NamingStrategy: schema.NamingStrategy{TablePrefix: tablePrefix}}
	}
	plain, err := gorm.Open(be.open(b, sqlDB), gcfg())
	require.NoError(b, err)
	require.NoError(b, plain.AutoMigrate(&BenchRow{}))
	b.Cleanup(func() { _ = plain.Migrator().DropTable(&BenchRow{}) })

	rdb := be.redis(b)
	env := &benchEnv{plain: plain, rdb: rdb}
	env.newDB = func(cfg Config) (*gorm.DB, *Plugin) {
		db, err := gorm.Open(be.open(b, sqlDB), gcfg())
		require.NoError(b, err)
		if cfg.Prefix == "" {
			cfg.Prefix = fmt.Sprintf("wtbench%d_%d", os.Getpid()%10000, testSeq.Add(1))
		}
		p := New(rdb, cfg)
		require.NoError(b, db.Use(p))
		return db, p
	}
	env.plugin, env.p = env.newDB(Config{})
	env.open = func() *gorm.DB {
		db, err := gorm.Open(be.open(b, sqlDB), gcfg())
		require.NoError(b, err)
		return db
	}

	batch := make([]BenchRow, rows)
	for i := range batch {
		batch[i] = newBenchRow(i)
	}
	require.NoError(b, env.plugin.CreateInBatches(batch, 100).Error)
	for _, r := range batch {
		env.ids = append(env.ids, r.ID)
	}
	stmt := &gorm.Statement{DB: env.plugin}
	require.NoError(b, stmt.Parse(&BenchRow{}))
	env.mi = env.p.model(stmt.Schema)
	return env
}

// expectHits fails the benchmark unless every read since before was a hit:
// a benchmark of "the hit path" that missed would measure something else.
func expectHits(b *testing.B, p *Plugin, before Stats, want int) {
	b.Helper()
	after := p.Stats()
	if got := after.Hits - before.Hits; got != uint64(want) || after.Misses != before.Misses || after.Bypasses != before.Bypasses {
		b.Fatalf("expected %d hits and no misses or bypasses, got hits %d, misses %d, bypasses %d",
			want, got, after.Misses-before.Misses, after.Bypasses-before.Bypasses)
	}
}

// BenchmarkFirst compares a cached First (a hit) with plain GORM's First on
// the same database, and with the floor: one raw GET of the same entry and a
// BinaryCodec decode into the struct by hand.
func BenchmarkFirst(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, be backend) {
		env := newBenchEnv(b, be, 100)
		ids := env.ids

		b.Run("mode=plugin", func(b *testing.B) {
			b.ReportAllocs()
			before := env.p.Stats()
			i := 0
			for ; b.Loop(); i++ {
				var r BenchRow
				if err := env.plugin.First(&r, ids[i%len(ids)]).Error; err != nil {
					b.Fatal(err)
				}
			}
			expectHits(b, env.p, before, i)
		})
		b.Run("mode=plugin-json", func(b *testing.B) {
			db, p := env.newDB(Config{Codec: JSONCodec{}})
			for _, id := range ids { // fill this plugin's keys
				require.NoError(b, db.First(&BenchRow{}, id).Error)
			}
			b.ReportAllocs()
			before := p.Stats()
			i := 0
			for ; b.Loop(); i++ {
				var r BenchRow
				if err := db.First(&r, ids[i%len(ids)]).Error; err != nil {
					b.Fatal(err)
				}
			}
			expectHits(b, p, before, i)
		})
		b.Run("mode=plain", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				var r BenchRow
				if err := env.plain.First(&r, ids[i%len(ids)]).Error; err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("mode=raw", func(b *testing.B) {
			keys := make([]string, len(ids))
			for i, id := range ids {
				keys[i] = env.mi.key(env.p.cfg.Prefix, env.p.cfg.TableShards, []string{strconv.FormatUint(uint64(id), 10)}).row
			}
			// The floor must produce the same struct as the plugin.
			var viaPlugin, viaRaw BenchRow
			require.NoError(b, env.plugin.First(&viaPlugin, ids[0]).Error)
			require.NoError(b, rawGet(context.Background(), env.rdb, keys[0], len(env.mi.fields), &viaRaw))
			require.Equal(b, viaPlugin, viaRaw)

			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				var r BenchRow
				if err := rawGet(ctx, env.rdb, keys[i%len(keys)], len(env.mi.fields), &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkHitVsRawGet alternates a cached First and a raw GET + decode
// of the same entry (rawGet) op by op, so that both see the same load on
// a shared machine, and reports each one's median and their ratio
// (hit/get). ns/op is the pair's.
func BenchmarkHitVsRawGet(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, be backend) {
		env := newBenchEnv(b, be, 100)
		ids := env.ids
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = env.mi.key(env.p.cfg.Prefix, env.p.cfg.TableShards, []string{strconv.FormatUint(uint64(id), 10)}).row
		}
		ctx := context.Background()
		var hit, get []time.Duration
		before := env.p.Stats()
		i := 0
		for ; b.Loop(); i++ {
			var r, q BenchRow
			t0 := time.Now()
			if err := env.plugin.First(&r, ids[i%len(ids)]).Error; err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := rawGet(ctx, env.rdb, keys[i%len(keys)], len(env.mi.fields), &q); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			hit, get = append(hit, t1.Sub(t0)), append(get, t2.Sub(t1))
		}
		expectHits(b, env.p, before, i)
		median := func(d []time.Duration) float64 {
			slices.Sort(d)
			return float64(d[len(d)/2]) / float64(time.Microsecond)
		}
		h, g := median(hit), median(get)
		b.ReportMetric(h, "hit-µs")
		b.ReportMetric(g, "get-µs")
		b.ReportMetric(h/g, "hit/get")
	})
}

// BenchmarkMiss measures a First that misses: each op first deletes the
// row's key (a raw DEL, in the timing) so that the read takes the lease,
// queries the database and fills.
func BenchmarkMiss(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, be backend) {
		env := newBenchEnv(b, be, 100)
		ids := env.ids
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = env.mi.key(env.p.cfg.Prefix, env.p.cfg.TableShards, []string{strconv.FormatUint(uint64(id), 10)}).row
		}
		ctx := context.Background()
		b.ReportAllocs()
		before := env.p.Stats()
		i := 0
		for ; b.Loop(); i++ {
			if err := env.rdb.Del(ctx, keys[i%len(keys)]).Err(); err != nil {
				b.Fatal(err)
			}
			var r BenchRow
			if err := env.plugin.First(&r, ids[i%len(ids)]).Error; err != nil {
				b.Fatal(err)
			}
		}
		if got := env.p.Stats().Misses - before.Misses; got != uint64(i) {
			b.Fatalf("%d of %d reads missed", got, i)
		}
	})
}

// rawGet is what a hand-written cache does at best: GET the key, check the
// entry, decode it and assign the fields.
func rawGet(ctx context.Context, rdb redis.UniversalClient, key string, nfields int, r *BenchRow) error {
	s, err := rdb.Get(ctx, key).Result()
	if err != nil {
		return err
	}
	// "V<gen>|<fingerprint><entry>"
	bar := strings.IndexByte(s, '|')
	if len(s) == 0 || s[0] != 'V' || bar < 0 || len(s) < bar+1+fingerprintLen {
		return fmt.Errorf("not a value: %q", s)
	}
	body, err := openEntry(stringBytes(s[bar+1+fingerprintLen:]))
	if err != nil {
		return err
	}
	var arr [16]any
	vals := arr[:nfields]
	if err := (BinaryCodec{}).Decode(body, vals); err != nil {
		return err
	}
	return setBenchRow(r, vals)
}

// setBenchRow assigns decoded values in the model's field order.
func setBenchRow(r *BenchRow, v []any) error {
	var ok [15]bool
	var id uint64
	var stock int64
	id, ok[0] = v[0].(uint64)
	r.ID = uint(id)
	r.SKU, ok[1] = v[1].(string)
	r.Name, ok[2] = v[2].(string)
	r.Description, ok[3] = v[3].(string)
	r.PriceCents, ok[4] = v[4].(int64)
	r.Currency, ok[5] = v[5].(string)
	stock, ok[6] = v[6].(int64)
	r.Stock = int(stock)
	r.WeightKg, ok[7] = v[7].(float64)
	r.Active, ok[8] = v[8].(bool)
	r.Tags, ok[9] = v[9].(string)
	r.OwnerID, ok[10] = v[10].(int64)
	r.CreatedAt, ok[11] = v[11].(time.Time)
	r.UpdatedAt, ok[12] = v[12].(time.Time)
	if t, isTime := v[13].(time.Time); isTime {
		r.PublishedAt, ok[13] = &t, true
	} else {
		r.PublishedAt, ok[13] = nil, v[13] == nil
	}
	if t, isTime := v[14].(time.Time); isTime {
		r.DeletedAt, ok[14] = gorm.DeletedAt{Time: t, Valid: true}, true
	} else {
		r.DeletedAt, ok[14] = gorm.DeletedAt{}, v[14] == nil
	}
	for i, good := range ok {
		if !good {
			return fmt.Errorf("field %d: unexpected %T", i, v[i])
		}
	}
	return nil
}

// BenchmarkFind compares Find by a list of 1, 10 and 100 ids, all cached,
// with plain GORM.
func BenchmarkFind(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, be backend) {
		env := newBenchEnv(b, be, 100)
		for _, n := range []int{1, 10, 100} {
			ids := env.ids[:n]
			b.Run(fmt.Sprintf("ids=%d/mode=plugin", n), func(b *testing.B) {
				b.ReportAllocs()
				before := env.p.Stats()
				iters := 0
				for ; b.Loop(); iters++ {
					var rows []BenchRow
					if err := env.plugin.Find(&rows, ids).Error; err != nil || len(rows) != n {
						b.Fatal(err, len(rows))
					}
				}
				expectHits(b, env.p, before, iters*n)
			})
			b.Run(fmt.Sprintf("ids=%d/mode=plain", n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var rows []BenchRow
					if err := env.plain.Find(&rows, ids).Error; err != nil || len(rows) != n {
						b.Fatal(err, len(rows))
					}
				}
			})
		}
	})
}

// BenchmarkCreate measures inserting one row (GORM's default: in its own
// transaction) with and without the plugin.
func BenchmarkCreate(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, be backend) {
		env := newBenchEnv(b, be, 0)
		for _, m := range []struct {
			mode string
			db   *gorm.DB
		}{{"plugin", env.plugin}, {"plain", env.plain}} {
			b.Run("mode="+m.mode, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					r := newBenchRow(i)
					if err := m.db.Create(&r).Error; err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// BenchmarkSave measures updating one existing row with Save (every column,
// in GORM's default transaction) with and without the plugin.
func BenchmarkSave(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, be backend) {
		env := newBenchEnv(b, be, 100)
		var rows []BenchRow
		require.NoError(b, env.plain.Find(&rows, env.ids).Error)
		for _, m := range []struct {
			mode string
			db   *gorm.DB
		}{{"plugin", env.plugin}, {"plain", env.plain}} {
			b.Run("mode="+m.mode, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					r := &rows[i%len(rows)]
					r.Stock++
					if err := m.db.Save(r).Error; err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// benchCodecRow is newBenchRow(7) as the plugin hands it to a codec.
func benchCodecRow(b *testing.B) []any {
	db, err := gorm.Open(sqliteDialector(b, openSQLite(b)), &gorm.Config{Logger: logger.Discard})
	require.NoError(b, err)
	rdb := redis.NewClient(&redis.Options{})
	defer rdb.Close()
	p := New(rdb, Config{})
	stmt := &gorm.Statement{DB: db}
	require.NoError(b, stmt.Parse(&BenchRow{}))
	mi := p.model(stmt.Schema)
	r := newBenchRow(7)
	r.ID = 123456
	r.CreatedAt = time.Date(2024, 2, 29, 23, 59, 59, 123456000, time.UTC)
	r.UpdatedAt = time.Now().Round(0) // no monotonic reading: a database never returns one
	values, err := mi.values(context.Background(), reflect.ValueOf(&r), nil)
	require.NoError(b, err)
	require.Len(b, values, 15)
	return values
}

// BenchmarkCodec compares the two codecs on a realistic row.
func BenchmarkCodec(b *testing.B) {
	values := benchCodecRow(b)
	for _, c := range []struct {
		name  string
		codec Codec
	}{{"binary", BinaryCodec{}}, {"json", JSONCodec{}}} {
		data, err := c.codec.Append(nil, values)
		require.NoError(b, err)
		out := make([]any, len(values))
		require.NoError(b, c.codec.Decode(data, out))
		require.Equal(b, fmt.Sprint(values), fmt.Sprint(out))

		b.Run("codec="+c.name+"/op=encode", func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				if _, err := c.codec.Append(buf[:0], values); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "B/entry")
		})
		b.Run("codec="+c.name+"/op=decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.codec.Decode(data, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cannedRedis answers GET, MGET and EVALSHA of known keys from memory, in
// the client's hook, so that a benchmark measures the CPU a hit costs in
// this process (plugin, GORM, go-redis, decoding) without the network. An
// MGET whose first key is known gets nil for the keys that are not.
type cannedRedis map[string]string

func (c cannedRedis) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c cannedRedis) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		var key string
		switch {
		case cmd.Name() == "get" && len(args) == 2:
			key, _ = args[1].(string)
		case cmd.Name() == "evalsha" && len(args) > 3:
			key, _ = args[3].(string)
		case cmd.Name() == "mget" && len(args) > 1:
			first, _ := args[1].(string)
			x, isCmd := cmd.(*redis.Cmd)
			if _, ok := c[first]; !ok || !isCmd {
				return next(ctx, cmd)
			}
			vals := make([]any, len(args)-1)
			for i, a := range args[1:] {
				k, _ := a.(string)
				if v, ok := c[k]; ok {
					vals[i] = v
				}
			}
			x.SetVal(vals)
			return nil
		}
		v, ok := c[key]
		if !ok {
			return next(ctx, cmd)
		}
		switch x := cmd.(type) {
		case *redis.Cmd:
			x.SetVal(v)
		case *redis.StringCmd:
			x.SetVal(v)
		default:
			return next(ctx, cmd)
		}
		return nil
	}
}

func (c cannedRedis) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := c.ProcessHook(func(context.Context, redis.Cmder) error { return errNotCanned })(ctx, cmd); err != nil {
				return next(ctx, cmds)
			}
		}
		return nil
	}
}

var errNotCanned = fmt.Errorf("not canned")

// BenchmarkHitCPU measures a hit with Redis answered from memory: what the
// plugin adds on top of one round trip, against the same floor as
// BenchmarkFirst's mode=raw. The database is never touched.
func BenchmarkHitCPU(b *testing.B) {
	env := newBenchEnv(b, backend{name: "sqlite+miniredis", sqlOpen: openSQLite, open: sqliteDialector, redis: miniRedis}, 100)
	canned := cannedRedis{}
	keys := make([]string, len(env.ids))
	for i, id := range env.ids {
		keys[i] = env.mi.key(env.p.cfg.Prefix, env.p.cfg.TableShards, []string{strconv.FormatUint(uint64(id), 10)}).row
		v, err := env.rdb.Get(context.Background(), keys[i]).Result()
		require.NoError(b, err)
		canned[keys[i]] = v
		k := env.mi.key(env.p.cfg.Prefix, env.p.cfg.TableShards, []string{strconv.FormatUint(uint64(id), 10)})
		canned[k.gen] = v[1:strings.IndexByte(v, '|')] // the generation the entry was stored under
	}
	hookPlugin(env.p, env.rdb, canned)
	ctx := context.Background()
	b.Run("op=first/mode=plugin", func(b *testing.B) {
		b.ReportAllocs()
		before := env.p.Stats()
		i := 0
		for ; b.Loop(); i++ {
			var r BenchRow
			if err := env.plugin.First(&r, env.ids[i%len(env.ids)]).Error; err != nil {
				b.Fatal(err)
			}
		}
		expectHits(b, env.p, before, i)
	})
	b.Run("op=first/mode=raw", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var r BenchRow
			if err := rawGet(ctx, env.rdb, keys[i%len(keys)], len(env.mi.fields), &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The split of a hit's cost: GORM's own part of a First (its callbacks
	// around gorm:query, which a no-op replaces here: what the plugin's
	// query callback runs inside), plain GORM in DryRun (the same plus
	// building the SQL, for reference), and decoding the entry into the
	// struct (the codec and GORM's field setters, as Plugin.assemble does).
	// The plugin's own share is the rest.
	b.Run("op=first/mode=gorm-noquery", func(b *testing.B) {
		db := env.open()
		require.NoError(b, db.Callback().Query().Replace("gorm:query", func(*gorm.DB) {}))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var r BenchRow
			if err := db.First(&r, env.ids[i%len(env.ids)]).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=first/mode=gorm-dryrun", func(b *testing.B) {
		dry := env.plain.Session(&gorm.Session{DryRun: true})
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var r BenchRow
			if err := dry.First(&r, env.ids[i%len(env.ids)]).Error; err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=first/mode=decode", func(b *testing.B) {
		entries := make([][]byte, len(keys))
		for i, k := range keys {
			v := canned[k]
			body, err := openEntry([]byte(v[strings.IndexByte(v, '|')+1+fingerprintLen:]))
			require.NoError(b, err)
			entries[i] = body
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var r BenchRow
			buf := getValues(len(env.mi.fields))
			*buf = (*buf)[:len(env.mi.fields)]
			if err := env.p.cfg.Codec.Decode(entries[i%len(entries)], *buf); err != nil {
				b.Fatal(err)
			}
			if err := env.mi.set(ctx, reflect.ValueOf(&r).Elem(), *buf); err != nil {
				b.Fatal(err)
			}
			putValues(buf)
		}
	})
	for _, n := range []int{10, 100} {
		ids := env.ids[:n]
		b.Run(fmt.Sprintf("op=find%d/mode=plugin", n), func(b *testing.B) {
			b.ReportAllocs()
			before := env.p.Stats()
			iters := 0
			for ; b.Loop(); iters++ {
				var rows []BenchRow
				if err := env.plugin.Find(&rows, ids).Error; err != nil || len(rows) != n {
					b.Fatal(err, len(rows))
				}
			}
			expectHits(b, env.p, before, iters*n)
		})
	}
}

// Write benchmarks, with and without the plugin, on every dialect that is
// switched on (real Redis when WT_REDIS_ADDR is set). Compare with
//
//	go test -run '^$' -bench 'BenchmarkWrite' -count 6 . | tee bench.txt
//	benchstat -col /cache bench.txt
//
// Besides time, each reports the database statements (stmts/op) and the
// Redis round trips (redis/op) one operation costs.

// benchBackends returns one backend per dialect, preferring real Redis.
func benchBackends(b *testing.B) []backend {
	seen := map[string]int{}
	var out []backend
	for _, be := range backends(b) {
		if i, ok := seen[be.dialect]; ok {
			out[i] = be // a later backend of the same dialect uses real Redis
			continue
		}
		seen[be.dialect] = len(out)
		out = append(out, be)
	}
	return out
}

// benchDB returns the database to benchmark: the plugin's, or a plain GORM
// on the same counting pool (so statements are counted the same way).
func benchDB(b *testing.B, e *env, plugin bool) *gorm.DB {
	if plugin {
		return e.db
	}
	db, err := gorm.Open(e.b.open(b, e.counter), &gorm.Config{NamingStrategy: e.db.NamingStrategy, Logger: logger.Discard})
	require.NoError(b, err)
	return db
}

func cacheName(plugin bool) string {
	if plugin {
		return "plugin"
	}
	return "plain"
}

// warmUp gives the table 10000 rows and fresh statistics, as a table in
// production has, then runs one write so that the plugin's scripts are
// loaded in Redis before the clock starts. On an empty table without
// statistics, once pgx's cached statement switches to a generic plan,
// Postgres reads rows by id through the deleted_at index (it guesses
// "deleted_at IS NULL" matches 0.5% of the rows, not all of them) and every
// query by id, the plugin's read-back included, scans the table: 200ms per
// 1000-row read-back after 30 batches.
func warmUp(b *testing.B, e *env, db *gorm.DB) {
	plain := e.plainDB()
	for i := 0; i < 10; i++ {
		rows := newItems(1000, "filler")
		require.NoError(b, plain.Create(&rows).Error)
	}
	table := e.db.NamingStrategy.TableName("Item")
	switch e.b.dialect {
	case "mysql":
		require.NoError(b, plain.Exec("ANALYZE TABLE "+table).Error)
	default:
		require.NoError(b, plain.Exec("ANALYZE "+table).Error)
	}
	require.NoError(b, db.Create(&Item{Name: "warm-up"}).Error)
}

// report adds statements and Redis round trips per operation.
func report(b *testing.B, e *env, rc *redisCounter) {
	b.ReportMetric(float64(e.queries())/float64(b.N), "stmts/op")
	trips, _ := rc.take()
	b.ReportMetric(float64(trips)/float64(b.N), "redis/op")
}

// BenchmarkWriteBatch creates batches of 1, 100 and 1000 rows in one
// statement (GORM's own transaction around it).
func BenchmarkWriteBatch(b *testing.B) {
	for _, be := range benchBackends(b) {
		for _, n := range []int{1, 100, 1000} {
			for _, plugin := range []bool{false, true} {
				b.Run(fmt.Sprintf("db=%s/rows=%d/cache=%s", be.dialect, n, cacheName(plugin)), func(b *testing.B) {
					e := newEnv(b, be, Config{}, &Item{})
					db := benchDB(b, e, plugin)
					rc := countRedis(e.rdb, e.plugin)
					batches := make([][]Item, b.N)
					for i := range batches {
						batches[i] = newItems(n, "bench")
					}
					warmUp(b, e, db)
					e.queries()
					rc.take()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := db.Create(&batches[i]).Error; err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					report(b, e, rc)
				})
			}
		}
	}
}

// BenchmarkWriteOne measures one-row writes: an insert, an update by key
// and a delete by key. On MySQL/MariaDB, which has no UPDATE ... RETURNING,
// the plugin reads every written row back with a SELECT in the statement's
// transaction; this is what that costs.
func BenchmarkWriteOne(b *testing.B) {
	ops := []struct {
		name string
		f    func(db *gorm.DB, id uint, i int) error
	}{
		{"create", func(db *gorm.DB, _ uint, i int) error {
			return db.Create(&Item{Name: "one", Stock: i}).Error
		}},
		{"update", func(db *gorm.DB, id uint, i int) error {
			return db.Model(&Item{ID: id}).Updates(map[string]any{"stock": i, "name": "updated"}).Error
		}},
		{"delete", func(db *gorm.DB, id uint, _ int) error {
			return db.Unscoped().Delete(&Item{ID: id}).Error
		}},
	}
	for _, be := range benchBackends(b) {
		for _, op := range ops {
			for _, plugin := range []bool{false, true} {
				b.Run(fmt.Sprintf("db=%s/op=%s/cache=%s", be.dialect, op.name, cacheName(plugin)), func(b *testing.B) {
					e := newEnv(b, be, Config{}, &Item{})
					db := benchDB(b, e, plugin)
					rc := countRedis(e.rdb, e.plugin)
					ids := make([]uint, b.N)
					if op.name != "create" {
						for start := 0; start < b.N; start += 1000 {
							rows := newItems(min(1000, b.N-start), "seed")
							require.NoError(b, e.plainDB().Create(&rows).Error)
							for i, r := range rows {
								ids[start+i] = r.ID
							}
						}
					}
					warmUp(b, e, db)
					e.queries()
					rc.take()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := op.f(db, ids[i], i+1); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					report(b, e, rc)
				})
			}
		}
	}
}

// BenchmarkFenceFinish measures the Redis side of a write statement alone:
// the fence and the finish of n rows (no database), on the first backend's
// Redis (a real one when WT_REDIS_ADDR is set). It isolates what the
// per-shard scripts change from the database's own, much noisier, cost.
//
//	go test -run '^$' -bench BenchmarkFenceFinish -count 6 .
func BenchmarkFenceFinish(b *testing.B) {
	bes := benchBackends(b)
	be := bes[len(bes)-1]
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			e := newEnv(b, be, Config{}, &Item{})
			mi, err := e.plugin.modelOf(&Item{})
			require.NoError(b, err)
			ctx := context.Background()
			entry := make([]byte, 60)
			writes := make([]rowWrite, n)
			write := func() {
				for j := range writes {
					writes[j] = rowWrite{key: mi.key(e.prefix, e.plugin.cfg.TableShards, []string{strconv.Itoa(j + 1)}),
						kind: kindValue, fp: mi.fp, entry: entry, ttl: time.Hour}
				}
				token := e.plugin.newToken()
				if err := e.plugin.fence(ctx, token, writes); err != nil {
					b.Fatal(err)
				}
				e.plugin.finishWrites(ctx, token, writes, nil)
			}
			write() // loads the scripts
			before := e.plugin.Stats().WritesThrough
			rc := countRedis(e.rdb)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				write()
			}
			b.StopTimer()
			if got := e.plugin.Stats().WritesThrough - before; got != uint64(n*b.N) {
				b.Fatalf("%d rows written through, want %d", got, n*b.N)
			}
			trips, cmds := rc.take()
			b.ReportMetric(float64(trips)/float64(b.N), "redis/op")
			b.ReportMetric(float64(len(cmds))/float64(b.N), "scripts/op")
		})
	}
}
