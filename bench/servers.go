package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// database is the one *sql.DB every mode shares (only one mode runs at a
// time), seen through a countingPool.
type database struct {
	kind    string // sqlite, postgres, mysql
	sqlDB   *sql.DB
	pool    *countingPool
	version string
	tables  schema.NamingStrategy
	cleanup func()
}

// openDatabase opens the -db backend. maxConns bounds the pool; idle
// connections are kept up to it so that no mode pays for reconnecting.
func openDatabase(kind, dsn string, maxConns int, runID string) (*database, error) {
	d := &database{kind: kind, cleanup: func() {}}
	var err error
	switch kind {
	case "sqlite":
		dir, derr := os.MkdirTemp("", "wtbench-")
		if derr != nil {
			return nil, derr
		}
		d.cleanup = func() { os.RemoveAll(dir) }
		if dsn == "" {
			dsn = "file:" + filepath.Join(dir, "bench.db") + "?_busy_timeout=10000&_journal_mode=WAL&_txlock=immediate"
		}
		d.sqlDB, err = sql.Open("sqlite3", dsn)
	case "postgres":
		if dsn == "" {
			return nil, errors.New("-db postgres needs a DSN: set WT_POSTGRES_DSN or pass -postgres")
		}
		d.sqlDB, err = sql.Open("pgx", dsn)
	case "mysql":
		if dsn == "" {
			return nil, errors.New("-db mysql needs a DSN: set WT_MYSQL_DSN or pass -mysql")
		}
		if !strings.Contains(dsn, "parseTime=true") {
			return nil, errors.New("the MySQL DSN needs parseTime=true")
		}
		d.sqlDB, err = sql.Open("mysql", dsn)
	default:
		return nil, fmt.Errorf("-db %q: want sqlite, postgres or mysql", kind)
	}
	if err != nil {
		d.cleanup()
		return nil, fmt.Errorf("open %s: %w", kind, err)
	}
	d.sqlDB.SetMaxOpenConns(maxConns)
	d.sqlDB.SetMaxIdleConns(maxConns)
	if err := d.sqlDB.Ping(); err != nil {
		d.close()
		return nil, fmt.Errorf("%s is not reachable: %w", kind, err)
	}
	d.pool = &countingPool{db: d.sqlDB}
	d.tables = schema.NamingStrategy{TablePrefix: "wtbench_" + runID + "_"}
	q := map[string]string{"sqlite": "select 'SQLite ' || sqlite_version()", "postgres": "show server_version", "mysql": "select version()"}[kind]
	if err := d.sqlDB.QueryRow(q).Scan(&d.version); err != nil {
		d.close()
		return nil, fmt.Errorf("%s version: %w", kind, err)
	}
	switch kind {
	case "postgres":
		d.version = "PostgreSQL " + d.version
	case "mysql":
		d.version = "MySQL/MariaDB " + d.version
	}
	return d, nil
}

// gorm opens a new *gorm.DB on the shared pool: each mode gets its own, so
// that one library's callbacks never run in another's mode.
func (d *database) gorm() (*gorm.DB, error) {
	var dial gorm.Dialector
	switch d.kind {
	case "sqlite":
		dial = &sqlite.Dialector{Conn: d.pool}
	case "postgres":
		dial = postgres.New(postgres.Config{Conn: d.pool})
	case "mysql":
		dial = mysql.New(mysql.Config{Conn: d.pool})
	}
	return gorm.Open(dial, &gorm.Config{Logger: logger.Discard, NamingStrategy: d.tables})
}

func (d *database) close() {
	d.sqlDB.Close()
	d.cleanup()
}

// newRedis returns a go-redis client with default options except the pool
// size, which is raised so that 32 goroutines never queue for a connection
// in any mode.
func newRedis(ctx context.Context, addr string, poolSize int) (*redis.Client, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: poolSize})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", addr, err)
	}
	return rdb, nil
}

func redisVersion(ctx context.Context, rdb *redis.Client) string {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return "Redis ?"
	}
	return "Redis " + infoField(info, "redis_version")
}

// infoField returns one "name:value" field of an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// deleteKeys removes every key matching pattern, leaving shared servers as
// they were found.
func deleteKeys(ctx context.Context, rdb *redis.Client, pattern string) error {
	it := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	var errs error
	for it.Next(ctx) {
		if batch = append(batch, it.Val()); len(batch) == 500 {
			errs = errors.Join(errs, rdb.Unlink(ctx, batch...).Err())
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		errs = errors.Join(errs, rdb.Unlink(ctx, batch...).Err())
	}
	return errors.Join(errs, it.Err())
}

// privateRedis is a redis-server this program started, so that INFO
// commandstats and INFO cpu count nothing but this program's commands.
type privateRedis struct {
	addr string
	cmd  *exec.Cmd
}

// startPrivateRedis starts redis-server on the first free port in
// 7100-7199 (the range the project's tests use for servers of their own).
func startPrivateRedis(ctx context.Context) (*privateRedis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("-capacity starts its own redis-server (commandstats are server-wide), but none is in PATH; pass -capacity-redis ADDR: %w", err)
	}
	for port := 7100; port < 7200; port++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--logfile", "")
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		r := &privateRedis{addr: addr, cmd: cmd}
		probe := redis.NewClient(&redis.Options{Addr: addr})
		for range 100 {
			if probe.Ping(ctx).Err() == nil {
				probe.Close()
				return r, nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		probe.Close()
		r.stop()
		// Another process may have taken the port between Listen and
		// Start; try the next one.
	}
	return nil, errors.New("no free port in 7100-7199 for a private redis-server")
}

func (r *privateRedis) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}
