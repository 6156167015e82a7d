package writethrough

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Read planning: which reads the cache answers (servedForms) and which it
// leaves to the database (bypassForms), each compared with the database
// itself, and the order in which served lists come back.

// fieldIsZero agrees with field.ValueOf on plain, pointer-embedded (nil
// and set) and zero/non-zero keys.
func TestFieldIsZeroAgreesWithValueOf(t *testing.T) {
	db, err := gorm.Open(sqliteDialector(t, openSQLite(t)), &gorm.Config{})
	require.NoError(t, err)
	ctx := context.Background()
	for _, m := range []any{&Product{}, &Product{ID: 3}, &EmbeddedKey{}, &EmbeddedKey{EmbeddedID: &EmbeddedID{}}, &EmbeddedKey{EmbeddedID: &EmbeddedID{ID: 9}}} {
		stmt := &gorm.Statement{DB: db}
		require.NoError(t, stmt.Parse(m))
		// (With an unexported embedded type GORM found no key at all here,
		// and the embedded cases checked nothing.)
		require.NotEmpty(t, stmt.Schema.PrimaryFields, "%T has a primary key", m)
		rv := reflect.ValueOf(m)
		for _, f := range stmt.Schema.PrimaryFields {
			_, zero := f.ValueOf(ctx, rv)
			require.Equal(t, zero, fieldIsZero(f, rv), "%T %+v", m, m)
			require.Equal(t, zero, fieldIsZero(f, rv.Elem()))
		}
	}
}

// readResult is everything a read returns to its caller.
type readResult struct {
	Value any
	Rows  int64
	Err   error
}

// res records a read's destination value with its statement's outcome.
func res(v any, tx *gorm.DB) readResult {
	return readResult{Value: v, Rows: tx.RowsAffected, Err: tx.Error}
}

// readCase is one form of read.
type readCase struct {
	name string
	run  func(db *gorm.DB, f *readFixture) readResult
	// cold is the number of database statements on a cold cache (default
	// 1: a miss costs exactly one query); warm the number once primed
	// (default 0: served).
	cold, warm int64
	// prime, when set, runs after the cold read to cache everything the
	// form needs (a LIMIT 1 over several keys only fills the row it got).
	prime func(t *testing.T, f *readFixture)
}

// quote quotes an identifier the way the backend's SQL does.
func quote(b backend, s string) string {
	if b.dialect == "mysql" {
		return "`" + s + "`"
	}
	return `"` + s + `"`
}

