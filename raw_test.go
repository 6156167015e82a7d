package writethrough

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Raw SQL through db.Exec and db.Raw: writes are recognised and fence the
// tables they name, in and out of transactions, under either write policy.

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
		calls := countRedis(w.rdb, w.plugin)
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

// TestRawWritesTheTokenizerMissed: raw writes that do not start with a
// write verb: EXPLAIN ANALYZE (which runs the statement), PREPARE then
// EXECUTE, WITH ... UPDATE, Postgres DO blocks, MySQL executable comments.
// Each fences the tables it names, so no read serves the row from before.
// They run both in a transaction and in auto-commit on one connection
// (PREPARE and EXECUTE must share a session).
func TestRawWritesTheTokenizerMissed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
		ids := seedItems(t, w, 3)
		table := w.db.NamingStrategy.TableName("Item")
		type step struct {
			name string
			sql  func(n int) []string // n differs per run, so every run changes the row
			// rows: through Raw(...).Rows(), as EXPLAIN output is read; in a
			// transaction only (in auto-commit its table fence is held
			// until LockTTL, and the next step could not warm the cache).
			rows bool
		}
		where := func(set string) string { return " " + table + " SET " + set + " WHERE id = " + fmt.Sprint(ids[0]) }
		var steps []step
		if b.dialect != "mysql" { // MariaDB has no WITH before UPDATE
			steps = append(steps, step{name: "WITH ... UPDATE", sql: func(n int) []string {
				return []string{"WITH picked AS (SELECT id FROM " + table + ") UPDATE" + where(fmt.Sprintf("stock = %d", n))}
			}})
		}
		switch b.dialect {
		case "postgres":
			steps = append(steps,
				step{name: "EXPLAIN ANALYZE UPDATE", sql: func(n int) []string { return []string{"EXPLAIN ANALYZE UPDATE" + where(fmt.Sprintf("stock = %d", n))} }},
				step{name: "EXPLAIN (ANALYZE) UPDATE, read as rows", sql: func(n int) []string {
					return []string{"EXPLAIN (ANALYZE, COSTS OFF) UPDATE" + where(fmt.Sprintf("stock = %d", n))}
				}, rows: true},
				step{name: "PREPARE AS, EXECUTE", sql: func(n int) []string {
					return []string{fmt.Sprintf("PREPARE wt_p%d (int) AS UPDATE", n) + where("price = $1"), fmt.Sprintf("EXECUTE wt_p%d(%d)", n, n)}
				}},
				step{name: "DO block", sql: func(n int) []string {
					return []string{"DO $$ BEGIN UPDATE" + where(fmt.Sprintf("stock = %d", n)) + "; END $$"}
				}},
				step{name: "DO block, dynamic SQL in a literal", sql: func(n int) []string {
					return []string{"DO $$ BEGIN EXECUTE 'UPDATE" + where(fmt.Sprintf("note = ''dyn%d''", n)) + "'; END $$"}
				}},
			)
		case "mysql":
			var version string
			require.NoError(t, w.plain.Raw("SELECT VERSION()").Scan(&version).Error)
			if strings.Contains(version, "MariaDB") {
				steps = append(steps,
					step{name: "ANALYZE UPDATE", sql: func(n int) []string { return []string{"ANALYZE UPDATE" + where(fmt.Sprintf("stock = %d", n))} }},
					step{name: "ANALYZE FORMAT=JSON UPDATE, read as rows", sql: func(n int) []string {
						return []string{"ANALYZE FORMAT=JSON UPDATE" + where(fmt.Sprintf("stock = %d", n))}
					}, rows: true})
			}
			steps = append(steps,
				step{name: "PREPARE FROM, EXECUTE", sql: func(n int) []string {
					return []string{"PREPARE wt_p FROM 'UPDATE" + where("price = ?") + "'", fmt.Sprintf("SET @v = %d", n), "EXECUTE wt_p USING @v"}
				}},
				step{name: "executable comment", sql: func(n int) []string { return []string{"/*!UPDATE" + where(fmt.Sprintf("stock = %d", n)) + "*/"} }},
			)
		}
		n := 1000
		run := func(db *gorm.DB, s step) error {
			for _, q := range s.sql(n) {
				if s.rows {
					rows, err := db.Raw(q).Rows()
					if err != nil {
						return err
					}
					for rows.Next() {
					}
					if err := rows.Close(); err != nil {
						return err
					}
					continue
				}
				if err := db.Exec(q).Error; err != nil {
					return fmt.Errorf("%s: %w", q, err)
				}
			}
			return nil
		}
		for _, s := range steps {
			for _, mode := range []string{"transaction", "auto-commit"} {
				if s.rows && mode != "transaction" {
					continue
				}
				n++
				warm[Item](t, w.env, ids...)
				before := dbItem(t, w, ids[0])
				var err error
				if mode == "transaction" {
					err = w.db.Transaction(func(tx *gorm.DB) error { return run(tx, s) })
				} else {
					err = w.db.Connection(func(c *gorm.DB) error { return run(c, s) })
				}
				require.NoError(t, err, "%s (%s)", s.name, mode)
				require.NotEqual(t, canon(before), canon(dbItem(t, w, ids[0])), "%s (%s): the statement changed the row", s.name, mode)
				t.Run(s.name+" "+mode, func(t *testing.T) { check[Item](t, w, false, ids...) })
			}
		}
	})
}

// dbItem reads an item from the database itself.
func dbItem(t *testing.T, w *writeEnv, id any) Item {
	t.Helper()
	var it Item
	require.NoError(t, w.plain.First(&it, id).Error)
	return it
}
