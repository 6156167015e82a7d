package writethrough

import (
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// This file decides which statements are pure primary-key lookups. It is
// deliberately narrow: a statement is served from the cache only when every
// clause in it is understood, and anything else goes to the database
// untouched.

// maxLookupKeys bounds the keys one statement may look up in the cache.
const maxLookupKeys = 1000

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

// pkPins collects the values a WHERE clause pins each primary-key column to.
type pkPins struct {
	vals  [][]any // per primary field; nil = not pinned
	other bool    // a condition on something else was seen
}

// planLookup returns the lookup for a query statement, or nil when the
// statement must go to the database.
func (p *Plugin) planLookup(db *gorm.DB) *lookup {
	stmt := db.Statement
	if stmt.Schema == nil || stmt.SQL.Len() > 0 || stmt.Unscoped || stmt.Distinct || !ownTable(stmt) ||
		len(stmt.Selects) > 0 || len(stmt.Omits) > 0 || len(stmt.Joins) > 0 ||
		inTransaction(stmt.ConnPool) {
		return nil
	}
	if _, internal := stmt.Settings.Load(settingInternal); internal {
		return nil
	}
	mi := p.model(stmt.Schema)
	if !mi.cached {
		return nil
	}
	lk := &lookup{mi: mi}

	// The destination: a struct of the model, or a slice of them.
	rv := stmt.ReflectValue
	switch rv.Kind() {
	case reflect.Struct:
		if rv.Type() != mi.schema.ModelType {
			return nil
		}
		lk.one = true
	case reflect.Slice:
		et := rv.Type().Elem()
		if et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		if et != mi.schema.ModelType {
			return nil
		}
	default:
		return nil
	}
	if _, ok := stmt.Dest.(map[string]any); ok {
		return nil
	}

	var pins pkPins
	pins.vals = make([][]any, len(mi.pks))
	ordered := false
	for name, c := range stmt.Clauses {
		switch name {
		case "WHERE":
			where, ok := c.Expression.(clause.Where)
			if !ok || !pins.addAll(p, mi, stmt, where.Exprs, true) {
				return nil
			}
		case "LIMIT":
			l, ok := c.Expression.(clause.Limit)
			if !ok || l.Offset != 0 || l.Limit == nil || *l.Limit != 1 {
				return nil
			}
			lk.limit = true
		case "ORDER BY":
			ob, ok := c.Expression.(clause.OrderBy)
			if !ok || ob.Expression != nil || len(ob.Columns) != 1 || len(mi.pks) != 1 {
				return nil
			}
			col := ob.Columns[0]
			if col.Reorder || pkIndex(mi, stmt, col.Column) != 0 {
				return nil
			}
			lk.desc, ordered = col.Desc, true
		default:
			return nil
		}
	}
	// A destination with its key set is a condition too (GORM adds it).
	if lk.one {
		for i, f := range mi.pks {
			if v, zero := f.ValueOf(stmt.Context, rv); !zero {
				if !pins.add(i, []any{v}) {
					return nil
				}
			}
		}
	}
	if pins.other {
		return nil
	}
	refs, ok := pins.refs(p, mi)
	if !ok || len(refs) == 0 {
		return nil
	}
	lk.refs = refs
	lk.complete = len(refs) == 1 || (!lk.one && !lk.limit)
	if len(refs) > 1 {
		// Several rows: the order (and, with LIMIT 1, the row) depends on the
		// primary key's order, which is only certain for integers.
		if !mi.intKeys || len(mi.pks) != 1 {
			if lk.one || lk.limit || ordered {
				return nil
			}
		} else {
			if (lk.one || lk.limit) && !ordered {
				return nil // Take over several ids: the database picks any
			}
			if !lk.sortInts() {
				return nil
			}
		}
	}
	return lk
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
	sort.Sort(byInt{lk})
	if lk.desc {
		for i, j := 0, len(lk.refs)-1; i < j; i, j = i+1, j-1 {
			lk.refs[i], lk.refs[j] = lk.refs[j], lk.refs[i]
			lk.ints[i], lk.ints[j] = lk.ints[j], lk.ints[i]
		}
	}
	return true
}

type byInt struct{ lk *lookup }

func (b byInt) Len() int           { return len(b.lk.refs) }
func (b byInt) Less(i, j int) bool { return b.lk.ints[i] < b.lk.ints[j] }
func (b byInt) Swap(i, j int) {
	b.lk.refs[i], b.lk.refs[j] = b.lk.refs[j], b.lk.refs[i]
	b.lk.ints[i], b.lk.ints[j] = b.lk.ints[j], b.lk.ints[i]
}

// addAll adds WHERE expressions. With pure set, a condition that is not on
// the primary key makes it fail; otherwise such conditions are noted in
// other (a write only needs the rows it may touch, a superset).
func (pp *pkPins) addAll(p *Plugin, mi *modelInfo, stmt *gorm.Statement, exprs []clause.Expression, pure bool) bool {
	if pp.vals == nil {
		pp.vals = make([][]any, len(mi.pks))
	}
	if joinsWithOr(exprs) {
		return false // a disjunction pins nothing
	}
	for _, e := range exprs {
		if !pp.addExpr(mi, stmt, e) {
			if pure {
				return false
			}
			pp.other = true
		}
	}
	return true
}

// addExpr adds one expression and reports whether it was understood as a
// primary-key condition.
func (pp *pkPins) addExpr(mi *modelInfo, stmt *gorm.Statement, e clause.Expression) bool {
	switch x := e.(type) {
	case clause.Eq:
		i := pkIndex(mi, stmt, x.Column)
		if i < 0 {
			return false
		}
		if vals, ok := listValues(x.Value); ok {
			return pp.add(i, vals)
		}
		return pp.add(i, []any{x.Value})
	case clause.IN:
		i := pkIndex(mi, stmt, x.Column)
		if i < 0 {
			return false
		}
		var vals []any
		for _, v := range x.Values {
			if list, ok := listValues(v); ok {
				vals = append(vals, list...)
			} else {
				vals = append(vals, v)
			}
		}
		return pp.add(i, vals)
	case clause.AndConditions:
		if joinsWithOr(x.Exprs) {
			return false
		}
		for _, sub := range x.Exprs {
			if !pp.addExpr(mi, stmt, sub) {
				return false
			}
		}
		return true
	case clause.Expr:
		return pp.addSQL(mi, stmt, x)
	}
	return false
}

// joinsWithOr reports whether GORM joins some of exprs with OR: a
// single-expression OrConditions after another expression (Where(a).Or(b))
// is written as "a OR b", which widens the condition instead of narrowing
// it, so no pin taken from a can bound the rows it matches.
func joinsWithOr(exprs []clause.Expression) bool {
	if len(exprs) < 2 {
		return false
	}
	for _, e := range exprs {
		if or, ok := e.(clause.OrConditions); ok && len(or.Exprs) == 1 {
			return true
		}
	}
	return false
}

// add pins primary field i to vals, intersecting with an earlier pin.
func (pp *pkPins) add(i int, vals []any) bool {
	for _, v := range vals {
		if _, ok := plainValue(v); !ok || v == nil {
			return false
		}
	}
	if pp.vals[i] == nil {
		pp.vals[i] = vals
		return true
	}
	f := pp.vals[i][:0:0]
	for _, a := range pp.vals[i] {
		for _, b := range vals {
			if reflect.DeepEqual(a, b) {
				f = append(f, a)
				break
			}
		}
	}
	if len(f) == 0 {
		return false // contradictory pins: let the database say "no rows"
	}
	pp.vals[i] = f
	return true
}

// refs builds the keys of every combination of pinned values. It fails when
// some primary field is not pinned or the combinations are too many.
func (pp *pkPins) refs(p *Plugin, mi *modelInfo) ([]keyRef, bool) {
	n := 1
	for _, vals := range pp.vals {
		if len(vals) == 0 {
			return nil, false
		}
		n *= len(vals)
		if n > maxLookupKeys {
			return nil, false
		}
	}
	refs := make([]keyRef, 0, n)
	idx := make([]int, len(pp.vals))
	for {
		vals := make([]any, len(pp.vals))
		parts := make([]string, len(pp.vals))
		for i, j := range idx {
			vals[i] = pp.vals[i][j]
			part, ok := keyPart(mi.pks[i], vals[i])
			if !ok {
				return nil, false
			}
			parts[i] = part
		}
		refs = append(refs, keyRef{key: mi.key(p.cfg.Prefix, p.cfg.TableShards, parts), vals: vals})
		// next combination
		i := len(idx) - 1
		for ; i >= 0; i-- {
			idx[i]++
			if idx[i] < len(pp.vals[i]) {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			break
		}
	}
	return dedupe(refs), true
}

// listValues expands a slice value (not []byte, not a Valuer) into its
// elements, as GORM does for "IN ?".
func listValues(v any) ([]any, bool) {
	if _, ok := v.([]byte); ok {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, false
	}
	if _, ok := v.(interface{ Value() (any, error) }); ok {
		return nil, false
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, true
}

// pkIndex returns which primary field a column names, or -1.
func pkIndex(mi *modelInfo, stmt *gorm.Statement, col any) int {
	var table, name string
	switch c := col.(type) {
	case clause.Column:
		if c.Raw || c.Alias != "" {
			return -1
		}
		table, name = c.Table, c.Name
	case string:
		name = c
		if t, n, ok := strings.Cut(c, "."); ok {
			table, name = t, n
		}
	default:
		return -1
	}
	if table != "" && table != clause.CurrentTable && table != stmt.Table {
		return -1
	}
	if name == clause.PrimaryKey {
		if len(mi.pks) != 1 {
			return -1
		}
		return 0
	}
	for i, f := range mi.pks {
		if name == f.DBName || name == f.Name {
			return i
		}
	}
	return -1
}

// addSQL understands the hand-written forms "id = ?", "id IN ?",
// "id IN (?)", optionally quoted or table-qualified, joined by AND.
func (pp *pkPins) addSQL(mi *modelInfo, stmt *gorm.Statement, e clause.Expr) bool {
	parts := splitAnd(e.SQL)
	if len(parts) != len(e.Vars) {
		return false
	}
	// Every part must be understood before any is pinned: in
	// "id = ? AND stock > 5 OR id = ?" the second part does not parse, and
	// a pin taken from the first would bound rows the OR does not.
	type pin struct {
		i    int
		vals []any
	}
	pins := make([]pin, 0, len(parts))
	for k, part := range parts {
		col, in, ok := parseCondition(part)
		if !ok {
			return false
		}
		i := pkIndex(mi, stmt, col)
		if i < 0 {
			return false
		}
		v := e.Vars[k]
		if in {
			vals, ok := listValues(v)
			if !ok {
				vals = []any{v}
			}
			pins = append(pins, pin{i, vals})
			continue
		}
		if _, isList := listValues(v); isList {
			return false
		}
		pins = append(pins, pin{i, []any{v}})
	}
	for _, pn := range pins {
		if !pp.add(pn.i, pn.vals) {
			return false
		}
	}
	return true
}

// splitAnd splits on the keyword AND (any case) between conditions.
func splitAnd(s string) []string {
	var parts []string
	fields := strings.Fields(s)
	start := 0
	for i, f := range fields {
		if strings.EqualFold(f, "AND") {
			parts = append(parts, strings.Join(fields[start:i], " "))
			start = i + 1
		}
	}
	return append(parts, strings.Join(fields[start:], " "))
}

// parseCondition parses `col = ?`, `col IN ?` or `col IN (?)`, returning
// the column as "table.name" or "name" with quotes removed.
func parseCondition(s string) (col string, in bool, ok bool) {
	s = strings.TrimSpace(s)
	var rest string
	switch {
	case strings.HasSuffix(s, "?"):
		rest = strings.TrimSpace(strings.TrimSuffix(s, "?"))
		if strings.HasSuffix(rest, "(") {
			return "", false, false
		}
	default:
		return "", false, false
	}
	if strings.HasSuffix(s, "(?)") {
		rest = strings.TrimSpace(strings.TrimSuffix(s, "(?)"))
		in = true
		if !hasSuffixFold(rest, " IN") {
			return "", false, false
		}
		rest = strings.TrimSpace(rest[:len(rest)-3])
	} else if strings.HasSuffix(rest, "=") {
		rest = strings.TrimSpace(strings.TrimSuffix(rest, "="))
	} else if hasSuffixFold(rest, " IN") {
		in = true
		rest = strings.TrimSpace(rest[:len(rest)-3])
	} else {
		return "", false, false
	}
	col, ok = unquoteColumn(rest)
	return col, in, ok
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// unquoteColumn accepts name, "name", `name`, and the same qualified by a
// table, and rejects anything else (functions, operators, casts).
func unquoteColumn(s string) (string, bool) {
	var out []string
	for _, part := range strings.Split(s, ".") {
		if len(part) >= 2 && (part[0] == '"' && part[len(part)-1] == '"' || part[0] == '`' && part[len(part)-1] == '`') {
			part = part[1 : len(part)-1]
		}
		if part == "" {
			return "", false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return "", false
			}
		}
		out = append(out, part)
	}
	if len(out) > 2 {
		return "", false
	}
	return strings.Join(out, "."), true
}
