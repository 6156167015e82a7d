package writethrough

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Helpers for the write-shape tests: each test writes through GORM with the
// plugin, then reads the rows back through the plugin and compares them
// with what a plain GORM (no plugin) reads from the same database.

// writeEnv is a test's world plus the plain database and the write mode.
type writeEnv struct {
	*env
	plain *gorm.DB
	mode  commitMode
}

// forEachWriteMode runs f per backend and per write mode.
func forEachWriteMode(t *testing.T, models []any, f func(t *testing.T, w *writeEnv)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range writeModes() {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), models...)
				f(t, &writeEnv{env: e, plain: e.plainDB(), mode: m})
			})
		}
	})
}

// newWriteEnv is forEachWriteMode's env for tests that need one mode only.
func newWriteEnv(t *testing.T, b backend, cfg Config, gcfg *gorm.Config, models ...any) *writeEnv {
	e := newEnvWith(t, b, cfg, gcfg, models...)
	return &writeEnv{env: e, plain: e.plainDB(), mode: modesNamed("Implicit")[0]}
}

// write runs one write the way the mode says and requires it to succeed.
func (w *writeEnv) write(t *testing.T, f func(db *gorm.DB) error) {
	t.Helper()
	require.NoError(t, w.mode.commit(w.env, f))
}

// check reads every id through the plugin and from the plain database and
// requires the same answer (the same row, or not found for both). With hit
// set, every plugin read must also be served without a database query.
func check[T any](t *testing.T, w *writeEnv, hit bool, ids ...any) {
	t.Helper()
	for _, id := range ids {
		var want, got T
		wantErr := w.plain.First(&want, id).Error
		w.queries()
		before := w.plugin.Stats()
		gotErr := w.db.First(&got, id).Error
		n := w.queries()
		after := w.plugin.Stats()
		if wantErr != nil {
			require.ErrorIs(t, wantErr, gorm.ErrRecordNotFound, "plain read of %v", id)
			require.ErrorIs(t, gotErr, gorm.ErrRecordNotFound, "id %v: the database has no row but the plugin served %s", id, canon(got))
		} else {
			require.NoError(t, gotErr, "id %v", id)
			require.Equal(t, canon(want), canon(got), "id %v: the plugin serves a row the database does not hold", id)
		}
		if hit {
			// Statements are not counted under PrepareStmt; the plugin's
			// own counters are, in every mode.
			require.Zero(t, n, "id %v: expected a cache hit (write-through), the read went to the database", id)
			require.True(t, after.Hits == before.Hits+1 && after.Misses == before.Misses && after.Bypasses == before.Bypasses,
				"id %v: expected a cache hit (write-through); stats before %+v after %+v", id, before, after)
		}
	}
}

// checkMany reads ids (at most 1000, integer keys) through the plugin with
// one Find and from the plain database, requires the same rows, and with
// hit set requires every row to be served from the cache.
func checkMany[T any](t *testing.T, w *writeEnv, hit bool, ids ...any) {
	t.Helper()
	var want, got []T
	require.NoError(t, w.plain.Order("id").Find(&want, ids).Error)
	w.queries()
	before := w.plugin.Stats()
	require.NoError(t, w.db.Find(&got, ids).Error)
	n := w.queries()
	after := w.plugin.Stats()
	require.Equal(t, canon(want), canon(got), "the plugin serves rows the database does not hold")
	if hit {
		require.Zero(t, n, "expected cache hits (write-through), the read went to the database")
		require.Equal(t, before.Hits+uint64(len(ids)), after.Hits, "expected every row to be a hit")
	}
}

// checkAll compares every row of T (plain read, Unscoped) through the
// plugin, keyed by primary key, so no row a write may have touched is left out.
func checkAll[T any](t *testing.T, w *writeEnv, hit bool, extra ...any) {
	t.Helper()
	var rows []T
	require.NoError(t, w.plain.Unscoped().Find(&rows).Error)
	ids := append([]any{}, extra...)
	for i := range rows {
		ids = append(ids, pkOf(t, w, &rows[i]))
	}
	check[T](t, w, hit, ids...)
}

