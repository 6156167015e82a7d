package writethrough

import (
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
		n, rest, ok := parseTableName(c.in)
		require.True(t, ok, c.in)
		var parts []string
		for _, p := range n {
			parts = append(parts, p.name)
		}
		require.Equal(t, c.want[0], join(parts), c.in)
		require.Equal(t, c.rest, rest, c.in)
	}
	for _, bad := range []string{"", "   ", "(SELECT 1) AS x", `""`, `"open`, "?"} {
		_, _, ok := parseTableName(bad)
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

func TestTableNameCandidates(t *testing.T) {
	p := New(nil, Config{})
	n, _, ok := parseTableName(`MySchema."Items"`)
	require.True(t, ok)
	require.ElementsMatch(t, []string{"MySchema.Items", "myschema.Items", "Items"}, p.tableNameCandidates([]tableName{n}))
	n, _, _ = parseTableName(`Items`)
	require.ElementsMatch(t, []string{"Items", "items"}, p.tableNameCandidates([]tableName{n}))
}
