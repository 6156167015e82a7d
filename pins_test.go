package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// WHERE conditions to primary-key pins, for reads and writes alike: IN
// lists, hand-written SQL conditions, column names as each dialect reads
// them, values that do not spell a key, and OR.

// An IN of plain values is used as it is; a list inside it is expanded.
func TestInConditionsWithAndWithoutLists(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Product{})
		ids := seedProducts(t, e, 3)
		e.queries()
		for _, in := range []clause.IN{
			{Column: clause.PrimaryColumn, Values: []any{ids[0], ids[1], ids[2]}},
			{Column: clause.PrimaryColumn, Values: []any{ids[0], []uint{ids[1], ids[2]}}},
			{Column: clause.Column{Name: "id"}, Values: []any{[]uint{ids[0]}, ids[1], ids[2]}},
		} {
			before := append([]any(nil), in.Values...)
			var ps []Product
			require.NoError(t, e.db.Where(in).Find(&ps).Error)
			require.Equal(t, before, in.Values, "the condition is not modified")
			require.Len(t, ps, 3)
			require.Equal(t, []uint{ids[0], ids[1], ids[2]}, []uint{ps[0].ID, ps[1].ID, ps[2].ID})
			require.Zero(t, e.queries(), "%v: served from the cache", in.Values)
		}
	})
}

// "id IN (?)" is served; "id IN ?" with one value is the database's syntax
// error, not a row from the cache.
func TestReadInParenthesesIsServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Article{})
		plain := e.plainDB()
		ids := seedArticles(t, plain)
		e.queries()

		var want, got []Article
		require.NoError(t, plain.Where("id IN (?)", ids[1:]).Find(&want).Error)
		for i, q := range []int64{1, 0} {
			got = nil
			require.NoError(t, e.db.Where("id IN (?)", ids[1:]).Find(&got).Error)
			require.Equal(t, want, got)
			require.Equal(t, q, e.queries(), "read %d", i)
		}
		var one Article
		require.NoError(t, e.db.Where("id IN (?)", ids[2]).Take(&one).Error)
		require.Zero(t, e.queries(), "one value in parentheses is a key lookup too")
		require.Equal(t, "gamma", one.Name)

		wantErr := plain.Where("id IN ?", ids[2]).Take(&Article{}).Error
		require.Error(t, wantErr)
		err := e.db.Where("id IN ?", ids[2]).Take(&Article{}).Error
		require.EqualError(t, err, wantErr.Error(), "the database's error, not the cached row")
	})
}

// A column in a hand-written condition names the key only if the database
// reads it so: MySQL takes "id" for a string, Postgres rejects `id` and
// "ID", and no database knows the Go field name BookID. The cache must
// give the database's answer (an empty result or an error), never the
// cached row.
func TestReadColumnNamesFollowTheDialect(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Article{}, &Edition{})
		plain := e.plainDB()
		ids := seedArticles(t, e.db) // written through: cached
		require.NoError(t, e.db.Create(&Edition{BookID: 1, Lang: "en", Title: "One"}).Error)
		e.queries()
		var p Article
		require.NoError(t, e.db.First(&p, ids[0]).Error)
		require.Zero(t, e.queries(), "cached")

		conds := []struct {
			sql  string
			args []any
		}{
			{`"id" = ?`, []any{ids[0]}},
			{"`id` = ?", []any{ids[0]}},
			{`"ID" = ?`, []any{ids[0]}},
			{`ID = ?`, []any{ids[0]}},
			{`"Id" IN ?`, []any{ids}},
			{`id = ?`, []any{ids[0]}},
		}
		for _, c := range conds {
			var want, got Article
			wantErr := plain.Where(c.sql, c.args...).First(&want).Error
			err := e.db.Where(c.sql, c.args...).First(&got).Error
			require.Equal(t, want, got, c.sql)
			if wantErr == nil {
				require.NoError(t, err, c.sql)
			} else {
				require.EqualError(t, err, wantErr.Error(), c.sql)
			}
		}

		edConds := []func(db *gorm.DB, m *Edition) error{
			func(db *gorm.DB, m *Edition) error { return db.First(m, "BookID = ? AND Lang = ?", 1, "en").Error },
			func(db *gorm.DB, m *Edition) error {
				return db.Where(map[string]any{"BookID": 1, "Lang": "en"}).First(m).Error
			},
			func(db *gorm.DB, m *Edition) error { return db.First(m, "book_id = ? AND lang = ?", 1, "en").Error },
		}
		for i, read := range edConds {
			var want, got Edition
			wantErr := read(plain, &want)
			err := read(e.db, &got)
			require.Equal(t, want, got, "edition form %d", i)
			if wantErr == nil {
				require.NoError(t, err)
			} else {
				require.EqualError(t, err, wantErr.Error(), "edition form %d", i)
			}
		}
	})
}

