package writethrough

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// The write path: every shape of write GORM sends (associations, batches,
// upserts, hooks that fail) is written through, and what the cache holds
// afterwards is what the database holds. The naming of the rows a write
// touches is tested in writekeys_test.go, the reading back of written rows
// in readback_test.go.

// The write policy (Config.OnRedisError) when Redis cannot be reached to
// fence a write: Strict fails the write and rolls its transaction back;
// Available commits, reads the key from the database in this process until
// Redis answers, then lands the queued invalidation.

// policyWrite sets a product's price in mode m. In a transaction the
// caller opened, it ignores the statement's error and commits anyway: the
// write policy must hold even then.
func policyWrite(e *env, m commitMode, id uint, price int64) error {
	write := setPrice(id, price)
	if m.nests {
		write = func(tx *gorm.DB) error {
			_ = setPrice(id, price)(tx) // the caller does not look
			return nil
		}
	}
	return m.commit(e, write)
}

func TestPolicyStrictRedisDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range policyModes() {
			t.Run(m.name, func(t *testing.T) {
				e, px := newProxiedEnv(t, b, Config{}, m.gcfg())
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				old := peek(t, e, key)

				px.setDown(true)
				err := policyWrite(e, m, p.ID, 200)
				require.Error(t, err, "strict: the write fails when its key cannot be fenced")
				t.Logf("error: %v", err)
				require.Equal(t, int64(100), dbPrice(t, e, p.ID), "and nothing was committed")
				got, _ := readPrice(t, e, p.ID)
				require.Equal(t, int64(100), got, "reads fall back to the database while Redis is down")

				px.setDown(false)
				require.Equal(t, old, peek(t, e, key), "the cached state is still the committed one")
				requireFresh(t, e, p.ID, 100, true)
			})
		}
	})
}

// TestPolicyStrictFenceReplyLost: the fence reached Redis but its reply did
// not. The write fails and rolls back; the orphan fence keeps readers on
// the database until it expires.
func TestPolicyStrictFenceReplyLost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range policyModes() {
			t.Run(m.name, func(t *testing.T) {
				e := newEnvWith(t, b, Config{}, m.gcfg(), &Product{})
				hook := &faultHook{}
				hookPlugin(e.plugin, e.rdb, hook)
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				hook.afterSend.Store(true)
				hook.set(isFence)
				err := policyWrite(e, m, p.ID, 200)
				hook.clear()
				require.Error(t, err)
				require.Equal(t, int64(100), dbPrice(t, e, p.ID))
				require.True(t, strings.HasPrefix(peek(t, e, key), "F"), "the fence landed")
				got, hit := readPrice(t, e, p.ID)
				require.Equal(t, int64(100), got)
				require.False(t, hit)
				expireKey(t, e, key, e.plugin.cfg.LockTTL)
				requireFresh(t, e, p.ID, 100, true)
			})
		}
	})
}

func TestPolicyAvailableRedisDown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range policyModes() {
			t.Run(m.name, func(t *testing.T) {
				cfg := Config{OnRedisError: Available, ContendedTTL: 5 * time.Second}
				e, px := newProxiedEnv(t, b, cfg, m.gcfg())
				other := twinOf(t, e, Config{}, nil) // another process, its Redis reachable
				p, key := newProduct(t, e)
				warm[Product](t, e, p.ID)
				old := peek(t, e, key)

				px.setDown(true)
				require.NoError(t, policyWrite(e, m, p.ID, 200), "available: the write commits")
				require.Equal(t, int64(200), dbPrice(t, e, p.ID))
				require.Equal(t, old, peek(t, e, key), "the key could not be fenced")
				got, _ := readPrice(t, e, p.ID)
				require.Equal(t, int64(200), got, "this process reads the key from the database")
				got, _ = readPrice(t, other, p.ID)
				require.Equal(t, int64(100), got, "the documented window: another process serves the old value until the invalidation lands")

				px.setDown(false)
				awaitTrue(t, 10*time.Second, "the queued invalidation to land", func() bool {
					return e.plugin.dirty.n.Load() == 0 && peek(t, e, key) != old
				})
				for _, x := range []*env{e, other} {
					got, _ := readPrice(t, x, p.ID)
					require.Equal(t, int64(200), got)
				}
				expireKey(t, e, key, cfg.ContendedTTL)
				requireFresh(t, e, p.ID, 200, true)
				requireFresh(t, other, p.ID, 200, true)
			})
		}
	})
}

