package writethrough

import (
	"context"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Tests of the shortcuts the hit path takes: each must give exactly what
// the plain code it replaced gave.

func TestCRC32IEEEMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		require.Equal(t, crc32.ChecksumIEEE(b), crc32IEEE(b), "length %d", n)
	}
}

func TestRowKeyFromShardTable(t *testing.T) {
	// The layout is shared by every process using a Redis: these are the
	// keys the code before the shard table built.
	golden := []struct {
		parts []string
		key   rowKey
	}{
		{[]string{"1"}, rowKey{row: "pfx:{wt_products:7}:k:1", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
		{[]string{"42"}, rowKey{row: "pfx:{wt_products:8}:k:42", gen: "pfx:{wt_products:8}:g", fence: "pfx:{wt_products:8}:f"}},
		{[]string{"a:b", "{x}"}, rowKey{row: "pfx:{wt_products:7}:k:a%3Ab:%7Bx%7D", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
		{[]string{"\u00e9"}, rowKey{row: "pfx:{wt_products:7}:k:%C3%A9", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
	}
	mi := &modelInfo{tableEsc: "wt_products"}
	mi.buildShards("pfx", 16)
	bare := &modelInfo{tableEsc: "wt_products"} // no table: keys built from scratch
	for _, g := range golden {
		requireSameKey(t, g.key, mi.key("pfx", 16, g.parts))
		requireSameKey(t, g.key, bare.key("pfx", 16, g.parts))
	}
	// A key longer than the stack buffer, and another prefix than the table's.
	long := string(make([]byte, 100))
	requireSameKey(t, bare.key("pfx", 16, []string{long}), mi.key("pfx", 16, []string{long}))
	requireSameKey(t, bare.key("other", 16, []string{"7"}), mi.key("other", 16, []string{"7"}))
	require.Equal(t, "other:{wt_products:7}:k:1", mi.key("other", 16, []string{"1"}).row)
}

// requireSameKey compares the key names, and checks that the boxed shard
// arguments name the same keys.
func requireSameKey(t *testing.T, want, got rowKey) {
	t.Helper()
	require.Equal(t, [3]string{want.row, want.gen, want.fence}, [3]string{got.row, got.gen, got.fence})
	require.NotNil(t, got.shard)
	require.Equal(t, got.gen, got.shard.genArg)
	require.Equal(t, got.fence, got.shard.fenceArg)
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

// NoteRow has a field the cache does not store (gorm:"-").
type NoteRow struct {
	ID   uint `gorm:"primaryKey"`
	Name string
	Note string `gorm:"-"`
}

// Hits fill a slice as gorm.Scan does: the caller's capacity is reused,
// every element starts from zero, and pointer elements are new rows.
func TestFindHitFillsSlicesLikeScan(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &NoteRow{})
		rows := []NoteRow{{Name: "a"}, {Name: "b"}, {Name: "c"}}
		require.NoError(t, e.db.Create(&rows).Error)
		ids := []uint{rows[0].ID, rows[1].ID, rows[2].ID}
		e.queries()

		// Capacity that holds the rows, with stale elements in it.
		backing := make([]NoteRow, 5)
		for i := range backing {
			backing[i] = NoteRow{ID: 999, Name: "stale", Note: "stale"}
		}
		dst := backing[:0]
		require.NoError(t, e.db.Find(&dst, ids).Error)
		require.Zero(t, e.queries(), "served from the cache")
		require.Equal(t, []NoteRow{{ID: ids[0], Name: "a"}, {ID: ids[1], Name: "b"}, {ID: ids[2], Name: "c"}}, dst)
		require.Equal(t, &backing[0], &dst[0], "the caller's capacity is reused, as gorm.Scan does")

		// Too little capacity: a new slice.
		small := make([]NoteRow, 1, 2)
		small[0].Note = "stale"
		require.NoError(t, e.db.Find(&small, ids).Error)
		require.Len(t, small, 3)
		require.Equal(t, "", small[0].Note)

		// Pointer elements: new rows, never the old pointers.
		old := &NoteRow{ID: 999, Note: "stale"}
		ptrs := []*NoteRow{old}
		ptrs = ptrs[:0]
		require.NoError(t, e.db.Find(&ptrs, ids).Error)
		require.Len(t, ptrs, 3)
		require.Equal(t, NoteRow{ID: ids[0], Name: "a"}, *ptrs[0])
		require.Equal(t, NoteRow{ID: 999, Note: "stale"}, *old, "an old element is not written to")

		// No row at all: an empty, non-nil slice, as from the database.
		var none []NoteRow
		require.NoError(t, e.db.Find(&none, []uint{987654}).Error) // miss, absence cached
		require.NoError(t, e.db.Find(&none, []uint{987654}).Error) // hit on the absence
		require.NotNil(t, none)
		require.Empty(t, none)
		require.Zero(t, e.queries()-1, "the second read was a hit")
	})
}

// A waiter gets what the flight it waits for published, whether it comes
// before the flight ends or after; it gives up at its limit or when its
// context ends; and a flight nobody waits for never makes a channel.
func TestFlightsWaitersWithLazyChannel(t *testing.T) {
	var fs flights
	ctx := context.Background()
	sealed := sealEntry([]byte("row"))

	f := fs.start("lease.1")
	got := make(chan []byte)
	go func() {
		e, absent, ok := fs.wait(ctx, "k1", "lease.1", time.Minute)
		if !ok || absent {
			e = nil
		}
		got <- e
	}()
	require.Eventually(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.done != nil }, 5*time.Second, time.Millisecond, "the waiter made the channel")
	f.publish("k1", sealed, false)
	f.publish("k2", nil, true)
	fs.end(f)
	require.Equal(t, []byte("row"), <-got)

	// Found before end, looked at after: no wait, same answer.
	g := fs.start("lease.2")
	g.publish("k2", nil, true)
	fs.mu.Lock()
	found := fs.m["lease.2"]
	fs.mu.Unlock()
	require.Same(t, g, found)
	fs.end(g)
	require.Nil(t, g.done, "nobody waited: no channel was made")
	// An ended flight that stored something stays findable for a while
	// (flights.recent): a late waiter gets its answer without waiting.
	_, absent, ok := fs.wait(ctx, "k2", "lease.2", time.Minute)
	require.True(t, ok, "an ended flight that stored stays findable")
	require.True(t, absent)

	// Time limit and cancelled context.
	h := fs.start("lease.3")
	_, _, ok = fs.wait(ctx, "k1", "lease.3", 10*time.Millisecond)
	require.False(t, ok)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, ok = fs.wait(cctx, "k1", "lease.3", time.Minute)
	require.False(t, ok)
	fs.end(h)
}

// An IN of plain values is used as it is; a list inside it is expanded.
func TestInConditionsWithAndWithoutLists(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 3)
		e.queries()
		for _, in := range []clause.IN{
			{Column: clause.PrimaryColumn, Values: []any{ids[0], ids[1], ids[2]}},
			{Column: clause.PrimaryColumn, Values: []any{ids[0], []uint{ids[1], ids[2]}}},
			{Column: clause.Column{Name: "id"}, Values: []any{[]uint{ids[0]}, ids[1], ids[2]}},
		} {
			before := append([]any(nil), in.Values...)
			var ps []Product
			require.NoError(t, e.db.Where(in).Find(&ps).Error)
			require.Equal(t, before, in.Values, "the condition is not modified")
			require.Len(t, ps, 3)
			require.Equal(t, []uint{ids[0], ids[1], ids[2]}, []uint{ps[0].ID, ps[1].ID, ps[2].ID})
			require.Zero(t, e.queries(), "%v: served from the cache", in.Values)
		}
	})
}

