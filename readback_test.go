package writethrough

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Reading written rows back: whatever GORM sends (a partial update, a hook
// that changes fields, values the database computes, a batch larger than
// one read-back query), the cache ends with the row as the database holds
// it, and never with a snapshot older than a write that returned.

// A batch of composite-key rows larger than one read-back query is written
// through whole.
func TestWriteBatchCompositeKeys(t *testing.T) {
	forEachWriteMode(t, []any{&Pair{}}, func(t *testing.T, w *writeEnv) {
		rows := make([]Pair, 0, 1200)
		for i := 0; i < 1200; i++ {
			rows = append(rows, Pair{A: i/7 + 1, B: i%7 + 1, V: fmt.Sprint("v", i)})
		}
		w.write(t, func(db *gorm.DB) error { return db.CreateInBatches(&rows, 1200).Error })
		for _, r := range rows[:60] {
			var want, got Pair
			require.NoError(t, w.plain.Where("a = ? AND b = ?", r.A, r.B).First(&want).Error)
			w.queries()
			hits := w.plugin.Stats().Hits
			require.NoError(t, w.db.Where("a = ? AND b = ?", r.A, r.B).Take(&got).Error)
			require.Zero(t, w.queries(), "row %d/%d: expected a cache hit", r.A, r.B)
			require.Equal(t, hits+1, w.plugin.Stats().Hits, "row %d/%d: expected a cache hit", r.A, r.B)
			require.Equal(t, want, got)
		}
	})
}

// Partial updates by primary key: whatever GORM sends (one column, a map, a
// struct with zero fields skipped, Select/Omit, UpdateColumn without hooks
// or updated_at, an expression), the cache ends with the full row as the
// database has it, and serves it without a query.
func TestWritePartialUpdates(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		ids := seedItems(t, w, 3)
		check[Item](t, w, true, ids...)
		id := ids[0].(uint)

		steps := []struct {
			name string
			f    func(db *gorm.DB) error
		}{
			{"Update", func(db *gorm.DB) error { return db.Model(&Item{ID: id}).Update("name", "renamed").Error }},
			{"Updates(map)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(map[string]any{"stock": 50, "flag": true}).Error
			}},
			{"Updates(struct) skips zero fields", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(Item{Name: "struct", Stock: 0, Flag: false}).Error
			}},
			{"Select on Updates(struct) writes zero fields", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Select("stock", "flag").Updates(Item{Name: "ignored", Stock: 0, Flag: false}).Error
			}},
			{"Omit on Updates(map)", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Omit("name").Updates(map[string]any{"name": "omitted", "price": 777}).Error
			}},
			{"UpdateColumn", func(db *gorm.DB) error { return db.Model(&Item{ID: id}).UpdateColumn("price", 901).Error }},
			{"UpdateColumns", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).UpdateColumns(map[string]any{"price": 902, "stock": 40}).Error
			}},
			{"gorm.Expr", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Update("stock", gorm.Expr("stock - ?", 3)).Error
			}},
			{"Updates with gorm.Expr in a map", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(map[string]any{"price": gorm.Expr("price * ?", 2), "note": "doubled"}).Error
			}},
			{"Updates(struct) carrying the model's own key", func(db *gorm.DB) error {
				return db.Model(&Item{ID: id}).Updates(Item{ID: id, Name: "same-key"}).Error
			}},
			{"Where by key and Update", func(db *gorm.DB) error {
				return db.Model(&Item{}).Where("id = ?", id).Update("name", "by-where").Error
			}},
			{"Save", func(db *gorm.DB) error {
				var it Item
				if err := db.First(&it, id).Error; err != nil {
					return err
				}
				it.Name, it.Stock = "saved", 1
				return db.Save(&it).Error
			}},
		}
		for _, s := range steps {
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { check[Item](t, w, true, ids...) })
		}

		// UpdateColumn must not move updated_at; the cache agrees with the
		// database on it either way.
		var before Item
		require.NoError(t, w.plain.First(&before, id).Error)
		w.write(t, func(db *gorm.DB) error { return db.Model(&Item{ID: id}).UpdateColumn("stock", 99).Error })
		var after Item
		require.NoError(t, w.plain.First(&after, id).Error)
		require.True(t, before.UpdatedAt.Equal(after.UpdatedAt), "UpdateColumn moved updated_at")
		check[Item](t, w, true, ids...)
	})
}

