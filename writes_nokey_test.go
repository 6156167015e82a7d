package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Writes whose rows the model does not name: by condition, by id list, soft
// and hard deletes, global updates, conditions with OR, primary keys that
// change, a table named without a model. The cache is warm for every row
// before each write; afterwards every row read through the plugin must be
// the row the database holds (or absent for both).
func TestWriteWithoutPrimaryKey(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		ids := seedItems(t, w, 8)
		u := func(i int) uint { return ids[i].(uint) }
		table := w.db.NamingStrategy.TableName("Item")

		steps := []struct {
			name string
			f    func(db *gorm.DB) error
		}{
			{"Where(...).Update", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("stock > ?", 5).Update("name", "bulk").Error
			}},
			{"Where(...).Updates(struct)", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("price < ?", 300).Updates(Item{Note: "cheap"}).Error
			}},
			{"Where(id).Or(...)", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id = ?", u(0)).Or("stock >= ?", 7).Update("note", "or").Error
			}},
			{"model key with Where(...).Or(...) (GORM appends the key with AND)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: u(6)}).Where("id = ?", u(0)).Or("stock >= ?", 8).Update("note", "model-or").Error
			}},
			{"Delete of a model with Where(...).Or(...)", func(db *gorm.DB) error {
				return db.Where("id = ?", u(1)).Or("id = ?", u(2)).Delete(&Item{ID: u(6)}).Error
			}},
			{"Where(\"id = ? AND ... OR id = ?\") in one string", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id = ? AND stock > 100 OR id = ?", u(0), u(3)).Update("note", "or-in-sql").Error
			}},
			{"Where(group with id OR ...)", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where(db.Session(&gorm.Session{NewDB: true}).Where("id = ?", u(0)).Or("stock >= ?", 6)).
					Update("note", "group-or").Error
			}},
			{"Where(clause.Or(id, ...))", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where(clause.Or(clause.Eq{Column: "id", Value: u(1)}, clause.Gt{Column: "stock", Value: 6})).
					Update("note", "clause-or").Error
			}},
			{"Where(id IN ?).Updates(map)", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id IN ?", []uint{u(2), u(3)}).Updates(map[string]any{"price": 5}).Error
			}},
			{"Where(id).Not(...)", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id = ?", u(3)).Not("stock = ?", 100).Update("note", "not").Error
			}},
			{"AllowGlobalUpdate", func(db *gorm.DB) error {
				return db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&Item{}).Update("flag", true).Error
			}},
			{"Table(name) without a model", func(db *gorm.DB) error {
				return db.Table(table).Where("id = ?", u(4)).Updates(map[string]any{"name": "table-only"}).Error
			}},
			{"Table(name) by condition without a model", func(db *gorm.DB) error {
				return db.Table(table).Where("stock > ?", 0).UpdateColumn("stock", gorm.Expr("stock + 1")).Error
			}},
			{"Table(name) Create without a model", func(db *gorm.DB) error {
				return db.Table(table).Create(map[string]any{"id": u(7) + 1001, "name": "made-by-map", "stock": 1}).Error
			}},
			{"soft Where(...).Delete", func(db *gorm.DB) error {
				return db.Where("stock < ?", 3).Delete(&Item{}).Error
			}},
			{"soft Delete(&T{}, ids)", func(db *gorm.DB) error {
				return db.Delete(&Item{}, []uint{u(2), u(3)}).Error
			}},
			{"Unscoped restore by condition", func(db *gorm.DB) error {
				return db.Unscoped().Model(&Item{}).Where("deleted_at IS NOT NULL").Update("deleted_at", nil).Error
			}},
			{"Unscoped Where(...).Delete", func(db *gorm.DB) error {
				return db.Unscoped().Where("stock = ?", 3).Delete(&Item{}).Error
			}},
			{"Unscoped Delete(&T{}, ids)", func(db *gorm.DB) error {
				return db.Unscoped().Delete(&Item{}, []uint{u(5), u(6)}).Error
			}},
			{"primary key changed by Update", func(db *gorm.DB) error {
				return db.Model(&Item{ID: u(4)}).Update("id", u(4)+1000).Error
			}},
			{"primary key changed by Updates(map)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: u(7)}).Updates(map[string]any{"ID": u(7) + 1000, "name": "moved"}).Error
			}},
			{"primary key changed by Updates(struct)", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id = ?", u(7)+1000).Updates(Item{ID: u(7), Name: "back"}).Error
			}},
			{"own primary key in Updates(struct)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: u(7)}).Updates(Item{ID: u(7), Name: "same key"}).Error
			}},
			{"AllowGlobalUpdate soft Delete", func(db *gorm.DB) error {
				return db.Session(&gorm.Session{AllowGlobalUpdate: true}).Delete(&Item{}).Error
			}},
		}
		all := append([]any{}, ids...)
		for _, id := range ids {
			all = append(all, id.(uint)+1000) // where moved keys land
		}
		all = append(all, ids[7].(uint)+1001)
		for _, s := range steps {
			warm[Item](t, w.env, all...)
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { checkAll[Item](t, w, false, all...) })
		}
		var n int64
		require.NoError(t, w.plain.Model(&Item{}).Count(&n).Error)
		require.Zero(t, n, "the last step soft-deletes every row")
	})
}

// Without soft delete GORM does not parenthesise the caller's conditions:
// Model(&T{ID: 3}).Where("id = ?", 1).Or(...) runs "id = 1 OR ... AND id =
// 3", which updates row 1.
func TestWriteModelKeyWithOr(t *testing.T) {
	forEachWriteMode(t, []any{&Upsertable{}}, func(t *testing.T, w *writeEnv) {
		rows := []Upsertable{{ID: 1, Code: "a", Name: "one"}, {ID: 2, Code: "b", Name: "two"}, {ID: 3, Code: "c", Name: "three"}}
		w.write(t, func(db *gorm.DB) error { return db.Create(&rows).Error })
		warm[Upsertable](t, w.env, uint(1), uint(2), uint(3))
		w.write(t, func(db *gorm.DB) error {
			return db.Model(&Upsertable{ID: 3}).Where("id = ?", 1).Or("count > ?", 100).Update("name", "or'ed").Error
		})
		checkAll[Upsertable](t, w, false)
		w.write(t, func(db *gorm.DB) error {
			return db.Where("id = ?", 2).Or("count > ?", 100).Delete(&Upsertable{ID: 3}).Error
		})
		checkAll[Upsertable](t, w, false, uint(1), uint(2), uint(3))
	})
}
