package writethrough

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Upsertable has a unique column besides its key, for upserts that conflict on it.
type Upsertable struct {
	ID    uint   `gorm:"primaryKey"`
	Code  string `gorm:"uniqueIndex;size:64"`
	Name  string
	Count int
}

// Upserts: Save of a new key, ON CONFLICT DO NOTHING / DO UPDATE / UpdateAll
// (on the key and on another unique column), FirstOrCreate with Attrs and
// Assign. Where the dialect returns the rows an upsert touched (RETURNING:
// Postgres, SQLite) and the statement changed them, the cache holds the
// row; DO NOTHING never caches the caller's value over the existing row;
// MySQL/MariaDB, which cannot say which row an upsert hit, invalidates the
// table.
func TestWriteUpserts(t *testing.T) {
	forEachWriteMode(t, []any{&Upsertable{}}, func(t *testing.T, w *writeEnv) {
		returning := w.b.dialect != "mysql"
		table := w.db.NamingStrategy.TableName("Upsertable")
		seed := []Upsertable{{ID: 1, Code: "a", Name: "one"}, {ID: 2, Code: "b", Name: "two"}, {ID: 3, Code: "c", Name: "three"}}
		w.write(t, func(db *gorm.DB) error { return db.Create(&seed).Error })
		all := []any{uint(1), uint(2), uint(3), uint(10), uint(11), uint(12), uint(13), uint(14), uint(15), uint(20)}

		steps := []struct {
			name    string
			hit     bool // write-through claimed for the rows the step names
			ids     []any
			f       func(db *gorm.DB) error
			autoHit bool // write-through in auto-commit (fenced before the SQL, read after COMMIT)
		}{
			{name: "Save a new key", hit: returning, ids: []any{uint(10)}, f: func(db *gorm.DB) error {
				return db.Save(&Upsertable{ID: 10, Code: "s10", Name: "saved"}).Error
			}},
			{name: "Save an existing key", hit: true, ids: []any{uint(10)}, f: func(db *gorm.DB) error {
				return db.Save(&Upsertable{ID: 10, Code: "s10", Name: "saved again", Count: 1}).Error
			}},
			{name: "DO NOTHING on an existing key keeps the database's row", hit: false, ids: []any{uint(1)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Upsertable{ID: 1, Code: "a", Name: "caller's value"}).Error
			}, autoHit: true},
			{name: "DO NOTHING on an existing unique column", hit: false, ids: []any{uint(2)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Upsertable{Code: "b", Name: "caller's value"}).Error
			}},
			{name: "DO NOTHING inserting a new row", hit: false, ids: []any{uint(11)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Upsertable{ID: 11, Code: "n11", Name: "new"}).Error
			}, autoHit: true},
			{name: "DO UPDATE on the key", hit: returning, ids: []any{uint(1)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).
					Create(&Upsertable{ID: 1, Code: "a", Name: "upserted"}).Error
			}},
			{name: "DO UPDATE with an expression", hit: returning, ids: []any{uint(1)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.Assignments(map[string]any{"count": gorm.Expr(db.Statement.Quote(table+".count") + " + 5")})}).
					Create(&Upsertable{ID: 1, Code: "a", Name: "ignored"}).Error
			}},
			{name: "DO UPDATE on another unique column", hit: returning, ids: []any{uint(2)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "code"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).
					Create(&Upsertable{Code: "b", Name: "by code"}).Error
			}},
			{name: "UpdateAll", hit: returning, ids: []any{uint(3)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&Upsertable{ID: 3, Code: "c", Name: "all", Count: 9}).Error
			}},
			{name: "UpdateAll batch of new and existing", hit: returning, ids: []any{uint(2), uint(3), uint(12)}, f: func(db *gorm.DB) error {
				rows := []Upsertable{{ID: 2, Code: "b", Name: "batch2"}, {ID: 3, Code: "c", Name: "batch3"}, {ID: 12, Code: "n12", Name: "batch12"}}
				return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&rows).Error
			}},
			{name: "Save of a slice of new and existing keys", hit: returning, ids: []any{uint(12), uint(14)}, f: func(db *gorm.DB) error {
				return db.Save(&[]Upsertable{{ID: 12, Code: "n12", Name: "saved batch"}, {ID: 14, Code: "s14", Name: "saved new"}}).Error
			}},
			{name: "FirstOrCreate creates", hit: true, ids: []any{uint(13)}, f: func(db *gorm.DB) error {
				u := Upsertable{ID: 13}
				return db.Where(Upsertable{Code: "f13"}).Attrs(Upsertable{Name: "from attrs"}).FirstOrCreate(&u).Error
			}},
			{name: "FirstOrCreate finds and Assign updates", hit: true, ids: []any{uint(13)}, f: func(db *gorm.DB) error {
				var u Upsertable
				return db.Where(Upsertable{Code: "f13"}).Assign(Upsertable{Name: "assigned", Count: 3}).FirstOrCreate(&u).Error
			}},
			{name: "FirstOrCreate by key", hit: true, ids: []any{uint(15)}, f: func(db *gorm.DB) error {
				u := Upsertable{ID: 15, Code: "f15", Name: "by key"}
				return db.FirstOrCreate(&u).Error
			}},
			{name: "FirstOrCreate by key finds it", hit: true, ids: []any{uint(15)}, f: func(db *gorm.DB) error {
				u := Upsertable{ID: 15, Code: "other", Name: "not written"}
				return db.FirstOrCreate(&u).Error
			}},
			{name: "DO UPDATE by unique column with a new key", hit: returning, ids: []any{uint(20)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "code"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).
					Create(&Upsertable{ID: 20, Code: "n20", Name: "inserted by upsert"}).Error
			}},
		}
		for _, s := range steps {
			warm[Upsertable](t, w.env, all...)
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) {
				check[Upsertable](t, w, s.hit || s.autoHit && returning && w.mode.autocommit, s.ids...)
				checkAll[Upsertable](t, w, false, all...)
			})
		}
		var one Upsertable
		require.NoError(t, w.plain.First(&one, 1).Error)
		require.Equal(t, "upserted", one.Name, "DO NOTHING must not have written the caller's value")
		require.Equal(t, 5, one.Count)
	})
}

