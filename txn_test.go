package writethrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Transactions, every way GORM runs them: nothing reaches Redis before the
// outermost COMMIT returns, nothing of a rollback or of a rolled-back
// savepoint ever does, reads inside a transaction see the database (and the
// transaction's own writes), and a COMMIT that fails publishes nothing.
// The commit modes themselves are in harness_test.go (commitModes).

// forEachTxMode runs f per backend and mode, with an env whose table holds
// one warm product (price 100, cached).
func forEachTxMode(t *testing.T, modes []commitMode, f func(t *testing.T, m commitMode, e *env, ins *inspector, p Product)) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range modes {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				ins := installInspector(t, e.db)
				p := Product{Name: "lamp", Price: 100}
				require.NoError(t, e.db.Create(&p).Error)
				warm[Product](t, e, p.ID)
				f(t, m, e, ins, p)
			})
		}
	})
}

// TestTxnNothingReachesRedisBeforeCommit: while the transaction is open the
// key holds a fence or the previous entry, never the new state, and readers
// outside get the committed state; after COMMIT the new state is written
// through (or, for a transaction the plugin cannot see end, the fence
// keeps readers on the database).
func TestTxnNothingReachesRedisBeforeCommit(t *testing.T) {
	forEachTxMode(t, commitModes(), func(t *testing.T, m commitMode, e *env, ins *inspector, p Product) {
		key := rowKeyOf(t, e, &Product{ID: p.ID})
		old := peek(t, e, key)
		require.True(t, strings.HasPrefix(old, "V"), "warm key holds %q", abbrev(old))

		checks := 0
		err := m.run(e, ins, setPrice(p.ID, 200), func() {
			checks++
			got := peek(t, e, key)
			requireNotNew(t, got, old, "inside the transaction")
			want := int64(100)
			if m.autocommit {
				// The SQL has committed: others can see it, so the key
				// must be fenced, and readers must get the new state.
				require.True(t, strings.HasPrefix(got, "F"), "auto-commit: the key must be fenced once the SQL ran, holds %q", abbrev(got))
				want = 200
			}
			price, hit := readPrice(t, e, p.ID)
			require.Equal(t, want, price, "a reader outside the transaction gets the committed state")
			if m.autocommit || got != old {
				require.False(t, hit, "a fenced key is not served")
			}
		}, false)
		require.NoError(t, err)
		require.NotZero(t, checks, "the inspection ran")

		after := peek(t, e, key)
		if m.tracked {
			require.True(t, strings.HasPrefix(after, "V"), "after COMMIT the new state is written through, key holds %q", abbrev(after))
			price, hit := readPrice(t, e, p.ID)
			require.Equal(t, int64(200), price)
			require.True(t, hit, "the written-through state is served from the cache")
		} else {
			require.True(t, strings.HasPrefix(after, "F"), "untracked transaction: the fence stays, key holds %q", abbrev(after))
			price, hit := readPrice(t, e, p.ID)
			require.Equal(t, int64(200), price)
			require.False(t, hit)
		}
	})
}

// TestTxnRollbackPublishesNothing: after ROLLBACK the key holds no new
// state, and the next read returns the committed one (and caches it).
func TestTxnRollbackPublishesNothing(t *testing.T) {
	var modes []commitMode
	for _, m := range commitModes() {
		if !m.autocommit {
			modes = append(modes, m)
		}
	}
	forEachTxMode(t, modes, func(t *testing.T, m commitMode, e *env, ins *inspector, p Product) {
		key := rowKeyOf(t, e, &Product{ID: p.ID})
		old := peek(t, e, key)
		err := m.run(e, ins, setPrice(p.ID, 200), func() {
			requireNotNew(t, peek(t, e, key), old, "inside the transaction")
		}, true)
		require.ErrorIs(t, err, errRollback)
		require.Equal(t, int64(100), dbPrice(t, e, p.ID), "rolled back")

		after := peek(t, e, key)
		requireNotNew(t, after, old, "after ROLLBACK")
		if m.tracked {
			require.False(t, strings.HasPrefix(after, "F"), "the rollback drops its fence, key holds %q", abbrev(after))
		}
		price, _ := readPrice(t, e, p.ID)
		require.Equal(t, int64(100), price, "the next read returns the committed state")
		if m.tracked {
			price, hit := readPrice(t, e, p.ID)
			require.Equal(t, int64(100), price)
			require.True(t, hit, "the committed state is cached again")
		}
	})
}