// TestUnmatchedWriteDoesNotPublishStale was found by the history checker
// (Postgres, no fault): an auto-commit conditional update whose WHERE
// matched nothing (version = <stale>) still fences and publishes the row it
// names, as read back in its transaction. That row is not locked by the
// statement, so another writer can commit and finish a newer version
// between the read-back and the fence; the statement's finish then found
// its own fence and stored the older row, after the newer write returned.
// The read-back must come after the fence.
func TestUnmatchedWriteDoesNotPublishStale(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		opts.instances = 2
		w := newHistWorld(t, b, opts)
		a, other := w.instances[0].db, w.instances[1].db

		// Row 1 at version 1; the conditional write below expects version 0.
		require.NoError(t, other.Model(&HistRow{ID: 1}).Updates(map[string]any{"version": 1, "payload": "v1"}).Error)

		// Stop the conditional write right after its read-back query ran;
		// meanwhile another process commits version 2 and returns. Where
		// the conditional write holds the row's lock anyway (InnoDB locks
		// the rows an UPDATE examined; SQLite one writer at a time) the
		// other write waits for it instead, and there is no race.
		paused := false
		otherDone := make(chan error, 1)
		ctx := context.WithValue(context.Background(), afterTxQueryKey{}, func(query string) {
			if paused || !strings.HasPrefix(strings.TrimSpace(strings.ToUpper(query)), "SELECT") {
				return
			}
			paused = true
			go func() {
				otherDone <- other.Model(&HistRow{ID: 1}).Updates(map[string]any{"version": 2, "payload": "v2"}).Error
			}()
			select {
			case err := <-otherDone:
				otherDone <- err
			case <-time.After(time.Second):
				t.Logf("%s: the other write waits for the conditional write's lock", b.name)
			}
		})
		res := a.WithContext(ctx).Model(&HistRow{ID: 1}).Where("version = ?", 0).Updates(map[string]any{"version": 1, "payload": "never"})
		require.NoError(t, res.Error)
		require.Zero(t, res.RowsAffected)
		require.True(t, paused, "the conditional write read the row back")
		require.NoError(t, <-otherDone)

		for i, inst := range w.instances {
			var r HistRow
			require.NoError(t, inst.db.First(&r, 1).Error)
			require.Equal(t, int64(2), r.Version, "instance %d serves version %d after version 2 returned", i, r.Version)
		}
	})
}

// In auto-commit, keys the database assigns (an insert, an upsert that hit
// an existing row through another unique column) are fenced only after
// the SQL. A writer that commits a newer state of such a row while the
// statement reads it back must not be overwritten by the older read.
func TestWriteAutoCommitLateKeysAgainstAConcurrentWriter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		shapes := []struct {
			name string
			f    func(db *gorm.DB, u *Upsertable) error
		}{
			{"insert with an assigned key", func(db *gorm.DB, u *Upsertable) error {
				*u = Upsertable{Code: "new", Name: "v1"}
				return db.Create(u).Error
			}},
			{"upsert by another unique column", func(db *gorm.DB, u *Upsertable) error {
				*u = Upsertable{Code: "a", Name: "v1"}
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "code"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).Create(u).Error
			}},
		}
		for _, s := range shapes {
			t.Run(s.name, func(t *testing.T) {
				if b.dialect == "mysql" && s.name == "upsert by another unique column" {
					t.Skip("mysql: an upsert fences the whole table and reads nothing back; there is no read-back to race")
				}
				w := newWriteEnv(t, b, Config{}, &gorm.Config{SkipDefaultTransaction: true}, &Upsertable{})
				require.NoError(t, w.db.Create(&Upsertable{Code: "a", Name: "v0"}).Error)
				var u Upsertable
				// Between the write's read-back and its finish, another writer
				// commits v2 of the same row (and returns).
				var armed atomic.Bool
				armed.Store(true)
				require.NoError(t, w.db.Callback().Query().After("gorm:query").Register("test:concurrent_writer", func(db *gorm.DB) {
					if !isInternal(db.Statement) || u.ID == 0 || !armed.CompareAndSwap(true, false) {
						return
					}
					require.NoError(t, w.db.Session(&gorm.Session{NewDB: true, Context: context.Background()}).
						Model(&Upsertable{ID: u.ID}).Update("name", "v2").Error)
				}))
				require.NoError(t, s.f(w.db, &u))
				require.False(t, armed.Load(), "the concurrent writer must have run")
				check[Upsertable](t, w, false, u.ID)
				var got Upsertable
				require.NoError(t, w.db.First(&got, u.ID).Error)
				require.Equal(t, "v2", got.Name)
			})
		}
	})
}

