// Package sqltext reads the little of SQL text the plugin needs to know:
// which tables a raw statement writes, a table name as GORM or a caller
// writes it, the hand-written primary-key conditions the lookup planner
// understands, and the savepoint statements GORM issues. It is pure string
// code: it never fails, and what it does not understand it reports as such,
// so that the caller can take the safe way (the database, or a fence of the
// whole table).
package sqltext

import "strings"

// Ident is one identifier as a statement writes it.
type Ident struct {
	Name   string
	Quoted bool // quoted names keep their case; bare ones may fold
}

// TableName is a parsed, possibly qualified table name: schema.table is two
// parts.
type TableName []Ident

// IsIdentByte reports whether c may appear in a bare identifier: ASCII
// letters, digits, '_', '$' and every byte of a non-ASCII character. It is
// the union of what PostgreSQL, MySQL and SQLite accept after the first
// character, so that text they read as one word is never split in two here
// (a word that merely contains "OR" is not the keyword OR).
func IsIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// ParseTableName reads a table name at the start of s, after blanks and
// comments: one to three identifiers separated by dots, each bare or quoted
// with "", “ or []. It returns the rest of s after the name.
func ParseTableName(s string) (TableName, string, bool) {
	var t TableName
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
func readIdent(s string) (Ident, string, bool) {
	if s == "" {
		return Ident{}, s, false
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
				return Ident{}, s, false
			}
			return Ident{Name: b.String(), Quoted: true}, s[i+1:], true
		}
		return Ident{}, s, false
	}
	i := 0
	for i < len(s) && IsIdentByte(s[i]) {
		i++
	}
	if i == 0 {
		return Ident{}, s, false
	}
	return Ident{Name: s[:i]}, s[i:], true
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

// SameIdent reports whether the database reads the identifier written as
// the one named actual. Postgres folds unquoted names to lower case and
// compares exactly; MySQL and SQLite compare column names regardless of
// ASCII case. Table names (MySQL's depend on lower_case_table_names) and
// every name of other dialects must match exactly: a false "no" only
// sends the statement to the database, a false "yes" serves a wrong row.
func SameIdent(dialect string, written Ident, actual string, column bool) bool {
	if dialect == "postgres" && !written.Quoted {
		return lowerASCII(written.Name) == actual
	}
	if written.Name == actual {
		return true
	}
	return column && (dialect == "mysql" || dialect == "sqlite") && lowerASCII(written.Name) == lowerASCII(actual)
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