// TestTxnSavepointRollbackNeverPublishes: rows written in a savepoint that
// is rolled back (a nested db.Transaction returning an error, at depth one
// and two) never reach Redis, though the outer transaction commits; rows of
// kept savepoints do.
func TestTxnSavepointRollbackNeverPublishes(t *testing.T) {
	var modes []commitMode
	for _, m := range commitModes() {
		if m.nests {
			modes = append(modes, m)
		}
	}
	forEachTxMode(t, modes, func(t *testing.T, m commitMode, e *env, ins *inspector, a Product) {
		ps := []Product{{Name: "b", Price: 100}, {Name: "c", Price: 100}, {Name: "d", Price: 100}}
		require.NoError(t, e.db.Create(&ps).Error)
		b, c, d := ps[0], ps[1], ps[2]
		for _, p := range ps {
			warm[Product](t, e, p.ID)
		}
		keys := map[string]string{}
		olds := map[string]string{}
		for name, id := range map[string]uint{"a": a.ID, "b": b.ID, "c": c.ID, "d": d.ID} {
			keys[name] = rowKeyOf(t, e, &Product{ID: id})
			olds[name] = peek(t, e, keys[name])
		}

		write := func(tx *gorm.DB) error {
			if err := setPrice(a.ID, 200)(tx); err != nil {
				return err
			}
			// A savepoint rolled back: its writes of b and a are undone.
			err := tx.Transaction(func(sp *gorm.DB) error {
				if err := setPrice(b.ID, 300)(sp); err != nil {
					return err
				}
				if err := setPrice(a.ID, 250)(sp); err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				return fmt.Errorf("nested transaction: %v", err)
			}
			// A savepoint kept, holding one rolled back: c is kept, d is not.
			return tx.Transaction(func(sp *gorm.DB) error {
				if err := setPrice(c.ID, 400)(sp); err != nil {
					return err
				}
				err := sp.Transaction(func(sp2 *gorm.DB) error {
					if err := setPrice(d.ID, 500)(sp2); err != nil {
						return err
					}
					return errRollback
				})
				if !errors.Is(err, errRollback) {
					return fmt.Errorf("nested transaction: %v", err)
				}
				return nil
			})
		}
		err := m.run(e, ins, write, func() {
			for name, k := range keys {
				requireNotNew(t, peek(t, e, k), olds[name], "inside the transaction, row "+name)
			}
		}, false)
		require.NoError(t, err)

		want := map[string]int64{"a": 200, "b": 100, "c": 400, "d": 100}
		ids := map[string]uint{"a": a.ID, "b": b.ID, "c": c.ID, "d": d.ID}
		for name, id := range ids {
			require.Equal(t, want[name], dbPrice(t, e, id), "database, row %s", name)
		}
		// Rows written in a rolled-back savepoint never reach Redis.
		for _, name := range []string{"b", "d"} {
			got := peek(t, e, keys[name])
			requireNotNew(t, got, olds[name], "after COMMIT, row "+name)
		}
		if m.tracked {
			// a's last write was rolled back: its key is dropped, not
			// written; c's survived and is written through.
			require.Equal(t, "", peek(t, e, keys["a"]), "row a: the key is dropped, not written")
			require.True(t, strings.HasPrefix(peek(t, e, keys["c"]), "V"), "row c is written through")
		}
		for name, id := range ids {
			price, _ := readPrice(t, e, id)
			require.Equal(t, want[name], price, "row %s", name)
		}
		if m.tracked {
			for name, id := range ids {
				price, hit := readPrice(t, e, id)
				require.Equal(t, want[name], price, "row %s", name)
				require.True(t, hit, "row %s is served from the cache", name)
			}
		}
	})
}

// TestTxnCreateAndDelete: inserts and deletes in a transaction publish their
// row (or its absence) only at COMMIT, and nothing on ROLLBACK.
func TestTxnCreateAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, commit := range []bool{true, false} {
			t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
				e := newEnv(t, b, Config{}, &Product{})
				victim := Product{Name: "victim", Price: 100}
				require.NoError(t, e.db.Create(&victim).Error)
				warm[Product](t, e, victim.ID)
				vkey := rowKeyOf(t, e, &Product{ID: victim.ID})
				vold := peek(t, e, vkey)
				// An id the insert will get, first read as absent and cached so.
				next := victim.ID + 1
				require.ErrorIs(t, e.db.First(&Product{}, next).Error, gorm.ErrRecordNotFound)
				nkey := rowKeyOf(t, e, &Product{ID: next})
				nold := peek(t, e, nkey)
				require.True(t, strings.HasPrefix(nold, "N"), "absence cached, key holds %q", nold)

				err := e.db.Transaction(func(tx *gorm.DB) error {
					created := Product{ID: next, Name: "new", Price: 300}
					if err := tx.Create(&created).Error; err != nil {
						return err
					}
					if err := tx.Delete(&Product{ID: victim.ID}).Error; err != nil {
						return err
					}
					requireNotNew(t, peek(t, e, nkey), nold, "created row, inside")
					requireNotNew(t, peek(t, e, vkey), vold, "deleted row, inside")
					require.ErrorIs(t, e.db.First(&Product{}, next).Error, gorm.ErrRecordNotFound, "outside: not created yet")
					var v Product
					require.NoError(t, e.db.First(&v, victim.ID).Error, "outside: not deleted yet")
					if !commit {
						return errRollback
					}
					return nil
				})
				var got Product
				if commit {
					require.NoError(t, err)
					require.True(t, strings.HasPrefix(peek(t, e, nkey), "V"))
					require.True(t, strings.HasPrefix(peek(t, e, vkey), "N"))
					e.queries()
					require.NoError(t, e.db.First(&got, next).Error)
					require.Equal(t, int64(300), got.Price)
					require.ErrorIs(t, e.db.First(&Product{}, victim.ID).Error, gorm.ErrRecordNotFound)
					require.Zero(t, e.queries(), "both served from the cache")
					return
				}
				require.ErrorIs(t, err, errRollback)
				requireNotNew(t, peek(t, e, nkey), nold, "created row, after ROLLBACK")
				requireNotNew(t, peek(t, e, vkey), vold, "deleted row, after ROLLBACK")
				require.ErrorIs(t, e.db.First(&Product{}, next).Error, gorm.ErrRecordNotFound)
				require.NoError(t, e.db.First(&got, victim.ID).Error)
				require.Equal(t, int64(100), got.Price)
			})
		}
	})
}

