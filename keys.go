package writethrough

import (
	"database/sql/driver"
	"hash/crc32"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm/schema"
)

// Key layout. Every key of a table lives in one of TableShards Redis Cluster
// hash slots, named by the hash tag {table:shard}; the row keys of a shard and
// the two keys that invalidate the whole shard at once share that slot, so a
// script may touch all three and still run unchanged on Redis Cluster:
//
//	<prefix>:{<table>:<shard>}:k:<pk>[:<pk>...]  one row (value, lease, fence)
//	<prefix>:{<table>:<shard>}:g                 the shard's generation
//	<prefix>:{<table>:<shard>}:f                 the shard's table-level fence
//
// The table name and every key value are escaped (see appendEscaped), so no
// two rows share a key whatever their keys contain, and no key value can open
// a hash tag of its own. The schema fingerprint is not part of the key but of
// the entry: two binaries with different layouts of the same table then fence
// the same key on writes, and merely refuse to decode each other's entries.

// rowKey names one row's entry and the shard keys that guard it.
type rowKey struct {
	row   string // the row's entry
	gen   string // the shard's generation counter
	fence string // the shard's table-level fence
	// shard, when set, holds gen and fence boxed once for command arguments.
	shard *shardKey
}

// appendEscaped appends s so that the result holds only [A-Za-z0-9._-] and
// '%', with every other byte written as %XX. It is injective, and since ':',
// '{' and '}' are always escaped, an escaped part never splits a key or opens
// a Redis hash tag.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isPlainKeyByte(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hex[c>>4], hex[c&15])
	}
	return dst
}

func isPlainKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// keyRef is a row key with the primary-key values it was built from, which
// are used to read the row back.
type keyRef struct {
	key  rowKey
	vals []any
}

// dedupe drops repeated keys from refs, keeping the first of each.
func dedupe(refs []keyRef) []keyRef {
	if len(refs) < 2 {
		return refs
	}
	seen := make(map[string]bool, len(refs))
	out := refs[:0]
	for _, r := range refs {
		if !seen[r.key.row] {
			seen[r.key.row] = true
			out = append(out, r)
		}
	}
	return out
}

// tableShard names one shard of a table for a table-level write: its
// generation and fence keys.
type tableShard struct{ gen, fence string }

// allShards lists the table's shards, for a table-level write.
func (mi *modelInfo) allShards(p *Plugin) []tableShard {
	out := make([]tableShard, p.cfg.TableShards)
	for i := range out {
		out[i].gen, out[i].fence = mi.shardKeys(p.cfg.Prefix, i)
	}
	return out
}

// genKeys names the generation keys of table shards; the invalidation
// queue bumps them when a table-level fence could not be taken.
func genKeys(tables []tableShard) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = t.gen
	}
	return out
}

// isGenKey reports whether k is a shard's generation key rather than a row
// key. Row keys never end so: '}' in a key value is escaped.
func isGenKey(k string) bool { return strings.HasSuffix(k, "}:g") }

// shardKeys builds the generation and fence keys of one shard of a table.
func (mi *modelInfo) shardKeys(prefix string, shard int) (gen, fence string) {
	k := mi.shard(prefix, shard)
	return k.gen, k.fence
}

// shardKey holds the keys of one shard of a table: the prefix of its row
// keys, its generation and its fence, the last two also as command
// arguments (a string put in an interface is copied to the heap: this is
// done once per shard rather than once per read).
type shardKey struct {
	base, gen, fence string
	genArg, fenceArg any
}

// buildShards fills the model's table of shard keys, so that naming a row
// does not build its shard's three keys again on every read.
func (mi *modelInfo) buildShards(prefix string, shards int) {
	mi.shardPrefix = prefix
	mi.shards = make([]shardKey, shards)
	for i := range mi.shards {
		mi.shards[i] = mi.newShardKey(prefix, i)
	}
}

// shard returns the keys of one shard, from the table buildShards made
// when it was made for this prefix.
func (mi *modelInfo) shard(prefix string, shard int) *shardKey {
	if shard < len(mi.shards) && mi.shardPrefix == prefix {
		return &mi.shards[shard]
	}
	k := mi.newShardKey(prefix, shard)
	return &k
}

func (mi *modelInfo) newShardKey(prefix string, shard int) shardKey {
	base := mi.shardBase(prefix, shard)
	k := shardKey{base: base, gen: base + ":g", fence: base + ":f"}
	k.genArg, k.fenceArg = k.gen, k.fence
	return k
}

func (mi *modelInfo) shardBase(prefix string, shard int) string {
	b := make([]byte, 0, len(prefix)+len(mi.tableEsc)+12)
	b = append(b, prefix...)
	b = append(b, ":{"...)
	b = append(b, mi.tableEsc...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(shard), 10)
	b = append(b, '}')
	return string(b)
}

