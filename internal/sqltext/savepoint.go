package sqltext

import "strings"

// SavepointKind says what a savepoint statement does.
type SavepointKind int

const (
	// SavepointCreate is SAVEPOINT name.
	SavepointCreate SavepointKind = iota + 1
	// SavepointRollback is ROLLBACK TO SAVEPOINT name.
	SavepointRollback
)

// ParseSavepoint recognises the savepoint statements GORM issues through
// Exec (SAVEPOINT name, ROLLBACK TO SAVEPOINT name, in any case, the name
// bare or quoted with "" or “) and returns what the statement does and the
// savepoint's name. It reports false for any other statement.
func ParseSavepoint(sql string) (kind SavepointKind, name string, ok bool) {
	sql = strings.TrimSpace(sql)
	if name, ok := cutPrefixFold(sql, "ROLLBACK TO SAVEPOINT "); ok {
		return SavepointRollback, unquoteIdent(name), true
	}
	if name, ok := cutPrefixFold(sql, "SAVEPOINT "); ok {
		return SavepointCreate, unquoteIdent(name), true
	}
	return 0, "", false
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return strings.TrimSpace(s[len(prefix):]), true
	}
	return "", false
}

func unquoteIdent(s string) string {
	return strings.Trim(strings.TrimSuffix(s, ";"), "`\"")
}
