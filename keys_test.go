package writethrough

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm/schema"
)

// Keys are shared by every process on a Redis: two rows must never share
// one, no key value may change the Redis Cluster hash slot, and the layout
// must not drift between versions.
//
// The key builder's shortcuts (its own CRC32, the per-shard table) must give
// exactly what the plain code they replaced gave.

func TestCRC32IEEEMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		require.Equal(t, crc32.ChecksumIEEE(b), crc32IEEE(b), "length %d", n)
	}
}

func TestRowKeyFromShardTable(t *testing.T) {
	// The layout is shared by every process using a Redis: these are the
	// keys the code before the shard table built.
	golden := []struct {
		parts []string
		key   rowKey
	}{
		{[]string{"1"}, rowKey{row: "pfx:{wt_products:7}:k:1", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
		{[]string{"42"}, rowKey{row: "pfx:{wt_products:8}:k:42", gen: "pfx:{wt_products:8}:g", fence: "pfx:{wt_products:8}:f"}},
		{[]string{"a:b", "{x}"}, rowKey{row: "pfx:{wt_products:7}:k:a%3Ab:%7Bx%7D", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
		{[]string{"\u00e9"}, rowKey{row: "pfx:{wt_products:7}:k:%C3%A9", gen: "pfx:{wt_products:7}:g", fence: "pfx:{wt_products:7}:f"}},
	}
	mi := &modelInfo{tableEsc: "wt_products"}
	mi.buildShards("pfx", 16)
	bare := &modelInfo{tableEsc: "wt_products"} // no table: keys built from scratch
	for _, g := range golden {
		requireSameKey(t, g.key, mi.key("pfx", 16, g.parts))
		requireSameKey(t, g.key, bare.key("pfx", 16, g.parts))
	}
	// A key longer than the stack buffer, and another prefix than the table's.
	long := string(make([]byte, 100))
	requireSameKey(t, bare.key("pfx", 16, []string{long}), mi.key("pfx", 16, []string{long}))
	requireSameKey(t, bare.key("other", 16, []string{"7"}), mi.key("other", 16, []string{"7"}))
	require.Equal(t, "other:{wt_products:7}:k:1", mi.key("other", 16, []string{"1"}).row)
}

// requireSameKey compares the key names, and checks that the boxed shard
// arguments name the same keys.
func requireSameKey(t *testing.T, want, got rowKey) {
	t.Helper()
	require.Equal(t, [3]string{want.row, want.gen, want.fence}, [3]string{got.row, got.gen, got.fence})
	require.NotNil(t, got.shard)
	require.Equal(t, got.gen, got.shard.genArg)
	require.Equal(t, got.fence, got.shard.fenceArg)
}

// unescapeKeyPart inverts appendEscaped, strictly: it refuses anything
// appendEscaped cannot have produced.
func unescapeKeyPart(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if !isPlainKeyByte(c) {
				return "", fmt.Errorf("byte %q at %d is neither plain nor escaped", c, i)
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape at %d", i)
		}
		hi, lo := unhex(s[i+1]), unhex(s[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("bad escape %q at %d", s[i:i+3], i)
		}
		v := byte(hi<<4 | lo)
		if isPlainKeyByte(v) {
			return "", fmt.Errorf("plain byte %q escaped at %d: two spellings of one key", v, i)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1 // appendEscaped writes upper case only
}

func testModelInfo(table string) *modelInfo {
	return &modelInfo{tableEsc: string(appendEscaped(nil, table))}
}

// checkKeyShape asserts what Redis Cluster and the scripts rely on: the key
// starts with the prefix, has exactly one hash tag, which is {table:shard}
// with a shard in range, and the row, generation and fence keys share it.
func checkKeyShape(t testing.TB, prefix, table string, shards int, k rowKey) (shard int, pk string) {
	t.Helper()
	for _, key := range []string{k.row, k.gen, k.fence} {
		if strings.Count(key, "{") != 1 || strings.Count(key, "}") != 1 {
			t.Fatalf("key %q must hold exactly one '{' and one '}'", key)
		}
		if !strings.HasPrefix(key, prefix+":{") {
			t.Fatalf("key %q does not start with %q", key, prefix+":{")
		}
	}
	tag := func(key string) string { return key[strings.IndexByte(key, '{')+1 : strings.IndexByte(key, '}')] }
	if tag(k.row) != tag(k.gen) || tag(k.row) != tag(k.fence) {
		t.Fatalf("row %q, gen %q and fence %q are in different hash slots", k.row, k.gen, k.fence)
	}
	tg := tag(k.row)
	i := strings.LastIndexByte(tg, ':')
	if i < 0 {
		t.Fatalf("hash tag %q has no shard", tg)
	}
	tableEsc := tg[:i]
	if got, err := unescapeKeyPart(tableEsc); err != nil || got != table {
		t.Fatalf("hash tag %q names table %q (%v), want %q", tg, got, err, table)
	}
	if _, err := fmt.Sscan(tg[i+1:], &shard); err != nil || shard < 0 || shard >= shards || fmt.Sprint(shard) != tg[i+1:] {
		t.Fatalf("hash tag %q: shard %q not in [0,%d)", tg, tg[i+1:], shards)
	}
	base := prefix + ":{" + tg + "}"
	if k.gen != base+":g" || k.fence != base+":f" || !strings.HasPrefix(k.row, base+":k:") {
		t.Fatalf("unexpected layout: %q %q %q", k.row, k.gen, k.fence)
	}
	return shard, strings.TrimPrefix(k.row, base+":k:")
}

// splitKeyParts undoes the joining of escaped parts in a row key.
func splitKeyParts(t testing.TB, pk string) []string {
	t.Helper()
	var out []string
	for _, p := range strings.Split(pk, ":") {
		s, err := unescapeKeyPart(p)
		if err != nil {
			t.Fatalf("key part %q: %v", p, err)
		}
		out = append(out, s)
	}
	return out
}

func FuzzKeyEscape(f *testing.F) {
	seeds := [][3]string{
		{"", "", "products"},
		{"a:b", "c", "t"},
		{"a", "b:c", "t"},
		{"%41", "A", "t"},
		{"{tag}", "}{", "we{ird}:table"},
		{"100%", "%", "%"},
		{"ünïcödé 🦊", "中文", "表"},
		{"\x00", "\xff", "t\x00"},
		{"a b", "a+b", "a%20b"},
		{"-._~", "*?[]", "t"},
		{strings.Repeat("x", 300), ":", "t"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, table string) {
		// Output alphabet and round trip.
		for _, s := range []string{a, b, table} {
			esc := string(appendEscaped(nil, s))
			for i := 0; i < len(esc); i++ {
				if c := esc[i]; !isPlainKeyByte(c) && c != '%' {
					t.Fatalf("escape(%q) = %q holds %q", s, esc, c)
				}
			}
			back, err := unescapeKeyPart(esc)
			if err != nil || back != s {
				t.Fatalf("escape(%q) = %q unescapes to %q, %v", s, esc, back, err)
			}
			// Appending keeps what was there.
			if got := string(appendEscaped([]byte("pre"), s)); got != "pre"+esc {
				t.Fatalf("appendEscaped does not append: %q", got)
			}
		}
		// Injective: distinct inputs, distinct outputs.
		if a != b && string(appendEscaped(nil, a)) == string(appendEscaped(nil, b)) {
			t.Fatalf("escape(%q) == escape(%q)", a, b)
		}

		mi := testModelInfo(table)
		for _, shards := range []int{1, 16, 1024} {
			one := mi.key("wt", shards, []string{a})
			two := mi.key("wt", shards, []string{a, b})
			swapped := mi.key("wt", shards, []string{b, a})
			joined := mi.key("wt", shards, []string{a + ":" + b})
			for _, k := range []struct {
				key   rowKey
				parts []string
			}{{one, []string{a}}, {two, []string{a, b}}, {swapped, []string{b, a}}, {joined, []string{a + ":" + b}}} {
				shard, pk := checkKeyShape(t, "wt", table, shards, k.key)
				if got := splitKeyParts(t, pk); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", k.parts) {
					t.Fatalf("key %q holds parts %q, want %q", k.key.row, got, k.parts)
				}
				// Stable: the shard depends on the parts alone.
				if want := int(crc32.ChecksumIEEE([]byte(pk)) % uint32(shards)); shard != want {
					t.Fatalf("shard %d, want %d", shard, want)
				}
				if again := mi.key("wt", shards, k.parts); again.names() != k.key.names() {
					t.Fatalf("key not stable: %+v then %+v", k.key, again)
				}
			}
			// Two parts never collide with one part holding the separator,
			// nor with the same parts in another order.
			if two.row == joined.row {
				t.Fatalf("(%q,%q) and (%q) share key %q", a, b, a+":"+b, two.row)
			}
			if a != b && two.row == swapped.row {
				t.Fatalf("(%q,%q) and (%q,%q) share key %q", a, b, b, a, two.row)
			}
			if two.row == one.row {
				t.Fatalf("(%q,%q) and (%q) share key %q", a, b, a, two.row)
			}
			// The table is part of the key: another table, another key.
			if other := testModelInfo(table+"x").key("wt", shards, []string{a}); other.row == one.row {
				t.Fatalf("tables %q and %q share key %q", table, table+"x", one.row)
			}
		}
	})
}

func TestCompositeKeysDoNotCollide(t *testing.T) {
	mi := testModelInfo("orders")
	pairs := [][2][]string{
		{{"a:b", "c"}, {"a", "b:c"}},
		{{"a%3Ab", "c"}, {"a:b", "c"}},
		{{"", "a"}, {"a", ""}},
		{{"", ""}, {""}},
		{{":"}, {"", ""}},
		{{"1", "23"}, {"12", "3"}},
	}
	for _, p := range pairs {
		k1, k2 := mi.key("wt", 16, p[0]), mi.key("wt", 16, p[1])
		require.NotEqual(t, k1.row, k2.row, "%q and %q", p[0], p[1])
	}
}

func TestKeyLayoutIsStable(t *testing.T) {
	// Every process sharing a Redis must compute the same keys; a change
	// here strands every cached entry and, worse, lets two versions of the
	// plugin fence different keys for one row during a rolling deploy.
	//
	// The table part is the database's identity and the table as the
	// database resolves it (issue 12: one table under two names, two
	// databases on one Redis); it was the bare table name before.
	p := New(nil, Config{})
	p.resolver = &tableResolver{dialect: "postgres", id: "postgres.test", schema: "public"}
	p.resolver.found.Store("products", "public")
	mi := &modelInfo{tableEsc: p.tableKey(p.modelTable("products"))}
	require.Equal(t, [3]string{
		"wt:{postgres.test:public.products:8}:k:42",
		"wt:{postgres.test:public.products:8}:g",
		"wt:{postgres.test:public.products:8}:f",
	}, mi.key("wt", 16, []string{"42"}).names())
	require.Equal(t, mi.tableEsc, p.tableKey(p.modelTable("public.products")), "both spellings name one table")
	gen, fence := mi.shardKeys("wt", 7)
	require.Equal(t, "wt:{postgres.test:public.products:7}:g", gen)
	require.Equal(t, "wt:{postgres.test:public.products:7}:f", fence)

	my := New(nil, Config{})
	my.resolver = &tableResolver{dialect: "mysql", id: "mysql", schema: "shop"}
	require.Equal(t, "wt:{mysql:shop.products:8}:k:42", (&modelInfo{tableEsc: my.tableKey(my.modelTable("products"))}).key("wt", 16, []string{"42"}).row)

	lite := New(nil, Config{})
	lite.resolver = &tableResolver{dialect: "sqlite", id: "sqlite.0badcafe", schema: "main", fold: true}
	require.Equal(t, "app:{sqlite.0badcafe:main.my%20table:0}:k:a%3Ab:%7Bx%7D",
		(&modelInfo{tableEsc: lite.tableKey(lite.modelTable("My Table"))}).key("app", 1, []string{"a:b", "{x}"}).row)

	named := New(nil, Config{})
	named.resolver = &tableResolver{dialect: "postgres", id: string(appendEscaped(nil, "replicas:1")), schema: "public"}
	require.Equal(t, "wt:{replicas%3A1:app.products:8}:k:42", (&modelInfo{tableEsc: named.tableKey(named.modelTable("app.products"))}).key("wt", 16, []string{"42"}).row)
}

func TestKeysSpreadOverShards(t *testing.T) {
	mi := testModelInfo("products")
	seen := map[int]int{}
	for i := 0; i < 1600; i++ {
		shard, _ := checkKeyShape(t, "wt", "products", 16, mi.key("wt", 16, []string{fmt.Sprint(i)}))
		seen[shard]++
	}
	require.Len(t, seen, 16, "every shard gets keys")
	for s, n := range seen {
		require.Greater(t, n, 50, "shard %d has only %d of 1600 keys", s, n)
	}
}

type myInt int32

// testUUID is a uuid stored as its text form, the way uuid libraries do.
type testUUID [16]byte

func (u testUUID) Value() (driver.Value, error) {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

func (u *testUUID) Scan(v any) error { return errors.New("not needed here") }

// failingValuer fails, and selfValuer returns itself forever.
type failingValuer struct{}

func (failingValuer) Value() (driver.Value, error) { return nil, errors.New("no value") }

type selfValuer struct{}

func (s selfValuer) Value() (driver.Value, error) { return s, nil }

func TestKeyPart(t *testing.T) {
	s, err := schema.Parse(&KeyPartKinds{}, &sync.Map{}, schema.NamingStrategy{})
	require.NoError(t, err)
	field := func(name string) *schema.Field {
		f := s.LookUpField(name)
		require.NotNil(t, f, name)
		return f
	}
	seven := int64(7)
	var nilInt *int64
	uuid := testUUID{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8}
	const ok, refused = true, false
	cases := []struct {
		field string
		v     any
		want  string
		ok    bool
	}{
		// Integers, whatever Go type names them, are one decimal spelling.
		{"I", 1, "1", ok},
		{"I", int8(-5), "-5", ok},
		{"I", int16(300), "300", ok},
		{"I", int32(-70000), "-70000", ok},
		{"I", int64(math.MinInt64), "-9223372036854775808", ok},
		{"I", uint(1), "1", ok},
		{"I", uint8(255), "255", ok},
		{"I64", int64(math.MaxInt64), "9223372036854775807", ok},
		{"I8", int64(-128), "-128", ok},
		{"I16", "42", "42", ok},
		{"I32", myInt(9), "9", ok},
		{"U", uint64(1), "1", ok},
		{"U8", uint8(0), "0", ok},
		{"U16", uint16(65535), "65535", ok},
		{"U32", uint32(math.MaxUint32), "4294967295", ok},
		{"U64", uint64(math.MaxUint64), "18446744073709551615", ok},
		{"MyI", 12, "12", ok},
		{"PI", 5, "5", ok},
		{"I", &seven, "7", ok},
		{"I", "-3", "-3", ok},
		// Other spellings of an integer would match the row in the
		// database but name another key: refused, the database answers.
		{"I", "01", "", refused},
		{"I", " 1", "", refused},
		{"I", "1 ", "", refused},
		{"I", "+1", "", refused},
		{"I", "-0", "", refused},
		{"I", "1e3", "", refused},
		{"I", "0x10", "", refused},
		{"I", "", "", refused},
		{"I", "abc", "", refused},
		{"I", 1.0, "", refused},
		{"I", float32(2), "", refused},
		{"I", true, "", refused},
		{"I", []byte("1"), "", refused},
		{"U64", "18446744073709551615", "", refused}, // beyond int64 as text: not cached, not wrong
		// Strings and bytes are taken as they are.
		{"S", "abc", "abc", ok},
		{"S", "a:b{c}%", "a:b{c}%", ok},
		{"S", "", "", ok},
		{"S", []byte("raw"), "raw", ok},
		{"S", uuid, "12345678-9abc-def0-0102-030405060708", ok},
		{"S", &uuid, "12345678-9abc-def0-0102-030405060708", ok},
		{"UUID", uuid, "12345678-9abc-def0-0102-030405060708", ok},
		{"UUID", "12345678-9abc-def0-0102-030405060708", "12345678-9abc-def0-0102-030405060708", ok},
		{"B", []byte{0, 1, 0xff}, "\x00\x01\xff", ok},
		{"B", "text", "text", ok},
		{"S", 1, "", refused}, // text = 1 is numeric (MySQL) or an error (Postgres)
		{"S", uint64(1), "", refused},
		{"S", 3.5, "", refused},
		{"S", true, "", refused},
		{"F", 1.5, "", refused},
		// Nothing to key on.
		{"I", nil, "", refused},
		{"S", nil, "", refused},
		{"PI", nilInt, "", refused},
		{"UUID", (*testUUID)(nil), "", refused},
		{"S", failingValuer{}, "", refused},
		{"S", selfValuer{}, "", refused},
		{"S", struct{ X int }{1}, "", refused},
		{"S", []string{"a"}, "", refused},
	}
	for _, c := range cases {
		got, gotOK := keyPart(field(c.field), c.v)
		require.Equal(t, c.ok, gotOK, "keyPart(%s, %T %#v)", c.field, c.v, c.v)
		if c.ok {
			require.Equal(t, c.want, got, "keyPart(%s, %T %#v)", c.field, c.v, c.v)
		}
	}
}

func TestKeyPartSpellingsNameOneKey(t *testing.T) {
	// Where("id = ?", 1), Where("id = ?", int64(1)), Where("id = ?", "1")
	// and a uint field set to 1 must all read and fence the same key.
	s, err := schema.Parse(&KeyPartKinds{}, &sync.Map{}, schema.NamingStrategy{})
	require.NoError(t, err)
	mi := testModelInfo("t")
	var keys []string
	for _, f := range []string{"I", "I64", "U", "U64", "MyI"} {
		for _, v := range []any{1, int64(1), uint8(1), "1", myInt(1)} {
			part, ok := keyPart(s.LookUpField(f), v)
			require.True(t, ok, "%s %T", f, v)
			keys = append(keys, mi.key("wt", 16, []string{part}).row)
		}
	}
	for _, k := range keys {
		require.Equal(t, keys[0], k)
	}
}

func TestPlainValue(t *testing.T) {
	seven := 7
	var nilPtr *int
	at := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	cases := []struct {
		in   any
		want any
		ok   bool
	}{
		{nil, nil, true},
		{int8(-1), int64(-1), true},
		{uint16(1), uint64(1), true},
		{myInt(3), int64(3), true},
		{float32(1.5), 1.5, true},
		{true, true, true},
		{"s", "s", true},
		{[]byte{}, []byte{}, true},
		{[]byte{0}, []byte{0}, true},
		{[]byte(nil), nil, true}, // NULL, as database/sql sees it
		{at, at, true},
		{&seven, int64(7), true},
		{nilPtr, nil, true},
		{sql.NullString{}, nil, true},
		{sql.NullString{String: "", Valid: true}, "", true},
		{testUUID{1}, "01000000-0000-0000-0000-000000000000", true},
		{failingValuer{}, nil, false},
		{selfValuer{}, nil, false},
		{map[string]int{}, nil, false},
		{[]string{"a"}, nil, false},
	}
	for _, c := range cases {
		got, ok := plainValue(c.in)
		require.Equal(t, c.ok, ok, "plainValue(%T %#v)", c.in, c.in)
		if !c.ok {
			continue
		}
		require.Equal(t, c.want, got, "plainValue(%T %#v)", c.in, c.in)
		if b, isBytes := c.want.([]byte); isBytes {
			require.Equal(t, b == nil, got.([]byte) == nil, "nil vs empty")
		}
	}
}

// names is a key's three Redis key names, for comparing keys in tests.
func (k rowKey) names() [3]string { return [3]string{k.row, k.gen, k.fence} }
