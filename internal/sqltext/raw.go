package sqltext

import "strings"

// MayWrite is a cheap first look: does the statement start with a word a
// write can start with?
func MayWrite(sql string) bool {
	s := skipBlanks(sql)
	for len(s) > 0 && s[0] == '(' {
		s = skipBlanks(s[1:])
	}
	i := 0
	for i < len(s) && IsIdentByte(s[i]) {
		i++
	}
	switch strings.ToUpper(s[:i]) {
	case "WITH", "UPDATE", "DELETE", "INSERT", "REPLACE", "MERGE", "TRUNCATE", "ALTER", "DROP",
		"EXPLAIN", "ANALYZE", "ANALYSE", "DO", "COPY", "LOAD", "RENAME", "PREPARE", "EXECUTE":
		return true
	}
	return false
}

// Rules are the lexical differences between dialects that matter to the
// tokenizer.
type Rules struct {
	Backslash bool // '\' escapes in string literals, # starts a comment (MySQL)
	Dollar    bool // $tag$ ... $tag$ strings (Postgres)
	// OrOperators: || and XOR are disjunctions, as OR (MySQL; || is
	// string concatenation elsewhere).
	OrOperators bool
}

// WriteTables returns the tables the write statements of sql change, as
// the package comment of the root package's raw.go lists them: UPDATE,
// DELETE, INSERT, REPLACE, MERGE, TRUNCATE, ALTER TABLE and DROP TABLE, after
// comments, parentheses and WITH clauses (whose bodies are read as
// statements too), several statements separated by ';'.
func WriteTables(sql string, rules Rules) []TableName {
	toks := tokenize(sql, rules)
	var out []TableName
	start := 0
	for i := 0; i <= len(toks); i++ {
		if i == len(toks) || toks[i].is(";") {
			out = append(out, statementTables(toks[start:i])...)
			start = i + 1
		}
	}
	return out
}

