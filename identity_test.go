package writethrough

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The database in the key space: one table under two names shares keys,
// and two databases on one Redis never read each other's rows.

// TestOneTableUnderTwoNames: a model naming the table bare and one naming
// it qualified (public.items, test.items, main.items; on Postgres also a
// bare name found further down the search_path) fence and fill the same
// keys: after a write through one, the other never serves the old row.
func TestOneTableUnderTwoNames(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		var searchPath string
		if b.dialect == "postgres" {
			// A schema first on the search_path that does not hold the
			// table: the bare name resolves to public, further down.
			searchPath = fmt.Sprintf("wt_sp%d_%d", os.Getpid(), testSeq.Add(1))
			admin := openPostgres(t)
			_, err := admin.Exec("CREATE SCHEMA " + searchPath)
			require.NoError(t, err)
			t.Cleanup(func() { _, _ = admin.Exec("DROP SCHEMA " + searchPath + " CASCADE") })
			b.sqlOpen = func(t testing.TB) *sql.DB {
				db, err := sql.Open("pgx", os.Getenv("WT_POSTGRES_DSN")+" search_path="+searchPath+",public")
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				return db
			}
		}
		e := newEnv(t, b, Config{})
		table := e.tables + "items"
		spelledTables = [2]string{table, qualifiedName(b, table)}
		require.NoError(t, e.plainDB().AutoMigrate(&QualifiedSpelled{}))
		t.Cleanup(func() { _ = e.plainDB().Migrator().DropTable(&QualifiedSpelled{}) })
		if searchPath != "" {
			var schema string
			require.NoError(t, e.plainDB().Raw("SELECT table_schema FROM information_schema.tables WHERE table_name = ?", table).Scan(&schema).Error)
			require.Equal(t, "public", schema, "the test's table must live further down the search_path")
		}
		row := BareSpelled{Name: "v1", Price: 1}
		require.NoError(t, e.db.Create(&row).Error)

		read := func(qualified bool) (int64, bool) {
			t.Helper()
			e.queries()
			if qualified {
				var r QualifiedSpelled
				require.NoError(t, e.db.First(&r, row.ID).Error)
				return r.Price, e.queries() == 0
			}
			var r BareSpelled
			require.NoError(t, e.db.First(&r, row.ID).Error)
			return r.Price, e.queries() == 0
		}
		price := int64(1)
		for i, writeQualified := range []bool{true, false, true} {
			read(!writeQualified) // fill the other spelling's view
			got, hit := read(!writeQualified)
			require.True(t, hit, "step %d: warm", i)
			require.Equal(t, price, got)

			price++
			if writeQualified {
				require.NoError(t, e.db.Model(&QualifiedSpelled{ID: row.ID}).Update("price", price).Error)
			} else {
				require.NoError(t, e.db.Model(&BareSpelled{ID: row.ID}).Update("price", price).Error)
			}
			got, _ = read(!writeQualified)
			require.Equal(t, price, got, "step %d: a write under one name is seen under the other", i)
			got, hit = read(writeQualified)
			require.Equal(t, price, got)
			require.True(t, hit, "step %d: both spellings share the written-through entry", i)
		}
		require.Equal(t, rowKeyOf(t, e, &BareSpelled{ID: row.ID}), rowKeyOf(t, e, &QualifiedSpelled{ID: row.ID}))
	})
}

// qualifiedName qualifies table the way its database resolves it.
func qualifiedName(b backend, table string) string {
	switch b.dialect {
	case "postgres":
		return "public." + table
	case "mysql":
		return "test." + table
	}
	return "main." + table
}

// tenantDB is one database holding tenantTable, with the plugin installed
// on a Redis that other tenantDBs share.
type tenantDB struct {
	db, plain *gorm.DB
	counter   *countingPool
}

// openTenant opens sqlDB with the plugin on rdb (Prefix shared), creates
// tenantTable in it and stores one row, id 1, named name.
func openTenant(t *testing.T, b backend, sqlDB *sql.DB, rdb redis.UniversalClient, cfg Config, name string) *tenantDB {
	t.Helper()
	counter := &countingPool{inner: sqlDB}
	db, err := gorm.Open(b.open(t, counter), &gorm.Config{Logger: logger.Discard})
	require.NoError(t, err)
	plain, err := gorm.Open(b.open(t, sqlDB), &gorm.Config{Logger: logger.Discard})
	require.NoError(t, err)
	require.NoError(t, plain.AutoMigrate(&TenantRow{}))
	t.Cleanup(func() { _ = plain.Migrator().DropTable(&TenantRow{}) })
	require.NoError(t, plain.Create(&TenantRow{ID: 1, Name: name}).Error)
	cfg.ReadTimeout, cfg.WriteTimeout = 10*time.Second, 10*time.Second
	require.NoError(t, db.Use(New(rdb, cfg)))
	return &tenantDB{db: db, plain: plain, counter: counter}
}