// servedForms are the reads the cache must answer: a miss costs exactly one
// database statement, and the next identical read costs none. Every one is
// compared with the same statement on the database without the plugin.
var servedForms = []readCase{
	// Table() naming the model's own table is the same rows under the same
	// keys (tables.go, ownTable): served like the model itself.
	{name: "Table naming the model's own table", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Table(f.table).First(&p, f.c)
		return res(p, tx)
	}},
	{name: "First id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, f.a)
		return res(p, tx)
	}},
	{name: "Take id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Take(&p, f.b)
		return res(p, tx)
	}},
	{name: "Last id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Last(&p, f.c)
		return res(p, tx)
	}},
	{name: "Find struct id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Find(&p, f.a)
		return res(p, tx)
	}},
	{name: "First numeric string", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, strconv.Itoa(int(f.a)))
		return res(p, tx)
	}},
	{name: "First inline id = ?", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, "id = ?", f.a)
		return res(p, tx)
	}},
	{name: "Find id slice", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Find(&ps, []uint{f.a, f.b, f.c})
		return res(ps, tx)
	}},
	{name: "Find id slice of pointers", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []*Article
		tx := db.Find(&ps, []uint{f.a, f.b, f.c})
		return res(ps, tx)
	}},
	{name: "Find id list out of order", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Find(&ps, []uint{f.c, f.a, f.b})
		return res(ps, tx)
	}},
	{name: "Find duplicate ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Find(&ps, []uint{f.b, f.a, f.b, f.a})
		return res(ps, tx)
	}},
	{name: "Find present and absent ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Find(&ps, []uint{f.absent, f.a, f.gone, f.c})
		return res(ps, tx)
	}},
	{name: "Find absent ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Find(&ps, []uint{f.absent, f.gone})
		return res(ps, tx)
	}},
	{name: "Where id = ? First", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where("id = ?", f.b).First(&p)
		return res(p, tx)
	}},
	{name: "Where id = ? Find", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id = ?", f.b).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Where id = ? with a numeric string", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where("id = ?", strconv.Itoa(int(f.b))).Take(&p)
		return res(p, tx)
	}},
	{name: "Where id IN ?", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", []uint{f.a, f.c}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Where id IN (?)", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN (?)", []uint{f.a, f.c}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Where id IN (?) with one value", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where("id IN (?)", f.b).Take(&p)
		return res(p, tx)
	}},
	{name: "Where id in ? lower case", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id in ?", []int64{int64(f.b), int64(f.c)}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Where two key conditions ANDed", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ? AND id IN ?", []uint{f.a, f.b}, []uint{f.b, f.c}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Where chained key conditions", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where("id IN ?", []uint{f.a, f.b}).Where("id = ?", f.b).First(&p)
		return res(p, tx)
	}},
	{name: "Where id (column and value)", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where("id", f.c).First(&p)
		return res(p, tx)
	}},
	{name: "Where struct", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where(&Article{ID: f.a}).First(&p)
		return res(p, tx)
	}},
	{name: "Where map", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where(map[string]any{"id": f.b}).Take(&p)
		return res(p, tx)
	}},
	{name: "Where map with a list", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where(map[string]any{"id": []uint{f.c, f.b}}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Where clause.Eq on the primary key", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where(clause.Eq{Column: clause.PrimaryColumn, Value: f.a}).First(&p)
		return res(p, tx)
	}},
	{name: "model value with its key set", run: func(db *gorm.DB, f *readFixture) readResult {
		p := Article{ID: f.a}
		tx := db.First(&p)
		return res(p, tx)
	}},
	{name: "model value with its key set and junk fields", run: func(db *gorm.DB, f *readFixture) readResult {
		p := Article{ID: f.b, Name: "junk", Price: -1, Stock: 99}
		tx := db.Take(&p)
		return res(p, tx)
	}},
	{name: "destination pre-filled with junk", run: func(db *gorm.DB, f *readFixture) readResult {
		p := Article{Name: "junk", Price: -1, Stock: 99, DeletedAt: gorm.DeletedAt{Valid: true}}
		tx := db.First(&p, f.c)
		return res(p, tx)
	}},
	{name: "slice with elements and capacity", run: func(db *gorm.DB, f *readFixture) readResult {
		ps := make([]Article, 2, 8)
		ps[0], ps[1] = Article{ID: 77, Name: "old"}, Article{ID: 78, Name: "older"}
		backing := ps[:8]
		tx := db.Find(&ps, []uint{f.a, f.b, f.c})
		// GORM reuses the backing array: the caller's other view sees the rows.
		return res(struct {
			Got     []Article
			Cap     int
			Backing []Article
		}{ps, cap(ps), backing[:4]}, tx)
	}},
	{name: "slice of pointers with elements", run: func(db *gorm.DB, f *readFixture) readResult {
		old := &Article{ID: 77, Name: "old"}
		ps := []*Article{old}
		tx := db.Find(&ps, []uint{f.b, f.c})
		return res(struct {
			Got []*Article
			Old Article
		}{ps, *old}, tx)
	}},
	{name: "table-qualified column", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, f.table+".id = ?", f.a)
		return res(p, tx)
	}},
	{name: "quoted column", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where(quote(f.e.b, "id")+" = ?", f.b).First(&p)
		return res(p, tx)
	}},
	{name: "quoted table-qualified column", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where(quote(f.e.b, f.table)+"."+quote(f.e.b, "id")+" IN ?", []uint{f.a, f.c}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Model and destination of the same type", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Model(&Article{}).First(&p, f.c)
		return res(p, tx)
	}},
	{name: "Scopes adding a key condition", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Scopes(func(d *gorm.DB) *gorm.DB { return d.Where("id = ?", f.a) }).Take(&p)
		return res(p, tx)
	}},
	{name: "WithContext session", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.WithContext(context.Background()).Session(&gorm.Session{}).First(&p, f.b)
		return res(p, tx)
	}},
	{name: "First absent id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, f.absent)
		return res(p, tx)
	}},
	{name: "Take absent id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Take(&p, f.absent)
		return res(p, tx)
	}},
	{name: "Last absent id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Last(&p, f.absent)
		return res(p, tx)
	}},
	{name: "Find struct absent id keeps junk", run: func(db *gorm.DB, f *readFixture) readResult {
		p := Article{Name: "junk", Price: -1}
		tx := db.Find(&p, f.absent)
		return res(p, tx)
	}},
	{name: "First soft-deleted id", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, f.gone)
		return res(p, tx)
	}},
	{name: "First soft-deleted via model key", run: func(db *gorm.DB, f *readFixture) readResult {
		p := Article{ID: f.gone}
		tx := db.Take(&p)
		return res(p, tx)
	}},
	{name: "First over several ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, []uint{f.c, f.absent, f.b})
		return res(p, tx)
	}, prime: primeProducts},
	{name: "Last over several ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Last(&p, []uint{f.a, f.b, f.absent, f.gone})
		return res(p, tx)
	}, prime: primeProducts},
	{name: "Last over absent ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Last(&p, []uint{f.absent, f.gone})
		return res(p, tx)
	}, prime: primeProducts},
	{name: "composite key Where struct First", run: func(db *gorm.DB, f *readFixture) readResult {
		var m Edition
		tx := db.Where(&Edition{BookID: 1, Lang: "fr"}).First(&m)
		return res(m, tx)
	}},
	{name: "composite key First inline", run: func(db *gorm.DB, f *readFixture) readResult {
		var m Edition
		tx := db.First(&m, "book_id = ? AND lang = ?", 2, "en")
		return res(m, tx)
	}},
	{name: "composite key Take", run: func(db *gorm.DB, f *readFixture) readResult {
		var m Edition
		tx := db.Where("lang = ? AND book_id = ?", "en", 1).Take(&m)
		return res(m, tx)
	}},
	{name: "composite key model value", run: func(db *gorm.DB, f *readFixture) readResult {
		m := Edition{BookID: 1, Lang: "en"}
		tx := db.Take(&m)
		return res(m, tx)
	}},
	{name: "composite key Find list", run: func(db *gorm.DB, f *readFixture) readResult {
		var ms []Edition
		tx := db.Where("book_id = ? AND lang IN ?", 1, []string{"en", "fr"}).Find(&ms)
		return res(ms, tx)
	}},
	{name: "string key First", run: func(db *gorm.DB, f *readFixture) readResult {
		var a Account
		tx := db.First(&a, "code = ?", "bolt")
		return res(a, tx)
	}},
	{name: "string key Where map", run: func(db *gorm.DB, f *readFixture) readResult {
		var a Account
		tx := db.Where(map[string]any{"code": "cog"}).Take(&a)
		return res(a, tx)
	}},
	{name: "string key model value", run: func(db *gorm.DB, f *readFixture) readResult {
		a := Account{Code: "acme"}
		tx := db.First(&a)
		return res(a, tx)
	}},
	{name: "string key Find list", run: func(db *gorm.DB, f *readFixture) readResult {
		var as []Account
		tx := db.Where("code IN ?", []string{"acme", "cog"}).Find(&as)
		return res(as, tx)
	}},
	{name: "string key Find list out of order", run: func(db *gorm.DB, f *readFixture) readResult {
		var as []*Account
		tx := db.Find(&as, "code IN ?", []string{"cog", "bolt", "acme"})
		return res(as, tx)
	}},
	{name: "string key Find with a duplicate", run: func(db *gorm.DB, f *readFixture) readResult {
		var as []Account
		tx := db.Where("code IN ?", []string{"cog", "acme", "cog"}).Find(&as)
		return res(as, tx)
	}},
	{name: "composite key Find list out of order", run: func(db *gorm.DB, f *readFixture) readResult {
		var ms []Edition
		tx := db.Where(map[string]any{"book_id": 1, "lang": []string{"fr", "en"}}).Find(&ms)
		return res(ms, tx)
	}},
	{name: "generics First", run: func(db *gorm.DB, f *readFixture) readResult {
		p, err := gorm.G[Article](db).Where("id = ?", f.a).First(context.Background())
		return readResult{Value: p, Err: err}
	}},
	{name: "generics Take", run: func(db *gorm.DB, f *readFixture) readResult {
		p, err := gorm.G[Article](db).Where("id = ?", f.b).Take(context.Background())
		return readResult{Value: p, Err: err}
	}},
	{name: "generics Last", run: func(db *gorm.DB, f *readFixture) readResult {
		p, err := gorm.G[Article](db).Where(&Article{ID: f.c}).Last(context.Background())
		return readResult{Value: p, Err: err}
	}},
	{name: "generics First absent", run: func(db *gorm.DB, f *readFixture) readResult {
		p, err := gorm.G[Article](db).Where("id = ?", f.absent).First(context.Background())
		return readResult{Value: p, Err: err}
	}},
	{name: "generics Find", run: func(db *gorm.DB, f *readFixture) readResult {
		ps, err := gorm.G[Article](db).Where("id IN ?", []uint{f.c, f.a}).Find(context.Background())
		return readResult{Value: ps, Err: err}
	}},
	{name: "AfterFind runs on First", run: func(db *gorm.DB, f *readFixture) readResult {
		var g Gizmo
		tx := db.First(&g, f.gadgets[0])
		return res(g, tx)
	}},
	{name: "AfterFind runs on every element", run: func(db *gorm.DB, f *readFixture) readResult {
		var gs []*Gizmo
		tx := db.Find(&gs, f.gadgets)
		return res(gs, tx)
	}},
	{name: "AfterFind does not run on absent", run: func(db *gorm.DB, f *readFixture) readResult {
		g := Gizmo{Name: "junk"}
		tx := db.Find(&g, f.absent)
		return res(g, tx)
	}},
	{name: "Preload has-many on a cached parent", run: func(db *gorm.DB, f *readFixture) readResult {
		var a Author
		tx := db.Preload("Books").First(&a, f.authors[0])
		return res(a, tx)
	}, cold: 2, warm: 1}, // the children are found by author_id: never served
	{name: "Preload has-many on cached parents", run: func(db *gorm.DB, f *readFixture) readResult {
		var as []Author
		tx := db.Preload("Books").Find(&as, f.authors)
		return res(as, tx)
	}, cold: 2, warm: 1},
	{name: "Preload belongs-to", run: func(db *gorm.DB, f *readFixture) readResult {
		var bs []Book
		tx := db.Preload("Author").Find(&bs, f.books)
		return res(bs, tx)
	}, cold: 2}, // parents are looked up by primary key: served too
	{name: "Preload belongs-to First", run: func(db *gorm.DB, f *readFixture) readResult {
		var bk Book
		tx := db.Preload("Author").First(&bk, f.books[2])
		return res(bk, tx)
	}, cold: 2},
}