// TestTxnDBHandle: db.DB() still returns the *sql.DB GORM was opened with,
// with PrepareStmt too, and inside a transaction.
func TestTxnDBHandle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, gc := range []struct {
			name string
			cfg  *gorm.Config
		}{{"default", &gorm.Config{}}, {"PrepareStmt", &gorm.Config{PrepareStmt: true}}} {
			t.Run(gc.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, gc.cfg, &Product{})
				want := e.counter.inner
				for name, db := range map[string]*gorm.DB{"db": e.db, "session": preparedSession(e)} {
					got, err := db.DB()
					require.NoError(t, err, name)
					require.Same(t, want, got, name)
					require.NoError(t, db.Transaction(func(tx *gorm.DB) error {
						got, err := tx.DB()
						require.NoError(t, err, name+" in a transaction")
						require.Same(t, want, got, name+" in a transaction")
						return nil
					}))
					tx := db.Begin()
					got, err = tx.DB()
					require.NoError(t, err, name+" after Begin")
					require.Same(t, want, got, name+" after Begin")
					require.NoError(t, tx.Rollback().Error)
				}
			})
		}
	})
}

// TestTxnReadsInsideTransactionUseTheDatabase: a transaction's reads see its
// own writes, including ones the plugin cannot see (raw SQL), and never fill
// the cache with uncommitted state.
func TestTxnReadsInsideTransactionUseTheDatabase(t *testing.T) {
	forEachTxMode(t, modesNamed("Transaction", "BeginCommit", "PrepareStmt/Transaction", "SessionPrepareStmt/Transaction"), func(t *testing.T, m commitMode, e *env, ins *inspector, a Product) {
		cold := Product{Name: "cold", Price: 100}
		require.NoError(t, e.db.Create(&cold).Error)
		ckey := rowKeyOf(t, e, &Product{ID: cold.ID})
		require.NoError(t, e.rdb.Del(context.Background(), ckey).Err())
		akey := rowKeyOf(t, e, &Product{ID: a.ID})
		aold := peek(t, e, akey)
		table := e.stmtSchema(&Product{}).Table

		err := m.run(e, ins, func(tx *gorm.DB) error {
			read := func(id uint) int64 {
				before := e.plugin.Stats()
				var got Product
				require.NoError(t, tx.First(&got, id).Error)
				after := e.plugin.Stats()
				require.Equal(t, before.Hits, after.Hits, "a read inside a transaction is not served from the cache")
				require.Equal(t, before.Fills, after.Fills, "a read inside a transaction does not fill the cache")
				return got.Price
			}
			require.Equal(t, int64(100), read(a.ID))
			// The plugin's own write, then raw SQL it cannot see.
			require.NoError(t, setPrice(a.ID, 200)(tx))
			require.Equal(t, int64(200), read(a.ID))
			require.NoError(t, tx.Exec(fmt.Sprintf("UPDATE %s SET price = 300 WHERE id = ?", table), a.ID).Error)
			require.Equal(t, int64(300), read(a.ID))
			require.NoError(t, tx.Exec(fmt.Sprintf("UPDATE %s SET price = 300 WHERE id = ?", table), cold.ID).Error)
			require.Equal(t, int64(300), read(cold.ID))
			require.Equal(t, "", peek(t, e, ckey), "nothing of the transaction is filled into the cache")
			// Locking reads inside a transaction go to the database.
			var locked Product
			require.NoError(t, tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&locked, cold.ID).Error)
			require.Equal(t, int64(300), locked.Price)
			return nil
		}, func() {}, true)
		require.ErrorIs(t, err, errRollback)
		requireNotNew(t, peek(t, e, akey), aold, "after ROLLBACK")
		require.Equal(t, "", peek(t, e, ckey))
		for _, id := range []uint{a.ID, cold.ID} {
			price, _ := readPrice(t, e, id)
			require.Equal(t, int64(100), price)
		}
	})
}

