package sqltext

import "strings"

// HasOrToken reports whether sql contains OR as a word, in any spacing.
// Words are split where IsIdentByte says a bare identifier ends.
func HasOrToken(sql string) bool {
	for i := 0; i < len(sql); {
		if !IsIdentByte(sql[i]) {
			i++
			continue
		}
		j := i
		for j < len(sql) && IsIdentByte(sql[j]) {
			j++
		}
		if strings.EqualFold(sql[i:j], "OR") {
			return true
		}
		i = j
	}
	return false
}

// Narrows reports whether hand-written condition text, joined to other
// conditions with AND, can only narrow them: no disjunction outside
// parentheses, and no parenthesis that closes one the text did not open.
// wrapped says the caller will put the text in parentheses (GORM does when
// it contains " AND " or " OR "), which contains a disjunction but not a
// stray closing parenthesis. Disjunctions are OR as a word, and under
// Rules.OrOperators also || and XOR. Comments and string literals are
// skipped (an OR inside a literal is text).
func Narrows(sql string, rules Rules, wrapped bool) bool {
	toks := tokenize(sql, rules)
	depth := 0
	widens := false
	for i, t := range toks {
		switch {
		case t.is("("):
			depth++
		case t.is(")"):
			depth--
			if depth < 0 {
				return false
			}
		case depth > 0:
		case t.kw("OR"):
			widens = true
		case rules.OrOperators && (t.kw("XOR") || t.is("|") && i+1 < len(toks) && toks[i+1].is("|")):
			widens = true
		}
	}
	return depth == 0 && (!widens || wrapped)
}

// SplitAnd splits on the keyword AND (any case) between conditions.
func SplitAnd(s string) []string {
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

// ParseCondition parses `col = ?`, `col IN ?` or `col IN (?)`, returning
// the column as written (see Column), and whether the placeholder was in
// parentheses.
func ParseCondition(s string) (col string, in, paren, ok bool) {
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

// Column parses a column as a hand-written condition names it: name or
// table.name, each part bare or quoted the way the dialect quotes
// identifiers ("name" on Postgres, `name` on MySQL, either on SQLite;
// MySQL reads "name" as a string, Postgres `name` as an error). Anything
// else (functions, operators, casts, other quotes) is refused.
func Column(s, dialect string) (table, name Ident, ok bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return Ident{}, Ident{}, false
	}
	ids := make([]Ident, len(parts))
	for k, part := range parts {
		if n := len(part); n >= 2 && part[0] == part[n-1] &&
			(part[0] == '"' && (dialect == "postgres" || dialect == "sqlite") ||
				part[0] == '`' && (dialect == "mysql" || dialect == "sqlite")) {
			part, ids[k].Quoted = part[1:n-1], true
		}
		if part == "" {
			return Ident{}, Ident{}, false
		}
		for i := 0; i < len(part); i++ {
			if !IsIdentByte(part[i]) {
				return Ident{}, Ident{}, false
			}
		}
		ids[k].Name = part
	}
	if len(ids) == 2 {
		return ids[0], ids[1], true
	}
	return Ident{}, ids[0], true
}
