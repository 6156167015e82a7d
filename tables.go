package writethrough

import (
	"strings"

	"github.com/gormcache/writethrough/internal/sqltext"
	"gorm.io/gorm"
)

// Writes the plugin can name only by their table: a write through
// db.Table(...) to a table that is not its model's own (or with no model at
// all), and raw SQL (raw.go). Their rows are cached only if some model maps
// to that table, and the statement does not say which rows it changed, so
// the table is fenced whole under every name a model could give it.

// ownTable reports whether a statement works on its model's own table, the
// one its keys are named after. db.Table with the same name counts; a
// schema-qualified TableName ("myschema.items"), which GORM writes as a
// quoted table expression, does too.
func ownTable(stmt *gorm.Statement) bool {
	if stmt.Schema == nil {
		return false
	}
	if stmt.TableExpr == nil {
		return stmt.Table == stmt.Schema.Table
	}
	return len(stmt.TableExpr.Vars) == 0 && stmt.TableExpr.SQL == stmt.Quote(stmt.Schema.Table)
}

// otherTables returns the shards to fence for a write that goes to a table
// other than its model's, or nil when the write is on its model's table (or
// names no table at all).
func (p *Plugin) otherTables(db *gorm.DB) []tableShard {
	stmt := db.Statement
	if db.DryRun || ownTable(stmt) {
		return nil
	}
	var names []sqltext.TableName
	if stmt.TableExpr != nil {
		if n, _, ok := sqltext.ParseTableName(stmt.TableExpr.SQL); ok {
			names = append(names, n)
		}
	}
	if stmt.Table != "" {
		names = append(names, sqltext.TableName{{Name: stmt.Table, Quoted: true}})
	}
	if len(names) == 0 {
		return nil
	}
	return p.tableShards(p.tableNameCandidates(names))
}

// tableNameCandidates returns every table (resolved, see resolveTable)
// under which a model may key the rows of the tables: the name as written
// (qualified and bare), lower-cased where the name was not quoted, and the
// table of every model this process knows whose bare name matches.
func (p *Plugin) tableNameCandidates(tables []sqltext.TableName) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	var bare []string
	for _, t := range tables {
		if len(t) == 0 {
			continue
		}
		folded := make(sqltext.TableName, len(t))
		for i, part := range t {
			folded[i] = part
			if !part.Quoted {
				folded[i].Name = strings.ToLower(part.Name)
			}
		}
		last := len(t) - 1
		add(p.resolveTable(t))
		add(p.resolveTable(folded))
		add(p.resolveTable(t[last:]))
		add(p.resolveTable(folded[last:]))
		bare = append(bare, t[last].Name)
	}
	p.models.m.Range(func(_, v any) bool {
		mi := v.(*modelInfo)
		if !mi.cached {
			return true
		}
		name := mi.schema.Table
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			name = name[i+1:]
		}
		for _, b := range bare {
			if strings.EqualFold(name, b) {
				add(mi.table)
			}
		}
		return true
	})
	return out
}

// tableShards lists every shard of every named (resolved) table.
func (p *Plugin) tableShards(names []string) []tableShard {
	var out []tableShard
	for _, n := range names {
		mi := &modelInfo{tableEsc: p.tableKey(n)}
		out = append(out, mi.allShards(p)...)
	}
	return out
}
