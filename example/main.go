// Command example tells the writethrough story on a small product catalog:
// writes go through to Redis, reads after them are served from Redis without
// touching the database, and rolled-back state never reaches the cache.
//
//	go run ./example        # SQLite in a temporary file, Redis in-process
//	go run ./example -redis 127.0.0.1:6379 -postgres "host=127.0.0.1 user=postgres dbname=test sslmode=disable"
//
// Every claim it prints is checked; it exits 1 if one does not hold, so CI
// runs it as a smoke test. Its timing prints a plugin hit, a plain GORM
// database read and a bare GET of one entry, and the database / cache
// ratio only with a real Redis and a networked database: with the embedded
// ones it would compare two in-process emulations, and it says so instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gormcache/writethrough"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// Product is a catalog row. Stock's default is the database's, so what the
// cache holds after a create is visibly the row as the database stored it.
type Product struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Price int64 // cents
	Stock int   `gorm:"default:10"`
}

func main() {
	redisAddr := flag.String("redis", os.Getenv("WT_REDIS_ADDR"), "Redis address (env WT_REDIS_ADDR; default: an in-process server)")
	pgDSN := flag.String("postgres", os.Getenv("WT_POSTGRES_DSN"), "PostgreSQL DSN (env WT_POSTGRES_DSN; default: SQLite in a temporary file)")
	myDSN := flag.String("mysql", os.Getenv("WT_MYSQL_DSN"), "MySQL/MariaDB DSN with parseTime=true (env WT_MYSQL_DSN)")
	reads := flag.Int("reads", 3000, "reads per side in the timing")
	flag.Parse()
	given := map[string]bool{} // a DSN given as a flag wins over the other's variable
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["postgres"] && !given["mysql"] {
		*myDSN = ""
	} else if given["mysql"] && !given["postgres"] {
		*pgDSN = ""
	}
	if err := run(*redisAddr, *pgDSN, *myDSN, max(*reads, 1)); err != nil {
		fmt.Fprintln(os.Stderr, "\nFAIL:", err)
		os.Exit(1)
	}
	fmt.Println("\nOK: every claim above held.")
}

