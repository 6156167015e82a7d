package writethrough

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

type Company struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

type Profile struct {
	ID     uint `gorm:"primaryKey"`
	UserID *uint
	Bio    string
}

type Order struct {
	ID     uint `gorm:"primaryKey"`
	UserID *uint
	Total  int
}

type Tag struct {
	ID    uint `gorm:"primaryKey"`
	Label string
}

// UserTag is the join table of User.Tags, as a model of its own so its
// rows are cached (and checked) like any other.
type UserTag struct {
	UserID    uint `gorm:"primaryKey;autoIncrement:false"`
	TagID     uint `gorm:"primaryKey;autoIncrement:false"`
	CreatedAt time.Time
}

type User struct {
	ID          uint `gorm:"primaryKey"`
	Name        string
	CompanyID   *uint
	Company     *Company `gorm:"foreignKey:CompanyID"`
	Profile     *Profile `gorm:"foreignKey:UserID"`
	Orders      []Order  `gorm:"foreignKey:UserID"`
	Tags        []Tag    `gorm:"many2many:user_tags"`
	Preferences string
}

// checkAssociations compares every row of every association table, the
// join rows, and a fully preloaded user read through the plugin (a cached
// parent, current children) with the database.
func checkAssociations(t *testing.T, w *writeEnv, userID uint) {
	t.Helper()
	checkAll[User](t, w, false)
	checkAll[Company](t, w, false)
	checkAll[Profile](t, w, false)
	checkAll[Order](t, w, false)
	checkAll[Tag](t, w, false)

	var joins []UserTag
	require.NoError(t, w.plain.Find(&joins).Error)
	for _, j := range joins {
		var got UserTag
		require.NoError(t, w.db.Where("user_id = ? AND tag_id = ?", j.UserID, j.TagID).Take(&got).Error)
		require.Equal(t, canon(j), canon(got))
	}

	preload := func(db *gorm.DB) string {
		var u User
		err := db.Preload("Company").Preload("Profile").
			Preload("Orders", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).
			Preload("Tags", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).
			First(&u, userID).Error
		if err != nil {
			require.ErrorIs(t, err, gorm.ErrRecordNotFound)
			return err.Error()
		}
		return canon(u)
	}
	// Twice: the second read is served from the cache for the parent (and
	// the belongs-to company, which is preloaded by key).
	for i := 0; i < 2; i++ {
		require.Equal(t, preload(w.plain), preload(w.db), "Preload through the plugin")
	}
}

// Associations: nested creates and saves of belongs-to, has-one, has-many
// and many2many values, Association(...).Append/Replace/Delete/Clear, and
// the join table's rows. Every row touched ends up true in the cache, and
// Preload on a cached parent returns the current children.
func TestWriteAssociations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range writeModes() {
			t.Run(m.name, func(t *testing.T) {
				gcfg := m.gcfg()
				gcfg.DisableForeignKeyConstraintWhenMigrating = true
				models := []any{&Company{}, &Profile{}, &Order{}, &Tag{}, &User{}, &UserTag{}}
				e := newEnvWith(t, b, Config{}, gcfg, models...)
				w := &writeEnv{env: e, plain: e.plainDB(), mode: m}
				for _, db := range []*gorm.DB{w.db, w.plain} {
					require.NoError(t, db.SetupJoinTable(&User{}, "Tags", &UserTag{}))
				}
				require.NoError(t, w.plain.AutoMigrate(&UserTag{}))

				u := User{
					Name:    "ann",
					Company: &Company{Name: "acme"},
					Profile: &Profile{Bio: "hello"},
					Orders:  []Order{{Total: 1}, {Total: 2}},
					Tags:    []Tag{{Label: "red"}, {Label: "blue"}},
				}
				w.write(t, func(db *gorm.DB) error { return db.Create(&u).Error })
				require.NotZero(t, u.ID)
				check[User](t, w, true, u.ID)
				checkAssociations(t, w, u.ID)

				steps := []struct {
					name string
					f    func(db *gorm.DB) error
				}{
					{"Append has-many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Orders").Append(&Order{Total: 3})
					}},
					{"Delete has-many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Orders").Delete(&u.Orders[0])
					}},
					{"Replace has-many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Orders").Replace([]Order{{Total: 7}, u.Orders[len(u.Orders)-1]})
					}},
					{"Append many2many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Tags").Append(&Tag{Label: "green"})
					}},
					{"Delete many2many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Tags").Delete(&u.Tags[0])
					}},
					{"Replace many2many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Tags").Replace([]Tag{{Label: "black"}, u.Tags[0]})
					}},
					{"Replace belongs-to", func(db *gorm.DB) error {
						return db.Model(&u).Association("Company").Replace(&Company{Name: "globex"})
					}},
					{"Replace has-one", func(db *gorm.DB) error {
						return db.Model(&u).Association("Profile").Replace(&Profile{Bio: "second"})
					}},
					{"Save with changed nested values (FullSaveAssociations)", func(db *gorm.DB) error {
						u.Name = "ann 2"
						u.Company.Name = "globex 2"
						u.Profile.Bio = "third"
						u.Orders[0].Total = 99
						u.Tags[0].Label = "relabelled"
						return db.Session(&gorm.Session{FullSaveAssociations: true}).Save(&u).Error
					}},
					{"Updates with a belongs-to value", func(db *gorm.DB) error {
						return db.Model(&u).Updates(User{Name: "ann 3", Company: &Company{Name: "initech"}}).Error
					}},
					{"Clear has-many", func(db *gorm.DB) error { return db.Model(&u).Association("Orders").Clear() }},
					{"Clear many2many", func(db *gorm.DB) error { return db.Model(&u).Association("Tags").Clear() }},
					{"Clear has-one", func(db *gorm.DB) error { return db.Model(&u).Association("Profile").Clear() }},
					{"Clear belongs-to", func(db *gorm.DB) error { return db.Model(&u).Association("Company").Clear() }},
					{"Append after Clear, then Unscoped Delete", func(db *gorm.DB) error {
						o := Order{Total: 11}
						if err := db.Model(&u).Association("Orders").Append(&o); err != nil {
							return err
						}
						return db.Model(&u).Unscoped().Association("Orders").Delete(&o)
					}},
					{"Delete the user with its has-many (Select)", func(db *gorm.DB) error {
						return db.Select("Orders", "Profile").Delete(&u).Error
					}},
				}
				for _, s := range steps {
					w.write(t, s.f)
					t.Run(s.name, func(t *testing.T) { checkAssociations(t, w, u.ID) })
				}
			})
		}
	})
}
