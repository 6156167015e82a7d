package writethrough

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Foreign-key actions: a delete or re-key of a parent that the database
// carries over to other tables (ON DELETE CASCADE / SET NULL, ON UPDATE
// CASCADE) invalidates those tables, so no child row from before is served.

// withForeignKeys returns b with SQLite enforcing foreign keys, which it
// does only when asked, per connection. The other databases always do.
func withForeignKeys(b backend) backend {
	if b.dialect == "sqlite" {
		b.sqlOpen = func(t testing.TB) *sql.DB {
			path := filepath.Join(t.TempDir(), "test.db")
			db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000&_journal_mode=WAL&_txlock=immediate&_foreign_keys=1")
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			return db
		}
	}
	return b
}

func TestForeignKeyActionsInvalidateTheTablesTheyWrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, mode := range writeModes() {
			t.Run(mode.name, func(t *testing.T) {
				testForeignKeyActions(t, withForeignKeys(b), mode)
			})
		}
	})
}

func testForeignKeyActions(t *testing.T, b backend, mode commitMode) {
	e := newEnvWith(t, b, Config{}, mode.gcfg(), &Parent{}, &Kid{}, &Grandkid{}, &Pet{}, &Toy{}, &Club{}, &Chore{})
	parent := Parent{Code: "p1", Name: "parent",
		Kids:  []Kid{{Name: "kid", Grandkids: []Grandkid{{Name: "grandkid"}}}},
		Pets:  []Pet{{Name: "pet"}},
		Toys:  []Toy{{Name: "toy"}},
		Clubs: []Club{{Name: "club"}},
	}
	require.NoError(t, e.db.Create(&parent).Error)
	chore := Chore{ParentID: parent.ID, Name: "chore"}
	require.NoError(t, e.db.Omit("Parent").Create(&chore).Error)
	kid, grandkid, pet, toy := parent.Kids[0], parent.Kids[0].Grandkids[0], parent.Pets[0], parent.Toys[0]
	warm[Kid](t, e, kid.ID)
	warm[Grandkid](t, e, grandkid.ID)
	warm[Pet](t, e, pet.ID)
	warm[Toy](t, e, toy.ID)
	warm[Chore](t, e, chore.ID)

	// The join table is reached too (no model caches it here).
	require.Contains(t, e.plugin.fks.reach(e.plugin.modelTable(e.stmtSchema(&Parent{}).Table), true), e.plugin.modelTable(e.tables+"parent_clubs"))

	// Re-key the parent's Code: the toys follow (ON UPDATE CASCADE of a
	// column that is not the key, so every update of a parent counts).
	require.NoError(t, mode.commit(e, func(db *gorm.DB) error {
		return db.Model(&Parent{ID: parent.ID}).Update("code", "p2").Error
	}))
	var gotToy Toy
	require.NoError(t, e.db.First(&gotToy, toy.ID).Error)
	require.Equal(t, "p2", gotToy.ParentCode, "the toy's cached ParentCode is not served")

	// Re-key a parent's primary key: its pets follow. (Another parent:
	// this one's kids, chores and join rows would refuse it.)
	other := Parent{Code: "other", Pets: []Pet{{Name: "other pet"}}}
	require.NoError(t, e.db.Create(&other).Error)
	otherPet := other.Pets[0]
	const newID = 9000
	warm[Pet](t, e, otherPet.ID)
	require.NoError(t, mode.commit(e, func(db *gorm.DB) error {
		return db.Model(&Parent{ID: other.ID}).Update("id", newID).Error
	}))
	var gotPet Pet
	require.NoError(t, e.db.First(&gotPet, otherPet.ID).Error)
	require.NotNil(t, gotPet.ParentID)
	require.Equal(t, uint(newID), *gotPet.ParentID, "the pet's cached ParentID is not served")

	// Delete the parent: its kids, their grandkids, its chores and toys are
	// deleted, its pet's ParentID is set to NULL.
	warm[Kid](t, e, kid.ID)
	warm[Grandkid](t, e, grandkid.ID)
	warm[Pet](t, e, pet.ID)
	warm[Chore](t, e, chore.ID)
	warm[Toy](t, e, toy.ID)
	require.NoError(t, mode.commit(e, func(db *gorm.DB) error {
		return db.Delete(&Parent{ID: parent.ID}).Error
	}))
	requireGone[Kid](t, e, kid.ID)
	requireGone[Grandkid](t, e, grandkid.ID)
	requireGone[Chore](t, e, chore.ID)
	requireGone[Toy](t, e, toy.ID)
	gotPet = Pet{}
	require.NoError(t, e.db.First(&gotPet, pet.ID).Error)
	require.Nil(t, gotPet.ParentID, "the pet's cached ParentID is not served")

	// The children are cached again from then on.
	warm[Pet](t, e, pet.ID)
}

// requireGone asserts that a read through the plugin finds no row id.
func requireGone[T any](t *testing.T, e *env, id uint) {
	t.Helper()
	var row T
	err := e.db.First(&row, id).Error
	require.Truef(t, errors.Is(err, gorm.ErrRecordNotFound), "%T %d was deleted by the database; the plugin returned %+v, %v", row, id, row, err)
}
