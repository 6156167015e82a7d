package sqltext

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTableName(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		rest string
	}{
		{"items", []string{"items"}, ""},
		{"  items SET a = 1", []string{"items"}, " SET a = 1"},
		{`"public"."items" AS i`, []string{"public.items"}, " AS i"},
		{"`db`.`it``ems`", []string{"db.it`ems"}, ""},
		{`"a""b"`, []string{`a"b`}, ""},
		{"[main].[items]", []string{"main.items"}, ""},
		{"/* c */ -- x\n myschema . Items", []string{"myschema.Items"}, ""},
		{"a.b.c.d", []string{"a.b.c"}, ".d"},
	}
	for _, c := range cases {
		n, rest, ok := ParseTableName(c.in)
		require.True(t, ok, c.in)
		var parts []string
		for _, p := range n {
			parts = append(parts, p.Name)
		}
		require.Equal(t, c.want[0], strings.Join(parts, "."), c.in)
		require.Equal(t, c.rest, rest, c.in)
	}
	for _, bad := range []string{"", "   ", "(SELECT 1) AS x", `""`, `"open`, "?"} {
		_, _, ok := ParseTableName(bad)
		require.False(t, ok, bad)
	}
}

func join(parts []string) string {
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += "."
		}
		out += p
	}
	return out
}

func TestParseTableNameQuoting(t *testing.T) {
	n, _, ok := ParseTableName(`MySchema."Items"`)
	require.True(t, ok)
	require.Equal(t, TableName{{Name: "MySchema"}, {Name: "Items", Quoted: true}}, n)
	n, _, ok = ParseTableName("[a b].`c`")
	require.True(t, ok)
	require.Equal(t, TableName{{Name: "a b", Quoted: true}, {Name: "c", Quoted: true}}, n)
}

func TestIsIdentByte(t *testing.T) {
	for _, c := range []byte("azAZ09_$\x80\xff") {
		require.True(t, IsIdentByte(c), "%q", c)
	}
	for _, c := range []byte(" \t\n.,;()'\"`[]-+*/=<>?") {
		require.False(t, IsIdentByte(c), "%q", c)
	}
}

func TestSameIdent(t *testing.T) {
	cases := []struct {
		dialect string
		written Ident
		actual  string
		column  bool
		want    bool
	}{
		{"postgres", Ident{Name: "ID"}, "id", true, true},                // unquoted names fold
		{"postgres", Ident{Name: "ID", Quoted: true}, "id", true, false}, // quoted ones do not
		{"postgres", Ident{Name: "id"}, "ID", true, false},
		{"mysql", Ident{Name: "ID", Quoted: true}, "id", true, true}, // columns ignore ASCII case
		{"mysql", Ident{Name: "Items"}, "items", false, false},       // tables must match exactly
		{"sqlite", Ident{Name: "Id"}, "iD", true, true},
		{"sqlserver", Ident{Name: "ID"}, "id", true, false},
		{"sqlserver", Ident{Name: "id"}, "id", true, true},
		{"mysql", Ident{Name: "ïd"}, "id", true, false}, // only ASCII folds
	}
	for _, c := range cases {
		require.Equal(t, c.want, SameIdent(c.dialect, c.written, c.actual, c.column), "%+v", c)
	}
}