// BeforeUpdate/BeforeSave hooks that change fields: what is cached is what
// the database stored, not the struct the caller passed in.
func TestWriteHooksChangeFields(t *testing.T) {
	forEachWriteMode(t, []any{&Hooked{}}, func(t *testing.T, w *writeEnv) {
		h := Hooked{Name: "lower"}
		w.write(t, func(db *gorm.DB) error { return db.Create(&h).Error })
		check[Hooked](t, w, true, h.ID)

		w.write(t, func(db *gorm.DB) error { return db.Model(&h).Update("name", "second").Error })
		check[Hooked](t, w, true, h.ID)

		w.write(t, func(db *gorm.DB) error { return db.Model(&h).Updates(map[string]any{"name": "third"}).Error })
		check[Hooked](t, w, true, h.ID)

		w.write(t, func(db *gorm.DB) error {
			h.Name = "fourth"
			return db.Save(&h).Error
		})
		check[Hooked](t, w, true, h.ID)

		var db Hooked
		require.NoError(t, w.plain.First(&db, h.ID).Error)
		require.Equal(t, "FOURTH", db.Name)
		require.True(t, strings.HasPrefix(db.Audit, "updated:"), "the hook's SetColumn reached the database: %+v", db)
	})
}

// createComputedTable creates Computed's table, with its trigger(s), sequence and
// generated column, in the dialect's own DDL. It reports what the dialect
// lacks.
func createComputedTable(t *testing.T, w *writeEnv) (noSequence bool) {
	t.Helper()
	tb := w.db.NamingStrategy.TableName("Computed")
	var ddl []string
	var drop []string
	switch w.b.dialect {
	case "postgres":
		ddl = []string{
			fmt.Sprintf("CREATE SEQUENCE %s_seq START 1000", tb),
			fmt.Sprintf(`CREATE TABLE %[1]s (
				id bigserial PRIMARY KEY,
				name text NOT NULL,
				price bigint NOT NULL DEFAULT 0,
				code text NOT NULL DEFAULT 'dflt',
				seq bigint NOT NULL DEFAULT nextval('%[1]s_seq'),
				upper_name text,
				doubled bigint GENERATED ALWAYS AS (price * 2) STORED,
				touched integer NOT NULL DEFAULT 0,
				made_at timestamptz NOT NULL DEFAULT now())`, tb),
			fmt.Sprintf(`CREATE FUNCTION %s_trg() RETURNS trigger AS $$
				BEGIN NEW.upper_name := upper(NEW.name); NEW.touched := NEW.touched + 1; RETURN NEW; END
				$$ LANGUAGE plpgsql`, tb),
			fmt.Sprintf("CREATE TRIGGER %[1]s_t BEFORE INSERT OR UPDATE ON %[1]s FOR EACH ROW EXECUTE FUNCTION %[1]s_trg()", tb),
		}
		drop = []string{"DROP TABLE IF EXISTS " + tb, fmt.Sprintf("DROP FUNCTION IF EXISTS %s_trg()", tb), fmt.Sprintf("DROP SEQUENCE IF EXISTS %s_seq", tb)}
	case "mysql":
		var version string
		require.NoError(t, w.plain.Raw("SELECT VERSION()").Scan(&version).Error)
		seqDefault := "0"
		if strings.Contains(strings.ToLower(version), "mariadb") {
			ddl = append(ddl, fmt.Sprintf("CREATE SEQUENCE %s_seq START WITH 1000", tb))
			drop = append(drop, fmt.Sprintf("DROP SEQUENCE IF EXISTS %s_seq", tb))
			seqDefault = fmt.Sprintf("(NEXT VALUE FOR %s_seq)", tb)
		} else {
			noSequence = true // MySQL has no sequences
		}
		ddl = append(ddl,
			fmt.Sprintf(`CREATE TABLE %s (
				id bigint unsigned AUTO_INCREMENT PRIMARY KEY,
				name varchar(100) NOT NULL,
				price bigint NOT NULL DEFAULT 0,
				code varchar(20) NOT NULL DEFAULT 'dflt',
				seq bigint NOT NULL DEFAULT %s,
				upper_name varchar(100),
				doubled bigint AS (price * 2) STORED,
				touched int NOT NULL DEFAULT 0,
				made_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`, tb, seqDefault),
			fmt.Sprintf("CREATE TRIGGER %[1]s_ti BEFORE INSERT ON %[1]s FOR EACH ROW SET NEW.upper_name = UPPER(NEW.name), NEW.touched = NEW.touched + 1", tb),
			fmt.Sprintf("CREATE TRIGGER %[1]s_tu BEFORE UPDATE ON %[1]s FOR EACH ROW SET NEW.upper_name = UPPER(NEW.name), NEW.touched = NEW.touched + 1", tb),
		)
		drop = append([]string{"DROP TABLE IF EXISTS " + tb}, drop...)
	default: // sqlite: no sequences, and triggers run after the row is written
		noSequence = true
		ddl = []string{
			fmt.Sprintf(`CREATE TABLE %s (
				id integer PRIMARY KEY AUTOINCREMENT,
				name text NOT NULL,
				price integer NOT NULL DEFAULT 0,
				code text NOT NULL DEFAULT 'dflt',
				seq integer NOT NULL DEFAULT 0,
				upper_name text,
				doubled integer GENERATED ALWAYS AS (price * 2) STORED,
				touched integer NOT NULL DEFAULT 0,
				made_at datetime NOT NULL DEFAULT CURRENT_TIMESTAMP)`, tb),
			fmt.Sprintf(`CREATE TRIGGER %[1]s_ti AFTER INSERT ON %[1]s BEGIN
				UPDATE %[1]s SET upper_name = upper(NEW.name), touched = touched + 1, seq = NEW.id + 1000 WHERE id = NEW.id; END`, tb),
			fmt.Sprintf(`CREATE TRIGGER %[1]s_tu AFTER UPDATE OF name, price ON %[1]s BEGIN
				UPDATE %[1]s SET upper_name = upper(NEW.name), touched = touched + 1 WHERE id = NEW.id; END`, tb),
		}
		drop = []string{"DROP TABLE IF EXISTS " + tb}
	}
	t.Cleanup(func() {
		for _, d := range drop {
			_ = w.plain.Exec(d).Error
		}
	})
	for _, d := range ddl {
		require.NoError(t, w.plain.Exec(d).Error, d)
	}
	return noSequence
}

