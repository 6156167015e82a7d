package writethrough

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// P6: a row served from the cache is the row the database read gives, field
// by field. The claim is cache == database, not cache == what the caller
// wrote: the database may drop precision or the zone, and the cache must
// drop them the same way. Also: models the cache leaves alone.

func TestModelWithoutPrimaryKeyIsNotCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &AuditLog{})
		plain := e.plainDB()
		table := e.stmtSchema(&AuditLog{}).Table

		require.NoError(t, e.db.Create(&[]AuditLog{{Event: "a", Level: 1}, {Event: "b", Level: 2}}).Error)
		require.NoError(t, e.db.Model(&AuditLog{}).Where("event = ?", "a").Update("level", 5).Error)
		require.NoError(t, e.db.Where("event = ?", "b").Delete(&AuditLog{}).Error)
		var got, want []AuditLog
		e.queries()
		require.NoError(t, e.db.Find(&got).Error)
		require.Equal(t, int64(1), e.queries())
		require.NoError(t, plain.Table(table).Find(&want).Error)
		require.Equal(t, want, got)
		require.Equal(t, []AuditLog{{Event: "a", Level: 5}}, got)
		var first AuditLog
		require.NoError(t, e.db.First(&first).Error)
		require.Equal(t, "a", first.Event)

		require.Empty(t, keysUnder(t, e.rdb, e.prefix), "nothing of a model without a key is written to Redis")
		st := e.plugin.Stats()
		require.Zero(t, st.Hits+st.Misses+st.Fills+st.WritesThrough+st.Invalidations+st.RedisErrors+st.DecodeErrors, "%+v", st)
	})
}

// fidelityRows returns a row with every field set to an edge value, and one
// with everything nullable left NULL.
func fidelityRows(t testing.TB, dialect string) (full, empty Fidelity) {
	ny := mustZone(t, "America/New_York")
	tokyo := mustZone(t, "Asia/Tokyo")
	at := time.Date(2024, 2, 29, 13, 14, 15, 123456789, time.FixedZone("X", 5*3600+30*60))
	atPtr := time.Date(1999, 12, 31, 23, 59, 59, 999999999, ny)
	nTime := time.Date(2038, 1, 19, 3, 14, 8, 987654321, tokyo)
	zip := "10115"
	intPtr := int64(-42)
	temp := Celsius(-40.25)
	// The largest uint64 the column holds: Postgres and SQLite have no
	// unsigned 64-bit integers.
	u64 := uint64(math.MaxInt64)
	if dialect == "mysql" {
		u64 = math.MaxUint64
	}
	full = Fidelity{
		I8: math.MinInt8, I16: math.MinInt16, I32: math.MinInt32, I64: math.MinInt64, I: math.MaxInt32,
		U8: math.MaxUint8, U16: math.MaxUint16, U32: math.MaxUint32, U64: u64, U: 7,
		F32: math.Pi, F64: 0.1 + 0.2, Yes: true, No: false,
		Text:      "emoji 🦊🏳️‍🌈, CJK 中文字符, combining e\u0301 n\u0303, quotes '\" and \\",
		EmptyText: "",
		Blob:      []byte("zero\x00bytes\x00\xff\xfe"),
		EmptyBlob: []byte{},
		NilBlob:   nil,
		At:        at,
		AtMilli:   at,
		AtPtr:     &atPtr,
		IntPtr:    &intPtr,
		NStr:      sql.NullString{String: "nullable 🦊", Valid: true},
		NInt:      sql.NullInt64{Int64: math.MaxInt64, Valid: true},
		NTime:     sql.NullTime{Time: nTime, Valid: true},
		NBool:     sql.NullBool{Bool: false, Valid: true},
		NFloat:    sql.NullFloat64{Float64: -1.5e-300, Valid: true},
		Attrs:     map[string]any{"n": 1.5, "s": "x", "nested": map[string]any{"list": []any{1.0, "two", nil, true}}},
		Tags:      []string{"a", "", "中"},
		Empty:     []string{},
		Addr:      FidelityAddress{Street: "Unter den Linden 1", Zip: &zip},
		Price:     Money{Cents: 1999, Currency: "EUR"},
		Fee:       &Money{Cents: -5, Currency: "JPY"},
		Meta:      &FidelityAddress{Street: "meta"},
		Temp:      21.5,
		TempPtr:   &temp,
		Lvl:       -3,
		Weight:    math.MaxUint32,
		Flag:      true,
		Label:     "label 🦊",
		Digest:    Hexed{0, 1, 0xfe, 0xff},
		Src:       Sourced{Text: "driver text"},
	}
	empty = Fidelity{Text: "nulls", At: time.Unix(0, 0).UTC(), AtMilli: time.Unix(1, 0).In(ny)}
	return full, empty
}