// primeProducts caches every seeded product and the absent one.
func primeProducts(t *testing.T, f *readFixture) {
	t.Helper()
	for _, id := range []uint{f.a, f.b, f.c, f.gone, f.absent} {
		_ = f.e.db.First(&Article{}, id).Error
	}
}

// TestReadServedForms: each form, on a cold cache, costs one database
// statement and returns what the database returns; the same read again is
// served from the cache with no statement at all, and returns it again.
func TestReadServedForms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		for _, c := range servedForms {
			t.Run(c.name, func(t *testing.T) {
				f.wipeCache(t)
				want := c.run(f.plain, f)
				cold := c.cold
				if cold == 0 {
					cold = 1
				}
				e.queries()
				got := c.run(e.db, f)
				require.Equal(t, want, got, "cold read differs from the database")
				require.Equal(t, cold, e.queries(), "database statements on a cold cache")
				if c.prime != nil {
					c.prime(t, f)
					e.queries()
				}
				before := e.plugin.Stats()
				got = c.run(e.db, f)
				require.Equal(t, want, got, "cache-served read differs from the database")
				require.Equal(t, c.warm, e.queries(), "database statements on a warm cache")
				require.Greater(t, e.plugin.Stats().Hits, before.Hits)
			})
		}
	})
}

// bypassForms are reads the cache must leave to the database: they are not
// pure primary-key lookups, or run inside a transaction.
var bypassForms = []readCase{
	{name: "extra non-key condition", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Where("id = ?", f.a).Where("price >= ?", 0).First(&p)
		return res(p, tx)
	}},
	{name: "extra non-key condition in the same string", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.First(&p, "id = ? AND price >= ?", f.a, 0)
		return res(p, tx)
	}},
	{name: "non-key condition in the struct", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where(&Article{ID: f.a, Price: 1}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "non-key condition in the map", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where(map[string]any{"id": f.a, "stock": 7}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "OR", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id = ?", f.a).Or("id = ?", f.b).Find(&ps)
		return res(ps, tx)
	}},
	{name: "OR in the string", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id = ? OR id = ?", f.a, f.c).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Not", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Not("id = ?", f.a).Find(&ps)
		return res(ps, tx)
	}},
	{name: "NOT IN", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id NOT IN ?", []uint{f.a}).Find(&ps)
		return res(ps, tx)
	}},
	{name: "range", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id >= ?", f.b).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Joins association", run: func(db *gorm.DB, f *readFixture) readResult {
		var bk Book
		tx := db.Joins("Author").First(&bk, f.books[0])
		return res(bk, tx)
	}},
	{name: "Joins raw", run: func(db *gorm.DB, f *readFixture) readResult {
		var bs []Book
		at := f.e.tables + "authors"
		bt := f.e.tables + "books"
		tx := db.Joins("JOIN "+at+" ON "+at+".id = "+bt+".author_id").Where(bt+".id IN ?", f.books).Find(&bs)
		return res(bs, tx)
	}},
	{name: "Select some columns", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Select("id", "name").First(&p, f.a)
		return res(p, tx)
	}},
	{name: "Omit some columns", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Omit("price").First(&p, f.a)
		return res(p, tx)
	}},
	{name: "Distinct", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Distinct().Find(&ps, []uint{f.a, f.b})
		return res(ps, tx)
	}},
	{name: "Group", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", f.ids()).Group("id").Find(&ps)
		return res(ps, tx)
	}},
	{name: "Group and Having", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", f.ids()).Group("id").Having("count(*) > ?", 0).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Order by another column", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", f.ids()).Order("name desc").Find(&ps)
		return res(ps, tx)
	}},
	{name: "Order by the key, raw", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", f.ids()).Order("id desc").Find(&ps)
		return res(ps, tx)
	}},
	{name: "Limit 2", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", f.ids()).Limit(2).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Limit and Offset", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN ?", f.ids()).Order("id").Limit(5).Offset(1).Find(&ps)
		return res(ps, tx)
	}},
	{name: "First with Offset", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Offset(1).First(&p, f.ids())
		return res(p, tx)
	}},
	{name: "Take over several ids", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Take(&p, []uint{f.b, f.a})
		return res(p, tx)
	}},
	{name: "locking", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Clauses(clause.Locking{Strength: "UPDATE"}).First(&p, f.a)
		return res(p, tx)
	}},
	{name: "Unscoped", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Unscoped().Find(&ps, []uint{f.a, f.gone})
		return res(ps, tx)
	}},
	{name: "Table of another table", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Table(f.table+"_archive").First(&p, f.a)
		return res(p, tx)
	}},
	{name: "destination a map", run: func(db *gorm.DB, f *readFixture) readResult {
		m := map[string]any{}
		tx := db.Model(&Article{}).Where("id = ?", f.a).Take(&m)
		return res(m, tx)
	}},
	{name: "destination a slice of maps", run: func(db *gorm.DB, f *readFixture) readResult {
		var ms []map[string]any
		tx := db.Model(&Article{}).Where("id IN ?", f.ids()).Find(&ms)
		return res(ms, tx)
	}},
	{name: "destination another struct type", run: func(db *gorm.DB, f *readFixture) readResult {
		var n ArticleName
		tx := db.Model(&Article{}).First(&n, f.b)
		return res(n, tx)
	}},
	{name: "destination another struct type, slice", run: func(db *gorm.DB, f *readFixture) readResult {
		var ns []ArticleName
		tx := db.Model(&Article{}).Find(&ns, f.ids())
		return res(ns, tx)
	}},
	{name: "Raw Scan", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Raw("SELECT * FROM "+f.table+" WHERE id = ?", f.a).Scan(&p)
		return res(p, tx)
	}},
	{name: "Raw Find", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Raw("SELECT * FROM "+f.table+" WHERE id IN ?", f.ids()).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Scopes adding a non-key condition", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Scopes(func(d *gorm.DB) *gorm.DB { return d.Where("price > ?", 0) }).First(&p, f.c)
		return res(p, tx)
	}},
	{name: "subquery for the key", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		tx := db.Where("id IN (?)", db.Model(&Article{}).Select("id").Where("price > ?", 0)).Find(&ps)
		return res(ps, tx)
	}},
	{name: "Count", run: func(db *gorm.DB, f *readFixture) readResult {
		var n int64
		tx := db.Model(&Article{}).Where("id = ?", f.a).Count(&n)
		return res(n, tx)
	}},
	{name: "Pluck", run: func(db *gorm.DB, f *readFixture) readResult {
		var names []string
		tx := db.Model(&Article{}).Where("id IN ?", f.ids()).Pluck("name", &names)
		return res(names, tx)
	}},
	{name: "Scan into a struct", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		tx := db.Model(&Article{}).Where("id = ?", f.a).Scan(&p)
		return res(p, tx)
	}},
	{name: "Transaction First", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		var rows int64
		err := db.Transaction(func(tx *gorm.DB) error {
			r := tx.First(&p, f.a)
			rows = r.RowsAffected
			return r.Error
		})
		return readResult{Value: p, Rows: rows, Err: err}
	}},
	{name: "Transaction Find list", run: func(db *gorm.DB, f *readFixture) readResult {
		var ps []Article
		err := db.Transaction(func(tx *gorm.DB) error {
			return tx.Find(&ps, f.ids()).Error
		})
		return readResult{Value: ps, Err: err}
	}},
	{name: "Transaction generics", run: func(db *gorm.DB, f *readFixture) readResult {
		var p Article
		err := db.Transaction(func(tx *gorm.DB) error {
			var err error
			p, err = gorm.G[Article](tx).Where("id = ?", f.b).First(context.Background())
			return err
		})
		return readResult{Value: p, Err: err}
	}},
	{name: "Begin Take", run: func(db *gorm.DB, f *readFixture) readResult {
		tx := db.Begin()
		var p Article
		r := tx.Take(&p, f.c)
		out := res(p, r)
		if err := tx.Commit().Error; err != nil {
			out.Err = err
		}
		return out
	}},
	{name: "Begin then rolled back, composite key", run: func(db *gorm.DB, f *readFixture) readResult {
		tx := db.Begin()
		defer tx.Rollback()
		var m Edition
		return res(m, tx.Where(&Edition{BookID: 1, Lang: "en"}).First(&m))
	}},
	{name: "Transaction string key and hooks", run: func(db *gorm.DB, f *readFixture) readResult {
		var a Account
		var gs []Gizmo
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := tx.First(&a, "code = ?", "acme").Error; err != nil {
				return err
			}
			return tx.Find(&gs, f.gadgets).Error
		})
		return readResult{Value: []any{a, gs}, Err: err}
	}},
}