// Values the database makes — defaults, a sequence, a trigger that rewrites
// the row, a generated column — are what the cache holds after a write,
// served without a query.
func TestWriteDatabaseMadeValues(t *testing.T) {
	forEachWriteMode(t, nil, func(t *testing.T, w *writeEnv) {
		noSequence := createComputedTable(t, w)
		m := Computed{Name: "lamp", Price: 21}
		w.write(t, func(db *gorm.DB) error { return db.Create(&m).Error })
		check[Computed](t, w, true, m.ID)

		var got Computed
		require.NoError(t, w.db.First(&got, m.ID).Error)
		require.Equal(t, "dflt", got.Code, "default")
		require.Equal(t, "LAMP", got.UpperName, "trigger")
		require.Equal(t, 1, got.Touched, "trigger")
		require.Equal(t, int64(42), got.Doubled, "generated column")
		require.False(t, got.MadeAt.IsZero(), "timestamp default")
		if noSequence {
			t.Logf("%s has no sequences; the trigger or default fills seq", w.b.dialect)
		}
		require.GreaterOrEqual(t, got.Seq, int64(1000), "sequence")

		steps := []struct {
			name string
			f    func(db *gorm.DB) error
		}{
			{"Update fires the trigger", func(db *gorm.DB) error { return db.Model(&Computed{ID: m.ID}).Update("name", "desk").Error }},
			{"Update changes the generated column", func(db *gorm.DB) error {
				return db.Model(&Computed{ID: m.ID}).Update("price", gorm.Expr("price + ?", 4)).Error
			}},
			{"Save", func(db *gorm.DB) error {
				var cur Computed
				if err := db.First(&cur, m.ID).Error; err != nil {
					return err
				}
				cur.Name, cur.Price = "chair", 100
				return db.Save(&cur).Error
			}},
			{"Create batch", func(db *gorm.DB) error {
				return db.Create(&[]Computed{{Name: "a", Price: 1}, {Name: "b", Price: 2}, {Name: "c", Price: 3}}).Error
			}},
		}
		for _, s := range steps {
			w.write(t, s.f)
			t.Run(s.name, func(t *testing.T) { checkAll[Computed](t, w, true) })
		}
		require.NoError(t, w.db.First(&got, m.ID).Error)
		require.Equal(t, "CHAIR", got.UpperName)
		require.Equal(t, int64(200), got.Doubled)
	})
}

