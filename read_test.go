package writethrough

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The read path, end to end: which statements the cache serves, which it
// leaves to the database, and that a served statement returns exactly what
// the database would (value, RowsAffected, error, hooks, preloads).

// readFixture is one backend's database, seeded through a *gorm.DB without
// the plugin, so the cache starts cold.
type readFixture struct {
	e       *env
	plain   *gorm.DB
	table   string // the products table
	a, b, c uint   // live products, in insertion (and id) order
	gone    uint   // a soft-deleted product
	absent  uint   // an id no product has
	gadgets []uint
	authors []uint
	books   []uint
	mutated int
}

// newReadFixture migrates the read models and seeds them without the
// plugin: four products (one soft-deleted), three editions, three
// accounts, three gadgets, two authors with three books.
func newReadFixture(t *testing.T, b backend) *readFixture {
	t.Helper()
	e := newEnv(t, b, Config{}, &Article{}, &Edition{}, &Account{}, &Gizmo{}, &Author{}, &Book{})
	f := &readFixture{e: e, plain: e.plainDB(), table: e.tables + "articles", absent: 999999}
	pl := f.plain
	ps := []Article{{Name: "alpha", Price: 100}, {Name: "beta", Price: 200}, {Name: "gamma", Price: 300}, {Name: "gone", Price: 400}}
	for i := range ps { // one by one: insertion order is id order on every database
		require.NoError(t, pl.Create(&ps[i]).Error)
	}
	f.a, f.b, f.c, f.gone = ps[0].ID, ps[1].ID, ps[2].ID, ps[3].ID
	require.NoError(t, pl.Delete(&ps[3]).Error)
	for _, ed := range []Edition{{BookID: 1, Lang: "en", Title: "One"}, {BookID: 1, Lang: "fr", Title: "Un"}, {BookID: 2, Lang: "en", Title: "Two"}} {
		require.NoError(t, pl.Create(&ed).Error)
	}
	for _, ac := range []Account{{Code: "acme", Owner: "ann"}, {Code: "bolt", Owner: "bob"}, {Code: "cog", Owner: "cy"}} {
		require.NoError(t, pl.Create(&ac).Error)
	}
	for _, n := range []string{"gear", "lever", "pulley"} {
		g := Gizmo{Name: n}
		require.NoError(t, pl.Create(&g).Error)
		f.gadgets = append(f.gadgets, g.ID)
	}
	for _, n := range []string{"Ada", "Brian"} {
		a := Author{Name: n}
		require.NoError(t, pl.Create(&a).Error)
		f.authors = append(f.authors, a.ID)
	}
	for i, title := range []string{"Notes", "Sketches", "Letters"} {
		bk := Book{AuthorID: f.authors[i/2], Title: title}
		require.NoError(t, pl.Create(&bk).Error)
		f.books = append(f.books, bk.ID)
	}
	require.Zero(t, f.cachedKeys(t), "seeding through the plain db must not touch the cache")
	e.queries()
	return f
}

// ids are the live products.
func (f *readFixture) ids() []uint { return []uint{f.a, f.b, f.c} }

// warm fills the cache with every seeded row through served reads, and
// checks they are now served.
func (f *readFixture) warm(t *testing.T) {
	t.Helper()
	db := f.e.db
	read := func() {
		require.NoError(t, db.Find(&[]Article{}, []uint{f.a, f.b, f.c, f.gone}).Error)
		for _, k := range []Edition{{BookID: 1, Lang: "en"}, {BookID: 1, Lang: "fr"}, {BookID: 2, Lang: "en"}} {
			require.NoError(t, db.Where(&k).Find(&[]Edition{}).Error)
		}
		require.NoError(t, db.Where("code IN ?", []string{"acme", "bolt", "cog"}).Find(&[]Account{}).Error)
		require.NoError(t, db.Find(&[]Gizmo{}, f.gadgets).Error)
		require.NoError(t, db.Find(&[]Author{}, f.authors).Error)
		require.NoError(t, db.Find(&[]Book{}, f.books).Error)
	}
	read()
	f.e.queries()
	read()
	require.Zero(t, f.e.queries(), "warm: every seeded row is now served from the cache")
}

