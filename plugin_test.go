package writethrough

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

type Product struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Price int64
	Stock int `gorm:"default:7"`
	gorm.DeletedAt
}

func TestReadAfterWriteIsAHit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p := Product{Name: "lamp", Price: 1999}
		require.NoError(t, e.db.Create(&p).Error)
		require.NotZero(t, p.ID)
		e.queries()

		var got Product
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Zero(t, e.queries(), "a read right after a write must not touch the database")
		require.Equal(t, "lamp", got.Name)
		require.Equal(t, 7, got.Stock, "the database default is what gets cached")

		require.NoError(t, e.db.Model(&got).Update("price", 2500).Error)
		e.queries()
		var again Product
		require.NoError(t, e.db.First(&again, p.ID).Error)
		require.Zero(t, e.queries())
		require.Equal(t, int64(2500), again.Price)

		require.NoError(t, e.db.Delete(&again).Error)
		e.queries()
		err := e.db.First(&Product{}, p.ID).Error
		require.ErrorIs(t, err, gorm.ErrRecordNotFound)
		require.Zero(t, e.queries())
		t.Logf("stats: %+v", e.plugin.Stats())
	})
}

// TestEvictedGenerationServesNothingStale: a table-level write bumps the
// shard generations; if Redis then evicts a generation key, entries from
// before the write must still not be served.
func TestEvictedGenerationServesNothingStale(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{TableShards: 1}, &Product{})
		p := Product{Name: "old", Price: 10}
		require.NoError(t, e.db.Create(&p).Error) // cached under the current generation
		require.NoError(t, e.db.Model(&Product{}).Where("price > ?", 0).Update("name", "new").Error)

		mi := e.plugin.model(e.stmtSchema(&Product{}))
		gen, _ := mi.shardKeys(e.prefix, 0)
		require.NoError(t, e.rdb.Del(context.Background(), gen).Err()) // evicted

		var got Product
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Equal(t, "new", got.Name)
		// and once refilled, it is served from the cache
		require.NoError(t, e.db.First(&got, p.ID).Error)
		e.queries()
		require.NoError(t, e.db.First(&got, p.ID).Error)
		require.Zero(t, e.queries())
		require.Equal(t, "new", got.Name)
	})
}

// SKU has a string primary key. MySQL/MariaDB compare it without regard
// to case (and trailing spaces) under their default collations.
type SKU struct {
	Code string `gorm:"primaryKey;size:32"`
	Name string
}

// TestDifferentlySpelledStringKeys: under a case-insensitive collation
// (MySQL/MariaDB's default) "abc" finds the stored row "ABC". Writes and
// deletes addressed as "abc" must leave no stale entry for "ABC", and no
// false absence for "abc". On other dialects "abc" is another row; the
// assertions (cache == database) hold there too.
func TestDifferentlySpelledStringKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &SKU{})
		require.NoError(t, e.db.Create(&SKU{Code: "ABC", Name: "v1"}).Error)
		same := func(code string) {
			t.Helper()
			var cached, direct []SKU
			require.NoError(t, e.db.Find(&cached, "code = ?", code).Error)
			require.NoError(t, e.plainDB().Find(&direct, "code = ?", code).Error)
			require.Equal(t, direct, cached, "cache and database disagree on %q", code)
		}
		warm := func() { same("ABC"); same("abc"); same("ABC"); same("abc") }

		warm()
		require.NoError(t, e.db.Model(&SKU{}).Where("code = ?", "abc").Update("name", "v2").Error)
		warm()
		require.NoError(t, e.db.Model(&SKU{Code: "abc"}).Update("name", "v3").Error)
		warm()
		require.NoError(t, e.db.Delete(&SKU{}, "code = ?", "abc").Error)
		warm()
		require.NoError(t, e.db.Save(&SKU{Code: "ABC", Name: "v4"}).Error)
		warm()
		require.NoError(t, e.db.Delete(&SKU{Code: "abc"}).Error)
		warm()
	})
}

// TestUpdateThatChangesThePrimaryKey: the row moves to a key no fence
// covered; a cached absence there must not survive.
func TestUpdateThatChangesThePrimaryKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p := Product{Name: "mover", Price: 1}
		require.NoError(t, e.db.Create(&p).Error)
		newID := p.ID + 1000
		require.ErrorIs(t, e.db.First(&Product{}, newID).Error, gorm.ErrRecordNotFound) // absence cached
		require.ErrorIs(t, e.db.First(&Product{}, newID).Error, gorm.ErrRecordNotFound)

		require.NoError(t, e.db.Model(&Product{ID: p.ID}).Update("id", newID).Error)

		var got Product
		require.NoError(t, e.db.First(&got, newID).Error)
		require.Equal(t, "mover", got.Name)
		require.ErrorIs(t, e.db.First(&Product{}, p.ID).Error, gorm.ErrRecordNotFound)
	})
}