// TestTxnLockingReadsUseTheDatabase: SELECT ... FOR UPDATE outside a
// transaction is not served from the cache either.
func TestTxnLockingReadsUseTheDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		p := Product{Name: "lamp", Price: 100}
		require.NoError(t, e.db.Create(&p).Error)
		warm[Product](t, e, p.ID)
		e.queries()
		for _, lock := range []clause.Locking{{Strength: "UPDATE"}, {Strength: "SHARE"}} {
			if lock.Strength == "SHARE" && b.dialect == "mysql" {
				continue // MariaDB spells it LOCK IN SHARE MODE, which GORM's clause does not write
			}
			before := e.plugin.Stats().Hits
			var got Product
			require.NoError(t, e.db.Clauses(lock).First(&got, p.ID).Error, lock.Strength)
			require.Equal(t, before, e.plugin.Stats().Hits, "FOR %s is not served from the cache", lock.Strength)
			require.Equal(t, int64(1), e.queries())
			require.Equal(t, int64(100), got.Price)
		}
	})
}

// TestTxnIsolation: a REPEATABLE READ transaction keeps reading its snapshot
// even after another writer committed and wrote a newer state through.
func TestTxnIsolation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		if b.dialect == "sqlite" {
			t.Skip("SQLite transactions here take the write lock at BEGIN: a concurrent writer would wait")
		}
		e := newEnv(t, b, Config{}, &Product{})
		p := Product{Name: "lamp", Price: 100}
		require.NoError(t, e.db.Create(&p).Error)
		warm[Product](t, e, p.ID)
		tx := e.db.Begin(&sql.TxOptions{Isolation: sql.LevelRepeatableRead})
		require.NoError(t, tx.Error)
		defer tx.Rollback()
		var got Product
		require.NoError(t, tx.First(&got, p.ID).Error)
		require.Equal(t, int64(100), got.Price)

		require.NoError(t, setPrice(p.ID, 200)(e.db))
		price, hit := readPrice(t, e, p.ID)
		require.Equal(t, int64(200), price)
		require.True(t, hit, "the new state is cached")

		require.NoError(t, tx.First(&got, p.ID).Error)
		require.Equal(t, int64(100), got.Price, "the transaction reads its snapshot, not the cache")
		require.NoError(t, tx.Commit().Error)
	})
}

