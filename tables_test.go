package writethrough

import (
	"fmt"
	"os"
	"testing"

	"github.com/gormcache/writethrough/internal/sqltext"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// Which table a statement means: table-name candidates, naming strategies
// of one's own, schema-qualified tables, and db.Table naming another table
// than the model's.

// newNamedEnv is newEnvWith with a naming strategy of the test's own (the
// harness always sets a plain table prefix). The prefix still comes from
// the test's sequence number, so tables never collide.
func newNamedEnv(t *testing.T, b backend, naming schema.NamingStrategy, models ...any) *writeEnv {
	t.Helper()
	n := testSeq.Add(1)
	naming.TablePrefix = fmt.Sprintf("Wt%d_%d_%s", os.Getpid()%10000, n, naming.TablePrefix)
	sqlDB := b.sqlOpen(t)
	counter := &countingPool{inner: sqlDB}
	db, err := gorm.Open(b.open(t, counter), &gorm.Config{NamingStrategy: naming, Logger: logger.Discard})
	require.NoError(t, err)
	require.NoError(t, db.AutoMigrate(models...))
	t.Cleanup(func() {
		for _, m := range models {
			_ = db.Migrator().DropTable(m)
		}
	})
	rdb := b.redis(t)
	p := New(rdb, Config{Prefix: fmt.Sprintf("wttest%d", n)})
	require.NoError(t, db.Use(p))
	counter.reset()
	e := &env{t: t, b: b, db: db, plugin: p, rdb: rdb, counter: counter, prefix: p.cfg.Prefix}
	return &writeEnv{env: e, plain: e.plainDB(), mode: modesNamed("Implicit")[0]}
}

// A naming strategy of one's own (prefix, singular tables, no lower-casing)
// names the keys after the table it produces; writes go through and reads
// hit.
func TestWriteNamingStrategy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		w := newNamedEnv(t, b, schema.NamingStrategy{TablePrefix: "Shop_", SingularTable: true, NoLowerCase: true}, &Item{})
		require.Contains(t, w.db.NamingStrategy.TableName("Item"), "Shop_Item")
		ids := seedItems(t, w, 3)
		check[Item](t, w, true, ids...)
		w.write(t, func(db *gorm.DB) error { return db.Model(&Item{ID: ids[0].(uint)}).Update("Name", "named").Error })
		check[Item](t, w, true, ids...)
		w.write(t, func(db *gorm.DB) error {
			return db.Model(&Item{}).Where(db.Statement.Quote("Stock")+" > ?", 1).Update("Note", "bulk").Error
		})
		checkAll[Item](t, w, false)
		table := w.db.NamingStrategy.TableName("Item")
		w.write(t, func(db *gorm.DB) error {
			return db.Exec("UPDATE " + db.Statement.Quote(table) + " SET " + db.Statement.Quote("Price") + " = 5").Error
		})
		checkAll[Item](t, w, false)
	})
}

// A Postgres model whose TableName is schema-qualified is cached like any
// other: writes go through (also through db.Table with the same name),
// reads hit, raw SQL naming the qualified table is detected.
func TestWriteSchemaQualifiedTable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		if b.dialect != "postgres" {
			t.Skipf("%s: no schemas (MySQL's are databases, SQLite's attached files)", b.dialect)
		}
		n := testSeq.Add(1)
		sch := fmt.Sprintf("wtschema%d_%d", os.Getpid()%10000, n)
		schemaItemTable = sch + ".items"
		w := newWriteEnv(t, b, Config{}, &gorm.Config{})
		require.NoError(t, w.plain.Exec("CREATE SCHEMA "+sch).Error)
		t.Cleanup(func() { _ = w.plain.Exec("DROP SCHEMA " + sch + " CASCADE").Error })
		require.NoError(t, w.plain.AutoMigrate(&SchemaItem{}))

		it := SchemaItem{Name: "qualified"}
		require.NoError(t, w.db.Create(&it).Error)
		check[SchemaItem](t, w, true, it.ID)
		require.NoError(t, w.db.Model(&it).Update("name", "updated").Error)
		check[SchemaItem](t, w, true, it.ID)
		require.NoError(t, w.db.Table(sch+".items").Model(&SchemaItem{ID: it.ID}).Update("name", "via Table").Error)
		check[SchemaItem](t, w, true, it.ID)
		require.NoError(t, w.db.Table(sch+".items").Where("id = ?", it.ID).Update("name", "via Table, no model").Error)
		check[SchemaItem](t, w, false, it.ID)
		require.NoError(t, w.db.Exec("UPDATE "+sch+".items SET name = 'raw'").Error)
		check[SchemaItem](t, w, false, it.ID)
		require.NoError(t, w.db.Exec(`UPDATE "`+sch+`"."items" SET name = 'raw quoted'`).Error)
		check[SchemaItem](t, w, false, it.ID)
		require.NoError(t, w.db.Delete(&it).Error)
		check[SchemaItem](t, w, true, it.ID)
	})
}