func TestFidelityCacheEqualsDatabase(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend) {
				testFidelity(t, b, c)
			})
		})
	}
}

func testFidelity(t *testing.T, b backend, c Codec) {
	e := newEnv(t, b, Config{Codec: c}, &Fidelity{})
	plain := e.plainDB()
	table := e.stmtSchema(&Fidelity{}).Table
	ctx := context.Background()

	// fromDB reads the row as a database read gives it.
	fromDB := func(id uint) Fidelity {
		var row Fidelity
		require.NoError(t, plain.Table(table).First(&row, id).Error)
		return row
	}
	// fromCache reads the row and requires that it came from Redis.
	fromCache := func(id uint, when string) Fidelity {
		e.queries()
		var row Fidelity
		require.NoError(t, e.db.First(&row, id).Error, when)
		require.Zero(t, e.queries(), "%s: the read must be served from the cache", when)
		return row
	}
	// fill drops the row's entry, reads it cold (the read fills), and
	// returns what that database read gave.
	fill := func(row Fidelity, when string) Fidelity {
		require.NoError(t, e.rdb.Del(ctx, rowKeyOf(t, e, &row)).Err())
		fills := e.plugin.Stats().Fills
		e.queries()
		var cold Fidelity
		require.NoError(t, e.db.First(&cold, row.ID).Error, when)
		require.Equal(t, int64(1), e.queries(), "%s: a cold read queries the database once", when)
		require.Equal(t, fills+1, e.plugin.Stats().Fills, "%s: the cold read fills the key", when)
		return cold
	}
	check := func(id uint, when string) {
		t.Helper()
		db := fromDB(id)
		if testing.Verbose() {
			t.Logf("%s: database gives At=%v AtMilli=%v AtPtr=%v NTime=%v U64=%d F32=%v EmptyBlob=%#v NilBlob=%#v Attrs=%v Tags=%#v", when, db.At, db.AtMilli, db.AtPtr, db.NTime, db.U64, db.F32, db.EmptyBlob, db.NilBlob, db.Attrs, db.Tags)
		}
		requireSameRow(t, db, fromCache(id, when+", after write-through"), when+", after write-through")
		cold := fill(db, when)
		requireSameRow(t, db, cold, when+", the cold read itself")
		requireSameRow(t, db, fromCache(id, when+", after fill"), when+", after fill")
		// Find into a slice and Take go through the same assembly.
		var list []*Fidelity
		e.queries()
		require.NoError(t, e.db.Find(&list, []uint{id}).Error)
		require.Zero(t, e.queries(), "%s: Find by id list from the cache", when)
		require.Len(t, list, 1)
		requireSameRow(t, db, *list[0], when+", Find into []*T")
	}

	full, empty := fidelityRows(t, b.dialect)
	require.NoError(t, e.db.Create(&full).Error)
	require.NoError(t, e.db.Create(&empty).Error)
	check(full.ID, "create, every field set")
	check(empty.ID, "create, nullable fields NULL")

	// Updates through the plugin: a few columns, then the whole row.
	later := time.Date(2025, 7, 4, 1, 2, 3, 456789123, mustZone(t, "Europe/Berlin"))
	require.NoError(t, e.db.Model(&Fidelity{ID: full.ID}).Updates(map[string]any{
		"text": "updated 🦊", "at": later, "n_str": sql.NullString{}, "price": Money{Cents: 1, Currency: "USD"},
	}).Error)
	check(full.ID, "Updates with a map")
	// GORM serializes a serializer field only from a struct.
	require.NoError(t, e.db.Model(&Fidelity{ID: full.ID}).Updates(&Fidelity{Attrs: map[string]any{"k": []any{1.0, 2.0}}, Tags: []string{}}).Error)
	check(full.ID, "Updates with a struct")

	row := fromDB(empty.ID)
	row.NStr = sql.NullString{String: "", Valid: true} // empty, not NULL
	row.NTime = sql.NullTime{Time: later, Valid: true}
	row.AtPtr = &later
	row.Blob = []byte{0}
	row.Attrs = map[string]any{}
	row.Fee = &Money{}
	require.NoError(t, e.db.Save(&row).Error)
	check(empty.ID, "Save of the whole row")

	// Soft-deleted: both say "not found", the cache without the database.
	require.NoError(t, e.db.Delete(&Fidelity{}, full.ID).Error)
	require.ErrorIs(t, plain.Table(table).First(&Fidelity{}, full.ID).Error, gorm.ErrRecordNotFound)
	e.queries()
	require.ErrorIs(t, e.db.First(&Fidelity{}, full.ID).Error, gorm.ErrRecordNotFound)
	require.Zero(t, e.queries(), "a soft-deleted row is a cached absence")
	var deleted, deletedDB Fidelity
	require.NoError(t, e.db.Unscoped().First(&deleted, full.ID).Error)
	require.NoError(t, plain.Table(table).Unscoped().First(&deletedDB, full.ID).Error)
	require.True(t, deletedDB.DeletedAt.Valid)
	requireSameRow(t, deletedDB, deleted, "Unscoped read of a soft-deleted row")
}