// TestTxnFailedCommitPublishesNothing: when COMMIT itself fails (a deferred
// constraint, a serialization failure) nothing the transaction fenced is
// written through; the keys are dropped and reads return the committed state.
func TestTxnFailedCommitPublishesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		var e *env
		var violate func(tx *gorm.DB, a, b Ticket) error
		switch b.dialect {
		case "postgres":
			e = newEnv(t, b, Config{}, &Ticket{})
			table := e.stmtSchema(&Ticket{}).Table
			require.NoError(t, e.db.Exec(fmt.Sprintf(`ALTER TABLE %s ADD CONSTRAINT %s_code_uq UNIQUE (code) DEFERRABLE INITIALLY DEFERRED`, table, table)).Error)
			violate = func(tx *gorm.DB, a, b Ticket) error {
				return tx.Model(&Ticket{ID: a.ID}).Updates(map[string]any{"code": b.Code, "price": 200}).Error
			}
		case "sqlite":
			b.sqlOpen = func(t testing.TB) *sql.DB {
				db := openSQLite(t)
				// foreign keys are a per-connection setting in SQLite
				db.SetMaxOpenConns(1)
				_, err := db.Exec("PRAGMA foreign_keys = ON")
				require.NoError(t, err)
				return db
			}
			e = newEnv(t, b, Config{})
			table := e.stmtSchema(&Ticket{}).Table
			require.NoError(t, e.db.Exec(fmt.Sprintf(`CREATE TABLE %s_parents (id integer PRIMARY KEY)`, table)).Error)
			require.NoError(t, e.db.Exec(fmt.Sprintf(`CREATE TABLE %s (id integer PRIMARY KEY AUTOINCREMENT, code text, parent_id integer REFERENCES %s_parents(id) DEFERRABLE INITIALLY DEFERRED, price integer)`, table, table)).Error)
			t.Cleanup(func() {
				e.db.Exec("DROP TABLE " + table)
				e.db.Exec("DROP TABLE " + table + "_parents")
			})
			violate = func(tx *gorm.DB, a, _ Ticket) error {
				missing := uint(424242)
				return tx.Model(&Ticket{ID: a.ID}).Updates(map[string]any{"parent_id": &missing, "price": 200}).Error
			}
		default:
			t.Skip("MySQL has no deferred constraints to make COMMIT fail")
		}
		ta, tb := Ticket{Code: "a", Price: 100}, Ticket{Code: "b", Price: 100}
		require.NoError(t, e.db.Create(&ta).Error)
		require.NoError(t, e.db.Create(&tb).Error)
		key := rowKeyOf(t, e, &Ticket{ID: ta.ID})
		var got Ticket
		require.NoError(t, e.db.First(&got, ta.ID).Error)
		old := peek(t, e, key)
		require.True(t, strings.HasPrefix(old, "V"))

		err := e.db.Transaction(func(tx *gorm.DB) error {
			if err := violate(tx, ta, tb); err != nil {
				return fmt.Errorf("the statement must succeed, only COMMIT fails: %w", err)
			}
			requireNotNew(t, peek(t, e, key), old, "inside the transaction")
			return nil
		})
		require.Error(t, err, "COMMIT fails")
		require.NotErrorIs(t, err, errRollback)
		t.Logf("commit error: %v", err)

		after := peek(t, e, key)
		require.Equal(t, "", after, "a failed COMMIT drops its fences and publishes nothing")
		got = Ticket{}
		require.NoError(t, e.db.First(&got, ta.ID).Error)
		require.Equal(t, int64(100), got.Price)
		require.Equal(t, "a", got.Code)
		require.Nil(t, got.ParentID)
	})
}