// db.Table("archive_2024") with the model of another table: its rows are
// never cached (reads go to the database), and writing them never touches
// the keys of the model's own table, even for the same primary keys.
func TestWriteDynamicTable(t *testing.T) {
	forEachWriteMode(t, []any{&Item{}}, func(t *testing.T, w *writeEnv) {
		ids := seedItems(t, w, 3)
		archive := w.db.NamingStrategy.TableName("Item") + "_archive_2024"
		require.NoError(t, w.plain.Table(archive).AutoMigrate(&Item{}))
		t.Cleanup(func() { _ = w.plain.Migrator().DropTable(archive) })
		check[Item](t, w, true, ids...)

		u := func(i int) uint { return ids[i].(uint) }
		steps := []func(db *gorm.DB) error{
			func(db *gorm.DB) error {
				return db.Table(archive).Create(&[]Item{{ID: u(0), Name: "archived 1"}, {ID: u(1), Name: "archived 2"}}).Error
			},
			func(db *gorm.DB) error {
				return db.Table(archive).Model(&Item{ID: u(0)}).Update("name", "archive only").Error
			},
			func(db *gorm.DB) error {
				return db.Table(archive).Where("id = ?", u(1)).Updates(map[string]any{"stock": 42}).Error
			},
			func(db *gorm.DB) error {
				return db.Table(archive).Save(&Item{ID: u(2), Name: "saved in archive"}).Error
			},
			func(db *gorm.DB) error { return db.Table(archive).Delete(&Item{ID: u(1)}).Error },
			func(db *gorm.DB) error { return db.Table(archive).Unscoped().Where("1 = 1").Delete(&Item{}).Error },
		}
		for i, f := range steps {
			w.write(t, f)
			// The real table's rows are still served from the cache, and true.
			check[Item](t, w, true, ids...)
			// The archive is read from the database.
			var fromDB, fromPlugin []Item
			require.NoError(t, w.plain.Table(archive).Unscoped().Order("id").Find(&fromDB).Error)
			bypasses := w.plugin.Stats().Bypasses
			require.NoError(t, w.db.Table(archive).Unscoped().Order("id").Find(&fromPlugin).Error)
			require.Greater(t, w.plugin.Stats().Bypasses, bypasses, "step %d: reads of another table must go to the database", i)
			require.Equal(t, canon(fromDB), canon(fromPlugin), "step %d", i)
			for _, id := range ids {
				var a Item
				err := w.db.Table(archive).First(&a, id).Error
				var want Item
				wantErr := w.plain.Table(archive).First(&want, id).Error
				require.Equal(t, wantErr == nil, err == nil, "step %d id %v", i, id)
				if err == nil {
					require.Equal(t, canon(want), canon(a))
				}
			}
		}
	})
}

func TestTableNameCandidates(t *testing.T) {
	p := New(nil, Config{})
	n, _, ok := sqltext.ParseTableName(`MySchema."Items"`)
	require.True(t, ok)
	require.ElementsMatch(t, []string{"MySchema.Items", "myschema.Items", "Items"}, p.tableNameCandidates([]sqltext.TableName{n}))
	n, _, _ = sqltext.ParseTableName(`Items`)
	require.ElementsMatch(t, []string{"Items", "items"}, p.tableNameCandidates([]sqltext.TableName{n}))

	// Resolved as the database resolves them.
	pg := New(nil, Config{})
	pg.resolver = &tableResolver{dialect: "postgres", id: "postgres.test", schema: "public"}
	pg.resolver.found.Store("items", "tenant")
	pg.resolver.found.Store("Items", "public")
	n, _, _ = sqltext.ParseTableName(`Items`)
	require.ElementsMatch(t, []string{"tenant.items"}, pg.tableNameCandidates([]sqltext.TableName{n}))
	n, _, _ = sqltext.ParseTableName(`"Items"`)
	require.ElementsMatch(t, []string{"public.Items"}, pg.tableNameCandidates([]sqltext.TableName{n}))
	n, _, _ = sqltext.ParseTableName(`test.Tenant.Items`)
	require.ElementsMatch(t, []string{"tenant.items"}, pg.tableNameCandidates([]sqltext.TableName{n}))
	my := New(nil, Config{})
	my.resolver = &tableResolver{dialect: "mysql", id: "mysql", schema: "shop"}
	n, _, _ = sqltext.ParseTableName("`Items`")
	require.ElementsMatch(t, []string{"shop.Items"}, my.tableNameCandidates([]sqltext.TableName{n}))
	n, _, _ = sqltext.ParseTableName("other.items")
	require.ElementsMatch(t, []string{"other.items", "shop.items"}, my.tableNameCandidates([]sqltext.TableName{n}))
}
