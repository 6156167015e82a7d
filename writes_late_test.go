package writethrough

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// In auto-commit, keys the database assigns (an insert, an upsert that hit
// an existing row through another unique column) are fenced only after
// the SQL. A writer that commits a newer state of such a row while the
// statement reads it back must not be overwritten by the older read.
func TestWriteAutoCommitLateKeysAgainstAConcurrentWriter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		shapes := []struct {
			name string
			f    func(db *gorm.DB, u *Upsertable) error
		}{
			{"insert with an assigned key", func(db *gorm.DB, u *Upsertable) error {
				*u = Upsertable{Code: "new", Name: "v1"}
				return db.Create(u).Error
			}},
			{"upsert by another unique column", func(db *gorm.DB, u *Upsertable) error {
				*u = Upsertable{Code: "a", Name: "v1"}
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "code"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).Create(u).Error
			}},
		}
		for _, s := range shapes {
			t.Run(s.name, func(t *testing.T) {
				if b.dialect == "mysql" && s.name == "upsert by another unique column" {
					t.Skip("mysql: an upsert fences the whole table and reads nothing back; there is no read-back to race")
				}
				w := newWriteEnv(t, b, Config{}, &gorm.Config{SkipDefaultTransaction: true}, &Upsertable{})
				require.NoError(t, w.db.Create(&Upsertable{Code: "a", Name: "v0"}).Error)
				var u Upsertable
				// Between the write's read-back and its finish, another writer
				// commits v2 of the same row (and returns).
				var armed atomic.Bool
				armed.Store(true)
				require.NoError(t, w.db.Callback().Query().After("gorm:query").Register("test:concurrent_writer", func(db *gorm.DB) {
					if !isInternal(db.Statement) || u.ID == 0 || !armed.CompareAndSwap(true, false) {
						return
					}
					require.NoError(t, w.db.Session(&gorm.Session{NewDB: true, Context: context.Background()}).
						Model(&Upsertable{ID: u.ID}).Update("name", "v2").Error)
				}))
				require.NoError(t, s.f(w.db, &u))
				require.False(t, armed.Load(), "the concurrent writer must have run")
				check[Upsertable](t, w, false, u.ID)
				var got Upsertable
				require.NoError(t, w.db.First(&got, u.ID).Error)
				require.Equal(t, "v2", got.Name)
			})
		}
	})
}
