package writethrough

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// The read path: misses, fills, cached absences, hooks and preloads on hits,
// damaged entries, and that a served statement returns exactly what the
// database would (value, RowsAffected, error). Which statements are served
// at all is read planning (lookup_test.go), which conditions name keys is
// pins_test.go; both use the read fixture defined here.

func TestCorruptEntriesAreMissesAndReplaced(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ctx := context.Background()
		p := Product{Name: "lamp 🦊", Price: 1999}
		require.NoError(t, e.db.Create(&p).Error)
		key := rowKeyOf(t, e, &p)
		good, err := e.rdb.Get(ctx, key).Result()
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(good, "V"), "the write stored the row: %q", good)
		bar := strings.IndexByte(good, '|')
		header := good[:bar+1] // V<gen>|
		mi, err := e.plugin.modelOf(&p)
		require.NoError(t, err)
		require.Equal(t, mi.fp, good[bar+1:bar+1+fingerprintLen])
		body := good[bar+1+fingerprintLen:]

		cases := map[string]string{
			"garbage body":             header + mi.fp + "\x00garbage\xff",
			"truncated":                good[:len(good)-3],
			"one byte flipped":         header + mi.fp + flipByte(body, len(body)/2),
			"header only":              header,
			"short fingerprint":        header + mi.fp[:3],
			"foreign layout":           header + "deadbeef" + body,
			"checksum ok, not a row":   header + mi.fp + string(sealEntry([]byte("not a row"))),
			"checksum ok, wrong arity": header + mi.fp + string(sealEntry(mustAppend(t, BinaryCodec{}, []any{int64(1)}))),
		}
		for name, bad := range cases {
			t.Run(name, func(t *testing.T) {
				require.NoError(t, e.rdb.Set(ctx, key, bad, 0).Err())
				decodeErrors := e.plugin.Stats().DecodeErrors
				e.queries()

				var got Product
				require.NoError(t, e.db.First(&got, p.ID).Error)
				require.Equal(t, "lamp 🦊", got.Name)
				require.Equal(t, int64(1999), got.Price)
				require.Equal(t, int64(1), e.queries(), "a damaged entry is a miss")
				require.Greater(t, e.plugin.Stats().DecodeErrors, decodeErrors, "and is counted")

				now, err := e.rdb.Get(ctx, key).Result()
				require.NoError(t, err)
				require.Equal(t, good, now, "the damaged entry was replaced by the row")
				ttl, err := e.rdb.PTTL(ctx, key).Result()
				require.NoError(t, err)
				require.Greater(t, ttl, time.Duration(0), "the replacement expires")

				var again Product
				require.NoError(t, e.db.First(&again, p.ID).Error)
				require.Zero(t, e.queries(), "and is served from then on")
				require.Equal(t, got, again)
			})
		}
	})
}

// TestJunkInARowKeyIsReplaced: a value the protocol never writes (bytes
// it does not know, an empty string, or a lease, fence or "C" without a
// TTL: the protocol sets one on each) must not send every read to the
// database forever. The read replaces it like a corrupt entry: it reads
// the database once, fills, and is served from then on. A fence with its
// TTL, which a writer in flight holds, is left alone.
func TestJunkInARowKeyIsReplaced(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ctx := context.Background()
		p := Product{Name: "lamp", Price: 1999}
		require.NoError(t, e.db.Create(&p).Error)
		key := rowKeyOf(t, e, &p)
		good := peek(t, e, key)
		require.True(t, strings.HasPrefix(good, "V"), "the write stored the row: %q", good)
		gen := good[1:strings.IndexByte(good, '|')]

		cases := map[string]string{
			"garbage":                 "\x00\xffjunk",
			"empty string":            "",
			"unknown leading byte":    "Zsomething",
			"lease without a TTL":     "Lfeedfacecafebeef.1|" + gen,
			"fence without a TTL":     "Ffeedfacecafebeef.2",
			"contended without a TTL": "C",
		}
		for name, junk := range cases {
			t.Run(name, func(t *testing.T) {
				require.NoError(t, e.rdb.Set(ctx, key, junk, 0).Err())
				e.queries()
				decodeErrors := e.plugin.Stats().DecodeErrors

				var got Product
				require.NoError(t, e.db.First(&got, p.ID).Error)
				require.Equal(t, "lamp", got.Name)
				require.Equal(t, int64(1), e.queries(), "the read used the database")
				require.Greater(t, e.plugin.Stats().DecodeErrors, decodeErrors, "the junk is counted")
				require.Equal(t, good, peek(t, e, key), "the junk was replaced by the row")

				var again Product
				require.NoError(t, e.db.First(&again, p.ID).Error)
				require.Zero(t, e.queries(), "and is served from then on")
				require.Equal(t, got, again)
			})
		}

		t.Run("fence with its TTL", func(t *testing.T) {
			fence := "Ffeedfacecafebeef.3"
			require.NoError(t, e.rdb.Set(ctx, key, fence, time.Minute).Err())
			e.queries()
			for i := 0; i < 2; i++ {
				var got Product
				require.NoError(t, e.db.First(&got, p.ID).Error)
				require.Equal(t, "lamp", got.Name)
				require.Equal(t, int64(1), e.queries(), "a fenced key is read from the database")
			}
			require.Equal(t, fence, peek(t, e, key), "a writer's fence is never replaced by a reader")
		})
	})
}

