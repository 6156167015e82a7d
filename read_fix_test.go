package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Regression tests for read-path bugs, one per fix.

// seedRdProducts inserts three products through db and returns their ids.
func seedRdProducts(t *testing.T, db *gorm.DB) []uint {
	t.Helper()
	var ids []uint
	for _, n := range []string{"alpha", "beta", "gamma"} {
		p := RdProduct{Name: n, Price: 100}
		require.NoError(t, db.Create(&p).Error)
		ids = append(ids, p.ID)
	}
	return ids
}

// "id IN (?)" is served; "id IN ?" with one value is the database's syntax
// error, not a row from the cache.
func TestReadInParenthesesIsServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &RdProduct{})
		plain := e.plain()
		ids := seedRdProducts(t, plain)
		e.queries()

		var want, got []RdProduct
		require.NoError(t, plain.Where("id IN (?)", ids[1:]).Find(&want).Error)
		for i, q := range []int64{1, 0} {
			got = nil
			require.NoError(t, e.db.Where("id IN (?)", ids[1:]).Find(&got).Error)
			require.Equal(t, want, got)
			require.Equal(t, q, e.queries(), "read %d", i)
		}
		var one RdProduct
		require.NoError(t, e.db.Where("id IN (?)", ids[2]).Take(&one).Error)
		require.Zero(t, e.queries(), "one value in parentheses is a key lookup too")
		require.Equal(t, "gamma", one.Name)

		wantErr := plain.Where("id IN ?", ids[2]).Take(&RdProduct{}).Error
		require.Error(t, wantErr)
		err := e.db.Where("id IN ?", ids[2]).Take(&RdProduct{}).Error
		require.EqualError(t, err, wantErr.Error(), "the database's error, not the cached row")
	})
}

// First, Take and Last of an absent or soft-deleted id cache the absence
// (GORM reports it as ErrRecordNotFound, which is an answer, not a
// failure), so the next read is served.
func TestReadAbsenceFromFirstIsCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &RdProduct{})
		plain := e.plain()
		deleted := seedRdProducts(t, plain)
		require.NoError(t, plain.Delete(&RdProduct{}, deleted).Error)
		e.queries()

		reads := []func(id uint) *gorm.DB{
			func(id uint) *gorm.DB { return e.db.First(&RdProduct{}, id) },
			func(id uint) *gorm.DB { return e.db.Take(&RdProduct{}, id) },
			func(id uint) *gorm.DB { return e.db.Last(&RdProduct{}, id) },
		}
		for k, read := range reads {
			for _, id := range []uint{deleted[k], 1000 + deleted[k]} { // soft-deleted, never existed
				for i, q := range []int64{1, 0} {
					tx := read(id)
					require.ErrorIs(t, tx.Error, gorm.ErrRecordNotFound)
					require.Zero(t, tx.RowsAffected)
					require.Equal(t, q, e.queries(), "form %d, id %d, read %d", k, id, i)
				}
			}
		}
	})
}
