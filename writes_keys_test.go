package writethrough

import (
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Creates whose keys GORM cannot report exactly: a map (or a slice of
// maps), a batch mixing keys the caller chose with keys the database
// assigns (MySQL numbers the latter from LAST_INSERT_ID, which a chosen key
// above the counter breaks), and ON CONFLICT DO NOTHING over such a batch
// (GORM then assigns the returned keys to the wrong structs). A cached
// "not found" for the row's real key must not survive any of them.
func TestWriteCreatesWithUnreportedKeys(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		seedItems(t, w, 3) // keys 1-3; the counter is at 4
		all := []any{}
		for _, r := range [][2]uint{{1, 12}, {50, 56}, {100, 104}, {200, 204}} {
			for i := r[0]; i <= r[1]; i++ {
				all = append(all, i)
			}
		}
		steps := []struct {
			name string
			f    func(db *gorm.DB) error
		}{
			{name: "Create(map) with a key", f: func(db *gorm.DB) error {
				return db.Model(&Item{}).Create(map[string]any{"ID": uint(50), "Name": "map"}).Error
			}},
			{name: "Create(map) with an assigned key", f: func(db *gorm.DB) error {
				return db.Model(&Item{}).Create(map[string]any{"Name": "map, key from the database"}).Error
			}},
			{name: "Create([]map)", f: func(db *gorm.DB) error {
				rows := []map[string]any{{"ID": uint(200), "Name": "m1"}, {"ID": uint(201), "Name": "m2"}}
				return db.Model(&Item{}).Create(&rows).Error
			}},
			{name: "batch mixing chosen and assigned keys", f: func(db *gorm.DB) error {
				return db.Create(&[]Item{{Name: "auto"}, {ID: 100, Name: "chosen"}, {Name: "auto after chosen"}}).Error
			}},
			{name: "DO NOTHING batch mixing chosen and assigned keys", f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).
					Create(&[]Item{{ID: 202, Name: "chosen"}, {Name: "auto"}, {Name: "auto 2"}}).Error
			}},
		}
		for _, s := range steps {
			warm[Item](t, w.env, all...)
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { checkAll[Item](t, w, false, all...) })
		}
	})
}
