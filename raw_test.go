package writethrough

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

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

// qualified returns the table name qualified by its schema (Postgres), its
// database (MySQL) or "main" (SQLite).
func qualified(w *writeEnv, table string) string {
	switch w.b.dialect {
	case "postgres":
		return "public." + table
	case "mysql":
		return "test." + table
	}
	return "main." + table
}

// Raw writes through db.Exec (and db.Raw read with Find or Scan) are
// recognised and fence the table: after each, every row read through the
// plugin is the database's. Reads right after an auto-commit Exec fill
// again; SELECTs cost no Redis round trip.
func TestRawExecIsDetected(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		ids := seedItems(t, w, 5)
		table := w.db.NamingStrategy.TableName("Item")
		quoted := w.db.Statement.Quote(table)
		all := append(append([]any{}, ids...), uint(50), uint(51), uint(52))
		steps := []struct {
			name string
			f    func(db *gorm.DB) error
		}{
			{"UPDATE", func(db *gorm.DB) error {
				return db.Exec("UPDATE "+table+" SET name = ? WHERE id = ?", "raw", ids[0]).Error
			}},
			{"update in lower case, quoted", func(db *gorm.DB) error {
				return db.Exec("update " + quoted + " set stock = stock + 1").Error
			}},
			{"UPDATE schema-qualified", func(db *gorm.DB) error {
				return db.Exec("UPDATE "+qualified(w, table)+" SET price = price * 2 WHERE id > ?", ids[2]).Error
			}},
			{"comment first", func(db *gorm.DB) error {
				return db.Exec("/* maintenance */ UPDATE " + table + " SET note = 'commented'").Error
			}},
			{"INSERT INTO over a cached absence", func(db *gorm.DB) error {
				return db.Exec("INSERT INTO " + table + " (id, name, stock, price, note, flag) VALUES (50, 'raw insert', 1, 1, 'n', false)").Error
			}},
			{"DELETE FROM", func(db *gorm.DB) error {
				return db.Exec("DELETE FROM "+table+" WHERE id = ?", ids[1]).Error
			}},
			{"named arguments", func(db *gorm.DB) error {
				return db.Exec("UPDATE "+table+" SET name = @name WHERE id = @id", map[string]any{"name": "named", "id": ids[3]}).Error
			}},
		}
		if w.b.dialect != "mysql" { // UPDATE ... RETURNING: Postgres, SQLite
			steps = append(steps,
				struct {
					name string
					f    func(db *gorm.DB) error
				}{"Raw(UPDATE ... RETURNING).Find", func(db *gorm.DB) error {
					var rows []Item
					return db.Raw("UPDATE "+table+" SET name = 'returned' WHERE id = ? RETURNING *", ids[0]).Find(&rows).Error
				}},
				struct {
					name string
					f    func(db *gorm.DB) error
				}{"Raw(UPDATE ... RETURNING).Scan", func(db *gorm.DB) error {
					var rows []Item
					return db.Raw("UPDATE "+table+" SET name = 'scanned' WHERE id = ? RETURNING *", ids[2]).Scan(&rows).Error
				}},
			)
		}
		for _, s := range steps {
			warm[Item](t, w.env, all...)
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { checkAll[Item](t, w, false, all...) })
		}

		// A raw SELECT costs no Redis round trip and changes nothing.
		calls := countRedis(w.rdb)
		var n int64
		require.NoError(t, w.db.Raw("SELECT count(*) FROM "+table).Scan(&n).Error)
		require.NoError(t, w.db.Exec("SELECT 1").Error)
		var rows []Item
		require.NoError(t, w.db.Raw("SELECT * FROM "+table+" WHERE id = ?", ids[0]).Find(&rows).Error)
		trips, cmds := calls.take()
		require.Zero(t, trips, "raw SELECTs must not touch Redis, sent %v", cmds)
	})
}

// A raw write in a transaction fences on the transaction: rolled back, the
// cache is untouched and still true; committed, it is invalidated.
func TestRawExecInTransaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
		ids := seedItems(t, w, 3)
		table := w.db.NamingStrategy.TableName("Item")
		warm[Item](t, w.env, ids...)

		errRollback := errors.New("roll back")
		err := w.db.Transaction(func(tx *gorm.DB) error {
			require.NoError(t, tx.Exec("UPDATE "+table+" SET name = 'rolled back'").Error)
			return errRollback
		})
		require.ErrorIs(t, err, errRollback)
		check[Item](t, w, false, ids...)

		require.NoError(t, w.db.Transaction(func(tx *gorm.DB) error {
			return tx.Exec("UPDATE " + table + " SET name = 'committed'").Error
		}))
		checkAll[Item](t, w, false)
		var got Item
		require.NoError(t, w.db.First(&got, ids[0]).Error)
		require.Equal(t, "committed", got.Name)
	})
}