// An entry copied under another row's key passes every check but one: its
// primary key is not the key's. Served, First(&r, 1) would return row 2.
func TestEntryOfAnotherRowIsCorrupt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{}, &SKU{}, &Pair{})
		ctx := context.Background()
		// swap stores b's entry under a's key and returns a's own entry.
		swap := func(a, b any) (key, own string) {
			t.Helper()
			key = rowKeyOf(t, e, a)
			own, err := e.rdb.Get(ctx, key).Result()
			require.NoError(t, err)
			other, err := e.rdb.Get(ctx, rowKeyOf(t, e, b)).Result()
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(own, "V") && strings.HasPrefix(other, "V"), "both rows were written through")
			// Under the key's own generation, as a copy within one shard
			// would be, so that only the row inside tells it apart.
			other = own[:strings.IndexByte(own, '|')] + other[strings.IndexByte(other, '|'):]
			require.NoError(t, e.rdb.Set(ctx, key, other, 0).Err())
			return key, own
		}
		// requireReplaced checks that the read went to the database, counted
		// the entry, and put the row's own entry back, which then hits.
		requireReplaced := func(key, own string, decodeErrors uint64, read func() error) {
			t.Helper()
			require.Equal(t, int64(1), e.queries(), "the foreign entry is a miss")
			require.Greater(t, e.plugin.Stats().DecodeErrors, decodeErrors, "and is counted")
			now, err := e.rdb.Get(ctx, key).Result()
			require.NoError(t, err)
			require.Equal(t, own, now, "and replaced by the row's own entry")
			require.NoError(t, read())
			require.Zero(t, e.queries(), "which is served from then on")
		}

		p1, p2 := Product{Name: "one", Price: 1}, Product{Name: "two", Price: 2}
		require.NoError(t, e.db.Create(&p1).Error)
		require.NoError(t, e.db.Create(&p2).Error)
		key, own := swap(&p1, &p2)
		decodeErrors := e.plugin.Stats().DecodeErrors
		e.queries()
		var got Product
		require.NoError(t, e.db.First(&got, p1.ID).Error)
		require.Equal(t, p1.ID, got.ID)
		require.Equal(t, "one", got.Name)
		requireReplaced(key, own, decodeErrors, func() error { return e.db.First(&Product{}, p1.ID).Error })

		// In a list, one foreign entry sends the statement to the database.
		key, own = swap(&p2, &p1)
		decodeErrors = e.plugin.Stats().DecodeErrors
		e.queries()
		var list []Product
		require.NoError(t, e.db.Find(&list, []uint{p1.ID, p2.ID}).Error)
		require.Len(t, list, 2)
		require.Equal(t, []string{"one", "two"}, []string{list[0].Name, list[1].Name})
		requireReplaced(key, own, decodeErrors, func() error { return e.db.Find(&[]Product{}, []uint{p1.ID, p2.ID}).Error })

		// String keys, escaped in the key, and composite keys.
		s1, s2 := SKU{Code: "a:b c%", Name: "first"}, SKU{Code: "a:b c", Name: "second"}
		require.NoError(t, e.db.Create(&s1).Error)
		require.NoError(t, e.db.Create(&s2).Error)
		key, own = swap(&s1, &s2)
		decodeErrors = e.plugin.Stats().DecodeErrors
		e.queries()
		var sku SKU
		require.NoError(t, e.db.First(&sku, "code = ?", s1.Code).Error)
		require.Equal(t, s1, sku)
		requireReplaced(key, own, decodeErrors, func() error { return e.db.First(&SKU{}, "code = ?", s1.Code).Error })

		q1, q2 := Pair{A: 1, B: 12, V: "1/12"}, Pair{A: 11, B: 2, V: "11/2"}
		require.NoError(t, e.db.Create(&q1).Error)
		require.NoError(t, e.db.Create(&q2).Error)
		key, own = swap(&q1, &q2)
		decodeErrors = e.plugin.Stats().DecodeErrors
		e.queries()
		var pair Pair
		require.NoError(t, e.db.Where("a = ? AND b = ?", 1, 12).First(&pair).Error)
		require.Equal(t, q1, pair)
		requireReplaced(key, own, decodeErrors, func() error { return e.db.Where("a = ? AND b = ?", 1, 12).First(&Pair{}).Error })
	})
}

