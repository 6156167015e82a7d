package writethrough

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// The round-trip budget: a hit costs one Redis round trip and no database
// statement; a miss two round trips (read, fill) and one statement; a write
// statement at most two round trips (fence, finish) whatever its batch size.

// seedProducts creates n products through the plugin and returns their ids.
func seedProducts(t *testing.T, e *env, n int) []uint {
	t.Helper()
	ps := make([]Product, n)
	for i := range ps {
		ps[i] = Product{Name: fmt.Sprintf("p%d", i), Price: int64(i)}
	}
	require.NoError(t, e.db.Create(&ps).Error)
	ids := make([]uint, n)
	for i, p := range ps {
		ids[i] = p.ID
	}
	return ids
}

func TestHitIsOneRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 10)
		// A first read loads the read script into a fresh server (EVALSHA,
		// NOSCRIPT, EVAL): steady state starts after it.
		require.NoError(t, e.db.First(&Product{}, ids[0]).Error)
		trips := countRedis(e.rdb)
		e.queries()

		var p Product
		require.NoError(t, e.db.First(&p, ids[1]).Error)
		require.Equal(t, "p1", p.Name)
		n, cmds := trips.take()
		require.Equal(t, 1, n, "First hit: commands %v", cmds)
		require.Len(t, cmds, 1)
		require.Zero(t, e.queries(), "First hit ran a database statement")

		var q Product
		require.NoError(t, e.db.Where("id = ?", ids[2]).Take(&q).Error)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "Take hit: commands %v", cmds)
		require.Zero(t, e.queries())

		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error)
		require.Len(t, ps, 10)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "Find of 10 ids: one pipeline, got commands %v", cmds)
		require.Len(t, cmds, 10)
		require.Zero(t, e.queries(), "Find hit ran a database statement")

		// A cached absence is a hit too.
		const absent = 987654321
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		trips.take()
		e.queries()
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "cached absence: commands %v", cmds)
		require.Zero(t, e.queries())
		require.EqualValues(t, 1+1+1+10+1, e.plugin.Stats().Hits, "every read above but the first absent one was a hit")
	})
}

func TestMissIsTwoRoundTripsAndOneQuery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 10)
		ctx := context.Background()
		// Warm the scripts up: a miss and its fill.
		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		require.NoError(t, e.db.First(&Product{}, ids[0]).Error)
		trips := countRedis(e.rdb)

		require.NoError(t, e.plugin.InvalidateTable(ctx, &Product{}))
		trips.take()
		e.queries()
		misses := e.plugin.Stats().Misses

		var p Product
		require.NoError(t, e.db.First(&p, ids[1]).Error)
		require.Equal(t, "p1", p.Name)
		n, cmds := trips.take()
		require.Equal(t, 2, n, "First miss: read, then fill; commands %v", cmds)
		require.EqualValues(t, 1, e.queries())
		require.Equal(t, misses+1, e.plugin.Stats().Misses)

		var ps []Product
		require.NoError(t, e.db.Find(&ps, ids).Error) // ids[1] is cached again, the others miss
		require.Len(t, ps, 10)
		n, cmds = trips.take()
		require.Equal(t, 2, n, "Find of 10 ids, 9 missing: read, then fill; commands %v", cmds)
		require.Len(t, cmds, 10+9)
		require.EqualValues(t, 1, e.queries(), "one statement for every key that missed")

		// The fills landed: the next reads are hits.
		require.NoError(t, e.db.Find(&ps, ids).Error)
		n, _ = trips.take()
		require.Equal(t, 1, n)
		require.Zero(t, e.queries())

		// A missing row: one statement, and its absence is cached.
		const absent = 987654321
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 2, n, "absent row: commands %v", cmds)
		require.EqualValues(t, 1, e.queries())
		require.ErrorIs(t, e.db.First(&Product{}, absent).Error, gorm.ErrRecordNotFound)
		n, cmds = trips.take()
		require.Equal(t, 1, n, "cached absence: commands %v", cmds)
		require.Zero(t, e.queries(), "the absence First found was cached")
	})
}

func TestWriteIsAtMostTwoRoundTrips(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range modesNamed("Transaction", "Implicit", "AutoCommit") {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				write := func(f func(db *gorm.DB) error) {
					t.Helper()
					require.NoError(t, m.commit(e, f))
				}
				// Warm the scripts up.
				seedProducts(t, e, 1)
				trips := countRedis(e.rdb)

				for _, n := range []int{1, 500} {
					ps := make([]Product, n)
					for i := range ps {
						ps[i] = Product{Name: fmt.Sprintf("n%d", i), Price: 1}
					}
					trips.take()
					e.queries()
					write(func(db *gorm.DB) error { return db.Create(&ps).Error })
					got, cmds := trips.take()
					require.LessOrEqual(t, got, 2, "Create of %d rows: %d round trips, %d commands", n, got, len(cmds))
					t.Logf("Create of %d rows: %d Redis round trips (%d commands), %d database statements", n, got, len(cmds), e.queries())

					// The rows were written through: reading them is all hits.
					ids := make([]uint, n)
					for i, p := range ps {
						ids[i] = p.ID
					}
					var back []Product
					require.NoError(t, e.db.Find(&back, ids).Error)
					require.Len(t, back, n)
					require.Zero(t, e.queries(), "rows created are served from the cache")
					trips.take()

					write(func(db *gorm.DB) error {
						return db.Model(&Product{}).Where("id IN ?", ids).Update("price", 2).Error
					})
					got, cmds = trips.take()
					require.LessOrEqual(t, got, 2, "Update of %d rows: %d round trips, %d commands", n, got, len(cmds))
					t.Logf("Update of %d rows by id: %d Redis round trips (%d commands), %d database statements", n, got, len(cmds), e.queries())

					write(func(db *gorm.DB) error { return db.Delete(&Product{}, ids).Error })
					got, cmds = trips.take()
					require.LessOrEqual(t, got, 2, "Delete of %d rows: %d round trips, %d commands", n, got, len(cmds))
					t.Logf("Delete of %d rows by id: %d Redis round trips (%d commands), %d database statements", n, got, len(cmds), e.queries())
				}
			})
		}
	})
}
