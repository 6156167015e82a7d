package writethrough

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Computed has columns the database fills: a default, a sequence, a trigger
// that rewrites the row on insert and update, a generated column and a
// timestamp default. GORM writes only Name and Price.
type Computed struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Price     int64
	Code      string    `gorm:"default:(-)"`
	Seq       int64     `gorm:"->"`
	UpperName string    `gorm:"->"`
	Doubled   int64     `gorm:"->"`
	Touched   int       `gorm:"->"`
	MadeAt    time.Time `gorm:"->"`
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
