package writethrough

import (
	"strings"

	"gorm.io/gorm"
)

// Raw SQL. db.Exec, and db.Raw(...) read with Rows, Row, Scan or Find, run
// no model callback, so the plugin cannot see which rows they change. It
// recognises the simple write statements by their leading words, in any
// case, after comments and WITH clauses:
//
//	UPDATE [LOW_PRIORITY] [IGNORE] [ONLY] [OR ...] t [, t2 | JOIN t2 ...] SET ...
//	DELETE [...] FROM t [, t2 | JOIN t2 ...]   DELETE t1, t2 FROM ...
//	INSERT [IGNORE] [OR ...] [INTO] t          REPLACE [INTO] t
//	MERGE INTO t   TRUNCATE [TABLE] [ONLY] t [, t2]   ALTER TABLE t   DROP TABLE [IF EXISTS] t
//
// with table names bare, quoted ("t", `t`, [t]) or schema-qualified, and
// several statements separated by ';'. Each table such a statement names is
// fenced whole, on every shard and under every name a model may key it by
// (see tableNameCandidates), exactly as a model write whose rows cannot be
// named: inside a transaction the fence is recorded on the transaction and
// finished after COMMIT; in auto-commit it is taken before the SQL and
// finished after it. SELECTs and anything not recognised do nothing.
//
// A raw write the detector cannot parse — a stored procedure, a trigger on
// another table, dynamic SQL, a statement whose target hides behind a view —
// leaves the cache of the rows it changes stale: after it commits, call
// (*Plugin).Invalidate with the changed rows or (*Plugin).InvalidateTable
// with their model.

// rawChain says which callback chain a raw statement runs through.
type rawChain int

const (
	chainRaw   rawChain = iota // db.Exec: done when the callback returns
	chainQuery                 // db.Raw(...).Find: rows read and closed in the callback
	chainRow                   // db.Raw(...).Rows/Row/Scan: rows read after the callback
)

// beforeRaw fences the tables a raw write names: in a transaction on the
// transaction, in auto-commit before the SQL runs.
func (p *Plugin) beforeRaw(chain rawChain) func(*gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil || db.DryRun || db.Statement.SQL.Len() == 0 {
			return
		}
		if isInternal(db.Statement) {
			return
		}
		sql := db.Statement.SQL.String()
		if chain != chainRaw && !mayWrite(sql) {
			return // the common raw SELECT: no tokenizing
		}
		names := rawWriteTables(sql, sqlRulesOf(db))
		if len(names) == 0 {
			return
		}
		tables := p.tableShards(p.tableNameCandidates(names))
		if inTransaction(db.Statement.ConnPool) {
			p.fenceInTx(db, nil, tables)
			return
		}
		st := &stmtState{token: p.newToken(), tables: tables, fenced: map[string]rowWrite{}}
		if err := p.fenceTables(db.Statement.Context, st.token, tables); err != nil {
			p.fenceFailed(db, nil, err, p.shardRowsOf(tables))
			return
		}
		if chain == chainRow {
			// The statement completes when the caller has read its rows,
			// which no callback sees: the fence stays until LockTTL, and
			// the table is read from the database until then.
			return
		}
		db.Statement.Settings.Store(rawState{db.Statement}, st)
	}
}

// afterRawWrite finishes an auto-commit raw write's table fences once the
// statement has run (whether or not it succeeded).
func (p *Plugin) afterRawWrite(db *gorm.DB) {
	v, ok := db.Statement.Settings.LoadAndDelete(rawState{db.Statement})
	st, _ := v.(*stmtState)
	if !ok || st == nil {
		return
	}
	p.finishWrites(db.Statement.Context, st.token, nil, st.tables)
}

// rawState keys an auto-commit raw write's fences in the statement's
// settings. It is what db.InstanceSet does, without formatting a string key
// on every query the after-callback sees.
type rawState struct{ stmt *gorm.Statement }

// mayWrite is a cheap first look: does the statement start with a word a
// write can start with?
func mayWrite(sql string) bool {
	s := skipBlanks(sql)
	for len(s) > 0 && s[0] == '(' {
		s = skipBlanks(s[1:])
	}
	i := 0
	for i < len(s) && isIdentByte(s[i]) {
		i++
	}
	switch strings.ToUpper(s[:i]) {
	case "WITH", "UPDATE", "DELETE", "INSERT", "REPLACE", "MERGE", "TRUNCATE", "ALTER", "DROP":
		return true
	}
	return false
}

// sqlRules are the lexical differences between dialects that matter to
// the tokenizer.
type sqlRules struct {
	backslash bool // '\' escapes in string literals, # starts a comment (MySQL)
	dollar    bool // $tag$ ... $tag$ strings (Postgres)
}

func sqlRulesOf(db *gorm.DB) sqlRules {
	switch db.Dialector.Name() {
	case "mysql":
		return sqlRules{backslash: true}
	case "postgres":
		return sqlRules{dollar: true}
	}
	return sqlRules{}
}

// rawWriteTables returns the tables the write statements of sql change.
func rawWriteTables(sql string, rules sqlRules) []tableName {
	toks := tokenize(sql, rules)
	var out []tableName
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
func statementTables(toks []token) []tableName {
	var out []tableName
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
		}
	}
	return out
}

// tableList reads a table reference at toks[i], then every further one that
// follows a ',' or JOIN at the top level, until one of the stop words.
func tableList(toks []token, i int, stop ...string) []tableName {
	var out []tableName
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
func tableRef(toks []token, i int) (tableName, int, bool) {
	var t tableName
	for i < len(toks) && (toks[i].kind == tokWord || toks[i].kind == tokQuoted) {
		t = append(t, identPart{name: toks[i].text, quoted: toks[i].kind == tokQuoted})
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
}

func (t token) kw(word string) bool  { return t.kind == tokWord && strings.EqualFold(t.text, word) }
func (t token) is(punct string) bool { return t.kind == tokOther && t.text == punct }

// tokenize splits SQL into words, quoted names and single punctuation
// characters, dropping comments, white space and the contents of string
// literals ('...', and $tag$...$tag$ on Postgres). It never fails: what it
// does not understand becomes punctuation.
func tokenize(s string, rules sqlRules) []token {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && strings.HasPrefix(s[i:], "--"), c == '#' && rules.backslash:
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
			i = skipString(s, i, rules.backslash)
			toks = append(toks, token{kind: tokOther, text: "'"})
		case c == '"' || c == '`' || c == '[':
			part, rest, ok := readIdent(s[i:])
			if !ok {
				toks = append(toks, token{kind: tokOther, text: string(c)})
				i++
				continue
			}
			toks = append(toks, token{kind: tokQuoted, text: part.name})
			i = len(s) - len(rest)
		case c == '$' && rules.dollar && dollarTag(s[i:]) != "":
			tag := dollarTag(s[i:])
			j := strings.Index(s[i+len(tag):], tag)
			if j < 0 {
				return toks
			}
			i += len(tag) + j + len(tag)
			toks = append(toks, token{kind: tokOther, text: "'"})
		case isIdentByte(c) && !(c >= '0' && c <= '9'):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			toks = append(toks, token{kind: tokWord, text: s[i:j]})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && (isIdentByte(s[j]) || s[j] == '.') {
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
// start of s, or "".
func dollarTag(s string) string {
	for j := 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '$':
			return s[:j+1]
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || j > 1 && c >= '0' && c <= '9':
		default:
			return ""
		}
	}
	return ""
}