// A number compared with a string key is the database's business: MySQL
// compares numerically ("01" and "1" both equal 1), Postgres refuses to
// encode it. The cache must neither serve such a read nor, on a write,
// fence only the key spelled "1".
func TestReadNumberForStringKeyGoesToTheDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Account{})
		plain := e.plainDB()
		require.NoError(t, e.db.Create(&[]Account{{Code: "1", Owner: "one"}, {Code: "01", Owner: "zero-one"}}).Error)
		e.queries()
		require.NoError(t, e.db.First(&Account{}, "code = ?", "01").Error)
		require.NoError(t, e.db.First(&Account{}, "code = ?", "1").Error)
		require.Zero(t, e.queries(), "both cached")

		for _, arg := range []any{1, int64(1), uint(1)} {
			var want, got Account
			wantErr := plain.First(&want, "code = ?", arg).Error
			err := e.db.First(&got, "code = ?", arg).Error
			require.Equal(t, want, got, "%T", arg)
			if wantErr == nil {
				require.NoError(t, err)
			} else {
				require.EqualError(t, err, wantErr.Error())
			}
		}

		// On MySQL this updates both rows: both must be re-read.
		err := e.db.Model(&Account{}).Where("code = ?", 1).Update("owner", "renamed").Error
		for _, code := range []string{"1", "01"} {
			var want, got Account
			require.NoError(t, plain.First(&want, "code = ?", code).Error)
			require.NoError(t, e.db.First(&got, "code = ?", code).Error)
			require.Equal(t, want, got, "code %q after the update (update error: %v)", code, err)
		}
	})
}

func TestIntegerValueForAStringKeyGoesToTheDatabase(t *testing.T) {
	// Where("code = ?", 1) on a text column: MySQL compares numerically
	// ("01" matches), Postgres refuses to compare text with an integer.
	// The key "1" names neither answer, so the cache must not answer.
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Coded{})
		plain := e.plainDB()
		table := e.stmtSchema(&Coded{}).Table
		require.NoError(t, e.db.Create(&[]Coded{{Code: "1", Name: "one"}, {Code: "01", Name: "zero-one"}}).Error)

		var fromDB, fromCache Coded
		dbErr := plain.Table(table).First(&fromDB, "code = ?", 1).Error
		cacheErr := e.db.First(&fromCache, "code = ?", 1).Error
		require.Equal(t, dbErr == nil, cacheErr == nil, "database: %v, plugin: %v", dbErr, cacheErr)
		require.Equal(t, fromDB, fromCache)

		// A write by such a condition must not leave a row it changed in
		// the cache under its real key.
		var before Coded
		require.NoError(t, e.db.First(&before, "code = ?", "01").Error) // cached
		res := e.db.Model(&Coded{}).Where("code = ?", 1).Update("name", "changed")
		if res.Error != nil {
			return // Postgres: the database refused the comparison
		}
		for _, code := range []string{"1", "01"} {
			var want, got Coded
			require.NoError(t, plain.Table(table).First(&want, "code = ?", code).Error)
			require.NoError(t, e.db.First(&got, "code = ?", code).Error)
			require.Equal(t, want, got, "row %q after an update by code = 1", code)
		}
	})
}

// Without soft delete GORM does not parenthesise the caller's conditions:
// Model(&T{ID: 3}).Where("id = ?", 1).Or(...) runs "id = 1 OR ... AND id =
// 3", which updates row 1.
func TestWriteModelKeyWithOr(t *testing.T) {
	forEachWriteMode(t, []any{&Upsertable{}}, func(t *testing.T, w *writeEnv) {
		rows := []Upsertable{{ID: 1, Code: "a", Name: "one"}, {ID: 2, Code: "b", Name: "two"}, {ID: 3, Code: "c", Name: "three"}}
		w.write(t, func(db *gorm.DB) error { return db.Create(&rows).Error })
		warm[Upsertable](t, w.env, uint(1), uint(2), uint(3))
		w.write(t, func(db *gorm.DB) error {
			return db.Model(&Upsertable{ID: 3}).Where("id = ?", 1).Or("count > ?", 100).Update("name", "or'ed").Error
		})
		checkAll[Upsertable](t, w, false)
		w.write(t, func(db *gorm.DB) error {
			return db.Where("id = ?", 2).Or("count > ?", 100).Delete(&Upsertable{ID: 3}).Error
		})
		checkAll[Upsertable](t, w, false, uint(1), uint(2), uint(3))
	})
}