// statementTables returns the tables one statement writes.
func statementTables(toks []token) []TableName {
	var out []TableName
	i := 0
	for i < len(toks) && toks[i].is("(") { // (statement)
		i++
	}
	if i < len(toks) && toks[i].kw("WITH") {
		// WITH [RECURSIVE] name [(cols)] AS [NOT] [MATERIALIZED] (body), ...
		// Bodies may write too (Postgres), so each is parsed as a statement.
		i++
		if i < len(toks) && toks[i].kw("RECURSIVE") {
			i++
		}
		for i < len(toks) {
			i++ // the name
			if i < len(toks) && toks[i].is("(") {
				i = skipGroup(toks, i)
			}
			if i < len(toks) && toks[i].kw("AS") {
				i++
			}
			for i < len(toks) && (toks[i].kw("NOT") || toks[i].kw("MATERIALIZED")) {
				i++
			}
			if i < len(toks) && toks[i].is("(") {
				end := skipGroup(toks, i)
				out = append(out, statementTables(toks[i+1:max(i+1, end-1)])...)
				i = end
			}
			if i < len(toks) && toks[i].is(",") {
				i++
				continue
			}
			break
		}
	}
	if i >= len(toks) {
		return out
	}
	verb := strings.ToUpper(toks[i].text)
	if toks[i].kind != tokWord {
		return out
	}
	switch verb {
	case "EXPLAIN", "ANALYZE", "ANALYSE":
		// EXPLAIN ANALYZE (Postgres, MySQL) and ANALYZE (MariaDB) run the
		// statement they explain: read it from its first verb. ANALYZE of
		// a table (statistics) has none and writes no row.
		for k := i + 1; k < len(toks); k++ {
			if toks[k].is("(") {
				k = skipGroup(toks, k) - 1
				continue
			}
			if isWriteVerb(toks[k]) {
				return append(out, statementTables(toks[k:])...)
			}
		}
		return out
	case "DO":
		// DO [LANGUAGE l] 'code' (Postgres): an anonymous block. Its
		// effect cannot be known; it is taken to write every table its
		// code names after a write verb (see looseTables).
		for _, t := range toks[i+1:] {
			if t.is("'") {
				out = append(out, looseTables(t.lit, Rules{Dollar: true}, 0)...)
			}
		}
		return out
	}
	i++
	skip := func(words ...string) {
		for i < len(toks) {
			matched := false
			for _, w := range words {
				if toks[i].kw(w) {
					matched = true
				}
			}
			if !matched {
				return
			}
			if toks[i].kw("OR") && i+1 < len(toks) { // sqlite: OR REPLACE, OR IGNORE, ...
				i++
			}
			i++
		}
	}
	switch verb {
	case "UPDATE":
		skip("LOW_PRIORITY", "IGNORE", "ONLY", "OR")
		out = append(out, tableList(toks, i, "SET")...)
	case "DELETE":
		skip("LOW_PRIORITY", "QUICK", "IGNORE")
		if i < len(toks) && !toks[i].kw("FROM") {
			// DELETE t1, t2 FROM ...: the targets, then the FROM list.
			out = append(out, tableList(toks, i, "FROM")...)
			for i < len(toks) && !toks[i].kw("FROM") {
				i++
			}
		}
		if i < len(toks) && toks[i].kw("FROM") {
			i++
			skip("ONLY")
			out = append(out, tableList(toks, i, "WHERE", "USING", "ORDER", "LIMIT", "RETURNING")...)
		}
	case "INSERT", "REPLACE":
		skip("LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "OR")
		if i < len(toks) && toks[i].kw("INTO") {
			i++
		}
		if t, _, ok := tableRef(toks, i); ok {
			out = append(out, t)
		}
	case "MERGE":
		if i < len(toks) && toks[i].kw("INTO") {
			i++
		}
		skip("ONLY")
		if t, _, ok := tableRef(toks, i); ok {
			out = append(out, t)
		}
	case "TRUNCATE":
		skip("TABLE", "ONLY")
		out = append(out, tableList(toks, i, "RESTART", "CONTINUE", "CASCADE", "RESTRICT")...)
	case "ALTER", "DROP":
		if i < len(toks) && toks[i].kw("TABLE") {
			i++
			if i+1 < len(toks) && toks[i].kw("IF") && toks[i+1].kw("EXISTS") {
				i += 2
			}
			skip("ONLY")
			out = append(out, tableList(toks, i, "ADD", "DROP", "ALTER", "RENAME", "MODIFY", "CHANGE", "CASCADE", "RESTRICT")...)
			// ALTER TABLE a RENAME TO b: b now names a's rows.
			for k := i; k+2 < len(toks); k++ {
				if toks[k].kw("RENAME") && (toks[k+1].kw("TO") || toks[k+1].kw("AS")) {
					if t, _, ok := tableRef(toks, k+2); ok {
						out = append(out, t)
					}
				}
			}
		}
	case "RENAME":
		// RENAME TABLE a TO b, c TO d (MySQL): every name, old and new.
		skip("TABLE", "TABLES")
		for i < len(toks) {
			t, next, ok := tableRef(toks, i)
			if !ok {
				break
			}
			out = append(out, t)
			i = next
			if i < len(toks) && (toks[i].kw("TO") || toks[i].is(",")) {
				i++
				continue
			}
			break
		}
	case "COPY":
		// COPY t [(cols)] FROM ... (Postgres) writes t; COPY ... TO reads.
		t, next, ok := tableRef(toks, i)
		if ok {
			for k := next; k < len(toks); k++ {
				if toks[k].is("(") {
					k = skipGroup(toks, k) - 1
					continue
				}
				if toks[k].kw("FROM") {
					out = append(out, t)
					break
				}
				if toks[k].kw("TO") {
					break
				}
			}
		}
	case "LOAD":
		// LOAD DATA|XML ... INTO TABLE t (MySQL).
		for k := i; k+2 < len(toks); k++ {
			if toks[k].kw("INTO") && toks[k+1].kw("TABLE") {
				if t, _, ok := tableRef(toks, k+2); ok {
					out = append(out, t)
				}
				break
			}
		}
	}
	return out
}

// isWriteVerb reports whether a token starts a statement WriteTables reads.
func isWriteVerb(t token) bool {
	for _, w := range [...]string{"UPDATE", "DELETE", "INSERT", "REPLACE", "MERGE", "TRUNCATE", "WITH", "COPY", "LOAD"} {
		if t.kw(w) {
			return true
		}
	}
	return false
}

// maxLooseDepth bounds how deep looseTables reads strings inside strings.
const maxLooseDepth = 4

// looseTables reads code whose statements WriteTables cannot delimit (the
// body of a DO block or a function: BEGIN ... END, IF, loops): every write
// verb anywhere starts a statement, read up to the next ';'. String
// literals in it are read the same way (dynamic SQL spelled out in the
// code), up to maxLooseDepth levels. Verbs that are part of another clause
// (FOR UPDATE, DO UPDATE, ON DUPLICATE KEY UPDATE, ON UPDATE/DELETE) are
// skipped.
func looseTables(code string, rules Rules, depth int) []TableName {
	toks := tokenize(code, rules)
	var out []TableName
	for i, t := range toks {
		if t.is("'") && depth < maxLooseDepth {
			out = append(out, looseTables(t.lit, rules, depth+1)...)
			continue
		}
		if !isWriteVerb(t) || t.kw("WITH") {
			continue
		}
		if i > 0 {
			prev := toks[i-1]
			if prev.kw("FOR") || prev.kw("DO") || prev.kw("KEY") || prev.kw("ON") {
				continue
			}
		}
		end := i
		for end < len(toks) && !toks[end].is(";") {
			end++
		}
		out = append(out, statementTables(toks[i:end])...)
	}
	return out
}

// Prepared is what one PREPARE statement defines: the name and the tables
// its statement writes. Known is false when the statement's text could not
// be read (MySQL's PREPARE name FROM @variable).
type Prepared struct {
	Name   Ident
	Tables []TableName
	Known  bool
}

// PreparedStatements returns the PREPARE and EXECUTE statements of sql:
// what each PREPARE defines, and the names each EXECUTE runs. Postgres
// writes PREPARE name [(types)] AS statement, MySQL PREPARE name FROM
// 'text' (or @variable); both EXECUTE name [...].
func PreparedStatements(sql string, rules Rules) (prepares []Prepared, executes []Ident) {
	if !mayHoldWord(sql, "PREPARE") && !mayHoldWord(sql, "EXECUTE") {
		return nil, nil
	}
	toks := tokenize(sql, rules)
	start := 0
	for i := 0; i <= len(toks); i++ {
		if i < len(toks) && !toks[i].is(";") {
			continue
		}
		st := toks[start:i]
		start = i + 1
		if len(st) < 2 || st[1].kind == tokOther {
			continue
		}
		name := Ident{Name: st[1].text, Quoted: st[1].kind == tokQuoted}
		switch {
		case st[0].kw("EXECUTE"):
			executes = append(executes, name)
		case st[0].kw("PREPARE"):
			k := 2
			if k < len(st) && st[k].is("(") {
				k = skipGroup(st, k)
			}
			pr := Prepared{Name: name}
			switch {
			case k < len(st) && st[k].kw("AS"):
				pr.Tables, pr.Known = statementTables(st[k+1:]), true
			case k+1 < len(st) && st[k].kw("FROM") && st[k+1].is("'"):
				pr.Tables, pr.Known = WriteTables(st[k+1].lit, rules), true
			}
			prepares = append(prepares, pr)
		}
	}
	return prepares, executes
}

// mayHoldWord reports, without allocating, whether s holds word (ASCII
// upper case) in any case.
func mayHoldWord(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		if s[i]|0x20 == word[0]|0x20 && hasFoldAt(s, i, word) {
			return true
		}
	}
	return false
}