// TestReadBypassedForms: each form goes to the database. On a cold cache it
// leaves no key behind and counts no hit, miss or fill; with every row
// cached and then changed behind the cache's back, it still returns what the
// database has now, which a cache-served answer could not.
func TestReadBypassedForms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		// Table(...) reads this copy of the products table, with other names.
		archive := f.table + "_archive"
		require.NoError(t, f.plain.Table(archive).AutoMigrate(&Article{}))
		t.Cleanup(func() { _ = f.plain.Migrator().DropTable(archive) })
		require.NoError(t, f.plain.Table(archive).Create(&[]Article{{ID: f.a, Name: "archived-a"}, {ID: f.b, Name: "archived-b"}}).Error)

		for _, c := range bypassForms {
			t.Run(c.name, func(t *testing.T) {
				f.wipeCache(t)
				want := c.run(f.plain, f)
				before := e.plugin.Stats()
				e.queries()
				got := c.run(e.db, f)
				require.Equal(t, want, got, "bypassed read differs from the database")
				require.NotZero(t, e.queries(), "a bypassed read goes to the database")
				after := e.plugin.Stats()
				require.Equal(t, before.Hits, after.Hits, "no hit")
				require.Equal(t, before.Misses, after.Misses, "no miss")
				require.Equal(t, before.Fills, after.Fills, "no fill")
				require.Zero(t, f.cachedKeys(t), "a bypassed read leaves nothing in the cache")

				f.warm(t)
				f.mutate(t)
				want = c.run(f.plain, f)
				got = c.run(e.db, f)
				require.NotZero(t, e.queries())
				require.Equal(t, want, got, "a bypassed read must not see the (now stale) cache")
			})
		}
	})
}