// read reads row 1 through the plugin twice; hit says the second read was
// served from the cache.
func (d *tenantDB) read(t *testing.T) (name string, hit bool) {
	t.Helper()
	var r TenantRow
	require.NoError(t, d.db.First(&r, 1).Error)
	d.counter.reset()
	require.NoError(t, d.db.First(&r, 1).Error)
	return r.Name, d.counter.reset() == 0
}

// otherDatabase opens a second database of the backend's kind on the same
// server (a tenant), creating it if needed.
func otherDatabase(t *testing.T, b backend) *sql.DB {
	t.Helper()
	const name = "wt_tenant2"
	switch b.dialect {
	case "postgres":
		admin := openPostgres(t)
		var n int
		require.NoError(t, admin.QueryRow("SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n))
		if n == 0 {
			if _, err := admin.Exec("CREATE DATABASE " + name); err != nil && !strings.Contains(err.Error(), "already exists") {
				require.NoError(t, err)
			}
		}
		db, err := sql.Open("pgx", os.Getenv("WT_POSTGRES_DSN")+" dbname="+name)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return db
	case "mysql":
		admin := openMySQL(t)
		_, err := admin.Exec("CREATE DATABASE IF NOT EXISTS " + name)
		require.NoError(t, err)
		dsn := os.Getenv("WT_MYSQL_DSN")
		i := strings.LastIndex(dsn, "/")
		rest := dsn[i+1:]
		query := ""
		if j := strings.IndexByte(rest, '?'); j >= 0 {
			query = rest[j:]
		}
		db, err := sql.Open("mysql", dsn[:i+1]+name+query)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return db
	}
	return openSQLite(t) // another file
}

// TestTwoDatabasesOnOneRedis: two databases holding the same table (two
// Postgres or MySQL databases on one server, two SQLite files, and a
// Postgres and a MySQL) share one Redis and one Prefix, and each reads its
// own rows. With Config.Database set alike they share the cache, as
// replicas of one database would.
func TestTwoDatabasesOnOneRedis(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		tenantTable = fmt.Sprintf("wt%d_%d_tenant", os.Getpid()%10000, testSeq.Add(1))
		rdb := b.redis(t)
		prefix := fmt.Sprintf("wttest%d_%d", os.Getpid(), testSeq.Add(1))
		one := openTenant(t, b, b.sqlOpen(t), rdb, Config{Prefix: prefix}, "first")
		two := openTenant(t, b, otherDatabase(t, b), rdb, Config{Prefix: prefix}, "second")
		for i := 0; i < 2; i++ {
			name, hit := one.read(t)
			require.Equal(t, "first", name)
			require.True(t, hit, "each database's rows are cached")
			name, hit = two.read(t)
			require.Equal(t, "second", name, "the second database never reads the first's rows")
			require.True(t, hit)
		}

		// Sharing on purpose: the same Database in both (here the two hold
		// different rows, which replicas would not, so the sharing shows).
		shared := fmt.Sprintf("wttest%d_%d", os.Getpid(), testSeq.Add(1))
		tenantTable = fmt.Sprintf("wt%d_%d_tenant", os.Getpid()%10000, testSeq.Add(1))
		a := openTenant(t, b, b.sqlOpen(t), rdb, Config{Prefix: shared, Database: "replicas"}, "primary")
		c := openTenant(t, b, otherDatabase(t, b), rdb, Config{Prefix: shared, Database: "replicas"}, "replica")
		name, _ := a.read(t)
		require.Equal(t, "primary", name)
		var r TenantRow
		c.counter.reset()
		require.NoError(t, c.db.First(&r, 1).Error)
		require.Zero(t, c.counter.reset(), "one Database, one cache")
		require.Equal(t, "primary", r.Name)
	})
}

// TestPostgresAndMySQLOnOneRedis: the same table name in a Postgres and a
// MariaDB database, on one Redis with one Prefix: each reads its own row.
func TestPostgresAndMySQLOnOneRedis(t *testing.T) {
	var pg, my *backend
	for _, b := range backends(t) {
		b := b
		switch b.dialect {
		case "postgres":
			pg = &b
		case "mysql":
			my = &b
		}
	}
	if pg == nil || my == nil {
		t.Skip("needs WT_POSTGRES_DSN and WT_MYSQL_DSN")
	}
	tenantTable = fmt.Sprintf("wt%d_%d_tenant", os.Getpid()%10000, testSeq.Add(1))
	rdb := pg.redis(t)
	prefix := fmt.Sprintf("wttest%d_%d", os.Getpid(), testSeq.Add(1))
	p := openTenant(t, *pg, pg.sqlOpen(t), rdb, Config{Prefix: prefix}, "postgres row")
	m := openTenant(t, *my, my.sqlOpen(t), rdb, Config{Prefix: prefix}, "mysql row")
	for i := 0; i < 2; i++ {
		name, hit := p.read(t)
		require.Equal(t, "postgres row", name)
		require.True(t, hit)
		name, hit = m.read(t)
		require.Equal(t, "mysql row", name)
		require.True(t, hit)
	}
	keys, err := rdb.Keys(context.Background(), prefix+":*:k:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 2, "one key per database: %v", keys)
}