// A statement in a transaction that names a row but does not change it (its
// condition excludes the row, or ON CONFLICT DO NOTHING) must not publish
// the row as it read it back: under REPEATABLE READ that read comes from the
// transaction's snapshot, and another writer may have committed (and cached)
// a newer state since. Publishing the snapshot's value would serve that
// older state after the newer one was committed and returned (P1).
func TestWriteUnchangedRowFromOldSnapshot(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		if b.dialect == "sqlite" {
			t.Skip("sqlite: one writer at a time, a second writer cannot commit while the transaction is open")
		}
		shapes := []struct {
			name string
			f    func(tx *gorm.DB, id uint) error
		}{
			{"Update excluded by its condition", func(tx *gorm.DB, id uint) error {
				return tx.Model(&Item{ID: id}).Where("stock > ?", 1000).Update("name", "never").Error
			}},
			{"Delete excluded by its condition", func(tx *gorm.DB, id uint) error {
				return tx.Where("stock > ?", 1000).Delete(&Item{ID: id}).Error
			}},
			{"Create ON CONFLICT DO NOTHING", func(tx *gorm.DB, id uint) error {
				return tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&Item{ID: id, Name: "caller"}).Error
			}},
		}
		for _, s := range shapes {
			t.Run(s.name, func(t *testing.T) {
				w := newWriteEnv(t, b, Config{}, &gorm.Config{}, &Item{})
				ids := seedItems(t, w, 2)
				id := ids[0].(uint)
				err := w.db.Transaction(func(tx *gorm.DB) error {
					// The snapshot starts here (first read of the transaction).
					var other Item
					if err := tx.First(&other, ids[1]).Error; err != nil {
						return err
					}
					// Another writer commits a newer state of the row and caches it.
					require.NoError(t, w.db.Model(&Item{ID: id}).Update("name", "newer").Error)
					check[Item](t, w, true, id)
					return s.f(tx, id)
				}, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
				if err != nil && b.dialect == "postgres" && strings.Contains(err.Error(), "40001") {
					// Postgres refuses ON CONFLICT against a row newer than the
					// snapshot; the transaction rolled back, the cache must still be true.
					t.Logf("postgres: %v", err)
				} else {
					require.NoError(t, err)
				}
				check[Item](t, w, false, id)
				var got Item
				require.NoError(t, w.db.First(&got, id).Error)
				require.Equal(t, "newer", got.Name)
			})
		}
	})
}