// A statement whose SQL ran but whose after-hook failed, inside a
// transaction the caller commits anyway (it ignored the error), changed
// the row: the cache must not keep the old one.
func TestWriteFailedHookInACommittedTransaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Fussy{})
		f := Fussy{Name: "v1"}
		require.NoError(t, w.db.Create(&f).Error)
		check[Fussy](t, w, true, f.ID)
		require.NoError(t, w.db.Transaction(func(tx *gorm.DB) error {
			err := tx.Model(&f).Update("name", "refused").Error
			require.ErrorIs(t, err, errFussy)
			return nil // the caller ignores it and commits
		}))
		var db Fussy
		require.NoError(t, w.plain.First(&db, f.ID).Error)
		require.Equal(t, "refused", db.Name, "the UPDATE committed")
		check[Fussy](t, w, false, f.ID)
	})
}

// In auto-commit a failed after-hook comes after the change committed:
// the cache must not keep the old row, nor a cached absence of a row the
// failed create inserted.
func TestWriteFailedHookInAutoCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newWriteEnv(t, b, Config{}, &gorm.Config{SkipDefaultTransaction: true}, &Fussy{})
		f := Fussy{Name: "v1"}
		require.NoError(t, w.db.Create(&f).Error)
		check[Fussy](t, w, true, f.ID)
		require.ErrorIs(t, w.db.Model(&f).Update("name", "refused").Error, errFussy)
		check[Fussy](t, w, false, f.ID)

		next := f.ID + 1
		warm[Fussy](t, w.env, next)
		g := Fussy{Name: "refused"}
		require.ErrorIs(t, w.db.Create(&g).Error, errFussy)
		require.Equal(t, next, g.ID)
		check[Fussy](t, w, false, next)
	})
}

// Batches: Create(&slice) and CreateInBatches write every row through (the
// cache held "not found" for each key before), with at most two Redis round
// trips per statement whatever the batch size.
func TestWriteBatches(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		redisCalls := countRedis(w.rdb, w.plugin)
		// Warm up: load the scripts, and cache "not found" for every key the
		// batches below will be given (a fresh table numbers from 1).
		seedItems(t, w, 1)
		total := 1 + 1 + 10 + 100 + 1000 + 250
		ids := make([]any, 0, total)
		for i := 2; i <= total; i++ {
			ids = append(ids, uint(i))
		}
		for i := 0; i < len(ids); i += 500 {
			chunk := ids[i:min(i+500, len(ids))]
			var absent []Item
			require.NoError(t, w.db.Find(&absent, chunk).Error) // one statement caches "not found" for all
			w.queries()
			hits := w.plugin.Stats().Hits
			require.NoError(t, w.db.Find(&absent, chunk).Error)
			require.Zero(t, w.queries(), "absences of every key are cached")
			require.Equal(t, hits+uint64(len(chunk)), w.plugin.Stats().Hits, "absences of every key are cached")
		}

		for _, n := range []int{1, 10, 100, 1000} {
			items := newItems(n, fmt.Sprint("batch", n))
			redisCalls.take()
			w.write(t, func(db *gorm.DB) error { return db.Create(&items).Error })
			calls, _ := redisCalls.take()
			require.LessOrEqual(t, calls, 2, "Create of %d rows: %d Redis round trips", n, calls)
			got := make([]any, n)
			for i, it := range items {
				got[i] = it.ID
			}
			checkMany[Item](t, w, true, got...)
		}

		// CreateInBatches: one statement per batch of 100, two round trips each
		// (in a transaction: one fence per statement, one finish at COMMIT).
		items := newItems(250, "inbatches")
		redisCalls.take()
		w.write(t, func(db *gorm.DB) error { return db.CreateInBatches(&items, 100).Error })
		calls, _ := redisCalls.take()
		require.LessOrEqual(t, calls, 2*3, "CreateInBatches of 3 statements: %d Redis round trips", calls)
		got := make([]any, len(items))
		for i, it := range items {
			got[i] = it.ID
		}
		checkMany[Item](t, w, true, got...)
	})
}

