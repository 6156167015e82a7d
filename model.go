package writethrough

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"reflect"
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
	if t, ok := reflect.New(s.ModelType).Interface().(CacheTTLer); ok {
		switch d := t.CacheTTL(); {
		case d < 0:
			mi.reason = "opted out with CacheTTL"
			return mi
		case d > 0:
			mi.ttl.ttl = d
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
	for _, f := range s.Fields {
		if f.DBName == "" || !f.Readable {
			continue
		}
		mi.fields = append(mi.fields, f)
		fmt.Fprintf(h, "%s %s %s %s|", f.DBName, f.DataType, f.FieldType, f.TagSettings["SERIALIZER"])
	}
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

// set writes values into the stored fields of rv, through GORM's own
// setters, so Scanner and serializer fields behave as on a database read.
func (mi *modelInfo) set(ctx context.Context, rv reflect.Value, values []any) error {
	for i, f := range mi.fields {
		if err := setField(ctx, f, rv, values[i]); err != nil {
			return fmt.Errorf("writethrough: %s.%s: %w", mi.schema.Name, f.Name, err)
		}
	}
	return nil
}

// setField sets one field from a column value. A serializer field's setter
// decodes the column only when it comes wrapped in the field's own scanner,
// as GORM's rows.Scan leaves it; a bare value would be taken for the
// field's Go value (and a JSON text does not fit a map).
func setField(ctx context.Context, f *schema.Field, rv reflect.Value, v any) error {
	if f.Serializer == nil {
		return f.Set(ctx, rv, v)
	}
	sv := f.NewValuePool.Get()
	defer f.NewValuePool.Put(sv)
	sc, ok := sv.(sql.Scanner)
	if !ok {
		return f.Set(ctx, rv, v)
	}
	if err := sc.Scan(v); err != nil {
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
	b, err := p.cfg.Codec.Append(make([]byte, 0, 64+16*len(values)), values)
	if err != nil {
		return nil, err
	}
	return sealEntry(b), nil
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
