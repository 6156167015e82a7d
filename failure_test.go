package writethrough

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// P5 and the edges of the configuration: Redis faults on the read path,
// damaged and foreign entries, models the cache leaves alone, TTLs.

// Plain is a model without soft delete.
type Plain struct {
	ID   uint
	Name string
}

// faultServer is a TCP server that speaks no Redis: it accepts and then
// either never answers (reply == "") or answers every command with reply.
func faultServer(t testing.TB, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Read command by command (so the client never blocks
				// writing) and answer each one, if at all.
				r := bufio.NewReader(c)
				for {
					if err := skipRESPCommand(r); err != nil {
						return
					}
					if reply != "" {
						if _, err := io.WriteString(c, reply); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// skipRESPCommand reads one client command: an array of bulk strings.
func skipRESPCommand(r *bufio.Reader) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "*") {
		return nil // an inline command: one line
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		head, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
		if err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, r, int64(size)+2); err != nil {
			return err
		}
	}
	return nil
}

// closedPort returns an address nothing listens on.
func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// envWithRedis is newEnv with the plugin talking to rdb.
func envWithRedis(t testing.TB, b backend, rdb redis.UniversalClient, cfg Config, models ...any) *env {
	b.redis = func(testing.TB) redis.UniversalClient { return rdb }
	return newEnv(t, b, cfg, models...)
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

func TestRedisFaultOnReadFallsBackToTheDatabase(t *testing.T) {
	faults := map[string]func(t testing.TB) string{
		"no answer":   func(t testing.TB) string { return faultServer(t, "") },
		"closed port": closedPort,
		"error reply": func(t testing.TB) string { return faultServer(t, "-ERR injected fault\r\n") },
		"garbage":     func(t testing.TB) string { return faultServer(t, "?garbage\r\n") },
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		for name, fault := range faults {
			t.Run(name, func(t *testing.T) {
				// The client's own timeouts are long and it does not bound
				// calls by their context: Config.ReadTimeout must still be
				// what ends a read that gets no answer.
				rdb := redis.NewClient(&redis.Options{
					Addr: fault(t), DialTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
				})
				t.Cleanup(func() { rdb.Close() })
				e := envWithRedis(t, b, rdb, Config{ReadTimeout: defaultReadTimeout}, &Product{})
				plain := e.plainDB()
				table := e.stmtSchema(&Product{}).Table
				rows := []Product{{Name: "a", Price: 1}, {Name: "b", Price: 2}}
				require.NoError(t, plain.Table(table).Create(&rows).Error)
				e.queries()

				read := func(f func() error) {
					t.Helper()
					start := time.Now()
					require.NoError(t, f())
					// Not a latency claim: only that the client's one-minute
					// timeout is not what ended the call.
					require.Less(t, time.Since(start), 30*time.Second, "the read waited for the client's timeout, not Config.ReadTimeout")
				}
				before := e.plugin.Stats().RedisErrors
				var one Product
				read(func() error { return e.db.First(&one, rows[0].ID).Error })
				require.Equal(t, "a", one.Name)
				require.Equal(t, int64(1), e.queries(), "the read went to the database")

				var list []Product
				read(func() error { return e.db.Find(&list, []uint{rows[0].ID, rows[1].ID}).Error })
				require.Len(t, list, 2)
				require.Equal(t, int64(1), e.queries())

				read(func() error {
					err := e.db.First(&Product{}, rows[1].ID+1000).Error
					if !errors.Is(err, gorm.ErrRecordNotFound) {
						return errors.New("want ErrRecordNotFound, got " + errString(err))
					}
					return nil
				})
				require.GreaterOrEqual(t, e.plugin.Stats().RedisErrors, before+3, "every failed Redis call is counted")
				require.Zero(t, e.plugin.Stats().Hits)
			})
		}
	})
}

func TestRedisFaultOnWriteIsBoundedByWriteTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		// As on reads: the client's one-minute timeouts, which it does not
		// shorten for a context's deadline, must not be what ends a write.
		rdb := redis.NewClient(&redis.Options{
			Addr: faultServer(t, ""), DialTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		})
		t.Cleanup(func() { rdb.Close() })
		e := envWithRedis(t, b, rdb, Config{WriteTimeout: 200 * time.Millisecond}, &Plain{})
		plain := e.plainDB()
		table := e.stmtSchema(&Plain{}).Table
		old := Plain{Name: "old"}
		require.NoError(t, plain.Table(table).Create(&old).Error)

		write := func(what string, f func() error) {
			t.Helper()
			start := time.Now()
			err := f()
			require.Less(t, time.Since(start), 30*time.Second, "%s waited for the client's timeout, not Config.WriteTimeout", what)
			require.ErrorContains(t, err, "policy strict", what)
		}
		write("create", func() error { return e.db.Create(&Plain{Name: "new"}).Error })
		write("update", func() error { return e.db.Model(&old).Update("name", "changed").Error })
		write("delete", func() error { return e.db.Delete(&old).Error })

		var rows []Plain
		require.NoError(t, plain.Table(table).Find(&rows).Error)
		require.Equal(t, []Plain{{ID: old.ID, Name: "old"}}, rows, "strict: nothing was written that the cache could not follow")
	})
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestCorruptEntriesAreMissesAndReplaced(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ctx := context.Background()
		p := Product{Name: "lamp 🦊", Price: 1999}
		require.NoError(t, e.db.Create(&p).Error)
		key := rowKeyOf(t, e, &p)
		good, err := e.rdb.Get(ctx, key).Result()
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(good, "V"), "the write stored the row: %q", good)
		bar := strings.IndexByte(good, '|')
		header := good[:bar+1] // V<gen>|
		mi, err := e.plugin.modelOf(&p)
		require.NoError(t, err)
		require.Equal(t, mi.fp, good[bar+1:bar+1+fingerprintLen])
		body := good[bar+1+fingerprintLen:]

		cases := map[string]string{
			"garbage body":             header + mi.fp + "\x00garbage\xff",
			"truncated":                good[:len(good)-3],
			"one byte flipped":         header + mi.fp + flipByte(body, len(body)/2),
			"header only":              header,
			"short fingerprint":        header + mi.fp[:3],
			"foreign layout":           header + "deadbeef" + body,
			"checksum ok, not a row":   header + mi.fp + string(sealEntry([]byte("not a row"))),
			"checksum ok, wrong arity": header + mi.fp + string(sealEntry(mustAppend(t, BinaryCodec{}, []any{int64(1)}))),
		}
		for name, bad := range cases {
			t.Run(name, func(t *testing.T) {
				require.NoError(t, e.rdb.Set(ctx, key, bad, 0).Err())
				decodeErrors := e.plugin.Stats().DecodeErrors
				e.queries()

				var got Product
				require.NoError(t, e.db.First(&got, p.ID).Error)
				require.Equal(t, "lamp 🦊", got.Name)
				require.Equal(t, int64(1999), got.Price)
				require.Equal(t, int64(1), e.queries(), "a damaged entry is a miss")
				require.Greater(t, e.plugin.Stats().DecodeErrors, decodeErrors, "and is counted")

				now, err := e.rdb.Get(ctx, key).Result()
				require.NoError(t, err)
				require.Equal(t, good, now, "the damaged entry was replaced by the row")
				ttl, err := e.rdb.PTTL(ctx, key).Result()
				require.NoError(t, err)
				require.Greater(t, ttl, time.Duration(0), "the replacement expires")

				var again Product
				require.NoError(t, e.db.First(&again, p.ID).Error)
				require.Zero(t, e.queries(), "and is served from then on")
				require.Equal(t, got, again)
			})
		}
	})
}