// TestReadFindOrderMatchesTheDatabase: a list served from the cache comes
// in the order the database returned it for the same statement when the
// cache was cold (the primary key's order).
func TestReadFindOrderMatchesTheDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		for _, ids := range [][]uint{{f.c, f.b, f.a}, {f.b, f.c, f.a}, {f.a, f.c}} {
			f.wipeCache(t)
			var cold, warm []Article
			require.NoError(t, e.db.Find(&cold, ids).Error)
			require.Equal(t, int64(1), e.queries())
			require.NoError(t, e.db.Find(&warm, ids).Error)
			require.Zero(t, e.queries())
			require.Equal(t, cold, warm)
			for i := 1; i < len(warm); i++ {
				require.Less(t, warm[i-1].ID, warm[i].ID)
			}
		}
	})
}

// First, Take and Last of one composite-key row are served: GORM's
// ORDER BY on the primary key cannot change a one-row answer. Several
// composite keys with an order still go to the database.
func TestReadCompositeKeyFirstIsServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Edition{})
		plain := e.plainDB()
		for _, ed := range []Edition{{BookID: 1, Lang: "en", Title: "One"}, {BookID: 1, Lang: "fr", Title: "Un"}} {
			require.NoError(t, plain.Create(&ed).Error)
		}
		e.queries()
		reads := []func(m *Edition) *gorm.DB{
			func(m *Edition) *gorm.DB { return e.db.Where(&Edition{BookID: 1, Lang: "fr"}).First(m) },
			func(m *Edition) *gorm.DB { return e.db.First(m, "book_id = ? AND lang = ?", 1, "fr") },
			func(m *Edition) *gorm.DB { return e.db.Where("lang = ? AND book_id = ?", "fr", 1).Last(m) },
			func(m *Edition) *gorm.DB { *m = Edition{BookID: 1, Lang: "fr"}; return e.db.First(m) },
		}
		for i, read := range reads {
			var m Edition
			require.NoError(t, read(&m).Error)
			require.Equal(t, Edition{BookID: 1, Lang: "fr", Title: "Un"}, m)
			want := int64(0)
			if i == 0 {
				want = 1 // the first read fills
			}
			require.Equal(t, want, e.queries(), "form %d", i)
		}

		var m, want Edition
		require.NoError(t, plain.Where("book_id = ? AND lang IN ?", 1, []string{"fr", "en"}).First(&want).Error)
		require.NoError(t, e.db.Where("book_id = ? AND lang IN ?", 1, []string{"fr", "en"}).First(&m).Error)
		require.Equal(t, want, m)
		require.Equal(t, int64(1), e.queries(), "several composite keys with an order: the database's")
	})
}

