package writethrough

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// The plugin as a whole and its configuration: a write and the reads after
// it, Config validation, and the TTLs (Config.TTL, TTLJitter, NotFoundTTL,
// and a model's own through CacheTTLer).

func TestReadAfterWriteIsAHit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p := Product{Name: "lamp", Price: 1999}
		require.NoError(t, e.db.Create(&p).Error)
		require.NotZero(t, p.ID)
		e.queries()

		var got Product
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Zero(t, e.queries(), "a read right after a write must not touch the database")
		require.Equal(t, "lamp", got.Name)
		require.Equal(t, 7, got.Stock, "the database default is what gets cached")

		require.NoError(t, e.db.Model(&got).Update("price", 2500).Error)
		e.queries()
		var again Product
		require.NoError(t, e.db.First(&again, p.ID).Error)
		require.Zero(t, e.queries())
		require.Equal(t, int64(2500), again.Price)

		require.NoError(t, e.db.Delete(&again).Error)
		e.queries()
		err := e.db.First(&Product{}, p.ID).Error
		require.ErrorIs(t, err, gorm.ErrRecordNotFound)
		require.Zero(t, e.queries())
		t.Logf("stats: %+v", e.plugin.Stats())
	})
}

// requirePTTL asserts that key expires within [lo - elapsed, hi].
func requirePTTL(t testing.TB, rdb redis.UniversalClient, key string, lo, hi time.Duration, since time.Time) {
	t.Helper()
	ttl, err := rdb.PTTL(context.Background(), key).Result()
	require.NoError(t, err)
	require.GreaterOrEqual(t, ttl, lo-time.Since(since)-time.Millisecond, "PTTL of %s", key)
	require.LessOrEqual(t, ttl, hi, "PTTL of %s", key)
}

func TestCacheTTLer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const jitter = 0.1
		cfg := Config{TTL: time.Hour, TTLJitter: jitter, NotFoundTTL: 20 * time.Second}
		e := newEnv(t, b, cfg, &ShortLived{}, &DefaultLived{}, &Uncached{})
		ctx := context.Background()

		t.Run("own TTL", func(t *testing.T) {
			const ttl = 10 * time.Minute
			start := time.Now()
			s := ShortLived{Name: "s"}
			require.NoError(t, e.db.Create(&s).Error)
			key := rowKeyOf(t, e, &s)
			requirePTTL(t, e.rdb, key, ttl, time.Duration(float64(ttl)*(1+jitter)), start)

			// A fill sets it too.
			require.NoError(t, e.rdb.Del(ctx, key).Err())
			start = time.Now()
			require.NoError(t, e.db.First(&ShortLived{}, s.ID).Error)
			requirePTTL(t, e.rdb, key, ttl, time.Duration(float64(ttl)*(1+jitter)), start)

			// An absence lives NotFoundTTL, whatever the model's TTL.
			start = time.Now()
			require.ErrorIs(t, e.db.First(&ShortLived{}, s.ID+100).Error, gorm.ErrRecordNotFound)
			missing := rowKeyOf(t, e, &ShortLived{ID: s.ID + 100})
			requirePTTL(t, e.rdb, missing, cfg.NotFoundTTL, cfg.NotFoundTTL, start)
		})

		t.Run("zero keeps Config.TTL", func(t *testing.T) {
			start := time.Now()
			d := DefaultLived{Name: "d"}
			require.NoError(t, e.db.Create(&d).Error)
			requirePTTL(t, e.rdb, rowKeyOf(t, e, &d), cfg.TTL, time.Duration(float64(cfg.TTL)*(1+jitter)), start)
		})

		t.Run("NoCache opts out", func(t *testing.T) {
			u := Uncached{Name: "u"}
			require.NoError(t, e.db.Create(&u).Error)
			require.NoError(t, e.db.Model(&u).Update("name", "v").Error)
			e.queries()
			for i := 0; i < 2; i++ {
				var got Uncached
				require.NoError(t, e.db.First(&got, u.ID).Error)
				require.Equal(t, "v", got.Name)
				require.Equal(t, int64(1), e.queries(), "every read of an opted-out model goes to the database")
			}
			require.ErrorIs(t, e.db.First(&Uncached{}, u.ID+100).Error, gorm.ErrRecordNotFound)
			require.NoError(t, e.db.Delete(&u).Error)
			for _, k := range keysUnder(t, e.rdb, e.prefix) {
				require.NotContains(t, k, e.stmtSchema(&Uncached{}).Table, "an opted-out model has no keys")
			}
			_, err := e.plugin.modelOf(&u)
			require.NoError(t, err)
		})
	})
}

// openForUse opens a database without the plugin, to try configs on.
func openForUse(t testing.TB) (*gorm.DB, redis.UniversalClient) {
	b := backends(t)[0]
	db, err := gorm.Open(b.open(t, b.sqlOpen(t)), &gorm.Config{})
	require.NoError(t, err)
	return db, b.redis(t)
}

