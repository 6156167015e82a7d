package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Regression tests for read-path bugs, one per fix.

// seedArticles inserts three products through db and returns their ids.
func seedArticles(t *testing.T, db *gorm.DB) []uint {
	t.Helper()
	var ids []uint
	for _, n := range []string{"alpha", "beta", "gamma"} {
		p := Article{Name: n, Price: 100}
		require.NoError(t, db.Create(&p).Error)
		ids = append(ids, p.ID)
	}
	return ids
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

// First, Take and Last of an absent or soft-deleted id cache the absence
// (GORM reports it as ErrRecordNotFound, which is an answer, not a
// failure), so the next read is served.
func TestReadAbsenceFromFirstIsCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Article{})
		plain := e.plainDB()
		deleted := seedArticles(t, plain)
		require.NoError(t, plain.Delete(&Article{}, deleted).Error)
		e.queries()

		reads := []func(id uint) *gorm.DB{
			func(id uint) *gorm.DB { return e.db.First(&Article{}, id) },
			func(id uint) *gorm.DB { return e.db.Take(&Article{}, id) },
			func(id uint) *gorm.DB { return e.db.Last(&Article{}, id) },
		}
		for k, read := range reads {
			for _, id := range []uint{deleted[k], 1000 + deleted[k]} { // soft-deleted, never existed
				for i, q := range []int64{1, 0} {
					tx := read(id)
					require.ErrorIs(t, tx.Error, gorm.ErrRecordNotFound)
					require.Zero(t, tx.RowsAffected)
					require.Equal(t, q, e.queries(), "form %d, id %d, read %d", k, id, i)
				}
			}
		}
	})
}

// First, Take and Last of one composite-key row are served: GORM's
// ORDER BY on the primary key cannot change a one-row answer. Several
// composite keys with an order still go to the database.
func TestReadCompositeKeyFirstIsServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Edition{})
		plain := e.plainDB()
		for _, ed := range []Edition{{BookID: 1, Lang: "en", Title: "One"}, {BookID: 1, Lang: "fr", Title: "Un"}} {
			require.NoError(t, plain.Create(&ed).Error)
		}
		e.queries()
		reads := []func(m *Edition) *gorm.DB{
			func(m *Edition) *gorm.DB { return e.db.Where(&Edition{BookID: 1, Lang: "fr"}).First(m) },
			func(m *Edition) *gorm.DB { return e.db.First(m, "book_id = ? AND lang = ?", 1, "fr") },
			func(m *Edition) *gorm.DB { return e.db.Where("lang = ? AND book_id = ?", "fr", 1).Last(m) },
			func(m *Edition) *gorm.DB { *m = Edition{BookID: 1, Lang: "fr"}; return e.db.First(m) },
		}
		for i, read := range reads {
			var m Edition
			require.NoError(t, read(&m).Error)
			require.Equal(t, Edition{BookID: 1, Lang: "fr", Title: "Un"}, m)
			want := int64(0)
			if i == 0 {
				want = 1 // the first read fills
			}
			require.Equal(t, want, e.queries(), "form %d", i)
		}

		var m, want Edition
		require.NoError(t, plain.Where("book_id = ? AND lang IN ?", 1, []string{"fr", "en"}).First(&want).Error)
		require.NoError(t, e.db.Where("book_id = ? AND lang IN ?", 1, []string{"fr", "en"}).First(&m).Error)
		require.Equal(t, want, m)
		require.Equal(t, int64(1), e.queries(), "several composite keys with an order: the database's")
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

// Deleting a string-key row caches no absence: the key may match another
// spelling of itself (MySQL: "ABC" finds the row "abc"), which a later
// insert of that spelling would not replace.
func TestReadStringKeyDeleteCachesNoAbsence(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Account{})
		plain := e.plainDB()
		require.NoError(t, e.db.Create(&Account{Code: "ABC", Owner: "upper"}).Error)
		require.NoError(t, e.db.Delete(&Account{Code: "ABC"}).Error)
		require.NoError(t, e.db.Create(&Account{Code: "abc", Owner: "lower"}).Error)
		for i := 0; i < 2; i++ {
			var want, got Account
			wantErr := plain.First(&want, "code = ?", "ABC").Error
			err := e.db.First(&got, "code = ?", "ABC").Error
			require.Equal(t, wantErr, err, "read %d", i)
			require.Equal(t, want, got, "read %d", i)
		}
	})
}

// A Find over several string or composite keys comes from the cache in
// the order the database returned it on the miss (the primary key's), not
// in the order the caller listed the keys. (Only existing keys: a string
// key's absence is never cached, so a list with one is never served.)
func TestReadStringKeyListOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Account{}, &Edition{})
		plain := e.plainDB()
		for _, c := range []string{"acme", "bolt", "cog"} {
			require.NoError(t, plain.Create(&Account{Code: c, Owner: "x"}).Error)
		}
		// Inserted in key order: Postgres returns a Find without ORDER BY in
		// heap order, which is the key's only then (ids are sorted likewise).
		for _, ed := range []Edition{{BookID: 1, Lang: "de"}, {BookID: 1, Lang: "en"}, {BookID: 1, Lang: "fr"}, {BookID: 2, Lang: "en"}} {
			require.NoError(t, plain.Create(&ed).Error)
		}
		e.queries()
		reads := []func(db *gorm.DB) any{
			func(db *gorm.DB) any {
				var as []Account
				require.NoError(t, db.Where("code IN ?", []string{"cog", "acme", "bolt"}).Find(&as).Error)
				return as
			},
			func(db *gorm.DB) any {
				var ms []Edition
				require.NoError(t, db.Where("book_id = ? AND lang IN ?", 1, []string{"fr", "en", "de"}).Find(&ms).Error)
				return ms
			},
		}
		for i, read := range reads {
			want := read(plain)
			cold := read(e.db)
			require.Equal(t, int64(1), e.queries())
			warm := read(e.db)
			require.Zero(t, e.queries(), "read %d served", i)
			require.Equal(t, want, cold, "read %d", i)
			require.Equal(t, cold, warm, "read %d: the cache answers in the database's order", i)
		}
	})
}

// DryRun and ToSQL run no query: the cache neither answers them nor takes
// their empty result for "no such row".
func TestReadDryRunIsNoRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &Article{})
		plain := e.plainDB()
		ids := seedArticles(t, plain)
		e.queries()

		sql := e.db.ToSQL(func(tx *gorm.DB) *gorm.DB { return tx.First(&Article{}, ids[0]) })
		require.Contains(t, sql, "SELECT")
		var p Article
		require.NoError(t, e.db.First(&p, ids[0]).Error, "ToSQL must not cache the row as absent")
		require.Equal(t, "alpha", p.Name)
		require.Equal(t, int64(1), e.queries())
		require.NoError(t, e.db.First(&Article{}, ids[0]).Error)
		require.Zero(t, e.queries(), "cached now")

		// A dry run over a cached row answers as the database's dry run does.
		for _, id := range []uint{ids[0], ids[1]} { // cached, not cached
			var want, got Article
			wantTx := plain.Session(&gorm.Session{DryRun: true}).First(&want, id)
			gotTx := e.db.Session(&gorm.Session{DryRun: true}).First(&got, id)
			require.Equal(t, want, got)
			require.Equal(t, wantTx.Error, gotTx.Error)
			require.Equal(t, wantTx.RowsAffected, gotTx.RowsAffected)
		}
		require.NoError(t, e.db.First(&Article{}, ids[1]).Error, "the dry run cached no absence")
	})
}
