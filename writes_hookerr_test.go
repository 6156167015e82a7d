package writethrough

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Fussy fails its AfterUpdate hook for one name, after the UPDATE ran.
type Fussy struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

var errFussy = errors.New("after-update hook refused")

func (f *Fussy) AfterUpdate(tx *gorm.DB) error {
	if f.Name == "refused" {
		return errFussy
	}
	return nil
}

// A statement whose SQL ran but whose after-hook failed, inside a
// transaction the caller commits anyway (it ignored the error), changed
// the row: the cache must not keep the old one.
func TestWriteFailedHookInACommittedTransaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Fussy{})
		f := Fussy{Name: "v1"}
		require.NoError(t, w.db.Create(&f).Error)
		check[Fussy](t, w, true, f.ID)
		require.NoError(t, w.db.Transaction(func(tx *gorm.DB) error {
			err := tx.Model(&f).Update("name", "refused").Error
			require.ErrorIs(t, err, errFussy)
			return nil // the caller ignores it and commits
		}))
		var db Fussy
		require.NoError(t, w.plain.First(&db, f.ID).Error)
		require.Equal(t, "refused", db.Name, "the UPDATE committed")
		check[Fussy](t, w, false, f.ID)
	})
}

func (f *Fussy) AfterCreate(tx *gorm.DB) error {
	if f.Name == "refused" {
		return errFussy
	}
	return nil
}

// In auto-commit a failed after-hook comes after the change committed:
// the cache must not keep the old row, nor a cached absence of a row the
// failed create inserted.
func TestWriteFailedHookInAutoCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{SkipDefaultTransaction: true}, &Fussy{})
		f := Fussy{Name: "v1"}
		require.NoError(t, w.db.Create(&f).Error)
		check[Fussy](t, w, true, f.ID)
		require.ErrorIs(t, w.db.Model(&f).Update("name", "refused").Error, errFussy)
		check[Fussy](t, w, false, f.ID)

		next := f.ID + 1
		warm[Fussy](t, w.env, next)
		g := Fussy{Name: "refused"}
		require.ErrorIs(t, w.db.Create(&g).Error, errFussy)
		require.Equal(t, next, g.ID)
		check[Fussy](t, w, false, next)
	})
}