// requireSameRow fails with every field where got differs from want.
func requireSameRow(t testing.TB, want, got Fidelity, when string) {
	t.Helper()
	if diffs := diffValues("", reflect.ValueOf(want), reflect.ValueOf(got)); len(diffs) > 0 {
		t.Fatalf("%s: the cache differs from the database:\n  %s", when, strings.Join(diffs, "\n  "))
	}
}

// diffValues compares two values the way a caller observes them: times by
// instant, zone and location name (sameTime), floats by bits, nil apart from
// empty for slices, maps and pointers. reflect.DeepEqual would compare
// *time.Location pointers and monotonic clock readings instead.
func diffValues(path string, a, b reflect.Value) []string {
	if a.IsValid() != b.IsValid() {
		return []string{fmt.Sprintf("%s: %v vs %v", path, a, b)}
	}
	if !a.IsValid() {
		return nil
	}
	if a.Type() != b.Type() {
		return []string{fmt.Sprintf("%s: type %s vs %s", path, a.Type(), b.Type())}
	}
	if a.Type() == reflect.TypeOf(time.Time{}) {
		if err := sameTime(a.Interface().(time.Time), b.Interface().(time.Time)); err != nil {
			return []string{fmt.Sprintf("%s: %v", path, err)}
		}
		return nil
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() != b.IsNil() {
			return []string{fmt.Sprintf("%s: nil %v vs %v", path, a.IsNil(), b.IsNil())}
		}
		if a.IsNil() {
			return nil
		}
		return diffValues(path, a.Elem(), b.Elem())
	case reflect.Struct:
		var out []string
		for i := 0; i < a.NumField(); i++ {
			if !a.Type().Field(i).IsExported() {
				continue
			}
			out = append(out, diffValues(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))...)
		}
		return out
	case reflect.Slice, reflect.Map:
		if a.IsNil() != b.IsNil() {
			return []string{fmt.Sprintf("%s: nil %v vs %v (%#v vs %#v)", path, a.IsNil(), b.IsNil(), a.Interface(), b.Interface())}
		}
		if a.Len() != b.Len() {
			return []string{fmt.Sprintf("%s: %#v vs %#v", path, a.Interface(), b.Interface())}
		}
		var out []string
		if a.Kind() == reflect.Slice {
			for i := 0; i < a.Len(); i++ {
				out = append(out, diffValues(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))...)
			}
			return out
		}
		for _, k := range a.MapKeys() {
			out = append(out, diffValues(fmt.Sprintf("%s[%v]", path, k), a.MapIndex(k), b.MapIndex(k))...)
		}
		return out
	case reflect.Float32, reflect.Float64:
		if math.Float64bits(a.Float()) != math.Float64bits(b.Float()) {
			return []string{fmt.Sprintf("%s: %v vs %v", path, a.Float(), b.Float())}
		}
		return nil
	}
	if a.Interface() != b.Interface() {
		return []string{fmt.Sprintf("%s: %#v vs %#v", path, a.Interface(), b.Interface())}
	}
	return nil
}

