package writethrough

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTimeoutsBoundStalledRedis: while Redis holds its replies, a read
// answers from the database within Config.ReadTimeout (plus the database's
// own time), and a write fails (policy Strict) within Config.WriteTimeout,
// whatever timeouts the Redis client itself has (go-redis ignores context
// deadlines unless Options.ContextTimeoutEnabled is set, and waits 5s).
func TestTimeoutsBoundStalledRedis(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		opts.instances = 1
		opts.cfg.WriteTimeout = 300 * time.Millisecond
		w := newHistWorld(t, b, opts)
		db, cfg := w.instances[0].db, w.instances[0].plugin.cfg
		require.NoError(t, db.First(&HistRow{}, 1).Error)
		require.NoError(t, db.Find(&[]HistRow{}, []int64{1, 2}).Error)

		px.setStall(true)
		defer px.setStall(false)
		// Generous room for the database on a loaded machine: the client on its
		// own would wait 5s.
		slack := 2 * time.Second
		for i := int64(1); i <= 3; i++ {
			start := time.Now()
			var r HistRow
			require.NoError(t, db.First(&r, i).Error)
			require.Equal(t, i, r.ID)
			require.Less(t, time.Since(start), cfg.ReadTimeout+slack, "First waited for a stalled Redis")

			start = time.Now()
			var rs []HistRow
			require.NoError(t, db.Find(&rs, []int64{i, i + 10}).Error)
			require.Len(t, rs, 2)
			require.Less(t, time.Since(start), cfg.ReadTimeout+slack, "Find waited for a stalled Redis")
		}
		start := time.Now()
		err := db.Model(&HistRow{ID: 5}).Update("payload", "stalled").Error
		require.Error(t, err, "policy Strict: a write that cannot fence fails")
		require.Less(t, time.Since(start), cfg.WriteTimeout+slack, "the write waited for a stalled Redis")
		var r HistRow
		require.NoError(t, w.direct.First(&r, 5).Error)
		require.Equal(t, initialPayload, r.Payload, "the failed write did not commit")
	})
}

// TestFillBoundedByReadTimeout: the fill after a miss is part of the read,
// so Redis stalling between the database query and the fill delays the
// read by at most Config.ReadTimeout, not Config.WriteTimeout.
func TestFillBoundedByReadTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		opts.instances = 1
		opts.cfg.WriteTimeout = 5 * time.Second
		var armed atomic.Bool
		opts.hooks = func(int) *testHooks {
			return &testHooks{beforeFill: func(string) {
				if armed.Load() {
					px.setStall(true)
				}
			}}
		}
		w := newHistWorld(t, b, opts)
		db, cfg := w.instances[0].db, w.instances[0].plugin.cfg
		require.NoError(t, db.First(&HistRow{}, 10).Error) // Redis knows the scripts
		defer px.setStall(false)

		armed.Store(true)
		start := time.Now()
		var r HistRow
		require.NoError(t, db.First(&r, 1).Error)
		took := time.Since(start)
		require.Equal(t, int64(1), r.ID)
		require.Less(t, took, cfg.ReadTimeout+2*time.Second, "the read waited for its fill longer than ReadTimeout allows")
	})
}