// Upserts: Save of a new key, ON CONFLICT DO NOTHING / DO UPDATE / UpdateAll
// (on the key and on another unique column), FirstOrCreate with Attrs and
// Assign. Where the dialect returns the rows an upsert touched (RETURNING:
// Postgres, SQLite) and the statement changed them, the cache holds the
// row; DO NOTHING never caches the caller's value over the existing row;
// MySQL/MariaDB, which cannot say which row an upsert hit, invalidates the
// table.
func TestWriteUpserts(t *testing.T) {
	forEachWriteMode(t, []any{&Upsertable{}}, func(t *testing.T, w *writeEnv) {
		returning := w.b.dialect != "mysql"
		table := w.db.NamingStrategy.TableName("Upsertable")
		seed := []Upsertable{{ID: 1, Code: "a", Name: "one"}, {ID: 2, Code: "b", Name: "two"}, {ID: 3, Code: "c", Name: "three"}}
		w.write(t, func(db *gorm.DB) error { return db.Create(&seed).Error })
		all := []any{uint(1), uint(2), uint(3), uint(10), uint(11), uint(12), uint(13), uint(14), uint(15), uint(20)}

		steps := []struct {
			name    string
			hit     bool // write-through claimed for the rows the step names
			ids     []any
			f       func(db *gorm.DB) error
			autoHit bool // write-through in auto-commit (fenced before the SQL, read after COMMIT)
		}{
			{name: "Save a new key", hit: returning, ids: []any{uint(10)}, f: func(db *gorm.DB) error {
				return db.Save(&Upsertable{ID: 10, Code: "s10", Name: "saved"}).Error
			}},
			{name: "Save an existing key", hit: true, ids: []any{uint(10)}, f: func(db *gorm.DB) error {
				return db.Save(&Upsertable{ID: 10, Code: "s10", Name: "saved again", Count: 1}).Error
			}},
			{name: "DO NOTHING on an existing key keeps the database's row", hit: false, ids: []any{uint(1)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Upsertable{ID: 1, Code: "a", Name: "caller's value"}).Error
			}, autoHit: true},
			{name: "DO NOTHING on an existing unique column", hit: false, ids: []any{uint(2)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Upsertable{Code: "b", Name: "caller's value"}).Error
			}},
			{name: "DO NOTHING inserting a new row", hit: false, ids: []any{uint(11)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{DoNothing: true}).Create(&Upsertable{ID: 11, Code: "n11", Name: "new"}).Error
			}, autoHit: true},
			{name: "DO UPDATE on the key", hit: returning, ids: []any{uint(1)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).
					Create(&Upsertable{ID: 1, Code: "a", Name: "upserted"}).Error
			}},
			{name: "DO UPDATE with an expression", hit: returning, ids: []any{uint(1)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.Assignments(map[string]any{"count": gorm.Expr(db.Statement.Quote(table+".count") + " + 5")})}).
					Create(&Upsertable{ID: 1, Code: "a", Name: "ignored"}).Error
			}},
			{name: "DO UPDATE on another unique column", hit: returning, ids: []any{uint(2)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "code"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).
					Create(&Upsertable{Code: "b", Name: "by code"}).Error
			}},
			{name: "UpdateAll", hit: returning, ids: []any{uint(3)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&Upsertable{ID: 3, Code: "c", Name: "all", Count: 9}).Error
			}},
			{name: "UpdateAll batch of new and existing", hit: returning, ids: []any{uint(2), uint(3), uint(12)}, f: func(db *gorm.DB) error {
				rows := []Upsertable{{ID: 2, Code: "b", Name: "batch2"}, {ID: 3, Code: "c", Name: "batch3"}, {ID: 12, Code: "n12", Name: "batch12"}}
				return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&rows).Error
			}},
			{name: "Save of a slice of new and existing keys", hit: returning, ids: []any{uint(12), uint(14)}, f: func(db *gorm.DB) error {
				return db.Save(&[]Upsertable{{ID: 12, Code: "n12", Name: "saved batch"}, {ID: 14, Code: "s14", Name: "saved new"}}).Error
			}},
			{name: "FirstOrCreate creates", hit: true, ids: []any{uint(13)}, f: func(db *gorm.DB) error {
				u := Upsertable{ID: 13}
				return db.Where(Upsertable{Code: "f13"}).Attrs(Upsertable{Name: "from attrs"}).FirstOrCreate(&u).Error
			}},
			{name: "FirstOrCreate finds and Assign updates", hit: true, ids: []any{uint(13)}, f: func(db *gorm.DB) error {
				var u Upsertable
				return db.Where(Upsertable{Code: "f13"}).Assign(Upsertable{Name: "assigned", Count: 3}).FirstOrCreate(&u).Error
			}},
			{name: "FirstOrCreate by key", hit: true, ids: []any{uint(15)}, f: func(db *gorm.DB) error {
				u := Upsertable{ID: 15, Code: "f15", Name: "by key"}
				return db.FirstOrCreate(&u).Error
			}},
			{name: "FirstOrCreate by key finds it", hit: true, ids: []any{uint(15)}, f: func(db *gorm.DB) error {
				u := Upsertable{ID: 15, Code: "other", Name: "not written"}
				return db.FirstOrCreate(&u).Error
			}},
			{name: "DO UPDATE by unique column with a new key", hit: returning, ids: []any{uint(20)}, f: func(db *gorm.DB) error {
				return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "code"}}, DoUpdates: clause.AssignmentColumns([]string{"name"})}).
					Create(&Upsertable{ID: 20, Code: "n20", Name: "inserted by upsert"}).Error
			}},
		}
		for _, s := range steps {
			warm[Upsertable](t, w.env, all...)
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) {
				check[Upsertable](t, w, s.hit || s.autoHit && returning && w.mode.autocommit, s.ids...)
				checkAll[Upsertable](t, w, false, all...)
			})
		}
		var one Upsertable
		require.NoError(t, w.plain.First(&one, 1).Error)
		require.Equal(t, "upserted", one.Name, "DO NOTHING must not have written the caller's value")
		require.Equal(t, 5, one.Count)
	})
}