// A Find over several string or composite keys comes from the cache in
// the order the database returned it on the miss (the primary key's), not
// in the order the caller listed the keys. (Only existing keys: a string
// key's absence is never cached, so a list with one is never served.)
func TestReadStringKeyListOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Account{}, &Edition{})
		plain := e.plainDB()
		for _, c := range []string{"acme", "bolt", "cog"} {
			require.NoError(t, plain.Create(&Account{Code: c, Owner: "x"}).Error)
		}
		// Inserted in key order: Postgres returns a Find without ORDER BY in
		// heap order, which is the key's only then (ids are sorted likewise).
		for _, ed := range []Edition{{BookID: 1, Lang: "de"}, {BookID: 1, Lang: "en"}, {BookID: 1, Lang: "fr"}, {BookID: 2, Lang: "en"}} {
			require.NoError(t, plain.Create(&ed).Error)
		}
		e.queries()
		reads := []func(db *gorm.DB) any{
			func(db *gorm.DB) any {
				var as []Account
				require.NoError(t, db.Where("code IN ?", []string{"cog", "acme", "bolt"}).Find(&as).Error)
				return as
			},
			func(db *gorm.DB) any {
				var ms []Edition
				require.NoError(t, db.Where("book_id = ? AND lang IN ?", 1, []string{"fr", "en", "de"}).Find(&ms).Error)
				return ms
			},
		}
		for i, read := range reads {
			want := read(plain)
			cold := read(e.db)
			require.Equal(t, int64(1), e.queries())
			warm := read(e.db)
			require.Zero(t, e.queries(), "read %d served", i)
			require.Equal(t, want, cold, "read %d", i)
			require.Equal(t, cold, warm, "read %d: the cache answers in the database's order", i)
		}
	})
}