// mutate changes every row behind the cache's back, so a read that wrongly
// used the cache returns something the database no longer has.
func (f *readFixture) mutate(t *testing.T) {
	t.Helper()
	f.mutated++
	pl := f.plain
	sfx := fmt.Sprintf("#%d", f.mutated)
	for i, id := range []uint{f.a, f.b, f.c} {
		require.NoError(t, pl.Model(&Article{}).Where("id = ?", id).Updates(map[string]any{
			"name": []string{"alpha", "beta", "gamma"}[i] + sfx, "price": gorm.Expr("price + 1")}).Error)
	}
	for _, k := range []struct {
		id   uint
		lang string
	}{{1, "en"}, {1, "fr"}, {2, "en"}} {
		require.NoError(t, pl.Model(&Edition{}).Where("book_id = ? AND lang = ?", k.id, k.lang).Update("title", k.lang+sfx).Error)
	}
	for _, code := range []string{"acme", "bolt", "cog"} {
		require.NoError(t, pl.Model(&Account{}).Where("code = ?", code).Update("owner", code+sfx).Error)
	}
	for _, id := range f.gadgets {
		require.NoError(t, pl.Model(&Gizmo{}).Where("id = ?", id).Update("name", "g"+strconv.Itoa(int(id))+sfx).Error)
	}
	for _, id := range f.authors {
		require.NoError(t, pl.Model(&Author{}).Where("id = ?", id).Update("name", "au"+strconv.Itoa(int(id))+sfx).Error)
	}
	for _, id := range f.books {
		require.NoError(t, pl.Model(&Book{}).Where("id = ?", id).Update("title", "bk"+strconv.Itoa(int(id))+sfx).Error)
	}
}

// rowKeys returns the Redis keys of every row the fixture seeded, and of
// the absent ids and odd spellings the tests look up. (Listing them beats
// a SCAN: the shared Redis holds every other test's keys too.)
func (f *readFixture) rowKeys(t *testing.T) []string {
	t.Helper()
	p := f.e.plugin
	var keys []string
	add := func(model any, parts ...string) {
		mi, err := p.modelOf(model)
		require.NoError(t, err)
		keys = append(keys, mi.key(p.cfg.Prefix, p.cfg.TableShards, parts).row)
	}
	for _, id := range []uint{f.a, f.b, f.c, f.gone, f.absent} {
		add(&Article{}, strconv.Itoa(int(id)))
	}
	for _, k := range [][2]string{{"1", "en"}, {"1", "fr"}, {"2", "en"}} {
		add(&Edition{}, k[0], k[1])
	}
	for _, code := range []string{"acme", "bolt", "cog", "ACME", "acme ", "nobody"} {
		add(&Account{}, code)
	}
	for _, id := range f.gadgets {
		add(&Gizmo{}, strconv.Itoa(int(id)))
	}
	for _, id := range f.authors {
		add(&Author{}, strconv.Itoa(int(id)))
	}
	for _, id := range f.books {
		add(&Book{}, strconv.Itoa(int(id)))
	}
	return keys
}

// cachedKeys counts the fixture's row keys present in Redis, whatever
// they hold (a value, an absence, a lease, a fence).
func (f *readFixture) cachedKeys(t *testing.T) int64 {
	t.Helper()
	n, err := f.e.rdb.Exists(context.Background(), f.rowKeys(t)...).Result()
	if err != nil { // a cluster refuses multi-slot EXISTS: one by one
		n = 0
		for _, k := range f.rowKeys(t) {
			c, err := f.e.rdb.Exists(context.Background(), k).Result()
			require.NoError(t, err)
			n += c
		}
	}
	return n
}

