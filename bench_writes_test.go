package writethrough

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Write benchmarks, with and without the plugin, on every dialect that is
// switched on (real Redis when WT_REDIS_ADDR is set). Compare with
//
//	go test -run '^$' -bench 'BenchmarkWrite' -count 6 . | tee bench.txt
//	benchstat -col /cache bench.txt
//
// Besides time, each reports the database statements (stmts/op) and the
// Redis round trips (redis/op) one operation costs.

// benchBackends returns one backend per dialect, preferring real Redis.
func benchBackends(b *testing.B) []backend {
	seen := map[string]int{}
	var out []backend
	for _, be := range backends(b) {
		if i, ok := seen[be.dialect]; ok {
			out[i] = be // a later backend of the same dialect uses real Redis
			continue
		}
		seen[be.dialect] = len(out)
		out = append(out, be)
	}
	return out
}

// benchDB returns the database to benchmark: the plugin's, or a plain GORM
// on the same counting pool (so statements are counted the same way).
func benchDB(b *testing.B, e *env, plugin bool) *gorm.DB {
	if plugin {
		return e.db
	}
	db, err := gorm.Open(e.b.open(b, e.counter), &gorm.Config{NamingStrategy: e.db.NamingStrategy, Logger: logger.Discard})
	require.NoError(b, err)
	return db
}

func cacheName(plugin bool) string {
	if plugin {
		return "plugin"
	}
	return "plain"
}

// warmUp gives the table 10000 rows and fresh statistics, as a table in
// production has, then runs one write so that the plugin's scripts are
// loaded in Redis before the clock starts. On an empty table without
// statistics, once pgx's cached statement switches to a generic plan,
// Postgres reads rows by id through the deleted_at index (it guesses
// "deleted_at IS NULL" matches 0.5% of the rows, not all of them) and every
// query by id, the plugin's read-back included, scans the table: 200ms per
// 1000-row read-back after 30 batches.
func warmUp(b *testing.B, e *env, db *gorm.DB) {
	plain := e.plainDB()
	for i := 0; i < 10; i++ {
		rows := newItems(1000, "filler")
		require.NoError(b, plain.Create(&rows).Error)
	}
	table := e.db.NamingStrategy.TableName("Item")
	switch e.b.dialect {
	case "mysql":
		require.NoError(b, plain.Exec("ANALYZE TABLE "+table).Error)
	default:
		require.NoError(b, plain.Exec("ANALYZE "+table).Error)
	}
	require.NoError(b, db.Create(&Item{Name: "warm-up"}).Error)
}

// report adds statements and Redis round trips per operation.
func report(b *testing.B, e *env, rc *redisCounter) {
	b.ReportMetric(float64(e.queries())/float64(b.N), "stmts/op")
	trips, _ := rc.take()
	b.ReportMetric(float64(trips)/float64(b.N), "redis/op")
}

// BenchmarkWriteBatch creates batches of 1, 100 and 1000 rows in one
// statement (GORM's own transaction around it).
func BenchmarkWriteBatch(b *testing.B) {
	for _, be := range benchBackends(b) {
		for _, n := range []int{1, 100, 1000} {
			for _, plugin := range []bool{false, true} {
				b.Run(fmt.Sprintf("db=%s/rows=%d/cache=%s", be.dialect, n, cacheName(plugin)), func(b *testing.B) {
					e := newEnv(b, be, Config{}, &Item{})
					db := benchDB(b, e, plugin)
					rc := countRedis(e.rdb)
					batches := make([][]Item, b.N)
					for i := range batches {
						batches[i] = newItems(n, "bench")
					}
					warmUp(b, e, db)
					e.queries()
					rc.take()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := db.Create(&batches[i]).Error; err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					report(b, e, rc)
				})
			}
		}
	}
}

// BenchmarkWriteOne measures one-row writes: an insert, an update by key
// and a delete by key. On MySQL/MariaDB, which has no UPDATE ... RETURNING,
// the plugin reads every written row back with a SELECT in the statement's
// transaction; this is what that costs.
func BenchmarkWriteOne(b *testing.B) {
	ops := []struct {
		name string
		f    func(db *gorm.DB, id uint, i int) error
	}{
		{"create", func(db *gorm.DB, _ uint, i int) error {
			return db.Create(&Item{Name: "one", Stock: i}).Error
		}},
		{"update", func(db *gorm.DB, id uint, i int) error {
			return db.Model(&Item{ID: id}).Updates(map[string]any{"stock": i, "name": "updated"}).Error
		}},
		{"delete", func(db *gorm.DB, id uint, _ int) error {
			return db.Unscoped().Delete(&Item{ID: id}).Error
		}},
	}
	for _, be := range benchBackends(b) {
		for _, op := range ops {
			for _, plugin := range []bool{false, true} {
				b.Run(fmt.Sprintf("db=%s/op=%s/cache=%s", be.dialect, op.name, cacheName(plugin)), func(b *testing.B) {
					e := newEnv(b, be, Config{}, &Item{})
					db := benchDB(b, e, plugin)
					rc := countRedis(e.rdb)
					ids := make([]uint, b.N)
					if op.name != "create" {
						for start := 0; start < b.N; start += 1000 {
							rows := newItems(min(1000, b.N-start), "seed")
							require.NoError(b, e.plainDB().Create(&rows).Error)
							for i, r := range rows {
								ids[start+i] = r.ID
							}
						}
					}
					warmUp(b, e, db)
					e.queries()
					rc.take()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := op.f(db, ids[i], i+1); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					report(b, e, rc)
				})
			}
		}
	}
}
