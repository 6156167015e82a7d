package writethrough

import (
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// A RETURNING clause scans the changed rows into the model: into a single
// struct, only the first of them. The rows a statement changed are what its
// conditions select before it runs, not what it leaves in the model.
func TestWriteReturningIntoTheModel(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		ids := seedItems(t, w, 6)
		steps := []struct {
			name     string
			f        func(db *gorm.DB) error
			noUpdate bool // MariaDB has DELETE ... RETURNING but no UPDATE ... RETURNING
		}{
			{name: "Update by condition returning into a struct", f: func(db *gorm.DB) error {
				var it Item
				return db.Model(&it).Clauses(clause.Returning{}).Where("stock > ?", 2).Update("name", "returned").Error
			}, noUpdate: true},
			{name: "Update by condition returning into a slice", f: func(db *gorm.DB) error {
				var its []Item
				return db.Model(&its).Clauses(clause.Returning{}).Where("stock > ?", 3).Update("note", "returned").Error
			}, noUpdate: true},
			{name: "Delete by condition returning into a struct", f: func(db *gorm.DB) error {
				var it Item // a soft delete: an UPDATE
				return db.Clauses(clause.Returning{}).Where("stock > ?", 4).Delete(&it).Error
			}, noUpdate: true},
			{name: "Unscoped Delete by condition returning into a struct", f: func(db *gorm.DB) error {
				var it Item
				return db.Unscoped().Clauses(clause.Returning{}).Where("stock < ?", 3).Delete(&it).Error
			}},
		}
		for _, s := range steps {
			if s.noUpdate && w.b.dialect == "mysql" {
				t.Logf("%s: skipped on mysql (no UPDATE ... RETURNING)", s.name)
				continue
			}
			warm[Item](t, w.env, ids...)
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { checkAll[Item](t, w, false, ids...) })
		}
	})
}
