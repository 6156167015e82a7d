package writethrough

import "gorm.io/gorm"

// Models of the read-path tests (read_test.go, read_fix_test.go).

// RdProduct is the read tests' own product. Its DeletedAt is a named field:
// an embedded gorm.DeletedAt would make *RdProduct a driver.Valuer, and
// GORM would then refuse Where(&RdProduct{...}) as "unsupported data".
type RdProduct struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Price     int64
	Stock     int `gorm:"default:7"`
	DeletedAt gorm.DeletedAt
}

// RdEdition has a composite primary key: an integer and a string.
type RdEdition struct {
	BookID uint   `gorm:"primaryKey;autoIncrement:false"`
	Lang   string `gorm:"primaryKey;size:16"`
	Title  string
}

// RdAccount has a string primary key.
type RdAccount struct {
	Code  string `gorm:"primaryKey;size:32"`
	Owner string
}

// RdGadget counts its AfterFind calls, so a test sees hooks run on hits.
type RdGadget struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Found int `gorm:"-"`
}

// AfterFind counts the call.
func (g *RdGadget) AfterFind(*gorm.DB) error {
	g.Found++
	return nil
}

// RdAuthor has many RdBooks; an RdBook belongs to an RdAuthor.
type RdAuthor struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Books []RdBook `gorm:"foreignKey:AuthorID"`
}

// RdBook belongs to an RdAuthor.
type RdBook struct {
	ID       uint `gorm:"primaryKey"`
	AuthorID uint
	Title    string
	Author   *RdAuthor
}

// RdProductName is another struct over the products table.
type RdProductName struct {
	ID   uint
	Name string
}