// INSERT modifiers: IGNORE (MySQL), OR IGNORE and OR REPLACE (SQLite). An
// ignored row was not written (and shifts the keys MySQL numbers from
// LAST_INSERT_ID); OR REPLACE deletes whichever row conflicts, on any
// unique column. Neither names the rows it changed.
func TestWriteInsertModifiers(t *testing.T) {
	forEachWriteMode(t, []any{&Upsertable{}}, func(t *testing.T, w *writeEnv) {
		var mods []string
		switch w.b.dialect {
		case "sqlite":
			mods = []string{"OR IGNORE", "OR REPLACE"}
		case "mysql":
			mods = []string{"IGNORE"}
		default:
			t.Skipf("%s has no INSERT modifiers (ON CONFLICT instead)", w.b.dialect)
		}
		for i, mod := range mods {
			base := uint(100 * (i + 1))
			seed := []Upsertable{{ID: base + 1, Code: fmt.Sprint("a", base), Name: "one"}, {ID: base + 2, Code: fmt.Sprint("b", base), Name: "two"}}
			w.write(t, func(db *gorm.DB) error { return db.Create(&seed).Error })
			ids := []any{base + 1, base + 2, base + 3, base + 4}
			warm[Upsertable](t, w.env, ids...)
			w.write(t, func(db *gorm.DB) error {
				rows := []Upsertable{
					{ID: base + 3, Code: fmt.Sprint("a", base), Name: "conflicts on code"},
					{ID: base + 2, Code: fmt.Sprint("x", base), Name: "conflicts on key"},
					{ID: base + 4, Code: fmt.Sprint("d", base), Name: "new"},
				}
				return db.Clauses(clause.Insert{Modifier: mod}).Create(&rows).Error
			})
			t.Run(mod, func(t *testing.T) { checkAll[Upsertable](t, w, false, ids...) })
		}
	})
}