// INSERT modifiers: IGNORE (MySQL), OR IGNORE and OR REPLACE (SQLite). An
// ignored row was not written (and shifts the keys MySQL numbers from
// LAST_INSERT_ID); OR REPLACE deletes whichever row conflicts, on any
// unique column. Neither names the rows it changed.
func TestWriteInsertModifiers(t *testing.T) {
	forEachWriteMode(t, []any{&Upsertable{}}, func(t *testing.T, w *writeEnv) {
		var mods []string
		switch w.b.dialect {
		case "sqlite":
			mods = []string{"OR IGNORE", "OR REPLACE"}
		case "mysql":
			mods = []string{"IGNORE"}
		default:
			t.Skipf("%s has no INSERT modifiers (ON CONFLICT instead)", w.b.dialect)
		}
		for i, mod := range mods {
			base := uint(100 * (i + 1))
			seed := []Upsertable{{ID: base + 1, Code: fmt.Sprint("a", base), Name: "one"}, {ID: base + 2, Code: fmt.Sprint("b", base), Name: "two"}}
			w.write(t, func(db *gorm.DB) error { return db.Create(&seed).Error })
			ids := []any{base + 1, base + 2, base + 3, base + 4}
			warm[Upsertable](t, w.env, ids...)
			w.write(t, func(db *gorm.DB) error {
				rows := []Upsertable{
					{ID: base + 3, Code: fmt.Sprint("a", base), Name: "conflicts on code"},
					{ID: base + 2, Code: fmt.Sprint("x", base), Name: "conflicts on key"},
					{ID: base + 4, Code: fmt.Sprint("d", base), Name: "new"},
				}
				return db.Clauses(clause.Insert{Modifier: mod}).Create(&rows).Error
			})
			t.Run(mod, func(t *testing.T) { checkAll[Upsertable](t, w, false, ids...) })
		}
	})
}

// checkAssociations compares every row of every association table, the
// join rows, and a fully preloaded user read through the plugin (a cached
// parent, current children) with the database.
func checkAssociations(t *testing.T, w *writeEnv, userID uint) {
	t.Helper()
	checkAll[User](t, w, false)
	checkAll[Company](t, w, false)
	checkAll[Profile](t, w, false)
	checkAll[Order](t, w, false)
	checkAll[Tag](t, w, false)

	var joins []UserTag
	require.NoError(t, w.plain.Find(&joins).Error)
	for _, j := range joins {
		var got UserTag
		require.NoError(t, w.db.Where("user_id = ? AND tag_id = ?", j.UserID, j.TagID).Take(&got).Error)
		require.Equal(t, canon(j), canon(got))
	}

	preload := func(db *gorm.DB) string {
		var u User
		err := db.Preload("Company").Preload("Profile").
			Preload("Orders", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).
			Preload("Tags", func(db *gorm.DB) *gorm.DB { return db.Order("id") }).
			First(&u, userID).Error
		if err != nil {
			require.ErrorIs(t, err, gorm.ErrRecordNotFound)
			return err.Error()
		}
		return canon(u)
	}
	// Twice: the second read is served from the cache for the parent (and
	// the belongs-to company, which is preloaded by key).
	for i := 0; i < 2; i++ {
		require.Equal(t, preload(w.plain), preload(w.db), "Preload through the plugin")
	}
}