func TestDiffValuesSeesWhatCallersSee(t *testing.T) {
	// The comparator itself must not be blind.
	ny := mustZone(t, "America/New_York")
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	base := Fidelity{At: at, Blob: []byte{}, Tags: []string{"a"}}
	same := base
	same.At = at.In(time.UTC).Add(0) // another Time value, same observable value
	require.Empty(t, diffValues("", reflect.ValueOf(base), reflect.ValueOf(same)))
	for name, mutate := range map[string]func(*Fidelity){
		"instant":         func(f *Fidelity) { f.At = at.Add(time.Microsecond) },
		"zone":            func(f *Fidelity) { f.At = at.In(ny) },
		"fixed vs named":  func(f *Fidelity) { f.At = at.In(time.FixedZone("EST", -5*3600)) },
		"nil vs empty":    func(f *Fidelity) { f.Blob = nil },
		"slice element":   func(f *Fidelity) { f.Tags = []string{"b"} },
		"pointer nil":     func(f *Fidelity) { f.AtPtr = &at },
		"embedded":        func(f *Fidelity) { f.Addr.Street = "x" },
		"custom scanner":  func(f *Fidelity) { f.Price.Currency = "X" },
		"null validity":   func(f *Fidelity) { f.NStr.Valid = true },
		"map nil":         func(f *Fidelity) { f.Attrs = map[string]any{} },
		"negative zero":   func(f *Fidelity) { f.F64 = math.Copysign(0, -1) },
		"deleted at":      func(f *Fidelity) { f.DeletedAt.Valid = true },
		"float32 one ulp": func(f *Fidelity) { f.F32 = math.Nextafter32(0, 1) },
	} {
		other := base
		mutate(&other)
		require.NotEmpty(t, diffValues("", reflect.ValueOf(base), reflect.ValueOf(other)), name)
	}
}

func TestSerializerFieldsAreServedFromTheCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &SerializedDoc{})
		doc := SerializedDoc{
			Attrs: map[string]any{"n": 1.5, "list": []any{"a", nil, true}},
			Tags:  []string{"x", "中"},
			Blob:  map[string]int{"k": 3},
		}
		require.NoError(t, e.db.Create(&doc).Error)
		e.queries()

		var got SerializedDoc
		require.NoError(t, e.db.First(&got, doc.ID).Error)
		require.Zero(t, e.queries(), "a row with serializer fields must be served from the cache")
		require.Zero(t, e.plugin.Stats().DecodeErrors)
		require.Equal(t, doc.Attrs, got.Attrs)
		require.Equal(t, doc.Tags, got.Tags)
		require.Nil(t, got.NilTags)
		require.Equal(t, doc.Blob, got.Blob)
	})
}