// EmbeddedKey has its primary key in an embedded pointer struct.
type EmbeddedKey struct {
	*EmbeddedID
	Name string
}

type EmbeddedID struct {
	ID uint `gorm:"primaryKey"`
}

// fieldIsZero agrees with field.ValueOf on plain, pointer-embedded (nil
// and set) and zero/non-zero keys.
func TestFieldIsZeroAgreesWithValueOf(t *testing.T) {
	db, err := gorm.Open(sqliteDialector(t, openSQLite(t)), &gorm.Config{})
	require.NoError(t, err)
	ctx := context.Background()
	for _, m := range []any{&Product{}, &Product{ID: 3}, &EmbeddedKey{}, &EmbeddedKey{EmbeddedID: &EmbeddedID{}}, &EmbeddedKey{EmbeddedID: &EmbeddedID{ID: 9}}} {
		stmt := &gorm.Statement{DB: db}
		require.NoError(t, stmt.Parse(m))
		rv := reflect.ValueOf(m)
		for _, f := range stmt.Schema.PrimaryFields {
			_, zero := f.ValueOf(ctx, rv)
			require.Equal(t, zero, fieldIsZero(f, rv), "%T %+v", m, m)
			require.Equal(t, zero, fieldIsZero(f, rv.Elem()))
		}
	}
}

// Concurrent misses on one key in one process: the lease holder reads the
// database, and a statement that found its lease waits for its fill (on
// the channel the waiter made) instead of reading the database too.
func TestStampedeWaiterUsesTheFill(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 1)
		require.NoError(t, e.plugin.InvalidateTable(context.Background(), &Product{}))
		waited := func() bool {
			e.plugin.flights.mu.Lock()
			defer e.plugin.flights.mu.Unlock()
			for _, f := range e.plugin.flights.m {
				f.mu.Lock()
				w := f.done != nil
				f.mu.Unlock()
				if w {
					return true
				}
			}
			return false
		}
		var once sync.Once
		e.plugin.hooks = &testHooks{beforeQuery: func(string) {
			once.Do(func() { // the lease holder: hold until someone waits
				assert.Eventually(t, waited, 10*time.Second, time.Millisecond) // not require: another goroutine
			})
		}}
		e.queries()
		const n = 8
		var wg sync.WaitGroup
		names := make([]string, n)
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var p Product
				errs[i] = e.db.First(&p, ids[0]).Error
				names[i] = p.Name
			}()
		}
		wg.Wait()
		for i := range errs {
			require.NoError(t, errs[i])
			require.Equal(t, "p0", names[i])
		}
		q := e.queries()
		require.Less(t, q, int64(n), "at least one reader was served by the lease holder's fill")
		require.EqualValues(t, 1, e.plugin.Stats().Misses, "one lease holder")
		t.Logf("%d readers, %d database queries, stats %+v", n, q, e.plugin.Stats())
	})
}