// wipeCache deletes the fixture's keys, as a cold start (or an eviction of
// everything) would.
func (f *readFixture) wipeCache(t *testing.T) {
	t.Helper()
	for _, k := range f.rowKeys(t) {
		require.NoError(t, f.e.rdb.Del(context.Background(), k).Err())
	}
	require.Zero(t, f.cachedKeys(t))
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

// TestReadPartialMissIsOneQuery: a list whose ids are partly cached costs
// exactly one database statement, fills the rest, and is then served.
func TestReadPartialMissIsOneQuery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		db := e.db

		var p Article
		require.NoError(t, db.First(&p, f.a).Error)
		require.Equal(t, int64(1), e.queries(), "a single-key miss is exactly one database statement")
		require.NoError(t, db.First(&p, f.a).Error)
		require.Zero(t, e.queries())

		ids := []uint{f.c, f.absent, f.b, f.a}
		var want []Article
		require.NoError(t, f.plain.Find(&want, ids).Error)
		require.Len(t, want, 3)

		before := e.plugin.Stats()
		var got []Article
		tx := db.Find(&got, ids)
		require.NoError(t, tx.Error)
		require.Equal(t, int64(1), e.queries(), "one statement for the whole list, not one per missing id")
		require.Equal(t, want, got)
		require.Equal(t, int64(3), tx.RowsAffected)
		after := e.plugin.Stats()
		require.Equal(t, before.Misses+3, after.Misses, "b, c and the absent id missed")
		require.Equal(t, before.Fills+3, after.Fills, "and were filled, the absent id as absent")

		got = nil
		tx = db.Find(&got, ids)
		require.NoError(t, tx.Error)
		require.Zero(t, e.queries(), "every id of the list is cached now")
		require.Equal(t, want, got)
		require.Equal(t, int64(3), tx.RowsAffected)
		require.Equal(t, after.Hits+4, e.plugin.Stats().Hits)

		// A list where one id is not cached: one statement again, and the
		// answer assembled from the database, not half from the cache.
		e.queries()
		ids = []uint{f.a, f.b, f.c, f.gone}
		got = nil
		require.NoError(t, db.Find(&got, ids).Error)
		require.Equal(t, int64(1), e.queries())
		require.Equal(t, want, got)
		require.NoError(t, db.Find(&got, ids).Error)
		require.Zero(t, e.queries())
	})
}

// TestReadCachedAbsence: a row's absence is served like the database's
// "not found", for every reading form, and an insert ends it.
func TestReadCachedAbsence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		db := e.db

		// A row deleted through the plugin: its absence is cached at once.
		require.NoError(t, db.Delete(&Article{ID: f.b}).Error)
		e.queries()
		for _, read := range []func(*Article) *gorm.DB{
			func(p *Article) *gorm.DB { return db.First(p, f.b) },
			func(p *Article) *gorm.DB { return db.Take(p, f.b) },
			func(p *Article) *gorm.DB { return db.Last(p, f.b) },
			func(p *Article) *gorm.DB { return db.Where("id = ?", f.b).First(p) },
		} {
			p := Article{Name: "junk"}
			tx := read(&p)
			require.ErrorIs(t, tx.Error, gorm.ErrRecordNotFound)
			require.Zero(t, tx.RowsAffected)
			require.Equal(t, Article{Name: "junk"}, p, "the destination is left as it was")
		}
		var ps []Article
		tx := db.Find(&ps, []uint{f.b})
		require.NoError(t, tx.Error, "Find of an absent id is no error")
		require.NotNil(t, ps)
		require.Empty(t, ps)
		require.Zero(t, tx.RowsAffected)
		require.Zero(t, e.queries(), "every answer came from the cached absence")

		// Unscoped reads the soft-deleted row from the database.
		var p Article
		require.NoError(t, db.Unscoped().First(&p, f.b).Error)
		require.Equal(t, "beta", p.Name)
		require.True(t, p.DeletedAt.Valid)
		require.Equal(t, int64(1), e.queries())

		// An insert of a cached-absent id ends the absence.
		require.ErrorIs(t, db.First(&Article{}, f.absent).Error, gorm.ErrRecordNotFound)
		require.Equal(t, int64(1), e.queries())
		require.ErrorIs(t, db.First(&Article{}, f.absent).Error, gorm.ErrRecordNotFound)
		require.Zero(t, e.queries())
		require.NoError(t, db.Create(&Article{ID: f.absent, Name: "late"}).Error)
		e.queries()
		p = Article{}
		require.NoError(t, db.First(&p, f.absent).Error)
		require.Equal(t, "late", p.Name)
		require.Zero(t, e.queries())
	})
}

