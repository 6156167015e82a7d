package writethrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// CacheTTLer is implemented by models that choose their own cache lifetime,
// the way TableName chooses a table:
//
//	func (Product) CacheTTL() time.Duration { return 10 * time.Minute }
//
// Returning NoCache keeps the model out of the cache entirely: its reads
// always go to the database and its writes touch no key. Returning 0 keeps
// Config.TTL. The method is called once per model type, on its zero value.
type CacheTTLer interface {
	CacheTTL() time.Duration
}

// NoCache, returned by CacheTTL, opts a model out of caching.
const NoCache time.Duration = -1

// ttlOverride is a model's own TTL, or zero for Config.TTL.
type ttlOverride struct{ ttl time.Duration }

// modelInfo is what the plugin derives once per schema.
type modelInfo struct {
	schema   *schema.Schema
	cached   bool   // false: no primary key, opted out, or a field that cannot be stored
	reason   string // why not cached, for the debug log
	ttl      ttlOverride
	table    string          // the table as the database resolves it (identity.go)
	tableEsc string          // the table part of its keys: database and table, escaped
	fields   []*schema.Field // the fields an entry stores, in order
	pks      []*schema.Field
	intKeys  bool   // every key part is an integer: absences may be cached safely
	fp       string // fingerprint of the layout, part of every entry
	fpArg    any    // fp boxed once, as a command argument
	// shards holds the keys of every shard of the table, built once for
	// shardPrefix (Config.Prefix); see shard.
	shards      []shardKey
	shardPrefix string

	// scans says, per stored field, how a database read hands it its
	// column (see scanMode); decode goes the same way.
	scans []scanMode
	// textAsBytes: the driver returns text columns as []byte (MySQL), so
	// a Scanner is given []byte from the cache too.
	textAsBytes bool
	// pkPos holds, per primary-key field, its index in fields, so a decoded
	// entry's key can be checked against the key it was read under.
	pkPos []int
}

// models caches modelInfo per schema.
type models struct{ m sync.Map }

func (p *Plugin) model(s *schema.Schema) *modelInfo {
	if v, ok := p.models.m.Load(s); ok {
		return v.(*modelInfo)
	}
	mi := p.newModelInfo(s)
	v, _ := p.models.m.LoadOrStore(s, mi)
	return v.(*modelInfo)
}