// tableList reads a table reference at toks[i], then every further one that
// follows a ',' or JOIN at the top level, until one of the stop words.
func tableList(toks []token, i int, stop ...string) []TableName {
	var out []TableName
	t, next, ok := tableRef(toks, i)
	if !ok {
		return nil
	}
	out = append(out, t)
	for i = next; i < len(toks); i++ {
		for _, w := range stop {
			if toks[i].kw(w) {
				return out
			}
		}
		switch {
		case toks[i].is("("):
			i = skipGroup(toks, i) - 1
		case toks[i].is(","), toks[i].kw("JOIN"):
			if t, next, ok := tableRef(toks, i+1); ok {
				out = append(out, t)
				i = next - 1
			}
		}
	}
	return out
}

// tableRef reads name[.name[.name]] at toks[i].
func tableRef(toks []token, i int) (TableName, int, bool) {
	var t TableName
	for i < len(toks) && (toks[i].kind == tokWord || toks[i].kind == tokQuoted) {
		t = append(t, Ident{Name: toks[i].text, Quoted: toks[i].kind == tokQuoted})
		i++
		if i+1 < len(toks) && toks[i].is(".") && len(t) < 3 {
			i++
			continue
		}
		break
	}
	return t, i, len(t) > 0
}

// skipGroup returns the index after the parenthesised group opening at i.
func skipGroup(toks []token, i int) int {
	depth := 0
	for ; i < len(toks); i++ {
		switch {
		case toks[i].is("("):
			depth++
		case toks[i].is(")"):
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return i
}

type tokKind byte

const (
	tokWord   tokKind = iota // a bare word: keyword or name
	tokQuoted                // a quoted name
	tokOther                 // punctuation, literals, numbers, placeholders
)

type token struct {
	kind tokKind
	text string
	lit  string // a string literal's body as written (text is "'")
}

func (t token) kw(word string) bool  { return t.kind == tokWord && strings.EqualFold(t.text, word) }
func (t token) is(punct string) bool { return t.kind == tokOther && t.text == punct }

// tokenize splits SQL into words, quoted names and single punctuation
// characters, dropping comments, white space and the contents of string
// literals ('...', and $tag$...$tag$ on Postgres). It never fails: what it
// does not understand becomes punctuation.
//
// Under Rules.Backslash (MySQL), /*! ... */ and /*M! ... */ comments are
// code, which MySQL and MariaDB run: their contents are tokenized.
func tokenize(s string, rules Rules) []token {
	var toks []token
	inExec := false // inside a MySQL executable comment
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case inExec && c == '*' && strings.HasPrefix(s[i:], "*/"):
			inExec = false
			i += 2
		case rules.Backslash && (strings.HasPrefix(s[i:], "/*!") || strings.HasPrefix(s[i:], "/*M!")):
			i += strings.IndexByte(s[i:], '!') + 1
			for i < len(s) && isDigit(s[i]) { // the server version it needs
				i++
			}
			inExec = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && strings.HasPrefix(s[i:], "--"), c == '#' && rules.Backslash:
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				return toks
			}
			i += j + 1
		case c == '/' && strings.HasPrefix(s[i:], "/*"):
			j := strings.Index(s[i+2:], "*/")
			if j < 0 {
				return toks
			}
			i += j + 4
		case c == '\'':
			j := skipString(s, i, rules.Backslash)
			toks = append(toks, token{kind: tokOther, text: "'", lit: s[i+1 : max(i+1, j-1)]})
			i = j
		case c == '"' || c == '`' || c == '[':
			part, rest, ok := readIdent(s[i:])
			if !ok {
				toks = append(toks, token{kind: tokOther, text: string(c)})
				i++
				continue
			}
			toks = append(toks, token{kind: tokQuoted, text: part.Name})
			i = len(s) - len(rest)
		case c == '$' && rules.Dollar && dollarTag(s[i:]) != "":
			tag := dollarTag(s[i:])
			j := strings.Index(s[i+len(tag):], tag)
			if j < 0 {
				return toks
			}
			toks = append(toks, token{kind: tokOther, text: "'", lit: s[i+len(tag) : i+len(tag)+j]})
			i += len(tag) + j + len(tag)
		case IsIdentByte(c) && !isDigit(c):
			j := i
			for j < len(s) && IsIdentByte(s[j]) {
				j++
			}
			toks = append(toks, token{kind: tokWord, text: s[i:j]})
			i = j
		case isDigit(c):
			j := i
			for j < len(s) && (IsIdentByte(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{kind: tokOther, text: s[i:j]})
			i = j
		default:
			toks = append(toks, token{kind: tokOther, text: string(c)})
			i++
		}
	}
	return toks
}

// skipString returns the index after the string literal opening at i. A
// doubled quote is a quote; with backslash set (MySQL) so is \'.
func skipString(s string, i int, backslash bool) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if backslash {
				j++
			}
		case '\'':
			if j+1 < len(s) && s[j+1] == '\'' {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(s)
}

// dollarTag returns the Postgres dollar-quote tag ($$ or $name$) at the
// start of s, or "". A tag's name follows the rules of a bare identifier
// (see IsIdentByte) but holds no '$' and does not start with a digit ($1 is
// a placeholder).
func dollarTag(s string) string {
	for j := 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '$':
			return s[:j+1]
		case IsIdentByte(c) && !(j == 1 && isDigit(c)):
		default:
			return ""
		}
	}
	return ""
}