func TestConfigValidation(t *testing.T) {
	bad := map[string]struct {
		cfg  Config
		want string
	}{
		"negative TTL":          {Config{TTL: -time.Second}, "TTL must not be negative"},
		"negative LockTTL":      {Config{LockTTL: -1}, "LockTTL must not be negative"},
		"negative LeaseTTL":     {Config{LeaseTTL: -1}, "LeaseTTL must not be negative"},
		"negative ContendedTTL": {Config{ContendedTTL: -1}, "ContendedTTL must not be negative"},
		"negative WriteTimeout": {Config{WriteTimeout: -1}, "WriteTimeout must not be negative"},
		"jitter above 1":        {Config{TTLJitter: 1.5}, "TTLJitter must be at most 1"},
		"jitter NaN":            {Config{TTLJitter: math.NaN()}, "TTLJitter must be at most 1"},
		"prefix with {":         {Config{Prefix: "app{1}"}, "Prefix"},
		"prefix with }":         {Config{Prefix: "app}"}, "Prefix"},
		"negative TableShards":  {Config{TableShards: -1}, "TableShards"},
		"too many TableShards":  {Config{TableShards: 1025}, "TableShards"},
		"unknown policy":        {Config{OnRedisError: WritePolicy(7)}, "OnRedisError"},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			db, rdb := openForUse(t)
			err := db.Use(New(rdb, c.cfg))
			require.Error(t, err)
			require.Contains(t, err.Error(), "writethrough: invalid Config")
			require.Contains(t, err.Error(), c.want)
			// The database still works, without the plugin.
			require.NoError(t, db.AutoMigrate(&Plain{}))
			require.NoError(t, db.Create(&Plain{Name: "x"}).Error)
		})
	}
	t.Run("every problem is reported at once", func(t *testing.T) {
		db, rdb := openForUse(t)
		err := db.Use(New(rdb, Config{TTL: -1, TTLJitter: 2, Prefix: "{"}))
		require.Error(t, err)
		for _, want := range []string{"TTL must not be negative", "TTLJitter", "Prefix"} {
			require.Contains(t, err.Error(), want)
		}
	})
	t.Run("nil client", func(t *testing.T) {
		db, _ := openForUse(t)
		err := db.Use(New(nil, Config{}))
		require.ErrorContains(t, err, "Redis client")
	})
	good := map[string]Config{
		"zero":                    {},
		"negative NotFoundTTL":    {NotFoundTTL: -1},
		"negative ReadTimeout":    {ReadTimeout: -1},
		"negative jitter":         {TTLJitter: -1},
		"jitter 1":                {TTLJitter: 1},
		"one shard":               {TableShards: 1},
		"1024 shards":             {TableShards: 1024},
		"prefix with colon":       {Prefix: "app:v2"},
		"available":               {OnRedisError: Available},
		"JSON codec":              {Codec: JSONCodec{}},
		"tiny but positive times": {TTL: time.Nanosecond, LockTTL: time.Nanosecond, LeaseTTL: time.Nanosecond},
	}
	for name, cfg := range good {
		t.Run(name, func(t *testing.T) {
			db, rdb := openForUse(t)
			require.NoError(t, db.Use(New(rdb, cfg)))
			require.NoError(t, db.AutoMigrate(&Plain{}))
			p := Plain{Name: "x"}
			require.NoError(t, db.Create(&p).Error)
			var got Plain
			require.NoError(t, db.First(&got, p.ID).Error)
			require.Equal(t, "x", got.Name)
		})
	}
}

func TestTTLJitterSpreadsExpiries(t *testing.T) {
	const n = 64
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, c := range []struct {
			name   string
			jitter float64
		}{{"default jitter", 0}, {"jitter 0.5", 0.5}, {"no jitter", -1}} {
			t.Run(c.name, func(t *testing.T) {
				cfg := Config{TTL: time.Hour, TTLJitter: c.jitter}
				e := newEnv(t, b, cfg, &Plain{})
				jitter := e.plugin.cfg.TTLJitter
				ctx := context.Background()
				hi := cfg.TTL
				if jitter > 0 {
					hi = time.Duration(float64(cfg.TTL) * (1 + jitter))
				}
				pttls := func(rows []Plain, start time.Time) (lo, hi time.Duration) {
					keys := make([]string, len(rows))
					for i := range rows {
						keys[i] = rowKeyOf(t, e, &rows[i])
					}
					cmds, err := e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
						for _, k := range keys {
							pipe.PTTL(ctx, k)
						}
						return nil
					})
					require.NoError(t, err)
					lo, hi = time.Duration(1<<62), 0
					for _, c := range cmds {
						d := c.(*redis.DurationCmd).Val()
						require.Greater(t, d, time.Duration(0))
						lo, hi = min(lo, d), max(hi, d)
					}
					return lo, hi
				}
				check := func(what string, lo, max time.Duration, start time.Time) {
					t.Helper()
					require.GreaterOrEqual(t, lo, cfg.TTL-time.Since(start)-time.Millisecond, "%s: an expiry below TTL", what)
					require.LessOrEqual(t, max, hi, "%s: an expiry beyond TTL*(1+jitter)", what)
					spread := max - lo
					if jitter > 0 {
						// 64 uniform draws cover less than a quarter of the
						// range with probability below 1e-30.
						require.Greater(t, spread, time.Duration(float64(cfg.TTL)*jitter/4), "%s: expiries are not spread", what)
					} else {
						require.Less(t, spread, time.Second, "%s: without jitter every key expires at TTL", what)
					}
				}

				// Written through, in one statement (a warm-up by batch insert).
				rows := make([]Plain, n)
				for i := range rows {
					rows[i].Name = "r"
				}
				start := time.Now()
				require.NoError(t, e.db.Create(&rows).Error)
				lo, max := pttls(rows, start)
				check("write-through", lo, max, start)

				// Filled, in one statement (a warm-up by Find over ids).
				ids := make([]uint, n)
				keys := make([]string, n)
				for i, r := range rows {
					ids[i] = r.ID
					keys[i] = rowKeyOf(t, e, &rows[i])
				}
				require.NoError(t, e.rdb.Del(ctx, keys...).Err())
				start = time.Now()
				var got []Plain
				require.NoError(t, e.db.Find(&got, ids).Error)
				require.Len(t, got, n)
				lo, max = pttls(rows, start)
				check("fill", lo, max, start)
			})
		}
	})
}