// TestTxnSerializationFailureAtCommit: Postgres SERIALIZABLE write skew, the
// second COMMIT fails; its write never reaches Redis.
func TestTxnSerializationFailureAtCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		if b.dialect != "postgres" {
			t.Skip("needs Postgres serializable snapshot isolation")
		}
		e := newEnv(t, b, Config{}, &Ticket{})
		table := e.stmtSchema(&Ticket{}).Table
		ta, tb := Ticket{Code: "a", Price: 100}, Ticket{Code: "b", Price: 100}
		require.NoError(t, e.db.Create(&ta).Error)
		require.NoError(t, e.db.Create(&tb).Error)
		keyB := rowKeyOf(t, e, &Ticket{ID: tb.ID})
		var got Ticket
		require.NoError(t, e.db.First(&got, tb.ID).Error)
		oldB := peek(t, e, keyB)

		opts := &sql.TxOptions{Isolation: sql.LevelSerializable}
		t1, t2 := e.db.Begin(opts), e.db.Begin(opts)
		require.NoError(t, t1.Error)
		require.NoError(t, t2.Error)
		defer t1.Rollback()
		defer t2.Rollback()
		var sum int64
		sumSQL := fmt.Sprintf("SELECT COALESCE(SUM(price), 0) FROM %s", table)
		require.NoError(t, t1.Raw(sumSQL).Scan(&sum).Error)
		require.NoError(t, t2.Raw(sumSQL).Scan(&sum).Error)
		require.NoError(t, t1.Model(&Ticket{ID: ta.ID}).Update("price", sum+1).Error)
		require.NoError(t, t2.Model(&Ticket{ID: tb.ID}).Update("price", sum+2).Error)
		require.NoError(t, t1.Commit().Error)
		err := t2.Commit().Error
		require.Error(t, err, "the second COMMIT of a write skew fails")
		require.Contains(t, err.Error(), "40001")

		requireNotNew(t, peek(t, e, keyB), oldB, "after the failed COMMIT")
		require.False(t, strings.HasPrefix(peek(t, e, keyB), "F"), "no fence left behind")
		got = Ticket{}
		require.NoError(t, e.db.First(&got, tb.ID).Error)
		require.Equal(t, int64(100), got.Price)
		var a Ticket
		require.NoError(t, e.db.First(&a, ta.ID).Error)
		require.Equal(t, sum+1, a.Price, "the first transaction committed and is read")
	})
}

// savepointCase is a transaction that writes a (price 101), creates a
// savepoint, writes a (102) and b (202), then runs statements that roll
// the savepoint back, and commits.
type savepointCase struct {
	create, rollback string
	// hidden creates the savepoint on the connection itself, where no GORM
	// callback sees it.
	hidden bool
}

