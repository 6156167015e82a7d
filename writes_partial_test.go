package writethrough

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Item is the model of the write-shape tests.
type Item struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Stock     int
	Price     int64
	Note      string `gorm:"default:fresh"`
	Flag      bool
	UpdatedAt time.Time
	DeletedAt gorm.DeletedAt `gorm:"index"`
}

// seedItems creates n items (ids 1..n) and returns their ids.
func seedItems(t *testing.T, w *writeEnv, n int) []any {
	t.Helper()
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Name: "item" + strings.Repeat("x", i), Stock: i + 1, Price: int64(100 * (i + 1))}
	}
	w.write(t, func(db *gorm.DB) error { return db.Create(&items).Error })
	ids := make([]any, n)
	for i, it := range items {
		require.NotZero(t, it.ID)
		ids[i] = it.ID
	}
	return ids
}

// Partial updates by primary key: whatever GORM sends (one column, a map, a
// struct with zero fields skipped, Select/Omit, UpdateColumn without hooks
// or updated_at, an expression), the cache ends with the full row as the
// database has it, and serves it without a query.
func TestWritePartialUpdates(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		ids := seedItems(t, w, 3)
		check[Item](t, w, true, ids...)
		id := ids[0].(uint)

		steps := []struct {
			name string
			f    func(db *gorm.DB) error
		}{
			{"Update", func(db *gorm.DB) error { return db.Model(&Item{ID: id}).Update("name", "renamed").Error }},
			{"Updates(map)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(map[string]any{"stock": 50, "flag": true}).Error
			}},
			{"Updates(struct) skips zero fields", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(Item{Name: "struct", Stock: 0, Flag: false}).Error
			}},
			{"Select on Updates(struct) writes zero fields", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Select("stock", "flag").Updates(Item{Name: "ignored", Stock: 0, Flag: false}).Error
			}},
			{"Omit on Updates(map)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Omit("name").Updates(map[string]any{"name": "omitted", "price": 777}).Error
			}},
			{"UpdateColumn", func(db *gorm.DB) error { return db.Model(&Item{ID: id}).UpdateColumn("price", 901).Error }},
			{"UpdateColumns", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).UpdateColumns(map[string]any{"price": 902, "stock": 40}).Error
			}},
			{"gorm.Expr", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Update("stock", gorm.Expr("stock - ?", 3)).Error
			}},
			{"Updates with gorm.Expr in a map", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(map[string]any{"price": gorm.Expr("price * ?", 2), "note": "doubled"}).Error
			}},
			{"Updates(struct) carrying the model's own key", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(Item{ID: id, Name: "same-key"}).Error
			}},
			{"Where by key and Update", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id = ?", id).Update("name", "by-where").Error
			}},
			{"Save", func(db *gorm.DB) error {
				var it Item
				if err := db.First(&it, id).Error; err != nil {
					return err
				}
				it.Name, it.Stock = "saved", 1
				return db.Save(&it).Error
			}},
		}
		for _, s := range steps {
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { check[Item](t, w, true, ids...) })
		}

		// UpdateColumn must not move updated_at; the cache agrees with the
		// database on it either way.
		var before Item
		require.NoError(t, w.plain.First(&before, id).Error)
		w.write(t, func(db *gorm.DB) error { return db.Model(&Item{ID: id}).UpdateColumn("stock", 99).Error })
		var after Item
		require.NoError(t, w.plain.First(&after, id).Error)
		require.True(t, before.UpdatedAt.Equal(after.UpdatedAt), "UpdateColumn moved updated_at")
		check[Item](t, w, true, ids...)
	})
}

// Hooked changes its own fields in hooks.
type Hooked struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Audit string
	Saves int
}

func (h *Hooked) BeforeSave(tx *gorm.DB) error {
	h.Name = strings.ToUpper(h.Name)
	h.Saves++
	return nil
}

func (h *Hooked) BeforeUpdate(tx *gorm.DB) error {
	// SetColumn changes the statement's assignments, not only the struct.
	tx.Statement.SetColumn("audit", "updated:"+strings.ToLower(h.Name))
	return nil
}

// BeforeUpdate/BeforeSave hooks that change fields: what is cached is what
// the database stored, not the struct the caller passed in.
func TestWriteHooksChangeFields(t *testing.T) {
	forEachWriteMode(t, []any{&Hooked{}}, func(t *testing.T, w *writeEnv) {
		h := Hooked{Name: "lower"}
		w.write(t, func(db *gorm.DB) error { return db.Create(&h).Error })
		check[Hooked](t, w, true, h.ID)

		w.write(t, func(db *gorm.DB) error { return db.Model(&h).Update("name", "second").Error })
		check[Hooked](t, w, true, h.ID)

		w.write(t, func(db *gorm.DB) error { return db.Model(&h).Updates(map[string]any{"name": "third"}).Error })
		check[Hooked](t, w, true, h.ID)

		w.write(t, func(db *gorm.DB) error {
			h.Name = "fourth"
			return db.Save(&h).Error
		})
		check[Hooked](t, w, true, h.ID)

		var db Hooked
		require.NoError(t, w.plain.First(&db, h.ID).Error)
		require.Equal(t, "FOURTH", db.Name)
		require.True(t, strings.HasPrefix(db.Audit, "updated:"), "the hook's SetColumn reached the database: %+v", db)
	})
}