// A destination reused for the same row: its key (uint 7) and the inline
// condition (int 7, int64 7, "7") name one row, so the second read is a hit.
// A different value is a real contradiction and goes to the database, which
// finds no row.
func TestReusedDestinationHits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Item{})
		it := Item{Name: "kept", Stock: 3}
		require.NoError(t, e.db.Create(&it).Error)
		e.queries()
		for i, id := range []any{it.ID, int(it.ID), int64(it.ID), int32(it.ID), fmt.Sprint(it.ID)} {
			var r Item
			require.NoError(t, e.db.First(&r, it.ID).Error)
			e.queries()
			require.NoError(t, e.db.First(&r, id).Error, "read %d (%T)", i, id)
			require.Zero(t, e.queries(), "read %d (%T): the reused destination is served from the cache", i, id)
			require.Equal(t, "kept", r.Name)
			require.NoError(t, e.db.Where("id = ?", id).Take(&r).Error)
			require.Zero(t, e.queries(), "read %d (%T): also through Where", i, id)
		}

		var r Item
		require.NoError(t, e.db.First(&r, it.ID).Error)
		e.queries()
		err := e.db.First(&r, it.ID+1000).Error
		require.ErrorIs(t, err, gorm.ErrRecordNotFound, "two different keys match no row")
		require.Equal(t, int64(1), e.queries(), "and that is the database's answer")
	})
}
