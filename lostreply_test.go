package writethrough

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLostReadReplyKeepsTheLease: Redis ran the read script (and so gave
// the reader the lease) but the reply was lost with its connection; the
// client retries, and the retried script finds the reader's own lease. The
// reader must know the lease is its own: read the database, fill, and move
// on, not wait for itself until the lease expires (leaving the key
// uncacheable meanwhile).
func TestLostReadReplyKeepsTheLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		opts.instances = 1
		opts.cfg.LeaseTTL = 5 * time.Second
		w := newHistWorld(t, b, opts)
		db := w.instances[0].db
		// Let Redis learn the scripts, so the reply dropped below is the
		// read script's own, not a NOSCRIPT.
		require.NoError(t, db.First(&HistRow{}, 10).Error)
		require.NoError(t, db.Find(&[]HistRow{}, []int64{10, 11}).Error)

		for _, tc := range []struct {
			name string
			ids  []int64
		}{{"First", []int64{1}}, {"Find", []int64{2, 3, 4}}} {
			t.Run(tc.name, func(t *testing.T) {
				read := func() (hit bool) {
					t.Helper()
					ctx, probe := withProbe(t.Context())
					var rows []HistRow
					var err error
					if len(tc.ids) == 1 {
						var r HistRow
						err = db.WithContext(ctx).First(&r, tc.ids[0]).Error
						rows = append(rows, r)
					} else {
						err = db.WithContext(ctx).Find(&rows, tc.ids).Error
					}
					require.NoError(t, err)
					require.Len(t, rows, len(tc.ids))
					return probe.Load() == 0
				}
				px.dropNextReplies(1, 0)
				start := time.Now()
				require.False(t, read(), "the first read misses")
				took := time.Since(start)
				require.Less(t, took, opts.cfg.LeaseTTL/2, "the reader waited for its own lease")
				require.True(t, read(), "the reader that held the lease filled the key")
			})
		}
	})
}
