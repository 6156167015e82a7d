package writethrough

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Pure SQL-text functions: the raw-SQL write detector and table lists, and
// table-name parsing. They move to internal/sqltext with their tests.

func names(ts []tableName) []string {
	var out []string
	for _, t := range ts {
		parts := make([]string, len(t))
		for i, p := range t {
			parts[i] = p.name
		}
		out = append(out, strings.Join(parts, "."))
	}
	return out
}

func TestRawWriteTables(t *testing.T) {
	pg, my, lite := sqlRules{dollar: true}, sqlRules{backslash: true}, sqlRules{}
	cases := []struct {
		rules sqlRules
		sql   string
		want  []string
	}{
		{lite, "UPDATE items SET a = 1", []string{"items"}},
		{lite, "update Items set a = 1 where id = ?", []string{"Items"}},
		{pg, `UPDATE ONLY "public"."items" AS i SET a = 1 FROM other o WHERE o.id = i.id`, []string{"public.items"}},
		{my, "UPDATE LOW_PRIORITY IGNORE `db`.`items` SET a = 1", []string{"db.items"}},
		{my, "UPDATE a INNER JOIN b ON a.id = b.id, c SET a.x = b.x, c.y = 1", []string{"a", "b", "c"}},
		{lite, "UPDATE OR REPLACE items SET a = 1", []string{"items"}},
		{lite, "  /* c */ -- line\n DELETE FROM [main].[items] WHERE id IN (1, 2)", []string{"main.items"}},
		{my, "# comment\nDELETE QUICK FROM items WHERE 1", []string{"items"}},
		{my, "DELETE t1, t2 FROM t1 JOIN t2 ON t1.id = t2.id WHERE t1.x = 1", []string{"t1", "t2", "t1", "t2"}},
		{my, "DELETE FROM t1 USING t1 JOIN t2 WHERE t1.id = t2.id", []string{"t1"}},
		{pg, "DELETE FROM items USING other WHERE other.id = items.id RETURNING *", []string{"items"}},
		{lite, "INSERT INTO items (id, name) VALUES (1, 'UPDATE x SET')", []string{"items"}},
		{my, "INSERT IGNORE items VALUES (1)", []string{"items"}},
		{lite, "INSERT OR REPLACE INTO items VALUES (1)", []string{"items"}},
		{my, "REPLACE INTO items VALUES (1)", []string{"items"}},
		{my, "insert into items select * from other on duplicate key update a = 1", []string{"items"}},
		{pg, "TRUNCATE TABLE a, b RESTART IDENTITY", []string{"a", "b"}},
		{pg, "MERGE INTO items t USING src s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1", []string{"items"}},
		{pg, "WITH gone AS (DELETE FROM items WHERE a = 1 RETURNING id) UPDATE other SET n = 0 FROM gone", []string{"items", "other"}},
		{pg, "WITH RECURSIVE x(n) AS (SELECT 1) SELECT * FROM x", nil},
		{pg, "UPDATE a SET x = 1; UPDATE b SET y = 'it''s; UPDATE c'", []string{"a", "b"}},
		{pg, "DO $$ BEGIN UPDATE hidden SET x = 1; END $$; DELETE FROM shown", []string{"shown"}},
		{my, `UPDATE a SET s = 'a\'; DELETE FROM fake'; DELETE FROM real`, []string{"a", "real"}},
		{pg, `UPDATE a SET s = 'C:\'; DELETE FROM real`, []string{"a", "real"}},
		{lite, "ALTER TABLE items ADD COLUMN x int", []string{"items"}},
		{lite, "DROP TABLE IF EXISTS a, b", []string{"a", "b"}},
		{lite, "SELECT * FROM items FOR UPDATE", nil},
		{lite, "SAVEPOINT sp1", nil},
		{lite, "ROLLBACK TO SAVEPOINT sp1", nil},
		{lite, "CREATE TABLE x (id int)", nil},
		{lite, "", nil},
		{lite, "UPDATE", nil},
		{lite, "DELETE FROM", nil},
		{lite, "((((", nil},
	}
	for _, c := range cases {
		require.Equal(t, c.want, names(rawWriteTables(c.sql, c.rules)), c.sql)
	}
}

// FuzzRawWriteTables: the detector never panics, whatever the input.
func FuzzRawWriteTables(f *testing.F) {
	f.Add("UPDATE a SET x = 1")
	f.Add("WITH x AS (DELETE FROM t) UPDATE \"a\".`b` SET")
	f.Add("$$ '\\' [ ( ;")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range []sqlRules{{}, {dollar: true}, {backslash: true}} {
			_ = rawWriteTables(s, r)
		}
		_, _, _ = parseTableName(s)
		_ = mayWrite(s)
	})
}

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