// runSavepointCase runs c on two warm items and returns their keys.
func runSavepointCase(t *testing.T, e *env, c savepointCase) (a, b Item, keys [2]string) {
	t.Helper()
	a, b = Item{Name: "a", Price: 100}, Item{Name: "b", Price: 200}
	require.NoError(t, e.db.Create(&a).Error)
	require.NoError(t, e.db.Create(&b).Error)
	warm[Item](t, e, a.ID, b.ID)
	keys = [2]string{rowKeyOf(t, e, &Item{ID: a.ID}), rowKeyOf(t, e, &Item{ID: b.ID})}

	tx := e.db.Begin()
	require.NoError(t, tx.Error)
	require.NoError(t, tx.Model(&Item{ID: a.ID}).Update("price", 101).Error)
	if c.hidden {
		_, err := tx.Statement.ConnPool.ExecContext(context.Background(), c.create)
		require.NoError(t, err)
	} else {
		require.NoError(t, tx.Exec(c.create).Error, c.create)
	}
	require.NoError(t, tx.Model(&Item{ID: a.ID}).Update("price", 102).Error)
	require.NoError(t, tx.Model(&Item{ID: b.ID}).Update("price", 202).Error)
	require.NoError(t, tx.Exec(c.rollback).Error, c.rollback)
	require.NoError(t, tx.Commit().Error)
	return a, b, keys
}

// requireServedAsStored reads each item twice through the plugin and
// requires the database's row both times.
func requireServedAsStored(t *testing.T, e *env, what string, ids ...uint) {
	t.Helper()
	for _, id := range ids {
		var direct Item
		require.NoError(t, e.plainDB().First(&direct, id).Error)
		for i := 0; i < 2; i++ {
			var got Item
			require.NoError(t, e.db.First(&got, id).Error)
			require.Equal(t, direct.Price, got.Price, "%s: item %d, read %d", what, id, i)
		}
	}
}

// TestTxnSavepointSpellings: every spelling of SAVEPOINT and ROLLBACK TO
// the dialect accepts is followed: the rolled-back writes are never served.
func TestTxnSavepointSpellings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cases := []savepointCase{
			{create: "SAVEPOINT sp1", rollback: "ROLLBACK TO sp1"},
			{create: "SAVEPOINT sp1", rollback: "ROLLBACK  TO  SAVEPOINT sp1"},
			{create: "savepoint Sp1", rollback: "rollback to savepoint SP1"},
			{create: "SAVEPOINT sp1 /* c */", rollback: "/* c */ ROLLBACK -- x\n TO\tSAVEPOINT sp1;"},
		}
		switch b.dialect {
		case "postgres":
			cases = append(cases,
				savepointCase{create: `SAVEPOINT "sp1"`, rollback: "ROLLBACK WORK TO SAVEPOINT sp1"},
				savepointCase{create: "SAVEPOINT sp1", rollback: `ROLLBACK TRANSACTION TO "sp1"`},
				savepointCase{create: `SAVEPOINT "Sp 1"`, rollback: `ROLLBACK TO SAVEPOINT "Sp 1"`})
		case "mysql":
			cases = append(cases,
				savepointCase{create: "SAVEPOINT `sp1`", rollback: "ROLLBACK WORK TO SAVEPOINT sp1"},
				savepointCase{create: "SAVEPOINT sp1", rollback: "ROLLBACK WORK TO `SP1`"},
				savepointCase{create: "# c\nSAVEPOINT sp1", rollback: "ROLLBACK TO sp1 # c"})
		case "sqlite":
			cases = append(cases,
				savepointCase{create: "SAVEPOINT [sp1]", rollback: `ROLLBACK TRANSACTION TO SAVEPOINT "sp1"`},
				savepointCase{create: "SAVEPOINT `sp1`", rollback: "ROLLBACK TRANSACTION TO SP1"})
		}
		for _, c := range cases {
			e := newEnv(t, b, Config{}, &Item{})
			a, bb, _ := runSavepointCase(t, e, c)
			requireServedAsStored(t, e, c.create+" / "+c.rollback, a.ID, bb.ID)
			var got Item
			require.NoError(t, e.db.First(&got, a.ID).Error)
			require.Equal(t, int64(101), got.Price, "%q: the write before the savepoint stands", c.rollback)
		}
	})
}

