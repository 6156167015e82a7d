package writethrough

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// In-process fill flights: concurrent misses of one key in one process
// share the lease holder's fill.

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
