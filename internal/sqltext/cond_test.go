package sqltext

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHasOrToken(t *testing.T) {
	for _, s := range []string{"a = 1 OR b = 2", "a=1\nor\tb=2", "(a)OR(b)", "x = ? Or y = ?", "OR"} {
		require.True(t, HasOrToken(s), s)
	}
	// Words that merely contain OR are not the keyword: every dialect reads
	// an identifier through '$', digits and non-ASCII letters.
	for _, s := range []string{"", "a = 1 AND b = 2", "color = ?", "ORDER", "x_or = 1", "or$x = 1", "oré = 1", "or1 = 2"} {
		require.False(t, HasOrToken(s), s)
	}
}

func TestSplitAnd(t *testing.T) {
	require.Equal(t, []string{"id = ?"}, SplitAnd("id = ?"))
	require.Equal(t, []string{"id = ?", "b IN ?"}, SplitAnd("id = ? and  b IN ?"))
	require.Equal(t, []string{"a = ?", "b = ?", "c IN (?)"}, SplitAnd("a = ?\nAND b = ? AnD c IN (?)"))
	require.Equal(t, []string{"brand = ?"}, SplitAnd("brand = ?"), "AND inside a word does not split")
}

func TestParseCondition(t *testing.T) {
	cases := []struct {
		in             string
		col            string
		in_, paren, ok bool
	}{
		{"id = ?", "id", false, false, true},
		{" `id`=? ", "`id`", false, false, true},
		{"t.id IN ?", "t.id", true, false, true},
		{"id in (?)", "id", true, true, true},
		{"id IN(?)", "id", true, true, true},
		{"id > ?", "", false, false, false},
		{"id = 5", "", false, false, false},
		{"id LIKE ?", "", false, false, false},
		{"", "", false, false, false},
	}
	for _, c := range cases {
		col, in, paren, ok := ParseCondition(c.in)
		require.Equal(t, c.ok, ok, c.in)
		if ok {
			require.Equal(t, c.col, col, c.in)
			require.Equal(t, c.in_, in, c.in)
			require.Equal(t, c.paren, paren, c.in)
		}
	}
}

func TestColumn(t *testing.T) {
	cases := []struct {
		s, dialect  string
		table, name Ident
		ok          bool
	}{
		{"id", "postgres", Ident{}, Ident{Name: "id"}, true},
		{`"Id"`, "postgres", Ident{}, Ident{Name: "Id", Quoted: true}, true},
		{"`id`", "mysql", Ident{}, Ident{Name: "id", Quoted: true}, true},
		{`items."id"`, "sqlite", Ident{Name: "items"}, Ident{Name: "id", Quoted: true}, true},
		{"`items`.`id`", "sqlite", Ident{Name: "items", Quoted: true}, Ident{Name: "id", Quoted: true}, true},
		{"`id`", "postgres", Ident{}, Ident{}, false}, // not a quote on Postgres
		{`"id"`, "mysql", Ident{}, Ident{}, false},    // a string on MySQL
		{"a.b.c", "postgres", Ident{}, Ident{}, false},
		{"lower(id)", "postgres", Ident{}, Ident{}, false},
		{"id::int", "postgres", Ident{}, Ident{}, false},
		{`""`, "postgres", Ident{}, Ident{}, false},
		{"", "postgres", Ident{}, Ident{}, false},
		{"a .id", "postgres", Ident{}, Ident{}, false},
	}
	for _, c := range cases {
		table, name, ok := Column(c.s, c.dialect)
		require.Equal(t, c.ok, ok, c.s)
		if ok {
			require.Equal(t, c.table, table, c.s)
			require.Equal(t, c.name, name, c.s)
		}
	}
}

func TestNarrows(t *testing.T) {
	my, pg := Rules{Backslash: true, OrOperators: true}, Rules{Dollar: true}
	cases := []struct {
		sql     string
		rules   Rules
		wrapped bool
		want    bool
	}{
		{"stock > ?", pg, false, true},
		{"name = 'a OR b'", pg, false, true},       // a literal
		{"name = ? -- OR x\n", pg, false, true},    // a comment
		{"(a = ? OR b = ?)", pg, false, true},      // contained
		{"a = ?\nOR b = ?", pg, false, false},      // GORM does not wrap it
		{"a = ? OR b = ?", pg, true, true},         // GORM wraps it
		{"a = ?) OR (b = ?", pg, true, false},      // wrapping does not contain it
		{"a = ? || b = ?", my, false, false},       // MySQL reads || as OR
		{"a = ? || b = ?", pg, false, true},        // concatenation elsewhere
		{"a = ? XOR b = ?", my, false, false},      // MySQL's XOR
		{"a || b = ?", my, true, true},             // wrapped
		{"(a = ? || b = ?) AND c", my, true, true}, // contained
		{"a = ?)", pg, false, false},
		{"(a = ?", pg, false, false},
		{"color = ? AND ORDER_x = ?", pg, true, true},
	}
	for _, c := range cases {
		require.Equal(t, c.want, Narrows(c.sql, c.rules, c.wrapped), "%q", c.sql)
	}
}
