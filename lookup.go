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
				if !pins.add(i, []any{v}) {
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
			if pure || !narrowsOnly(e) {
				return false
			}
			pp.other = true
		}
	}
	return true
}

// narrowsOnly reports whether an expression GORM joins to its neighbours is
// certain to be AND-ed with them. A single-element OrConditions is joined
// with OR, and hand-written SQL is only parenthesised when it contains the
// literal " OR " or " AND ", so SQL with an OR spelled otherwise (a newline,
// a tab) could escape its place: such expressions do not bound a write.
func narrowsOnly(e clause.Expression) bool {
	switch x := e.(type) {
	case clause.OrConditions:
		return false
	case clause.Expr:
		return !hasOrToken(x.SQL)
	case clause.NamedExpr:
		return !hasOrToken(x.SQL)
	}
	return true
}

// hasOrToken reports whether sql contains OR as a word, in any spacing.
func hasOrToken(sql string) bool {
	words := strings.FieldsFunc(sql, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
	for _, w := range words {
		if strings.EqualFold(w, "OR") {
			return true
		}
	}
	return false
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
	return pkIndexOf(mi, stmt, ident{table, true}, ident{name, true})
}

// ident is an identifier as a statement writes it.
type ident struct {
	name   string
	quoted bool
}

// pkIndexOf returns which primary field the column table.name names, or
// -1. An empty table is the statement's.
func pkIndexOf(mi *modelInfo, stmt *gorm.Statement, table, name ident) int {
	dialect := dialectOf(stmt)
	if table.name != "" && table.name != clause.CurrentTable && !sameIdent(dialect, table, stmt.Table, false) {
		return -1
	}
	if name.name == clause.PrimaryKey {
		if len(mi.pks) != 1 {
			return -1
		}
		return 0
	}
	for i, f := range mi.pks {
		if sameIdent(dialect, name, f.DBName, true) {
			return i
		}
	}
	return -1
}

// sameIdent reports whether the database reads the identifier written as
// the one named actual. Postgres folds unquoted names to lower case and
// compares exactly; MySQL and SQLite compare column names regardless of
// ASCII case. Table names (MySQL's depend on lower_case_table_names) and
// every name of other dialects must match exactly: a false "no" only
// sends the statement to the database, a false "yes" serves a wrong row.
func sameIdent(dialect string, written ident, actual string, column bool) bool {
	if dialect == "postgres" && !written.quoted {
		return lowerASCII(written.name) == actual
	}
	if written.name == actual {
		return true
	}
	return column && (dialect == "mysql" || dialect == "sqlite") && lowerASCII(written.name) == lowerASCII(actual)
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
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
		col, in, paren, ok := parseCondition(part)
		if !ok {
			return false
		}
		table, name, ok := sqlColumn(col, dialectOf(stmt))
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
// the column as written (see sqlColumn), and whether the placeholder was in
// parentheses.
func parseCondition(s string) (col string, in, paren, ok bool) {
	s = strings.TrimSpace(s)
	var rest string
	switch {
	case strings.HasSuffix(s, "(?)"):
		rest = strings.TrimSpace(strings.TrimSuffix(s, "(?)"))
		in, paren = true, true
		if !hasSuffixFold(rest, " IN") {
			return "", false, false, false
		}
		rest = strings.TrimSpace(rest[:len(rest)-3])
	case strings.HasSuffix(s, "?"):
		rest = strings.TrimSpace(strings.TrimSuffix(s, "?"))
		if strings.HasSuffix(rest, "=") {
			rest = strings.TrimSpace(strings.TrimSuffix(rest, "="))
		} else if hasSuffixFold(rest, " IN") {
			in = true
			rest = strings.TrimSpace(rest[:len(rest)-3])
		} else {
			return "", false, false, false
		}
	default:
		return "", false, false, false
	}
	return rest, in, paren, true
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// sqlColumn parses a column as a hand-written condition names it: name or
// table.name, each part bare or quoted the way the dialect quotes
// identifiers ("name" on Postgres, `name` on MySQL, either on SQLite;
// MySQL reads "name" as a string, Postgres `name` as an error). Anything
// else (functions, operators, casts, other quotes) is refused.
func sqlColumn(s, dialect string) (table, name ident, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return ident{}, ident{}, false
	}
	ids := make([]ident, len(parts))
	for k, part := range parts {
		if n := len(part); n >= 2 && part[0] == part[n-1] &&
			(part[0] == '"' && (dialect == "postgres" || dialect == "sqlite") ||
				part[0] == '`' && (dialect == "mysql" || dialect == "sqlite")) {
			part, ids[k].quoted = part[1:n-1], true
		}
		if part == "" {
			return ident{}, ident{}, false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return ident{}, ident{}, false
			}
		}
		ids[k].name = part
	}
	if len(ids) == 2 {
		return ids[0], ids[1], true
	}
	return ident{}, ids[0], true
}