func TestNegativeNotFoundTTLDisablesCachingAbsences(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, c := range []struct {
			name   string
			ttl    time.Duration
			cached bool
		}{{"default", 0, true}, {"disabled", -1, false}} {
			t.Run(c.name, func(t *testing.T) {
				e := newEnv(t, b, Config{NotFoundTTL: c.ttl}, &Plain{})
				p := Plain{Name: "gone soon"}
				require.NoError(t, e.db.Create(&p).Error)
				missing := p.ID + 1000
				key := rowKeyOf(t, e, &Plain{ID: missing})
				e.queries()
				for i := 0; i < 3; i++ {
					require.ErrorIs(t, e.db.First(&Plain{}, missing).Error, gorm.ErrRecordNotFound)
					want := int64(1)
					if c.cached && i > 0 {
						want = 0
					}
					require.Equal(t, want, e.queries(), "read %d of a missing row", i)
				}
				v, err := e.rdb.Get(ctx, key).Result()
				if c.cached {
					require.NoError(t, err)
					require.True(t, strings.HasPrefix(v, "N"), "absence cached: %q", v)
				} else {
					// (Merged from TestNotFoundTTLDisabled, which checked this
					// after one read.)
					require.ErrorIs(t, err, redis.Nil, "disabled: the key holds nothing, not even a lease: %q", v)
				}

				// A delete leaves an absence behind only when absences are cached.
				require.NoError(t, e.db.Delete(&p).Error)
				pkey := rowKeyOf(t, e, &p)
				v, err = e.rdb.Get(ctx, pkey).Result()
				if c.cached {
					require.NoError(t, err)
					require.True(t, strings.HasPrefix(v, "N"), "after delete: %q", v)
				} else if err == nil {
					require.False(t, strings.HasPrefix(v, "N"), "after delete: %q", v)
				}
				e.queries()
				for i := 0; i < 2; i++ {
					require.ErrorIs(t, e.db.First(&Plain{}, p.ID).Error, gorm.ErrRecordNotFound)
				}
				want := int64(0)
				if !c.cached {
					want = 2
				}
				require.Equal(t, want, e.queries(), "reads of the deleted row")
			})
		}
	})
}

// TestHooksOnTheClientSeeThePluginsCalls: the plugin bounds its calls
// through WithTimeout clones of a *redis.Client, which carry none of the
// client's hooks; hooks added before New (tracing, metrics) must still see
// every call, and a hit must still be one round trip through them.
func TestHooksOnTheClientSeeThePluginsCalls(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		rdb := b.redis(t)
		seen := countRedis(rdb) // before New
		e := envWithRedis(t, b, rdb, Config{}, &Product{})
		p := Product{Name: "lamp", Price: 1}
		require.NoError(t, e.db.Create(&p).Error)
		n, cmds := seen.take()
		require.Positive(t, n, "the write's fence and finish went through the hook")
		require.Contains(t, cmds, "evalsha")

		var got Product
		require.NoError(t, e.db.First(&got, p.ID).Error)
		n, cmds = seen.take()
		require.Equal(t, 1, n)
		require.Equal(t, []string{"mget"}, cmds, "the hit went through the hook")
		require.EqualValues(t, 1, e.plugin.Stats().Hits)

		// The client's own calls are untouched by the plugin's hook.
		require.NoError(t, rdb.Set(context.Background(), e.prefix+":own", "x", time.Minute).Err())
		n, cmds = seen.take()
		require.Equal(t, 1, n)
		require.Equal(t, []string{"set"}, cmds)
	})
}
