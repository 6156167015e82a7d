package writethrough

import (
	"strings"

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
func (p *Plugin) otherTables(db *gorm.DB) []pendingTable {
	stmt := db.Statement
	if db.DryRun || ownTable(stmt) {
		return nil
	}
	var names []tableName
	if stmt.TableExpr != nil {
		if n, _, ok := parseTableName(stmt.TableExpr.SQL); ok {
			names = append(names, n)
		}
	}
	if stmt.Table != "" {
		names = append(names, tableName{{name: stmt.Table, quoted: true}})
	}
	if len(names) == 0 {
		return nil
	}
	return p.tableShards(p.tableNameCandidates(names))
}

// tableName is a parsed, possibly qualified table name: schema.table is
// two parts.
type tableName []identPart

type identPart struct {
	name   string
	quoted bool // quoted names keep their case; bare ones may fold
}

// tableNameCandidates returns every name under which a model may key the
// rows of the tables: the name as written (qualified and bare), lower-cased
// where the name was not quoted (Postgres folds it), and the TableName of
// every model this process knows whose bare name matches.
func (p *Plugin) tableNameCandidates(tables []tableName) []string {
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
		full, folded := make([]string, len(t)), make([]string, len(t))
		for i, part := range t {
			full[i], folded[i] = part.name, part.name
			if !part.quoted {
				folded[i] = strings.ToLower(part.name)
			}
		}
		last := len(t) - 1
		add(strings.Join(full, "."))
		add(strings.Join(folded, "."))
		add(full[last])
		add(folded[last])
		bare = append(bare, full[last])
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
				add(mi.schema.Table)
			}
		}
		return true
	})
	return out
}

// tableShards lists every shard of every named table.
func (p *Plugin) tableShards(names []string) []pendingTable {
	var out []pendingTable
	for _, n := range names {
		mi := &modelInfo{tableEsc: string(appendEscaped(nil, n))}
		out = append(out, mi.allShards(p)...)
	}
	return out
}

// parseTableName reads a table name at the start of s, after blanks and
// comments: one to three identifiers separated by dots, each bare or quoted
// with "", “ or []. It returns the rest of s after the name.
func parseTableName(s string) (tableName, string, bool) {
	var t tableName
	s = skipBlanks(s)
	for {
		part, rest, ok := readIdent(s)
		if !ok {
			return nil, s, false
		}
		t = append(t, part)
		s = rest
		r := skipBlanks(s)
		if len(r) > 0 && r[0] == '.' && len(t) < 3 {
			s = skipBlanks(r[1:])
			continue
		}
		return t, s, true
	}
}

// readIdent reads one identifier at the start of s.
func readIdent(s string) (identPart, string, bool) {
	if s == "" {
		return identPart{}, s, false
	}
	switch q := s[0]; q {
	case '"', '`', '[':
		end := q
		if q == '[' {
			end = ']'
		}
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] != end {
				b.WriteByte(s[i])
				continue
			}
			if end != ']' && i+1 < len(s) && s[i+1] == end { // doubled quote
				b.WriteByte(end)
				i++
				continue
			}
			if b.Len() == 0 {
				return identPart{}, s, false
			}
			return identPart{name: b.String(), quoted: true}, s[i+1:], true
		}
		return identPart{}, s, false
	}
	i := 0
	for i < len(s) && isIdentByte(s[i]) {
		i++
	}
	if i == 0 {
		return identPart{}, s, false
	}
	return identPart{name: s[:i]}, s[i:], true
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// skipBlanks skips white space and SQL comments (--, #, /* */).
func skipBlanks(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n\f\v")
		switch {
		case strings.HasPrefix(s, "--"), strings.HasPrefix(s, "#"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return ""
			}
			s = s[i+1:]
		case strings.HasPrefix(s, "/*"):
			i := strings.Index(s[2:], "*/")
			if i < 0 {
				return ""
			}
			s = s[i+4:]
		default:
			return s
		}
	}
}