func flipByte(s string, i int) string {
	b := []byte(s)
	b[i] ^= 0x20
	return string(b)
}

func mustAppend(t testing.TB, c Codec, values []any) []byte {
	b, err := c.Append(nil, values)
	require.NoError(t, err)
	return b
}

// AuditLog has no primary key.
type AuditLog struct {
	Event string
	Level int
}

func TestModelWithoutPrimaryKeyIsNotCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &AuditLog{})
		plain := e.plainDB()
		table := e.stmtSchema(&AuditLog{}).Table

		require.NoError(t, e.db.Create(&[]AuditLog{{Event: "a", Level: 1}, {Event: "b", Level: 2}}).Error)
		require.NoError(t, e.db.Model(&AuditLog{}).Where("event = ?", "a").Update("level", 5).Error)
		require.NoError(t, e.db.Where("event = ?", "b").Delete(&AuditLog{}).Error)
		var got, want []AuditLog
		e.queries()
		require.NoError(t, e.db.Find(&got).Error)
		require.Equal(t, int64(1), e.queries())
		require.NoError(t, plain.Table(table).Find(&want).Error)
		require.Equal(t, want, got)
		require.Equal(t, []AuditLog{{Event: "a", Level: 5}}, got)
		var first AuditLog
		require.NoError(t, e.db.First(&first).Error)
		require.Equal(t, "a", first.Event)

		require.Empty(t, keysUnder(t, e.rdb, e.prefix), "nothing of a model without a key is written to Redis")
		st := e.plugin.Stats()
		require.Zero(t, st.Hits+st.Misses+st.Fills+st.WritesThrough+st.Invalidations+st.RedisErrors+st.DecodeErrors, "%+v", st)
	})
}

// ShortLived chooses its own TTL.
type ShortLived struct {
	ID   uint
	Name string
}

func (ShortLived) CacheTTL() time.Duration { return 10 * time.Minute }

// DefaultLived implements CacheTTLer but keeps Config.TTL.
type DefaultLived struct {
	ID   uint
	Name string
}

func (*DefaultLived) CacheTTL() time.Duration { return 0 }

// Uncached opts out, with a pointer receiver.
type Uncached struct {
	ID   uint
	Name string
}

func (*Uncached) CacheTTL() time.Duration { return NoCache }

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
