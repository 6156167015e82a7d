package writethrough

import (
	"reflect"
	"strings"

	"github.com/gormcache/writethrough/internal/sqltext"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// WHERE clauses as primary-key pins: which rows a condition can match, for
// a read (which must be pinned exactly) and for a write (which only needs a
// superset of the rows it may touch).

// maxLookupKeys bounds the keys one statement may look up in the cache.
const maxLookupKeys = 1000

// pkPins collects the values a WHERE clause pins each primary-key column to.
type pkPins struct {
	vals  [][]any // per primary field; nil = not pinned
	other bool    // a condition on something else was seen
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
			if pure || !narrowsOnly(e, sqlRulesOf(stmt.DB)) {
				return false
			}
			pp.other = true
		}
	}
	return true
}

// narrowsOnly reports whether an expression GORM joins to its neighbours is
// certain to be AND-ed with them. A single-element OrConditions is joined
// with OR, and GORM parenthesises hand-written SQL only when it contains the
// literal " OR " or " AND ", so SQL with an OR spelled otherwise (a newline,
// a tab, MySQL's || or XOR) could escape its place: such expressions do not
// bound a write.
func narrowsOnly(e clause.Expression, rules sqltext.Rules) bool {
	switch x := e.(type) {
	case clause.OrConditions:
		return false
	case clause.AndConditions:
		if len(x.Exprs) == 1 {
			// GORM parenthesises a one-element group only as it does SQL.
			return narrowsOnly(x.Exprs[0], rules)
		}
		return true // GORM parenthesises the group
	case clause.Expr:
		return sqltext.Narrows(x.SQL, rules, gormWraps(x.SQL))
	case clause.NamedExpr:
		return sqltext.Narrows(x.SQL, rules, gormWraps(x.SQL))
	}
	return true
}

// gormWraps reports whether GORM puts hand-written SQL in parentheses when
// it joins it to other conditions (clause.Where's buildExprs).
func gormWraps(sql string) bool {
	up := strings.ToUpper(sql)
	return strings.Contains(up, " AND ") || strings.Contains(up, " OR ")
}

// whereNarrows reports whether every expression of a WHERE clause is
// certain to be AND-ed with the conditions GORM appends to it (the model's
// primary key).
func whereNarrows(db *gorm.DB, exprs []clause.Expression) bool {
	if joinsWithOr(exprs) {
		return false
	}
	rules := sqlRulesOf(db)
	for _, e := range exprs {
		if !narrowsOnly(e, rules) {
			return false
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
			return pp.add(mi, i, vals)
		}
		return pp.add(mi, i, []any{x.Value})
	case clause.IN:
		i := pkIndex(mi, stmt, x.Column)
		if i < 0 {
			return false
		}
		// The usual IN holds plain values: use them as they are (pins are
		// only read). A list among them is expanded, as GORM does.
		vals := x.Values
		for k, v := range x.Values {
			if _, ok := listValues(v); ok {
				vals = make([]any, 0, len(x.Values))
				vals = append(vals, x.Values[:k]...)
				for _, v := range x.Values[k:] {
					if list, ok := listValues(v); ok {
						vals = append(vals, list...)
					} else {
						vals = append(vals, v)
					}
				}
				break
			}
		}
		return pp.add(mi, i, vals)
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
// Two values are the same pin when they name the same key (see samePin):
// First(&r, 1) on a destination whose key is already int64(1) pins one row,
// not two contradictory ones.
func (pp *pkPins) add(mi *modelInfo, i int, vals []any) bool {
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
			if samePin(mi.pks[i], a, b) {
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

// samePin reports whether a and b, both pinned to primary field f, name the
// same row: equal canonical key text (integers of any Go type, or a
// canonical decimal string against an integer key), or equal values. Values
// that cannot be keyed are compared as they are, so that "01" and 1 (which
// the database may match alike, but which name no single key) stay apart
// and the statement goes to the database.
func samePin(f *schema.Field, a, b any) bool {
	ka, okA := keyPart(f, a)
	kb, okB := keyPart(f, b)
	if okA && okB {
		return ka == kb
	}
	return reflect.DeepEqual(a, b)
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
	m := len(pp.vals)
	all := make([]any, n*m) // every ref's values, in one allocation
	parts := make([]string, m)
	for k := 0; ; k++ {
		vals := all[k*m : (k+1)*m : (k+1)*m]
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

// pkIndex returns which primary field a column of a clause names, or -1.
// GORM quotes these columns, so they are matched as quoted identifiers.
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
	return pkIndexOf(mi, stmt, sqltext.Ident{Name: table, Quoted: true}, sqltext.Ident{Name: name, Quoted: true})
}

// pkIndexOf returns which primary field the column table.name names, or
// -1. An empty table is the statement's.
func pkIndexOf(mi *modelInfo, stmt *gorm.Statement, table, name sqltext.Ident) int {
	dialect := dialectOf(stmt)
	if table.Name != "" && table.Name != clause.CurrentTable && !sqltext.SameIdent(dialect, table, stmt.Table, false) {
		return -1
	}
	if name.Name == clause.PrimaryKey {
		if len(mi.pks) != 1 {
			return -1
		}
		return 0
	}
	for i, f := range mi.pks {
		if sqltext.SameIdent(dialect, name, f.DBName, true) {
			return i
		}
	}
	return -1
}

// dialectOf names the statement's dialect ("postgres", "mysql", "sqlite").
func dialectOf(stmt *gorm.Statement) string {
	if stmt.DB == nil || stmt.DB.Dialector == nil {
		return ""
	}
	return stmt.DB.Dialector.Name()
}

// addSQL understands the hand-written forms "id = ?", "id IN ?",
// "id IN (?)", optionally quoted or table-qualified, joined by AND.
func (pp *pkPins) addSQL(mi *modelInfo, stmt *gorm.Statement, e clause.Expr) bool {
	parts := sqltext.SplitAnd(e.SQL)
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
		col, in, paren, ok := sqltext.ParseCondition(part)
		if !ok {
			return false
		}
		table, name, ok := sqltext.Column(col, dialectOf(stmt))
		if !ok {
			return false
		}
		i := pkIndexOf(mi, stmt, table, name)
		if i < 0 {
			return false
		}
		v := e.Vars[k]
		if in {
			vals, ok := listValues(v)
			if !ok {
				if !paren {
					// GORM writes "IN ?" with one value as "IN $1", a
					// syntax error the database must report.
					return false
				}
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
		if !pp.add(mi, pn.i, pn.vals) {
			return false
		}
	}
	return true
}
