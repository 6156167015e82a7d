package writethrough

import (
	"errors"
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// readBackChunk bounds the keys one read-back query names.
const readBackChunk = 1000

// readBack reads the written rows as the database now has them, through the
// statement's own connection (so inside its transaction), and returns one
// write per key: the row's entry, or its absence.
func (p *Plugin) readBack(db *gorm.DB, mi *modelInfo, refs []keyRef) ([]rowWrite, error) {
	ctx := db.Statement.Context
	writes := make([]rowWrite, len(refs))
	var keys []any // one value per key, or one []any per composite key
	for i, r := range refs {
		writes[i] = rowWrite{key: r.key, kind: kindAbsent, fp: mi.fp}
		if r.vals == nil {
			writes[i].kind = kindDrop // fenced by an earlier step, values unknown
			continue
		}
		if len(mi.pks) == 1 {
			keys = append(keys, r.vals[0])
		} else {
			keys = append(keys, r.vals)
		}
	}
	if len(keys) == 0 {
		return writes, nil
	}
	// The keys go in one IN list per readBackChunk of them: an OR of one
	// condition per key hits SQLite's expression depth limit (1000) on big
	// batches, and every database bounds the parameters of one statement.
	var column any
	if len(mi.pks) == 1 {
		column = clause.Column{Table: clause.CurrentTable, Name: mi.pks[0].DBName}
	} else {
		cols := make([]clause.Column, len(mi.pks))
		for j, f := range mi.pks {
			cols[j] = clause.Column{Table: clause.CurrentTable, Name: f.DBName}
		}
		column = cols
	}
	found := make(map[string]reflect.Value, len(keys))
	foundKeys := make(map[string]rowKey, len(keys))
	for start := 0; start < len(keys); start += readBackChunk {
		chunk := keys[start:min(start+readBackChunk, len(keys))]
		rows := reflect.New(reflect.SliceOf(reflect.PointerTo(mi.schema.ModelType)))
		if err := internalSession(db).Model(rows.Interface()).Where(clause.IN{Column: column, Values: chunk}).Find(rows.Interface()).Error; err != nil {
			return writes, err
		}
		for i := 0; i < rows.Elem().Len(); i++ {
			row := rows.Elem().Index(i)
			if k, ok := mi.keyOf(ctx, p, row); ok {
				found[k.row] = row
				foundKeys[k.row] = k
			}
		}
	}
	named := make(map[string]bool, len(writes))
	for i := range writes {
		w := &writes[i]
		named[w.key.row] = true
		if w.kind == kindDrop {
			continue
		}
		row, ok := found[w.key.row]
		if !ok {
			// An absence is cached for integer keys only: a string key may
			// match a row spelled otherwise (see below), and an insert of
			// such a row would fence its own key, not this one.
			if p.cfg.NotFoundTTL < 0 || !mi.intKeys {
				w.kind = kindDrop
			}
			w.ttl = p.cfg.NotFoundTTL
			continue
		}
		entry, err := p.encode(ctx, mi, row)
		if err != nil {
			if !errors.Is(err, errEntryTooLarge) { // counted, expected
				p.cfg.Logger.WarnContext(ctx, "writethrough: cannot encode row; invalidating it", "table", mi.schema.Table, "error", err)
			}
			w.kind = kindDrop
			continue
		}
		w.kind, w.entry, w.ttl = kindValue, entry, p.ttl(mi.ttl) // jitter per row
	}
	// Rows the database matched under another spelling of a key (MySQL
	// compares strings regardless of case and trailing spaces) were
	// changed by the statement too: their own keys are fenced and dropped.
	for k, key := range foundKeys {
		if !named[k] {
			writes = append(writes, rowWrite{key: key, kind: kindDrop, fp: mi.fp})
		}
	}
	return writes, nil
}
