package writethrough

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// newItems returns n items with database-assigned keys.
func newItems(n int, tag string) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Name: fmt.Sprintf("%s-%d", tag, i), Stock: i, Price: int64(i)}
	}
	return items
}

// Batches: Create(&slice) and CreateInBatches write every row through (the
// cache held "not found" for each key before), with at most two Redis round
// trips per statement whatever the batch size.
func TestWriteBatches(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		redisCalls := countRedis(w.rdb)
		// Warm up: load the scripts, and cache "not found" for every key the
		// batches below will be given (a fresh table numbers from 1).
		seedItems(t, w, 1)
		total := 1 + 1 + 10 + 100 + 1000 + 250
		ids := make([]any, 0, total)
		for i := 2; i <= total; i++ {
			ids = append(ids, uint(i))
		}
		for i := 0; i < len(ids); i += 500 {
			chunk := ids[i:min(i+500, len(ids))]
			var absent []Item
			require.NoError(t, w.db.Find(&absent, chunk).Error) // one statement caches "not found" for all
			w.queries()
			hits := w.plugin.Stats().Hits
			require.NoError(t, w.db.Find(&absent, chunk).Error)
			require.Zero(t, w.queries(), "absences of every key are cached")
			require.Equal(t, hits+uint64(len(chunk)), w.plugin.Stats().Hits, "absences of every key are cached")
		}

		for _, n := range []int{1, 10, 100, 1000} {
			items := newItems(n, fmt.Sprint("batch", n))
			redisCalls.take()
			w.write(t, func(db *gorm.DB) error { return db.Create(&items).Error })
			calls, _ := redisCalls.take()
			require.LessOrEqual(t, calls, 2, "Create of %d rows: %d Redis round trips", n, calls)
			got := make([]any, n)
			for i, it := range items {
				got[i] = it.ID
			}
			checkMany[Item](t, w, true, got...)
		}

		// CreateInBatches: one statement per batch of 100, two round trips each
		// (in a transaction: one fence per statement, one finish at COMMIT).
		items := newItems(250, "inbatches")
		redisCalls.take()
		w.write(t, func(db *gorm.DB) error { return db.CreateInBatches(&items, 100).Error })
		calls, _ := redisCalls.take()
		require.LessOrEqual(t, calls, 2*3, "CreateInBatches of 3 statements: %d Redis round trips", calls)
		got := make([]any, len(items))
		for i, it := range items {
			got[i] = it.ID
		}
		checkMany[Item](t, w, true, got...)
	})
}

// Pair has a composite primary key.
type Pair struct {
	A int `gorm:"primaryKey;autoIncrement:false"`
	B int `gorm:"primaryKey;autoIncrement:false"`
	V string
}

// A batch of composite-key rows larger than one read-back query is written
// through whole.
func TestWriteBatchCompositeKeys(t *testing.T) {
	forEachWriteMode(t, []any{&Pair{}}, func(t *testing.T, w *writeEnv) {
		rows := make([]Pair, 0, 1200)
		for i := 0; i < 1200; i++ {
			rows = append(rows, Pair{A: i/7 + 1, B: i%7 + 1, V: fmt.Sprint("v", i)})
		}
		w.write(t, func(db *gorm.DB) error { return db.CreateInBatches(&rows, 1200).Error })
		for _, r := range rows[:60] {
			var want, got Pair
			require.NoError(t, w.plain.Where("a = ? AND b = ?", r.A, r.B).First(&want).Error)
			w.queries()
			hits := w.plugin.Stats().Hits
			require.NoError(t, w.db.Where("a = ? AND b = ?", r.A, r.B).Take(&got).Error)
			require.Zero(t, w.queries(), "row %d/%d: expected a cache hit", r.A, r.B)
			require.Equal(t, hits+1, w.plugin.Stats().Hits, "row %d/%d: expected a cache hit", r.A, r.B)
			require.Equal(t, want, got)
		}
	})
}