func run(redisAddr, pgDSN, myDSN string, reads int) (err error) {
	ctx, runID := context.Background(), strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	dialect := func() gorm.Dialector { return postgres.Open(pgDSN) }
	switch {
	case pgDSN != "" && myDSN != "":
		return errors.New("both WT_POSTGRES_DSN and WT_MYSQL_DSN are set: choose one with -postgres or -mysql")
	case myDSN != "":
		dialect = func() gorm.Dialector { return mysql.Open(myDSN) }
	case pgDSN == "":
		dir, err := os.MkdirTemp("", "writethrough-example-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dialect = func() gorm.Dialector {
			return sqlite.Open(filepath.Join(dir, "catalog.db") + "?_busy_timeout=10000&_journal_mode=WAL")
		}
	}
	embedded, shown := redisAddr == "", redisAddr
	if embedded {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		redisAddr, shown = mr.Addr(), "in-process miniredis "+mr.Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", redisAddr, err)
	}

	// Two *gorm.DB on one database: db has the plugin and counts the
	// statements it sends; plain has neither, for comparison.
	tables := schema.NamingStrategy{TablePrefix: "wtex_" + runID + "_"}
	sent := &statements{Interface: logger.Discard}
	db, err := gorm.Open(dialect(), &gorm.Config{Logger: sent, NamingStrategy: tables})
	if err != nil {
		return err
	}
	plain, err := gorm.Open(dialect(), &gorm.Config{Logger: logger.Discard, NamingStrategy: tables})
	if err != nil {
		return err
	}
	prefix := "wtex-" + runID
	// Hooks go on the client before New: the plugin's calls run through
	// clones of the client made there, which carry the hooks it had then.
	hit := &lastCommand{}
	rdb.AddHook(hit)
	cache := writethrough.New(rdb, writethrough.Config{Prefix: prefix})
	if err := errors.Join(db.Use(cache), db.AutoMigrate(&Product{})); err != nil {
		return err
	}
	defer func() { // leave nothing behind on shared servers
		it := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for it.Next(ctx) {
			err = errors.Join(err, rdb.Del(ctx, it.Val()).Err())
		}
		err = errors.Join(err, it.Err(), plain.Migrator().DropTable(&Product{}))
	}()
	fmt.Printf("database: %s, Redis: %s, key prefix %q\n", db.Dialector.Name(), shown, prefix)

	// step runs f and returns how many statements db sent meanwhile and how
	// the plugin's counters moved; check prints a claim and whether it held.
	failed := 0
	check := func(ok bool, format string, args ...any) {
		mark := "   ok    "
		if !ok {
			mark, failed = "   FAIL  ", failed+1
		}
		fmt.Println(mark + fmt.Sprintf(format, args...))
	}
	step := func(f func() error) (n int64, d writethrough.Stats) {
		before := cache.Stats()
		sent.n.Store(0)
		if err := f(); err != nil {
			check(false, "unexpected error: %v", err)
		}
		a, b, dv := reflect.ValueOf(before), reflect.ValueOf(cache.Stats()), reflect.ValueOf(&d).Elem()
		for i := range dv.NumField() {
			dv.Field(i).SetUint(b.Field(i).Uint() - a.Field(i).Uint())
		}
		return sent.n.Load(), d
	}

	fmt.Println("\n1. Create the catalog (one INSERT for five rows).")
	catalog := []Product{{Name: "lamp", Price: 1999}, {Name: "desk", Price: 24900}, {Name: "chair", Price: 8900}, {Name: "shelf", Price: 5900}, {Name: "rug", Price: 12900}}
	n, d := step(func() error { return db.Create(&catalog).Error })
	check(d.WritesThrough == 5, "all five rows were written through to Redis (WritesThrough +%d, %d statements)", d.WritesThrough, n)
	ids := make([]uint, len(catalog))
	for i, p := range catalog {
		ids[i] = p.ID
	}
	lamp := catalog[0]

	fmt.Println("\n2. Read them back: by id, by id list, through the generics API.")
	var one, outside Product
	var list []Product
	n, d = step(func() error {
		for _, id := range ids {
			one = Product{} // a set ID would be a second condition
			if err := db.First(&one, id).Error; err != nil {
				return err
			}
		}
		if err := db.Find(&list, ids).Error; err != nil {
			return err
		}
		one, err = gorm.G[Product](db).Where("id = ?", lamp.ID).First(ctx)
		return err
	})
	check(n == 0 && d.Hits == 11, "11 rows served from Redis, %d database statements (Hits +%d, Misses +%d)", n, d.Hits, d.Misses)
	check(len(list) == 5 && list[0].Stock == 10 && one.Name == "lamp", "the rows are as the database stored them, its default Stock=%d included", one.Stock)
	n, d = step(func() error { return db.Where("price > ?", 10000).Find(&list).Error })
	check(n == 1 && d.Bypasses == 1 && len(list) == 2, "a query on another column goes to the database (%d statement, Bypasses +%d)", n, d.Bypasses)

	fmt.Println("\n3. Update the lamp's price; the next read sees it, from Redis.")
	_, d = step(func() error { return db.Model(&lamp).Update("price", 2499).Error })
	check(d.WritesThrough == 1, "the update was written through (WritesThrough +%d)", d.WritesThrough)
	n, d = step(func() error { return db.First(&one, lamp.ID).Error })
	check(n == 0 && d.Hits == 1 && one.Price == 2499, "price %d, served from Redis with %d database statements", one.Price, n)

	fmt.Println("\n4. A transaction sets the price to 1, then rolls back.")
	_, d = step(func() error {
		tx := db.Begin()
		err := tx.Model(&lamp).Update("price", 1).Error
		// Another reader while the transaction is open: the key is fenced,
		// so it reads the database, which still has the committed row.
		err = errors.Join(err, db.First(&outside, lamp.ID).Error)
		return errors.Join(err, tx.Rollback().Error)
	})
	check(outside.Price == 2499 && d.Bypasses == 1 && d.WritesThrough == 0, "a reader during the transaction got %d from the database (Bypasses +%d); nothing was written through", outside.Price, d.Bypasses)
	n, d = step(func() error { return db.First(&one, lamp.ID).Error })
	check(one.Price == 2499 && n == 1 && d.Misses == 1 && d.Fills == 1, "after ROLLBACK the fence is gone: the next read misses and fills %d from the database", one.Price)
	n, d = step(func() error { return db.First(&one, lamp.ID).Error })
	check(one.Price == 2499 && n == 0 && d.Hits == 1, "the cached value is the committed one: %d, from Redis", one.Price)

	fmt.Printf("\n5. Time %d primary-key reads from the cache, and as many from the database (no plugin).\n", reads)
	var cached, direct, get time.Duration
	callsBefore := hit.calls.Load()
	n, d = step(func() error { cached, err = timeReads(db, ids, reads); return err })
	check(n == 0 && d.Hits == uint64(reads), "all %d cached reads were hits, %d database statements", d.Hits, n)
	hitCmd, hitCalls := hit.name(), hit.calls.Load()-callsBefore
	check(hitCalls == int64(reads), "each hit was one Redis command (%s), %d commands for %d reads", hitCmd, hitCalls, reads)
	if direct, err = timeReads(plain, ids, reads); err != nil {
		return err
	}
	if get, err = timeGets(ctx, rdb, prefix, reads); err != nil {
		return err
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	fmt.Printf("   cache: %.1f µs per read (a plugin hit: GORM builds the statement, one %s, decode)\n", us(cached), hitCmd)
	fmt.Printf("   database: %.1f µs per read (plain GORM, %s)\n", us(direct), db.Dialector.Name())
	fmt.Printf("   Redis GET of one cached entry alone: %.1f µs per read (go-redis, no GORM)\n", us(get))
	if networked := pgDSN != "" || myDSN != ""; networked && !embedded {
		fmt.Printf("   database / cache = %.2f\n", float64(direct)/float64(cached))
	} else {
		// A ratio here would compare two in-process emulations, not what an
		// application runs: print none, and say why.
		var why []string
		if !networked {
			why = append(why, "SQLite answers in-process, with no network hop or server")
		}
		if embedded {
			emu := "miniredis is a Go emulation of Redis in this process"
			if hitCmd == "EVALSHA" {
				emu += ", and it runs scripts in a Lua interpreter: a hit, a script here, costs it many times a GET"
			}
			why = append(why, emu)
		}
		fmt.Printf("   no database / cache ratio: %s. Run with -redis and -postgres (or -mysql) for one that means something.\n", strings.Join(why, "; "))
	}

	fmt.Printf("\n6. Stats at the end:\n   %+v\n", cache.Stats())
	if failed > 0 {
		return fmt.Errorf("%d claims did not hold", failed)
	}
	return nil
}

// timeGets reads a cached row's entry n times with a bare GET and returns
// the mean time per read: what a hit costs this Redis without GORM and
// without the plugin.
func timeGets(ctx context.Context, rdb *redis.Client, prefix string, n int) (time.Duration, error) {
	var key string
	it := rdb.Scan(ctx, 0, prefix+":*:k:*", 1000).Iterator()
	for key == "" && it.Next(ctx) {
		key = it.Val()
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	if key == "" {
		return 0, errors.New("no cached row to GET")
	}
	start := time.Now()
	for range n {
		if err := rdb.Get(ctx, key).Err(); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

// lastCommand is a go-redis hook that counts the commands (and pipelines)
// a client sends and remembers the last one's name: the timed hits show
// what a hit costs in Redis commands.
type lastCommand struct {
	calls atomic.Int64
	last  atomic.Value // string
}

func (h *lastCommand) name() string {
	if s, ok := h.last.Load().(string); ok {
		return s
	}
	return "none"
}

func (h *lastCommand) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lastCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.calls.Add(1)
		h.last.Store(strings.ToUpper(cmd.Name()))
		return next(ctx, cmd)
	}
}

func (h *lastCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.calls.Add(int64(len(cmds)))
		h.last.Store(fmt.Sprintf("pipeline of %d", len(cmds)))
		return next(ctx, cmds)
	}
}

// timeReads reads n rows by primary key and returns the mean time per read.
func timeReads(db *gorm.DB, ids []uint, n int) (time.Duration, error) {
	start := time.Now()
	for i := range n {
		var p Product
		if err := db.First(&p, ids[i%len(ids)]).Error; err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

// statements counts the SQL statements GORM sends to the database: GORM
// traces every statement it builds and runs, and a cache hit builds none.
type statements struct {
	logger.Interface
	n atomic.Int64
}

func (s *statements) LogMode(logger.LogLevel) logger.Interface { return s }

func (s *statements) Trace(context.Context, time.Time, func() (string, int64), error) { s.n.Add(1) }
