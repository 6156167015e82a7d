package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Coded has a string primary key.
type Coded struct {
	Code string `gorm:"primaryKey"`
	Name string
}

func TestIntegerValueForAStringKeyGoesToTheDatabase(t *testing.T) {
	// Where("code = ?", 1) on a text column: MySQL compares numerically
	// ("01" matches), Postgres refuses to compare text with an integer.
	// The key "1" names neither answer, so the cache must not answer.
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Coded{})
		plain := e.plainDB()
		table := e.stmtSchema(&Coded{}).Table
		require.NoError(t, e.db.Create(&[]Coded{{Code: "1", Name: "one"}, {Code: "01", Name: "zero-one"}}).Error)

		var fromDB, fromCache Coded
		dbErr := plain.Table(table).First(&fromDB, "code = ?", 1).Error
		cacheErr := e.db.First(&fromCache, "code = ?", 1).Error
		require.Equal(t, dbErr == nil, cacheErr == nil, "database: %v, plugin: %v", dbErr, cacheErr)
		require.Equal(t, fromDB, fromCache)

		// A write by such a condition must not leave a row it changed in
		// the cache under its real key.
		var before Coded
		require.NoError(t, e.db.First(&before, "code = ?", "01").Error) // cached
		res := e.db.Model(&Coded{}).Where("code = ?", 1).Update("name", "changed")
		if res.Error != nil {
			return // Postgres: the database refused the comparison
		}
		for _, code := range []string{"1", "01"} {
			var want, got Coded
			require.NoError(t, plain.Table(table).First(&want, "code = ?", code).Error)
			require.NoError(t, e.db.First(&got, "code = ?", code).Error)
			require.Equal(t, want, got, "row %q after an update by code = 1", code)
		}
	})
}