// A row whose entry would exceed MaxEntryBytes is not cached: its writes
// invalidate, its reads do not fill, and an oversized entry found in Redis
// is not decoded but replaced.
func TestMaxEntryBytes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const limit = 4 << 10
		e := newEnv(t, b, Config{MaxEntryBytes: limit}, &Memo{})
		ctx := context.Background()
		big := Memo{Body: strings.Repeat("x", limit)}
		small := Memo{Body: "small"}
		require.NoError(t, e.db.Create(&big).Error)
		require.NoError(t, e.db.Create(&small).Error)
		bigKey, smallKey := rowKeyOf(t, e, &big), rowKeyOf(t, e, &small)
		require.Equal(t, uint64(1), e.plugin.Stats().Oversized, "the big row's write is counted")
		require.Empty(t, peek(t, e, bigKey), "and invalidated, not written through")
		require.True(t, strings.HasPrefix(peek(t, e, smallKey), "V"), "the small row is written through")

		for i := 0; i < 2; i++ {
			e.queries()
			var got Memo
			require.NoError(t, e.db.First(&got, big.ID).Error)
			require.Equal(t, big.Body, got.Body)
			require.Equal(t, int64(1), e.queries(), "the big row is read from the database")
			require.Empty(t, peek(t, e, bigKey), "and never filled")
		}
		require.Equal(t, uint64(3), e.plugin.Stats().Oversized)

		require.NoError(t, e.db.Model(&big).Update("body", strings.Repeat("y", 2*limit)).Error)
		require.Equal(t, uint64(4), e.plugin.Stats().Oversized, "an update of the big row is counted")
		require.Empty(t, peek(t, e, bigKey))
		require.NoError(t, e.db.Model(&big).Update("body", "now small").Error)
		require.True(t, strings.HasPrefix(peek(t, e, bigKey), "V"), "once small it is cached again")

		// An oversized entry put there by someone else (a process with a
		// larger limit, or by hand) is replaced, not decoded.
		mi, err := e.plugin.modelOf(&small)
		require.NoError(t, err)
		values, err := mi.values(ctx, reflect.ValueOf(Memo{ID: small.ID, Body: strings.Repeat("z", 2*limit)}), nil)
		require.NoError(t, err)
		entry := sealEntry(mustAppend(t, BinaryCodec{}, values))
		good := peek(t, e, smallKey)
		bar := strings.IndexByte(good, '|')
		require.NoError(t, e.rdb.Set(ctx, smallKey, good[:bar+1+fingerprintLen]+string(entry), 0).Err())
		oversized, decodeErrors := e.plugin.Stats().Oversized, e.plugin.Stats().DecodeErrors
		e.queries()
		var got Memo
		require.NoError(t, e.db.First(&got, small.ID).Error)
		require.Equal(t, "small", got.Body)
		require.Equal(t, int64(1), e.queries(), "the oversized entry is a miss")
		require.Equal(t, oversized+1, e.plugin.Stats().Oversized, "counted")
		require.Equal(t, decodeErrors+1, e.plugin.Stats().DecodeErrors)
		require.Equal(t, good, peek(t, e, smallKey), "and replaced by the row")
	})
}

func flipByte(s string, i int) string {
	b := []byte(s)
	b[i] ^= 0x20
	return string(b)
}

func mustAppend(t testing.TB, c Codec, values []any) []byte {
	b, err := c.Append(nil, values)
	require.NoError(t, err)
	return b
}

