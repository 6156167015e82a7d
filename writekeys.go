package writethrough

import (
	"context"
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Naming the rows a write touches, so that exactly their keys are fenced;
// a write whose rows cannot be named fences its table instead.

// writeOp is the kind of statement a write callback runs for.
type writeOp int

const (
	opCreate writeOp = iota
	opUpdate
	opDelete
)

// namedKeys are the rows an update or delete names, taken before its SQL
// runs: afterwards GORM has changed the model (assigned values, RETURNING
// rows scanned into it), which no longer says which rows were written.
type namedKeys struct {
	refs  []keyRef
	known bool
}

// affectedKeys names the rows a statement writes. For a create they are the
// rows being inserted; for an update or delete, the model's own key when it
// is set (GORM then restricts the statement to it), else the primary-key
// values its WHERE clause pins down. It reports false when the rows cannot
// be named (the caller then works on the whole table).
func (p *Plugin) affectedKeys(db *gorm.DB, mi *modelInfo, op writeOp) ([]keyRef, bool) {
	stmt := db.Statement
	if unnamed, _ := db.InstanceGet(instanceUnnamed); unnamed == true {
		return nil, false
	}
	if op == opCreate {
		if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert && !supportsReturning(db) {
			// Without RETURNING an upsert that hit a conflict on another
			// unique column does not tell which row it updated.
			return nil, false
		}
		return p.modelKeys(stmt.Context, mi, stmt.ReflectValue), true
	}
	if c, ok := stmt.Clauses["WHERE"]; ok {
		// GORM appends the model's key to the conditions with AND, which
		// binds tighter than an OR before it: Where(a).Or(b) on a model
		// with key 7 runs "a OR b AND id = 7", and so does
		// Where("a = ?\nOR b = ?") or, on MySQL, Where("a = ? || b = ?"):
		// each may change rows other than 7. The model's key bounds
		// nothing then.
		if where, ok := c.Expression.(clause.Where); ok && !whereNarrows(db, where.Exprs) {
			return nil, false
		}
	}
	if refs := p.modelKeys(stmt.Context, mi, stmt.ReflectValue); len(refs) > 0 {
		return refs, true
	}
	if stmt.Model != nil && stmt.Model != stmt.Dest {
		if refs := p.modelKeys(stmt.Context, mi, reflect.ValueOf(stmt.Model)); len(refs) > 0 {
			return refs, true
		}
	}
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil, false
	}
	where, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, false
	}
	var pins pkPins
	if !pins.addAll(p, mi, stmt, where.Exprs, false) {
		return nil, false
	}
	refs, ok := pins.refs(p, mi)
	return refs, ok
}

// noteSpellings looks up, before a delete by string keys runs, how the
// database spells the keys it will match. MySQL compares strings without
// regard to case or trailing spaces, so Delete(&T{Code: "abc"}) removes the
// row stored as "ABC", whose key the statement does not name and whose row
// no read-back can find afterwards. The keys found are fenced with the
// named ones (withSpellings); if the lookup fails, the delete fences the
// table. It costs one indexed query per delete by string key.
func (p *Plugin) noteSpellings(db *gorm.DB, mi *modelInfo) {
	refs, known := p.affectedKeys(db, mi, opDelete)
	if !known || len(refs) == 0 {
		return
	}
	ctx := db.Statement.Context
	named := make(map[string]bool, len(refs))
	var keys []any
	for _, r := range refs {
		named[r.key.row] = true
		if len(mi.pks) == 1 {
			keys = append(keys, r.vals[0])
		} else {
			keys = append(keys, r.vals)
		}
	}
	cols := make([]clause.Column, len(mi.pks))
	names := make([]string, len(mi.pks))
	for j, f := range mi.pks {
		cols[j] = clause.Column{Table: clause.CurrentTable, Name: f.DBName}
		names[j] = f.DBName
	}
	var column any = cols
	if len(cols) == 1 {
		column = cols[0]
	}
	rows := reflect.New(reflect.SliceOf(reflect.PointerTo(mi.schema.ModelType)))
	q := internalSession(db).Unscoped()
	if err := q.Model(rows.Interface()).Select(names).Where(clause.IN{Column: column, Values: keys}).Find(rows.Interface()).Error; err != nil {
		p.cfg.Logger.WarnContext(ctx, "writethrough: looking up the keys a delete matches failed; invalidating the table", "table", mi.schema.Table, "error", err)
		db.InstanceSet(instanceUnnamed, true)
		return
	}
	var extra []keyRef
	for i := 0; i < rows.Elem().Len(); i++ {
		if k, ok := mi.keyOf(ctx, p, rows.Elem().Index(i)); ok && !named[k.row] {
			named[k.row] = true
			extra = append(extra, keyRef{key: k})
		}
	}
	if len(extra) > 0 {
		db.InstanceSet(instanceSpells, extra)
	}
}

