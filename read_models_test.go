package writethrough

import "gorm.io/gorm"

// Models of the read-path tests (read_test.go, read_fix_test.go).

// Article is the read tests' own product. Its DeletedAt is a named field:
// an embedded gorm.DeletedAt would make *Article a driver.Valuer, and
// GORM would then refuse Where(&Article{...}) as "unsupported data".
type Article struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Price     int64
	Stock     int `gorm:"default:7"`
	DeletedAt gorm.DeletedAt
}

// Edition has a composite primary key: an integer and a string.
type Edition struct {
	BookID uint   `gorm:"primaryKey;autoIncrement:false"`
	Lang   string `gorm:"primaryKey;size:16"`
	Title  string
}

// Account has a string primary key.
type Account struct {
	Code  string `gorm:"primaryKey;size:32"`
	Owner string
}

// Gizmo counts its AfterFind calls, so a test sees hooks run on hits.
type Gizmo struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Found int `gorm:"-"`
}

// AfterFind counts the call.
func (g *Gizmo) AfterFind(*gorm.DB) error {
	g.Found++
	return nil
}

// Author has many Books; a Book belongs to an Author.
type Author struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Books []Book `gorm:"foreignKey:AuthorID"`
}

// Book belongs to an Author.
type Book struct {
	ID       uint `gorm:"primaryKey"`
	AuthorID uint
	Title    string
	Author   *Author
}

// ArticleName is another struct over the products table.
type ArticleName struct {
	ID   uint
	Name string
}