// TestReadStringKeyAbsenceIsNotCached: a string key may match another
// spelling of itself in the database (MySQL's case- and trailing-space-
// insensitive collations), so its absence is never cached by a read; each
// read of it asks the database, and gets the database's answer.
func TestReadStringKeyAbsenceIsNotCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		for _, code := range []string{"ACME", "acme ", "nobody"} {
			var want, got Account
			wantErr := f.plain.First(&want, "code = ?", code).Error
			for i := 0; i < 2; i++ {
				got = Account{}
				err := e.db.First(&got, "code = ?", code).Error
				require.Equal(t, wantErr, err, code)
				require.Equal(t, want, got, code)
				require.Equal(t, int64(1), e.queries(), "%q: read %d goes to the database", code, i)
			}
		}
	})
}

// TestReadHooksAndPreloadOnHits checks the P6 extras directly on a warm
// cache: AfterFind ran once per row, and preloaded children are there.
func TestReadHooksAndPreloadOnHits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		f := newReadFixture(t, b)
		e := f.e
		f.warm(t)

		var g Gizmo
		require.NoError(t, e.db.First(&g, f.gadgets[1]).Error)
		require.Zero(t, e.queries())
		require.Equal(t, 1, g.Found, "AfterFind ran once on the hit")
		var gs []Gizmo
		require.NoError(t, e.db.Find(&gs, f.gadgets).Error)
		require.Zero(t, e.queries())
		require.Len(t, gs, 3)
		for _, g := range gs {
			require.Equal(t, 1, g.Found)
		}

		var a Author
		require.NoError(t, e.db.Preload("Books").First(&a, f.authors[0]).Error)
		require.Equal(t, int64(1), e.queries(), "the author from the cache, its books from the database")
		require.Equal(t, "Ada", a.Name)
		require.Len(t, a.Books, 2)
		require.Equal(t, []string{"Notes", "Sketches"}, []string{a.Books[0].Title, a.Books[1].Title})

		var bk Book
		require.NoError(t, e.db.Preload("Author").First(&bk, f.books[2]).Error)
		require.Zero(t, e.queries(), "book and author both cached")
		require.Equal(t, "Letters", bk.Title)
		require.NotNil(t, bk.Author)
		require.Equal(t, "Brian", bk.Author.Name)
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

// TestReadPrepareStmt: with prepared statements the same reads are served,
// and reads in a transaction still bypass. (Prepared statements run on
// *sql.Stmt, which the harness does not count, so this test counts hits
// and bypasses instead of database statements.)
func TestReadPrepareStmt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnvWith(t, b, Config{}, &gorm.Config{PrepareStmt: true}, &Article{})
		ids := seedArticles(t, e.db) // written through: cached
		plain := e.plainDB()

		before := e.plugin.Stats()
		var got, want []Article
		require.NoError(t, e.db.Find(&got, ids).Error)
		require.NoError(t, plain.Find(&want, ids).Error)
		require.Equal(t, want, got)
		after := e.plugin.Stats()
		require.Equal(t, before.Hits+3, after.Hits, "served")
		require.Equal(t, before.Misses, after.Misses)

		require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
			var p Article
			if err := tx.First(&p, ids[1]).Error; err != nil {
				return err
			}
			require.Equal(t, want[1], p)
			return nil
		}))
		tx := e.db.Begin()
		var p Article
		require.NoError(t, tx.Take(&p, ids[2]).Error)
		require.NoError(t, tx.Rollback().Error)
		require.Equal(t, want[2], p)
		final := e.plugin.Stats()
		require.Equal(t, after.Hits, final.Hits, "no hit inside a transaction")
		require.Equal(t, after.Bypasses+2, final.Bypasses)
	})
}
