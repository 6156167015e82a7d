package sqltext

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func names(ts []TableName) []string {
	var out []string
	for _, t := range ts {
		parts := make([]string, len(t))
		for i, p := range t {
			parts[i] = p.Name
		}
		out = append(out, strings.Join(parts, "."))
	}
	return out
}

func TestWriteTables(t *testing.T) {
	pg, my, lite := Rules{Dollar: true}, Rules{Backslash: true}, Rules{}
	cases := []struct {
		rules Rules
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
		{pg, "DO $$ BEGIN UPDATE hidden SET x = 1; END $$; DELETE FROM shown", []string{"hidden", "shown"}},
		{pg, "EXPLAIN ANALYZE UPDATE items SET a = 1", []string{"items"}},
		{pg, "explain (analyze, buffers) delete from items", []string{"items"}},
		{pg, "EXPLAIN ANALYZE VERBOSE WITH x AS (SELECT 1) UPDATE items SET a = 1", []string{"items"}},
		{my, "ANALYZE FORMAT=JSON UPDATE items SET a = 1", []string{"items"}},
		{my, "EXPLAIN FORMAT=TREE DELETE FROM items", []string{"items"}},
		{pg, "ANALYZE items", nil},
		{pg, "EXPLAIN SELECT * FROM items", nil},
		{pg, "WITH a AS (SELECT 1), b AS (SELECT 2) UPDATE items SET x = 1", []string{"items"}},
		{pg, "WITH x(id) AS (VALUES (1)) UPDATE items SET a = 1 FROM x WHERE items.id = x.id", []string{"items"}},
		{pg, "WITH x AS MATERIALIZED (SELECT 1) DELETE FROM items", []string{"items"}},
		{my, "WITH x AS (SELECT 1) UPDATE items, x SET items.a = 1", []string{"items", "x"}},
		{pg, "(WITH x AS (SELECT 1) INSERT INTO items SELECT * FROM x)", []string{"items"}},
		{pg, `DO LANGUAGE plpgsql $body$
			DECLARE r record;
			BEGIN
				FOR r IN SELECT id FROM src FOR UPDATE LOOP
					INSERT INTO copies VALUES (r.id) ON CONFLICT (id) DO UPDATE SET n = 1;
				END LOOP;
				IF true THEN DELETE FROM gone WHERE id = 1; END IF;
				EXECUTE 'UPDATE dynamic SET x = ' || 1;
			END $body$`, []string{"copies", "gone", "dynamic"}},
		{pg, "DO 'BEGIN UPDATE quoted SET x = 1; END'", []string{"quoted"}},
		{pg, "COPY items (id, name) FROM STDIN", []string{"items"}},
		{pg, "COPY items TO STDOUT", nil},
		{my, "LOAD DATA LOCAL INFILE '/tmp/x' REPLACE INTO TABLE items", []string{"items"}},
		{my, "RENAME TABLE a TO b, c TO d", []string{"a", "b", "c", "d"}},
		{pg, "ALTER TABLE fresh RENAME TO items", []string{"fresh", "items"}},
		{my, "/*!UPDATE items SET a = 1*/", []string{"items"}},
		{my, "/*!50000 DELETE FROM items */; /*M!100100 UPDATE other SET a = 1 */", []string{"items", "other"}},
		{pg, "/*!UPDATE items SET a = 1*/", nil}, // a comment elsewhere
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
		require.Equal(t, c.want, names(WriteTables(c.sql, c.rules)), c.sql)
	}
}

// FuzzWriteTables: the detector never panics, whatever the input.
func FuzzWriteTables(f *testing.F) {
	f.Add("UPDATE a SET x = 1")
	f.Add("WITH x AS (DELETE FROM t) UPDATE \"a\".`b` SET")
	f.Add("$$ '\\' [ ( ;")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range []Rules{{}, {Dollar: true}, {Backslash: true}} {
			_ = WriteTables(s, r)
		}
		_, _, _ = ParseTableName(s)
		_ = MayWrite(s)
		_, _ = PreparedStatements(s, Rules{Dollar: true})
		_, _ = PreparedStatements(s, Rules{Backslash: true})
		_ = Savepoints(s, Rules{Dollar: true})
		_ = HasOrToken(s)
		for _, part := range SplitAnd(s) {
			if col, _, _, ok := ParseCondition(part); ok {
				_, _, _ = Column(col, "postgres")
			}
		}
	})
}

func TestWriteTablesDollarTags(t *testing.T) {
	pg := Rules{Dollar: true}
	// A tag follows the rules of a bare identifier, non-ASCII letters
	// included: the quote inside the string must not open a literal that
	// hides the write after it.
	require.Equal(t, []string{"real"}, names(WriteTables("SELECT $é$ it's $é$; DELETE FROM real", pg)))
	require.Equal(t, []string{"real"}, names(WriteTables("SELECT $_t1$ it's $_t1$; DELETE FROM real", pg)))
	// $1 is a placeholder, not a tag.
	require.Equal(t, []string{"a"}, names(WriteTables("UPDATE a SET x = $1 WHERE id = $2", pg)))
}

func TestMayWrite(t *testing.T) {
	for _, s := range []string{"UPDATE a SET x = 1", " /* c */ ((delete from a", "-- x\nWITH x AS (SELECT 1) INSERT INTO a SELECT * FROM x", "truncate a", "Alter table a", "DROP TABLE a", "MERGE INTO a", "REPLACE INTO a", "INSERT INTO a"} {
		require.True(t, MayWrite(s), s)
	}
	for _, s := range []string{"EXPLAIN ANALYZE UPDATE a SET x = 1", "DO $$ $$", "EXECUTE p", "PREPARE p AS UPDATE a SET x = 1", "COPY a FROM STDIN"} {
		require.True(t, MayWrite(s), s)
	}
	for _, s := range []string{"", "SELECT 1", "select * from updates", "UPDATES", "CREATE TABLE a (id int)", "SAVEPOINT sp"} {
		require.False(t, MayWrite(s), s)
	}
}

func TestPreparedStatements(t *testing.T) {
	pg, my := Rules{Dollar: true}, Rules{Backslash: true, OrOperators: true}
	prep, exec := PreparedStatements("PREPARE p1 (int) AS UPDATE items SET a = $1; EXECUTE p1(5)", pg)
	require.Len(t, prep, 1)
	require.Equal(t, Ident{Name: "p1"}, prep[0].Name)
	require.True(t, prep[0].Known)
	require.Equal(t, []string{"items"}, names(prep[0].Tables))
	require.Equal(t, []Ident{{Name: "p1"}}, exec)

	prep, _ = PreparedStatements("PREPARE `s` FROM 'DELETE FROM items WHERE id = ?'", my)
	require.Equal(t, []string{"items"}, names(prep[0].Tables))
	require.Equal(t, Ident{Name: "s", Quoted: true}, prep[0].Name)
	prep, _ = PreparedStatements("PREPARE s FROM 'SELECT 1'", my)
	require.True(t, prep[0].Known)
	require.Empty(t, prep[0].Tables)
	prep, _ = PreparedStatements("PREPARE s FROM @sql", my)
	require.False(t, prep[0].Known, "the text is in a variable")
	_, exec = PreparedStatements("EXECUTE s USING @a, @b", my)
	require.Equal(t, []Ident{{Name: "s"}}, exec)
	prep, exec = PreparedStatements("SELECT 'EXECUTE x'", pg)
	require.Empty(t, prep)
	require.Empty(t, exec)
}