// Associations: nested creates and saves of belongs-to, has-one, has-many
// and many2many values, Association(...).Append/Replace/Delete/Clear, and
// the join table's rows. Every row touched ends up true in the cache, and
// Preload on a cached parent returns the current children.
func TestWriteAssociations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, m := range writeModes() {
			t.Run(m.name, func(t *testing.T) {
				gcfg := m.gcfg()
				gcfg.DisableForeignKeyConstraintWhenMigrating = true
				models := []any{&Company{}, &Profile{}, &Order{}, &Tag{}, &User{}, &UserTag{}}
				e := newEnvWith(t, b, Config{}, gcfg, models...)
				w := &writeEnv{env: e, plain: e.plainDB(), mode: m}
				for _, db := range []*gorm.DB{w.db, w.plain} {
					require.NoError(t, db.SetupJoinTable(&User{}, "Tags", &UserTag{}))
				}
				require.NoError(t, w.plain.AutoMigrate(&UserTag{}))

				u := User{
					Name:    "ann",
					Company: &Company{Name: "acme"},
					Profile: &Profile{Bio: "hello"},
					Orders:  []Order{{Total: 1}, {Total: 2}},
					Tags:    []Tag{{Label: "red"}, {Label: "blue"}},
				}
				w.write(t, func(db *gorm.DB) error { return db.Create(&u).Error })
				require.NotZero(t, u.ID)
				check[User](t, w, true, u.ID)
				checkAssociations(t, w, u.ID)

				steps := []struct {
					name string
					f    func(db *gorm.DB) error
				}{
					{"Append has-many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Orders").Append(&Order{Total: 3})
					}},
					{"Delete has-many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Orders").Delete(&u.Orders[0])
					}},
					{"Replace has-many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Orders").Replace([]Order{{Total: 7}, u.Orders[len(u.Orders)-1]})
					}},
					{"Append many2many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Tags").Append(&Tag{Label: "green"})
					}},
					{"Delete many2many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Tags").Delete(&u.Tags[0])
					}},
					{"Replace many2many", func(db *gorm.DB) error {
						return db.Model(&u).Association("Tags").Replace([]Tag{{Label: "black"}, u.Tags[0]})
					}},
					{"Replace belongs-to", func(db *gorm.DB) error {
						return db.Model(&u).Association("Company").Replace(&Company{Name: "globex"})
					}},
					{"Replace has-one", func(db *gorm.DB) error {
						return db.Model(&u).Association("Profile").Replace(&Profile{Bio: "second"})
					}},
					{"Save with changed nested values (FullSaveAssociations)", func(db *gorm.DB) error {
						u.Name = "ann 2"
						u.Company.Name = "globex 2"
						u.Profile.Bio = "third"
						u.Orders[0].Total = 99
						u.Tags[0].Label = "relabelled"
						return db.Session(&gorm.Session{FullSaveAssociations: true}).Save(&u).Error
					}},
					{"Updates with a belongs-to value", func(db *gorm.DB) error {
						return db.Model(&u).Updates(User{Name: "ann 3", Company: &Company{Name: "initech"}}).Error
					}},
					{"Clear has-many", func(db *gorm.DB) error { return db.Model(&u).Association("Orders").Clear() }},
					{"Clear many2many", func(db *gorm.DB) error { return db.Model(&u).Association("Tags").Clear() }},
					{"Clear has-one", func(db *gorm.DB) error { return db.Model(&u).Association("Profile").Clear() }},
					{"Clear belongs-to", func(db *gorm.DB) error { return db.Model(&u).Association("Company").Clear() }},
					{"Append after Clear, then Unscoped Delete", func(db *gorm.DB) error {
						o := Order{Total: 11}
						if err := db.Model(&u).Association("Orders").Append(&o); err != nil {
							return err
						}
						return db.Model(&u).Unscoped().Association("Orders").Delete(&o)
					}},
					{"Delete the user with its has-many (Select)", func(db *gorm.DB) error {
						return db.Select("Orders", "Profile").Delete(&u).Error
					}},
				}
				for _, s := range steps {
					w.write(t, s.f)
					t.Run(s.name, func(t *testing.T) { checkAssociations(t, w, u.ID) })
				}
			})
		}
	})
}
