package sqltext

// SavepointKind says what a savepoint statement does.
type SavepointKind int

const (
	// SavepointCreate is SAVEPOINT name.
	SavepointCreate SavepointKind = iota + 1
	// SavepointRollback is ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name.
	SavepointRollback
	// SavepointRelease is RELEASE [SAVEPOINT] name.
	SavepointRelease
	// SavepointUnknown is a statement that starts like a savepoint or
	// transaction statement (SAVEPOINT, RELEASE, ROLLBACK, ABORT, COMMIT, END) but
	// could not be read: a name spelled in a way this package does not read
	// (a placeholder, a string, U&"..."), trailing words, a bare ROLLBACK
	// or COMMIT. What it does to the transaction is unknown.
	SavepointUnknown
)

// Savepoint is one savepoint statement.
type Savepoint struct {
	Kind SavepointKind
	Name Ident // the name as written; unset for SavepointUnknown
}

// Savepoints returns the savepoint statements of sql, in order, reading
// every spelling PostgreSQL, MySQL/MariaDB and SQLite accept:
//
//	SAVEPOINT name
//	ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
//	RELEASE [SAVEPOINT] name
//
// in any case, with any white space and comments, the name bare or quoted
// ("", “, []), several statements separated by ';'. Other statements are
// left out; one that begins like a savepoint or transaction statement but
// does not parse is returned as SavepointUnknown. Text that holds none of
// the words SAVEPOINT, ROLLBACK, RELEASE, ABORT, COMMIT or END is not
// tokenized.
func Savepoints(sql string, rules Rules) []Savepoint {
	if !mayHoldSavepoint(sql) {
		return nil
	}
	toks := tokenize(sql, rules)
	var out []Savepoint
	start := 0
	for i := 0; i <= len(toks); i++ {
		if i == len(toks) || toks[i].is(";") {
			if sp, ok := savepointStatement(toks[start:i]); ok {
				out = append(out, sp)
			}
			start = i + 1
		}
	}
	return out
}

// savepointStatement reads one statement; ok is false when it is not a
// savepoint or transaction statement at all.
func savepointStatement(toks []token) (Savepoint, bool) {
	if len(toks) == 0 || toks[0].kind != tokWord {
		return Savepoint{}, false
	}
	unknown := Savepoint{Kind: SavepointUnknown}
	i := 1
	var kind SavepointKind
	switch {
	case toks[0].kw("SAVEPOINT"):
		kind = SavepointCreate
	case toks[0].kw("RELEASE"):
		kind = SavepointRelease
		if i < len(toks) && toks[i].kw("SAVEPOINT") {
			i++
		}
	case toks[0].kw("ROLLBACK"):
		kind = SavepointRollback
		if i < len(toks) && (toks[i].kw("WORK") || toks[i].kw("TRANSACTION")) {
			i++
		}
		if i >= len(toks) || !toks[i].kw("TO") {
			return unknown, true // the whole transaction, or a form not read
		}
		i++
		if i < len(toks) && toks[i].kw("SAVEPOINT") {
			i++
		}
	case toks[0].kw("COMMIT"), toks[0].kw("END"), toks[0].kw("ABORT"):
		return unknown, true
	default:
		return Savepoint{}, false
	}
	// A name, and nothing after it. A bare word is a name even when it is
	// a keyword ("SAVEPOINT savepoint" is valid on some dialects).
	if i != len(toks)-1 || toks[i].kind == tokOther {
		return unknown, true
	}
	return Savepoint{Kind: kind, Name: Ident{Name: toks[i].text, Quoted: toks[i].kind == tokQuoted}}, true
}

// mayHoldSavepoint is a cheap first look, without allocating: does sql hold
// one of the words a savepoint or transaction statement starts with?
func mayHoldSavepoint(sql string) bool {
	for i := 0; i+3 <= len(sql); i++ {
		switch sql[i] | 0x20 {
		case 's':
			if hasFoldAt(sql, i, "SAVEPOINT") {
				return true
			}
		case 'r':
			if hasFoldAt(sql, i, "ROLLBACK") || hasFoldAt(sql, i, "RELEASE") {
				return true
			}
		case 'c':
			if hasFoldAt(sql, i, "COMMIT") {
				return true
			}
		case 'e':
			if hasFoldAt(sql, i, "END") {
				return true
			}
		case 'a':
			if hasFoldAt(sql, i, "ABORT") {
				return true
			}
		}
	}
	return false
}

func hasFoldAt(s string, i int, word string) bool {
	if len(s)-i < len(word) {
		return false
	}
	for k := 0; k < len(word); k++ {
		if s[i+k]|0x20 != word[k]|0x20 {
			return false
		}
	}
	return true
}