// statementKeys returns the rows a statement writes: for an update or a
// delete those named before its SQL ran, for a create those it inserted.
func (p *Plugin) statementKeys(db *gorm.DB, mi *modelInfo, op writeOp) ([]keyRef, bool) {
	if op != opCreate {
		if v, ok := db.InstanceGet(instanceKeys); ok {
			k := v.(namedKeys)
			return append([]keyRef(nil), k.refs...), k.known
		}
	}
	refs, known := p.affectedKeys(db, mi, op)
	return withSpellings(db, refs), known
}

// withSpellings adds to refs the keys noteSpellings found.
func withSpellings(db *gorm.DB, refs []keyRef) []keyRef {
	v, ok := db.InstanceGet(instanceSpells)
	extra, _ := v.([]keyRef)
	if !ok || len(extra) == 0 || len(refs) == 0 {
		return refs
	}
	return dedupe(append(refs, extra...))
}

// movesKey reports whether an update may set a primary-key column to
// something other than the model's own key (Update("id", 5), Updates of a
// map or of another struct with a key). The row then leaves its key for
// another, and GORM copies the new value into the model, so neither key can
// be named from the statement afterwards; the write works on the table.
func (p *Plugin) movesKey(stmt *gorm.Statement, mi *modelInfo) bool {
	ctx := stmt.Context
	assigned := map[int]any{} // primary field index -> value assigned
	if c, ok := stmt.Clauses["SET"]; ok {
		set, ok := c.Expression.(clause.Set)
		if !ok {
			return true
		}
		for _, a := range set {
			if i := pkIndex(mi, stmt, a.Column.Name); i >= 0 {
				assigned[i] = a.Value
			}
		}
	}
	dest := stmt.Dest
	if m, ok := dest.(*map[string]any); ok && m != nil {
		dest = *m
	}
	if m, ok := dest.(map[string]any); ok {
		// GORM maps these keys to fields by name or column name, as
		// LookUpField does, not by the SQL rules pkIndex follows.
		for k, v := range m {
			if f := mi.schema.LookUpField(k); f != nil && f.PrimaryKey {
				for i, pk := range mi.pks {
					if pk == f {
						assigned[i] = v
					}
				}
			}
		}
	} else if dv := reflect.Indirect(reflect.ValueOf(dest)); dv.Kind() == reflect.Struct && (dest != stmt.Model || !dv.CanAddr()) {
		// A struct other than the model: GORM assigns its non-zero key.
		ds := &gorm.Statement{DB: stmt.DB}
		if dv.Type() != mi.schema.ModelType {
			if ds.Parse(dest) != nil {
				return true
			}
		} else {
			ds.Schema = mi.schema
		}
		for i, f := range mi.pks {
			if df := ds.Schema.LookUpField(f.DBName); df != nil {
				if v, zero := df.ValueOf(ctx, dv); !zero {
					assigned[i] = v
				}
			}
		}
	}
	if len(assigned) == 0 {
		return false
	}
	// Assigning the model's own key (Model(&t).Updates(T{ID: t.ID, ...}))
	// moves nothing.
	mv := reflect.Indirect(reflect.ValueOf(stmt.Model))
	if mv.Kind() != reflect.Struct || mv.Type() != mi.schema.ModelType {
		return true
	}
	for i, v := range assigned {
		own, zero := mi.pks[i].ValueOf(ctx, mv)
		if zero {
			return true
		}
		a, ok := keyPart(mi.pks[i], v)
		b, ok2 := keyPart(mi.pks[i], own)
		if !ok || !ok2 || a != b {
			return true
		}
	}
	return false
}