func (p *Plugin) newModelInfo(s *schema.Schema) *modelInfo {
	mi := &modelInfo{schema: s, table: p.modelTable(s.Table)}
	mi.tableEsc = p.tableKey(mi.table)
	// Cached or not, the model's foreign-key actions may write cached tables.
	p.fks.learn(s, p.modelTable)
	if t, ok := reflect.New(s.ModelType).Interface().(CacheTTLer); ok {
		switch d := t.CacheTTL(); {
		case d < 0:
			mi.reason = "opted out with CacheTTL"
			return mi
		case d > 0:
			mi.ttl.ttl = d
			p.noteEntryTTL(d)
		}
	}
	if len(s.PrimaryFields) == 0 {
		mi.reason = "no primary key"
		return mi
	}
	mi.pks = s.PrimaryFields
	mi.intKeys = true
	for _, f := range mi.pks {
		switch fieldKind(f) {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		default:
			mi.intKeys = false
		}
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|", p.cfg.Codec.Name(), mi.table)
	mi.pkPos = make([]int, len(mi.pks))
	stored := 0
	for _, f := range s.Fields {
		if f.DBName == "" || !f.Readable {
			continue
		}
		for i, pk := range mi.pks {
			if pk == f {
				mi.pkPos[i] = len(mi.fields)
				stored++
			}
		}
		mi.fields = append(mi.fields, f)
		mi.scans = append(mi.scans, scanModeOf(f))
		fmt.Fprintf(h, "%s %s %s %s|", f.DBName, f.DataType, f.FieldType, f.TagSettings["SERIALIZER"])
	}
	if stored != len(mi.pks) {
		mi.reason = "a primary-key field is not stored"
		return mi
	}
	mi.textAsBytes = p.db != nil && p.db.Dialector.Name() == "mysql"
	mi.fp = fmt.Sprintf("%016x", h.Sum64())[:fingerprintLen]
	mi.fpArg = mi.fp
	mi.buildShards(p.cfg.Prefix, p.cfg.TableShards)
	mi.cached = true
	return mi
}

// fingerprintLen is the length of the layout fingerprint in an entry.
const fingerprintLen = 8

// keyOf returns the key of the row rv (a struct, or a pointer to one), and
// false when its primary key is not set.
func (mi *modelInfo) keyOf(ctx context.Context, p *Plugin, rv reflect.Value) (rowKey, bool) {
	parts := make([]string, len(mi.pks))
	for i, f := range mi.pks {
		v, zero := f.ValueOf(ctx, rv)
		if zero {
			return rowKey{}, false
		}
		part, ok := keyPart(f, v)
		if !ok {
			return rowKey{}, false
		}
		parts[i] = part
	}
	return mi.key(p.cfg.Prefix, p.cfg.TableShards, parts), true
}

// values returns the stored fields of rv as plain values (see plainValue).
func (mi *modelInfo) values(ctx context.Context, rv reflect.Value, dst []any) ([]any, error) {
	for _, f := range mi.fields {
		v, _ := f.ValueOf(ctx, rv)
		pv, ok := plainValue(v)
		if !ok {
			return nil, fmt.Errorf("writethrough: %s.%s: cannot store a %T", mi.schema.Name, f.Name, v)
		}
		dst = append(dst, pv)
	}
	return dst, nil
}

// set writes values into the stored fields of rv the way a database read
// does (see setField), so Scanner and serializer fields behave as on a
// database read.
func (mi *modelInfo) set(ctx context.Context, rv reflect.Value, values []any) error {
	for i, f := range mi.fields {
		if err := setField(ctx, f, mi.scans[i], mi.textAsBytes, rv, values[i]); err != nil {
			return fmt.Errorf("writethrough: %s.%s: %w", mi.schema.Name, f.Name, err)
		}
	}
	return nil
}

// scanMode is how GORM's scan of a row hands a field its column: it scans
// the column into a value from the field's NewValuePool (database/sql then
// calls that value's Scanner, or for a pointer to a Scanner type allocates
// one unless the column is NULL) and passes that value to the field's
// setter. Fields whose pool value is no Scanner get the column itself.
type scanMode uint8

const (
	scanNone     scanMode = iota // the setter takes the column value
	scanDirect                   // the pool value is a sql.Scanner (serializers too)
	scanIndirect                 // the pool value is **T and *T is a sql.Scanner
)

var scannerType = reflect.TypeFor[sql.Scanner]()

func scanModeOf(f *schema.Field) scanMode {
	sv := f.NewValuePool.Get()
	defer f.NewValuePool.Put(sv)
	if _, ok := sv.(sql.Scanner); ok {
		return scanDirect
	}
	if t := reflect.TypeOf(sv); t != nil && t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Pointer && t.Elem().Implements(scannerType) {
		return scanIndirect
	}
	return scanNone
}

// setField sets one field from a column value as GORM's scan would (see
// scanMode). Handing a Scanner type's column to the field's setter instead
// would be wrong: the setter of a type Celsius float64 parses the text
// "21.50C" as a float and fails, that of a bool type reads "Y" as false,
// and a serializer's setter takes a bare value for the field's Go value.
// The Scanner is given text as the driver returns it ([]byte on MySQL).
func setField(ctx context.Context, f *schema.Field, mode scanMode, textAsBytes bool, rv reflect.Value, v any) error {
	if mode == scanNone {
		return f.Set(ctx, rv, v)
	}
	if s, ok := v.(string); ok && textAsBytes {
		v = []byte(s)
	}
	if mode == scanIndirect {
		if v == nil {
			return f.Set(ctx, rv, nil)
		}
		ptr := reflect.New(f.IndirectFieldType)
		if err := ptr.Interface().(sql.Scanner).Scan(v); err != nil {
			return err
		}
		return f.Set(ctx, rv, ptr.Interface())
	}
	sv := f.NewValuePool.Get()
	defer f.NewValuePool.Put(sv)
	if err := sv.(sql.Scanner).Scan(v); err != nil {
		return err
	}
	return f.Set(ctx, rv, sv)
}

// modelOf parses a model's schema the way the *gorm.DB the plugin is
// installed on does.
func (p *Plugin) modelOf(model any) (*modelInfo, error) {
	if p.db == nil {
		return nil, fmt.Errorf("writethrough: the plugin is not installed (db.Use)")
	}
	stmt := &gorm.Statement{DB: p.db}
	if err := stmt.Parse(model); err != nil {
		return nil, fmt.Errorf("writethrough: %T: %w", model, err)
	}
	return p.model(stmt.Schema), nil
}

// encode turns a row into a sealed entry.
func (p *Plugin) encode(ctx context.Context, mi *modelInfo, row reflect.Value) ([]byte, error) {
	buf := getValues(len(mi.fields))
	defer putValues(buf)
	values, err := mi.values(ctx, row, (*buf)[:0])
	if err != nil {
		return nil, err
	}
	limit := p.cfg.MaxEntryBytes
	if limit > 0 && textBytes(values) > limit {
		// Known too large before paying for the encoding.
		p.stats.oversized.Add(1)
		return nil, errEntryTooLarge
	}
	b, err := p.cfg.Codec.Append(make([]byte, 0, 64+16*len(values)), values)
	if err != nil {
		return nil, err
	}
	b = sealEntry(b)
	if limit > 0 && len(b) > limit {
		p.stats.oversized.Add(1)
		return nil, errEntryTooLarge
	}
	return b, nil
}

// errEntryTooLarge: a row's entry would exceed Config.MaxEntryBytes; the
// row is not cached.
var errEntryTooLarge = errors.New("writethrough: row exceeds Config.MaxEntryBytes; not cached")

// textBytes is the size of the text and byte values among values, a lower
// bound of any encoding's size.
func textBytes(values []any) int {
	n := 0
	for _, v := range values {
		switch x := v.(type) {
		case string:
			n += len(x)
		case []byte:
			n += len(x)
		}
	}
	return n
}

// values buffers are pooled: the hit path decodes into them and GORM's
// setters copy out.
var valuesPool = sync.Pool{New: func() any { s := make([]any, 0, 16); return &s }}

func getValues(n int) *[]any {
	b := valuesPool.Get().(*[]any)
	if cap(*b) < n {
		*b = make([]any, 0, n)
	}
	return b
}

func putValues(b *[]any) {
	clear((*b)[:cap(*b)])
	*b = (*b)[:0]
	valuesPool.Put(b)
}

// keyMatches reports whether the primary key of a decoded entry is the key
// the entry was read under (row, a row key of this model). An entry copied
// from another row's key would otherwise be served as this row. It compares
// the escaped canonical text of each decoded key value with the key's
// parts in place, without building a key.
func (mi *modelInfo) keyMatches(row string, values []any) bool {
	i := strings.Index(row, "}:k:")
	if i < 0 {
		return false
	}
	rest := row[i+len("}:k:"):]
	var num [24]byte
	for j, pos := range mi.pkPos {
		if j > 0 {
			if rest == "" || rest[0] != ':' {
				return false
			}
			rest = rest[1:]
		}
		var ok bool
		switch x := values[pos].(type) {
		case int64:
			rest, ok = cutEscaped(rest, strconv.AppendInt(num[:0], x, 10))
		case uint64:
			rest, ok = cutEscaped(rest, strconv.AppendUint(num[:0], x, 10))
		case string:
			rest, ok = cutEscaped(rest, x)
		case []byte:
			rest, ok = cutEscaped(rest, x)
		}
		if !ok {
			return false
		}
	}
	return rest == ""
}

// cutEscaped reports whether key starts with s as appendEscaped writes it,
// and returns what follows.
func cutEscaped[T string | []byte](key string, s T) (string, bool) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isPlainKeyByte(c) {
			if key == "" || key[0] != c {
				return "", false
			}
			key = key[1:]
			continue
		}
		if len(key) < 3 || key[0] != '%' || key[1] != hex[c>>4] || key[2] != hex[c&15] {
			return "", false
		}
		key = key[3:]
	}
	return key, true
}