// TestTxnUnparsedSavepointNeverPublishes: a savepoint the plugin did not
// see created, or a rollback it cannot read, makes the whole transaction
// invalidate-only: nothing it wrote is published, before or after.
func TestTxnUnparsedSavepointNeverPublishes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cases := []savepointCase{{create: "SAVEPOINT sp1", rollback: "ROLLBACK TO SAVEPOINT sp1", hidden: true}}
		switch b.dialect {
		case "postgres":
			cases = append(cases, savepointCase{create: "SAVEPOINT sp1", rollback: `ROLLBACK TO SAVEPOINT U&"sp1"`})
		case "sqlite":
			cases = append(cases, savepointCase{create: "SAVEPOINT sp1", rollback: "ROLLBACK TO SAVEPOINT 'sp1'"})
		}
		for _, c := range cases {
			e := newEnv(t, b, Config{}, &Item{})
			a, bb, keys := runSavepointCase(t, e, c)
			for _, k := range keys {
				require.Empty(t, peek(t, e, k), "%q: nothing is published", c.rollback)
			}
			requireServedAsStored(t, e, c.rollback, a.ID, bb.ID)
		}
	})
}

// TestTxnSavepointRelease: RELEASE forgets the savepoint and the later ones.
// Where a savepoint hides an older one of the same name (Postgres, SQLite),
// ROLLBACK TO after RELEASE goes back to the older one, undoing writes
// made between the two.
func TestTxnSavepointRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Item{})
		a := Item{Name: "a", Price: 100}
		require.NoError(t, e.db.Create(&a).Error)
		warm[Item](t, e, a.ID)

		// Released savepoints keep their writes, which are published.
		releaseOuter := "RELEASE outer_sp"
		if b.dialect == "mysql" {
			releaseOuter = "RELEASE SAVEPOINT outer_sp" // MySQL requires the word
		}
		require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
			require.NoError(t, tx.Exec("SAVEPOINT outer_sp").Error)
			require.NoError(t, tx.Exec("SAVEPOINT inner_sp").Error)
			require.NoError(t, tx.Model(&Item{ID: a.ID}).Update("price", 101).Error)
			require.NoError(t, tx.Exec("RELEASE SAVEPOINT inner_sp").Error)
			return tx.Exec(releaseOuter).Error
		}))
		requireServedAsStored(t, e, "released", a.ID)
		e.queries()
		var got Item
		require.NoError(t, e.db.First(&got, a.ID).Error)
		require.Equal(t, int64(101), got.Price)
		require.Zero(t, e.queries(), "a released savepoint's write is published")

		if b.dialect == "mysql" {
			return // a second SAVEPOINT x deletes the first: RELEASE x leaves none
		}
		require.NoError(t, e.db.Transaction(func(tx *gorm.DB) error {
			require.NoError(t, tx.Exec("SAVEPOINT x").Error)
			require.NoError(t, tx.Model(&Item{ID: a.ID}).Update("price", 102).Error)
			require.NoError(t, tx.Exec("SAVEPOINT x").Error)
			require.NoError(t, tx.Exec("RELEASE SAVEPOINT x").Error)
			return tx.Exec("ROLLBACK TO SAVEPOINT x").Error // the first x
		}))
		requireServedAsStored(t, e, "rolled back to the older savepoint", a.ID)
		require.NoError(t, e.db.First(&got, a.ID).Error)
		require.Equal(t, int64(101), got.Price)
	})
}
