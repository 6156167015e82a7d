package writethrough

import (
	"bufio"
	"context"
	"errors"
	"io"
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
				e := envWithRedis(t, b, rdb, Config{}, &Product{})
				plain := plainDB(t, e)
				table := tableOf(t, e, &Product{})
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
		key := rowKeyOf(t, e, &p).row
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
						keys[i] = rowKeyOf(t, e, &rows[i]).row
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
					keys[i] = rowKeyOf(t, e, &rows[i]).row
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
				key := rowKeyOf(t, e, &Plain{ID: missing}).row
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
				} else if err == nil {
					require.False(t, strings.HasPrefix(v, "N"), "absence cached although disabled: %q", v)
				} else {
					require.ErrorIs(t, err, redis.Nil)
				}

				// A delete leaves an absence behind only when absences are cached.
				require.NoError(t, e.db.Delete(&p).Error)
				pkey := rowKeyOf(t, e, &p).row
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