// pkOf returns the single primary-key value of a row.
func pkOf(t *testing.T, w *writeEnv, row any) any {
	t.Helper()
	stmt := &gorm.Statement{DB: w.plain}
	require.NoError(t, stmt.Parse(row))
	require.Len(t, stmt.Schema.PrimaryFields, 1)
	v, _ := stmt.Schema.PrimaryFields[0].ValueOf(context.Background(), reflect.ValueOf(row).Elem())
	return v
}

// warm reads ids through the plugin twice, so they are cached (rows, and
// "not found" for absent ids), and requires the second read to be a hit.
// It reads with Find: a First that finds nothing does not cache the absence.
func warm[T any](t testing.TB, e *env, ids ...any) {
	t.Helper()
	for _, id := range ids {
		var r []T
		require.NoError(t, e.db.Find(&r, id).Error)
		e.queries()
		before := e.plugin.Stats()
		require.NoError(t, e.db.Find(&r, id).Error)
		require.Zero(t, e.queries(), "warming id %v: the second read must be a hit", id)
		require.Equal(t, before.Hits+1, e.plugin.Stats().Hits, "warming id %v: the second read must be a hit", id)
	}
}

// canon renders a value for comparison: exported fields by name, times in
// UTC with full precision, pointers followed.
func canon(v any) string {
	var b strings.Builder
	canonValue(&b, reflect.ValueOf(v), 0)
	return b.String()
}

var timeType = reflect.TypeOf(time.Time{})

func canonValue(b *strings.Builder, v reflect.Value, depth int) {
	if depth > 6 {
		b.WriteString("…")
		return
	}
	if !v.IsValid() {
		b.WriteString("nil")
		return
	}
	if v.Type() == timeType {
		b.WriteString(v.Interface().(time.Time).UTC().Format(time.RFC3339Nano))
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("nil")
			return
		}
		canonValue(b, v.Elem(), depth+1)
	case reflect.Struct:
		b.WriteString("{")
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			fmt.Fprintf(b, "%s:", f.Name)
			canonValue(b, v.Field(i), depth+1)
			b.WriteString(" ")
		}
		b.WriteString("}")
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			fmt.Fprintf(b, "%q", v.Bytes())
			return
		}
		b.WriteString("[")
		for i := 0; i < v.Len(); i++ {
			canonValue(b, v.Index(i), depth+1)
			b.WriteString(",")
		}
		b.WriteString("]")
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		b.WriteString("map[")
		for _, k := range keys {
			fmt.Fprintf(b, "%v:", k)
			canonValue(b, v.MapIndex(k), depth+1)
			b.WriteString(" ")
		}
		b.WriteString("]")
	default:
		fmt.Fprintf(b, "%v", v.Interface())
	}
}

// redisCounter is the tests' one go-redis hook that counts: the round
// trips a client makes (one per command sent alone, one per pipeline), the
// commands it sends, and the read script's replies that reached it (a
// NOSCRIPT is not one).
type redisCounter struct {
	mu    sync.Mutex
	trips int
	cmds  []string
	reads atomic.Int64
}

// countRedis installs one redisCounter on every client given.
func countRedis(clients ...redis.UniversalClient) *redisCounter {
	c := &redisCounter{}
	for _, rdb := range clients {
		rdb.AddHook(c)
	}
	return c
}

func (c *redisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *redisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(cmd)
		err := next(ctx, cmd)
		c.noteRead(cmd, err)
		return err
	}
}

func (c *redisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.add(cmds...)
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			c.noteRead(cmd, cmd.Err())
		}
		return err
	}
}

func (c *redisCounter) add(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips++
	for _, cmd := range cmds {
		c.cmds = append(c.cmds, cmd.Name())
	}
}

func (c *redisCounter) noteRead(cmd redis.Cmder, err error) {
	if isScript(cmd, readScript) && !isNoScript(err) {
		c.reads.Add(1)
	}
}

// take returns the round trips and commands since the last call.
func (c *redisCounter) take() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	trips, cmds := c.trips, c.cmds
	c.trips, c.cmds = 0, nil
	return trips, cmds
}