// In auto-commit the table is fenced before the raw SQL runs (a reader
// cannot fill the old row between the write and its finish) and released
// after it.
func TestRawExecFencesBeforeTheSQL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
		ids := seedItems(t, w, 1)
		table := w.db.NamingStrategy.TableName("Item")
		mi, err := w.plugin.modelOf(&Item{})
		require.NoError(t, err)
		_, fence := mi.shardKeys(w.plugin.cfg.Prefix, 0)
		var during int64 = -1
		require.NoError(t, w.db.Callback().Raw().Before("gorm:raw").After("writethrough:before_raw_write").
			Register("test:probe", func(db *gorm.DB) {
				if strings.Contains(db.Statement.SQL.String(), "probe") {
					during = w.rdb.Exists(context.Background(), fence).Val()
				}
			}))
		require.NoError(t, w.db.Exec("UPDATE "+table+" SET name = 'probe'").Error)
		require.Equal(t, int64(1), during, "the table fence must be in place while the SQL runs")
		require.Zero(t, w.rdb.Exists(context.Background(), fence).Val(), "the fence is released after the SQL")
		check[Item](t, w, false, ids...)
		check[Item](t, w, true, ids...) // the miss filled again
	})
}

// Writes the detector does not see (here: another process writing the
// database directly) are repaired with Invalidate and InvalidateTable.
func TestInvalidateAndInvalidateTable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
		ids := seedItems(t, w, 4)
		ctx := context.Background()
		table := w.db.NamingStrategy.TableName("Item")
		u := func(i int) uint { return ids[i].(uint) }
		warm[Item](t, w.env, ids...)

		// The cache cannot know about this write: it is stale now.
		require.NoError(t, w.plain.Exec("UPDATE "+table+" SET name = 'behind your back'").Error)
		var stale Item
		require.NoError(t, w.db.First(&stale, ids[0]).Error)
		require.NotEqual(t, "behind your back", stale.Name, "the test needs a stale entry to repair")

		require.NoError(t, w.plugin.Invalidate(ctx, &Item{ID: u(0)}, []Item{{ID: u(1)}}, []*Item{{ID: u(2)}}, Item{}))
		check[Item](t, w, false, ids[0], ids[1], ids[2])
		var still Item
		require.NoError(t, w.db.First(&still, ids[3]).Error)
		require.NotEqual(t, "behind your back", still.Name, "Invalidate touches only the rows it is given")

		require.NoError(t, w.plugin.InvalidateTable(ctx, &Item{}))
		checkAll[Item](t, w, false)

		// Bad input gets an error, not a panic.
		require.Error(t, w.plugin.Invalidate(ctx, 42))
		require.Error(t, w.plugin.InvalidateTable(ctx, "items"))
		require.Error(t, New(w.rdb, Config{}).InvalidateTable(ctx, &Item{}), "a plugin that is not installed")
		require.NoError(t, w.plugin.Invalidate(ctx))
	})
}

// A raw write whose table cannot be fenced (Redis unreachable) follows the
// write policy: Strict refuses it before the SQL runs, Available lets it
// run and invalidates the table once Redis answers.
func TestRawExecWithRedisDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		if b.name != "sqlite+miniredis" {
			t.Skip("one backend is enough: the policy does not depend on the database")
		}
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
		ids := seedItems(t, w, 1)
		table := w.db.NamingStrategy.TableName("Item")
		// Nothing listens on this port (the range is reserved for this
		// helper's own Redis servers, none of which this test starts).
		dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:7519", DialTimeout: 50 * time.Millisecond, MaxRetries: -1})
		t.Cleanup(func() { dead.Close() })
		for _, policy := range []WritePolicy{Strict, Available} {
			db, err := gorm.Open(b.open(t, w.counter.inner), &gorm.Config{NamingStrategy: w.db.NamingStrategy, Logger: logger.Discard})
			require.NoError(t, err)
			require.NoError(t, db.Use(New(dead, Config{Prefix: w.prefix, OnRedisError: policy, WriteTimeout: 100 * time.Millisecond})))
			err = db.Exec("UPDATE "+table+" SET name = ? WHERE id = ?", "written "+policy.String(), ids[0]).Error
			var got Item
			require.NoError(t, w.plain.First(&got, ids[0]).Error)
			if policy == Strict {
				require.Error(t, err, "strict: the raw write must be refused")
				require.NotEqual(t, "written strict", got.Name, "strict: the SQL must not have run")
			} else {
				require.NoError(t, err)
				require.Equal(t, "written available", got.Name)
			}
		}
	})
}