// keysReported reports, before a create runs, whether GORM will tell the
// key of every row it changes. It does not for maps (a generated key lands
// in the map under a name of GORM's choosing, if at all), nor when some
// rows get their key from the database and GORM must guess which key is
// whose: without RETURNING it numbers them on from LAST_INSERT_ID, which a
// caller-chosen key above the counter breaks, and under ON CONFLICT DO
// NOTHING it skips every struct that has a defaulted field set and hands
// its returned key to the next one. Such a create fences the table.
func (p *Plugin) keysReported(db *gorm.DB, mi *modelInfo) bool {
	stmt := db.Statement
	if c, ok := stmt.Clauses["INSERT"]; ok {
		// INSERT IGNORE / OR IGNORE skip rows without saying which (and
		// shift the keys numbered from LAST_INSERT_ID); OR REPLACE deletes
		// whatever row conflicts, on any unique column.
		if ins, _ := c.Expression.(clause.Insert); ins.Modifier != "" {
			return false
		}
	}
	rv := reflect.Indirect(stmt.ReflectValue)
	switch rv.Kind() {
	case reflect.Struct:
		return true
	case reflect.Slice, reflect.Array:
	default:
		return false
	}
	assigned, chosen := 0, 0
	for i := 0; i < rv.Len(); i++ {
		row := reflect.Indirect(rv.Index(i))
		if row.Kind() != reflect.Struct {
			return false
		}
		if _, ok := mi.keyOf(stmt.Context, p, row); ok {
			chosen++
		} else {
			assigned++
		}
	}
	if assigned == 0 {
		return true
	}
	if c, ok := stmt.Clauses["ON CONFLICT"]; ok {
		if oc, _ := c.Expression.(clause.OnConflict); oc.DoNothing {
			return false
		}
	}
	return chosen == 0 || supportsReturning(db)
}

// supportsReturning reports whether the dialect can return rows from
// INSERT/UPDATE/DELETE.
func supportsReturning(db *gorm.DB) bool {
	switch db.Dialector.Name() {
	case "postgres", "sqlite":
		return true
	}
	return false
}

// modelKeys returns the keys of the rows in rv (a struct or a slice of them)
// whose primary key is set.
func (p *Plugin) modelKeys(ctx context.Context, mi *modelInfo, rv reflect.Value) []keyRef {
	rv = reflect.Indirect(rv)
	var refs []keyRef
	add := func(row reflect.Value) {
		row = reflect.Indirect(row)
		if row.Kind() != reflect.Struct || row.Type() != mi.schema.ModelType {
			return
		}
		vals := make([]any, len(mi.pks))
		parts := make([]string, len(mi.pks))
		for i, f := range mi.pks {
			v, zero := f.ValueOf(ctx, row)
			if zero {
				return
			}
			part, ok := keyPart(f, v)
			if !ok {
				return
			}
			vals[i], parts[i] = v, part
		}
		refs = append(refs, keyRef{key: mi.key(p.cfg.Prefix, p.cfg.TableShards, parts), vals: vals})
	}
	switch rv.Kind() {
	case reflect.Struct:
		add(rv)
	case reflect.Slice, reflect.Array:
		for i := 0; i < rv.Len(); i++ {
			add(rv.Index(i))
		}
	}
	return dedupe(refs)
}

// mergeFenced adds to refs the keys fenced before an auto-commit SQL ran.
func mergeFenced(refs []keyRef, fenced map[string]rowWrite) []keyRef {
	if len(fenced) == 0 {
		return refs
	}
	have := make(map[string]bool, len(refs))
	for _, r := range refs {
		have[r.key.row] = true
	}
	for k, w := range fenced {
		if !have[k] {
			refs = append(refs, keyRef{key: w.key})
		}
	}
	return refs
}
