package writethrough

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUnmatchedWriteDoesNotPublishStale was found by the history checker
// (Postgres, no fault): an auto-commit conditional update whose WHERE
// matched nothing (version = <stale>) still fences and publishes the row it
// names, as read back in its transaction. That row is not locked by the
// statement, so another writer can commit and finish a newer version
// between the read-back and the fence; the statement's finish then found
// its own fence and stored the older row, after the newer write returned.
// The read-back must come after the fence.
func TestUnmatchedWriteDoesNotPublishStale(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		opts.instances = 2
		w := newHistWorld(t, b, opts)
		a, other := w.instances[0].db, w.instances[1].db

		// Row 1 at version 1; the conditional write below expects version 0.
		require.NoError(t, other.Model(&HistRow{ID: 1}).Updates(map[string]any{"version": 1, "payload": "v1"}).Error)

		// Stop the conditional write right after its read-back query ran;
		// meanwhile another process commits version 2 and returns. Where
		// the conditional write holds the row's lock anyway (InnoDB locks
		// the rows an UPDATE examined; SQLite one writer at a time) the
		// other write waits for it instead, and there is no race.
		paused := false
		otherDone := make(chan error, 1)
		ctx := context.WithValue(context.Background(), afterTxQueryKey{}, func(query string) {
			if paused || !strings.HasPrefix(strings.TrimSpace(strings.ToUpper(query)), "SELECT") {
				return
			}
			paused = true
			go func() {
				otherDone <- other.Model(&HistRow{ID: 1}).Updates(map[string]any{"version": 2, "payload": "v2"}).Error
			}()
			select {
			case err := <-otherDone:
				otherDone <- err
			case <-time.After(time.Second):
				t.Logf("%s: the other write waits for the conditional write's lock", b.name)
			}
		})
		res := a.WithContext(ctx).Model(&HistRow{ID: 1}).Where("version = ?", 0).Updates(map[string]any{"version": 1, "payload": "never"})
		require.NoError(t, res.Error)
		require.Zero(t, res.RowsAffected)
		require.True(t, paused, "the conditional write read the row back")
		require.NoError(t, <-otherDone)

		for i, inst := range w.instances {
			var r HistRow
			require.NoError(t, inst.db.First(&r, 1).Error)
			require.Equal(t, int64(2), r.Version, "instance %d serves version %d after version 2 returned", i, r.Version)
		}
	})
}