// key builds the keys of the row whose primary-key parts are parts (already
// canonical, see keyPart).
func (mi *modelInfo) key(prefix string, shards int, parts []string) rowKey {
	var buf [64]byte
	pk := buf[:0]
	for i, part := range parts {
		if i > 0 {
			pk = append(pk, ':')
		}
		pk = appendEscaped(pk, part)
	}
	shard := int(crc32IEEE(pk) % uint32(shards))
	sk := mi.shard(prefix, shard)
	var row strings.Builder
	row.Grow(len(sk.base) + len(":k:") + len(pk))
	row.WriteString(sk.base)
	row.WriteString(":k:")
	row.Write(pk)
	return rowKey{row: row.String(), gen: sk.gen, fence: sk.fence, shard: sk}
}

// crc32IEEE is crc32.ChecksumIEEE, which the compiler cannot prove keeps no
// reference to its argument (it dispatches through a function variable), so
// calling it would move key's stack buffer to the heap.
func crc32IEEE(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc = crc32.IEEETable[byte(crc)^c] ^ (crc >> 8)
	}
	return ^crc
}

// keyPart turns a primary-key value (from a condition or a model) into the
// canonical text the key is built from. It reports false when the value
// cannot be matched to the field reliably; the caller then does not use the
// cache. Integers are written in decimal whatever their Go type, so that
// Where("id = ?", int64(1)), Where("id = ?", "1") and a uint field all name
// the same row.
func keyPart(field *schema.Field, v any) (string, bool) {
	v, ok := plainValue(v)
	if !ok || v == nil {
		return "", false
	}
	switch fieldKind(field) {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		switch x := v.(type) {
		case int64:
			return strconv.FormatInt(x, 10), true
		case uint64:
			return strconv.FormatUint(x, 10), true
		case string:
			// Only canonical decimals: "01" or " 1" would match row 1 in the
			// database but name another key here.
			if n, err := strconv.ParseInt(x, 10, 64); err == nil && strconv.FormatInt(n, 10) == x {
				return x, true
			}
		}
		return "", false
	case reflect.String:
		// Only text: the database compares a text column with a number
		// as numbers (MySQL: "01" = 1) or not at all (Postgres), so the
		// key "1" would name neither answer.
		switch x := v.(type) {
		case string:
			return x, true
		case []byte:
			return string(x), true
		}
		return "", false
	default:
		switch x := v.(type) {
		case string:
			return x, true
		case []byte:
			return string(x), true
		}
		if fieldKind(field) == reflect.String || field.DataType == schema.String {
			// A number against a text column: MySQL compares numerically
			// (both "1" and "01" equal 1), Postgres refuses it. It names
			// no single key.
			return "", false
		}
		switch x := v.(type) {
		case int64:
			return strconv.FormatInt(x, 10), true
		case uint64:
			return strconv.FormatUint(x, 10), true
		}
		return "", false
	}
}

// fieldKind is the kind of a field's type with pointers removed.
func fieldKind(field *schema.Field) reflect.Kind {
	t := field.FieldType
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind()
}

// plainValue reduces v to one of nil, int64, uint64, float64, bool, []byte,
// string or time.Time: pointers are followed, driver.Valuer is called, and
// named basic types are converted. It reports false for anything else.
func plainValue(v any) (any, bool) {
	for i := 0; i < 8; i++ { // bounded: a Valuer returning itself must not loop
		switch x := v.(type) {
		case nil:
			return nil, true
		case []byte:
			if x == nil {
				// A nil []byte is NULL to database/sql and to every driver;
				// kept as bytes it would come back as an empty, non-nil
				// slice where a database read gives nil.
				return nil, true
			}
			return x, true
		case int64, uint64, float64, bool, string, time.Time:
			return x, true
		case int:
			return int64(x), true
		case int32:
			return int64(x), true
		case uint:
			return uint64(x), true
		case uint32:
			return uint64(x), true
		case driver.Valuer:
			if rv := reflect.ValueOf(x); rv.Kind() == reflect.Pointer && rv.IsNil() {
				return nil, true
			}
			dv, err := x.Value()
			if err != nil {
				return nil, false
			}
			v = dv
			continue
		}
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Pointer:
			if rv.IsNil() {
				return nil, true
			}
			v = rv.Elem().Interface()
			continue
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return rv.Int(), true
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			return rv.Uint(), true
		case reflect.Float32, reflect.Float64:
			return rv.Float(), true
		case reflect.Bool:
			return rv.Bool(), true
		case reflect.String:
			return rv.String(), true
		case reflect.Slice:
			if rv.Type().Elem().Kind() == reflect.Uint8 {
				return rv.Bytes(), true
			}
		}
		return nil, false
	}
	return nil, false
}
