package writethrough

import (
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
