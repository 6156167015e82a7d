package writethrough

import (
	"cmp"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// This file decides which statements are pure primary-key lookups. It is
// deliberately narrow: a statement is served from the cache only when every
// clause in it is understood, and anything else goes to the database
// untouched.

// lookup is a statement the cache can answer.
type lookup struct {
	mi    *modelInfo
	refs  []keyRef
	ints  []int64 // the keys as integers, when intKeys (for ordering)
	one   bool    // the destination is a single struct
	limit bool    // LIMIT 1: at most one row is returned
	desc  bool    // ORDER BY the primary key DESC (Last)
	// complete is true when the database would return every existing row
	// of refs, so a key missing from its answer does not exist.
	complete bool
}

// planLookup fills lk for a query statement the cache can answer, and
// reports false when the statement must go to the database. The caller keeps
// lk on its stack.
func (p *Plugin) planLookup(db *gorm.DB, lk *lookup) bool {
	stmt := db.Statement
	// DryRun (and ToSQL) only builds the SQL: no answer, so nothing to
	// serve, and an empty result that must not be cached as "not found".
	if db.DryRun || stmt.Schema == nil || stmt.SQL.Len() > 0 || stmt.Unscoped || stmt.Distinct || !ownTable(stmt) ||
		len(stmt.Selects) > 0 || len(stmt.Omits) > 0 || len(stmt.Joins) > 0 ||
		inTransaction(stmt.ConnPool) {
		return false
	}
	if isInternal(stmt) {
		return false
	}
	mi := p.model(stmt.Schema)
	if !mi.cached {
		return false
	}
	*lk = lookup{mi: mi}

	// The destination: a struct of the model, or a slice of them.
	rv := stmt.ReflectValue
	switch rv.Kind() {
	case reflect.Struct:
		if rv.Type() != mi.schema.ModelType {
			return false
		}
		lk.one = true
	case reflect.Slice:
		et := rv.Type().Elem()
		if et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		if et != mi.schema.ModelType {
			return false
		}
	default:
		return false
	}
	if _, ok := stmt.Dest.(map[string]any); ok {
		return false
	}

	var pins pkPins
	pins.vals = make([][]any, len(mi.pks))
	ordered := false
	for name, c := range stmt.Clauses {
		switch name {
		case "WHERE":
			where, ok := c.Expression.(clause.Where)
			if !ok || !pins.addAll(p, mi, stmt, where.Exprs, true) {
				return false
			}
		case "LIMIT":
			l, ok := c.Expression.(clause.Limit)
			if !ok || l.Offset != 0 || l.Limit == nil || *l.Limit != 1 {
				return false
			}
			lk.limit = true
		case "ORDER BY":
			ob, ok := c.Expression.(clause.OrderBy)
			if !ok || ob.Expression != nil || len(ob.Columns) != 1 {
				return false
			}
			col := ob.Columns[0]
			if col.Reorder || !ordersByKey(mi, stmt, col.Column) {
				return false
			}
			lk.desc, ordered = col.Desc, true
		default:
			return false
		}
	}
	// A destination with its key set is a condition too (GORM adds it).
	if lk.one {
		for i, f := range mi.pks {
			if fieldIsZero(f, rv) {
				continue // the usual First(&fresh, id): nothing to box
			}
			if v, zero := f.ValueOf(stmt.Context, rv); !zero {
				if !pins.add(mi, i, []any{v}) {
					return false
				}
			}
		}
	}
	if pins.other {
		return false
	}
	refs, ok := pins.refs(p, mi)
	if !ok || len(refs) == 0 {
		return false
	}
	lk.refs = refs
	lk.complete = len(refs) == 1 || (!lk.one && !lk.limit)
	if len(refs) > 1 {
		// Several rows: the order (and, with LIMIT 1, the row) depends on the
		// primary key's order, which is only certain for integers.
		if !mi.intKeys || len(mi.pks) != 1 {
			if lk.one || lk.limit || ordered {
				return false
			}
			lk.sortParts()
		} else {
			if (lk.one || lk.limit) && !ordered {
				return false // Take over several ids: the database picks any
			}
			if !lk.sortInts() {
				return false
			}
		}
	}
	return true
}

// fieldIsZero reports what field.ValueOf reports as zero, without boxing
// the value into an interface (which allocates).
func fieldIsZero(f *schema.Field, rv reflect.Value) bool {
	v := reflect.Indirect(rv)
	for _, i := range f.StructField.Index {
		if i >= 0 {
			v = v.Field(i)
			continue
		}
		v = v.Field(-i - 1) // an embedded pointer
		if v.IsNil() {
			return true
		}
		v = v.Elem()
	}
	return v.IsZero()
}

// ordersByKey reports whether an ORDER BY column is the primary key, as
// First and Last write it. With a composite key GORM orders by one of its
// columns only; that is harmless for one row, and several rows of a
// composite key are not served when ordered (see planLookup).
func ordersByKey(mi *modelInfo, stmt *gorm.Statement, col clause.Column) bool {
	if len(mi.pks) == 1 {
		return pkIndex(mi, stmt, col) == 0
	}
	if col.Name == clause.PrimaryKey && !col.Raw && col.Alias == "" {
		return col.Table == "" || col.Table == clause.CurrentTable || col.Table == stmt.Table
	}
	return pkIndex(mi, stmt, col) >= 0
}

// sortParts orders the refs of a Find over several string or composite
// keys as a scan of the primary-key index returns them, which is what the
// database answers on a miss: integer columns by value, others by their
// bytes (the order of binary collations, and of most keys under others).
// The caller's order of the keys does not count, as for the database.
func (lk *lookup) sortParts() {
	parts := make(map[string][]string, len(lk.refs))
	for _, r := range lk.refs {
		ps := make([]string, len(lk.mi.pks))
		for i, f := range lk.mi.pks {
			ps[i], _ = keyPart(f, r.vals[i])
		}
		parts[r.key.row] = ps
	}
	sort.SliceStable(lk.refs, func(a, b int) bool {
		pa, pb := parts[lk.refs[a].key.row], parts[lk.refs[b].key.row]
		for i, f := range lk.mi.pks {
			if c := compareKeyPart(f, pa[i], pb[i]); c != 0 {
				return c < 0
			}
		}
		return false
	})
}

// compareKeyPart compares two canonical key parts of field f.
func compareKeyPart(f *schema.Field, a, b string) int {
	switch fieldKind(f) {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		x, errX := strconv.ParseInt(a, 10, 64)
		y, errY := strconv.ParseInt(b, 10, 64)
		switch {
		case errX == nil && errY == nil:
			return cmp.Compare(x, y)
		case errX == nil:
			return -1 // b is a uint64 beyond int64
		case errY == nil:
			return 1
		}
		// Both beyond int64: canonical decimals of one sign.
		if c := cmp.Compare(len(a), len(b)); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}

// sortInts orders refs by their integer key, as the primary-key index does.
func (lk *lookup) sortInts() bool {
	lk.ints = make([]int64, len(lk.refs))
	for i, r := range lk.refs {
		n, err := strconv.ParseInt(r.key.row[strings.LastIndexByte(r.key.row, ':')+1:], 10, 64)
		if err != nil {
			return false
		}
		lk.ints[i] = n
	}
	sort.Sort(byInt{refs: lk.refs, ints: lk.ints})
	if lk.desc {
		for i, j := 0, len(lk.refs)-1; i < j; i, j = i+1, j-1 {
			lk.refs[i], lk.refs[j] = lk.refs[j], lk.refs[i]
			lk.ints[i], lk.ints[j] = lk.ints[j], lk.ints[i]
		}
	}
	return true
}

// byInt sorts refs and their integer keys together. It holds the slices,
// not the lookup, so that the lookup can stay on the caller's stack.
type byInt struct {
	refs []keyRef
	ints []int64
}

func (b byInt) Len() int           { return len(b.refs) }
func (b byInt) Less(i, j int) bool { return b.ints[i] < b.ints[j] }
func (b byInt) Swap(i, j int) {
	b.refs[i], b.refs[j] = b.refs[j], b.refs[i]
	b.ints[i], b.ints[j] = b.ints[j], b.ints[i]
}