// Hits fill a slice as gorm.Scan does: the caller's capacity is reused,
// every element starts from zero, and pointer elements are new rows.
func TestFindHitFillsSlicesLikeScan(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &NoteRow{})
		rows := []NoteRow{{Name: "a"}, {Name: "b"}, {Name: "c"}}
		require.NoError(t, e.db.Create(&rows).Error)
		ids := []uint{rows[0].ID, rows[1].ID, rows[2].ID}
		e.queries()

		// Capacity that holds the rows, with stale elements in it.
		backing := make([]NoteRow, 5)
		for i := range backing {
			backing[i] = NoteRow{ID: 999, Name: "stale", Note: "stale"}
		}
		dst := backing[:0]
		require.NoError(t, e.db.Find(&dst, ids).Error)
		require.Zero(t, e.queries(), "served from the cache")
		require.Equal(t, []NoteRow{{ID: ids[0], Name: "a"}, {ID: ids[1], Name: "b"}, {ID: ids[2], Name: "c"}}, dst)
		require.Equal(t, &backing[0], &dst[0], "the caller's capacity is reused, as gorm.Scan does")

		// Too little capacity: a new slice.
		small := make([]NoteRow, 1, 2)
		small[0].Note = "stale"
		require.NoError(t, e.db.Find(&small, ids).Error)
		require.Len(t, small, 3)
		require.Equal(t, "", small[0].Note)

		// Pointer elements: new rows, never the old pointers.
		old := &NoteRow{ID: 999, Note: "stale"}
		ptrs := []*NoteRow{old}
		ptrs = ptrs[:0]
		require.NoError(t, e.db.Find(&ptrs, ids).Error)
		require.Len(t, ptrs, 3)
		require.Equal(t, NoteRow{ID: ids[0], Name: "a"}, *ptrs[0])
		require.Equal(t, NoteRow{ID: 999, Note: "stale"}, *old, "an old element is not written to")

		// No row at all: an empty, non-nil slice, as from the database.
		var none []NoteRow
		require.NoError(t, e.db.Find(&none, []uint{987654}).Error) // miss, absence cached
		require.NoError(t, e.db.Find(&none, []uint{987654}).Error) // hit on the absence
		require.NotNil(t, none)
		require.Empty(t, none)
		require.Zero(t, e.queries()-1, "the second read was a hit")
	})
}

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

// seedArticles inserts three products through db and returns their ids.
func seedArticles(t *testing.T, db *gorm.DB) []uint {
	t.Helper()
	var ids []uint
	for _, n := range []string{"alpha", "beta", "gamma"} {
		p := Article{Name: n, Price: 100}
		require.NoError(t, db.Create(&p).Error)
		ids = append(ids, p.ID)
	}
	return ids
}

// First, Take and Last of an absent or soft-deleted id cache the absence
// (GORM reports it as ErrRecordNotFound, which is an answer, not a
// failure), so the next read is served.
func TestReadAbsenceFromFirstIsCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Article{})
		plain := e.plainDB()
		deleted := seedArticles(t, plain)
		require.NoError(t, plain.Delete(&Article{}, deleted).Error)
		e.queries()

		reads := []func(id uint) *gorm.DB{
			func(id uint) *gorm.DB { return e.db.First(&Article{}, id) },
			func(id uint) *gorm.DB { return e.db.Take(&Article{}, id) },
			func(id uint) *gorm.DB { return e.db.Last(&Article{}, id) },
		}
		for k, read := range reads {
			for _, id := range []uint{deleted[k], 1000 + deleted[k]} { // soft-deleted, never existed
				for i, q := range []int64{1, 0} {
					tx := read(id)
					require.ErrorIs(t, tx.Error, gorm.ErrRecordNotFound)
					require.Zero(t, tx.RowsAffected)
					require.Equal(t, q, e.queries(), "form %d, id %d, read %d", k, id, i)
				}
			}
		}
	})
}

// DryRun and ToSQL run no query: the cache neither answers them nor takes
// their empty result for "no such row".
func TestReadDryRunIsNoRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Article{})
		plain := e.plainDB()
		ids := seedArticles(t, plain)
		e.queries()

		sql := e.db.ToSQL(func(tx *gorm.DB) *gorm.DB { return tx.First(&Article{}, ids[0]) })
		require.Contains(t, sql, "SELECT")
		var p Article
		require.NoError(t, e.db.First(&p, ids[0]).Error, "ToSQL must not cache the row as absent")
		require.Equal(t, "alpha", p.Name)
		require.Equal(t, int64(1), e.queries())
		require.NoError(t, e.db.First(&Article{}, ids[0]).Error)
		require.Zero(t, e.queries(), "cached now")

		// A dry run over a cached row answers as the database's dry run does.
		for _, id := range []uint{ids[0], ids[1]} { // cached, not cached
			var want, got Article
			wantTx := plain.Session(&gorm.Session{DryRun: true}).First(&want, id)
			gotTx := e.db.Session(&gorm.Session{DryRun: true}).First(&got, id)
			require.Equal(t, want, got)
			require.Equal(t, wantTx.Error, gotTx.Error)
			require.Equal(t, wantTx.RowsAffected, gotTx.RowsAffected)
		}
		require.NoError(t, e.db.First(&Article{}, ids[1]).Error, "the dry run cached no absence")
	})
}
