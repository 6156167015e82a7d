// Command bench compares writethrough with plain GORM, with the upper bound
// of any Redis-hit design, and optionally with other GORM cache plugins, on
// real servers, in interleaved rounds; with -capacity it measures what a hit
// costs the Redis server. See README.md beside this file.
//
//	cd bench && go run . -db postgres -peers
//	cd bench && go run . -capacity
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// options are the command's flags.
type options struct {
	db, redisAddr, postgresDSN, mysqlDSN, sqliteDSN string
	rows                                            int
	zipfS                                           float64
	goroutines                                      []int
	rounds                                          int
	warm, d                                         time.Duration
	peers, ceiling                                  bool
	redisPool, peerDB                               int

	capacity           bool
	capacityRedis      string
	capacityGoroutines int
	capacityD          time.Duration
	pipeline           int
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func parseFlags() (options, error) {
	var o options
	var gs string
	flag.StringVar(&o.db, "db", "sqlite", "database: sqlite, postgres or mysql")
	flag.StringVar(&o.redisAddr, "redis", envOr("WT_REDIS_ADDR", "127.0.0.1:6379"), "Redis address (default $WT_REDIS_ADDR, else 127.0.0.1:6379)")
	flag.StringVar(&o.postgresDSN, "postgres", os.Getenv("WT_POSTGRES_DSN"), "PostgreSQL DSN for -db postgres (default $WT_POSTGRES_DSN)")
	flag.StringVar(&o.mysqlDSN, "mysql", os.Getenv("WT_MYSQL_DSN"), "MySQL/MariaDB DSN with parseTime=true for -db mysql (default $WT_MYSQL_DSN)")
	flag.StringVar(&o.sqliteDSN, "sqlite", "", "SQLite DSN for -db sqlite (default: a WAL file in a temporary directory)")
	flag.IntVar(&o.rows, "rows", 10000, "rows in the table")
	flag.Float64Var(&o.zipfS, "zipf", 1.1, "zipf exponent s (> 1) of the key choice")
	flag.StringVar(&gs, "goroutines", "1,8,32", "comma-separated goroutine counts")
	flag.IntVar(&o.rounds, "rounds", 4, "interleaved rounds")
	flag.DurationVar(&o.d, "d", 600*time.Millisecond, "measured time of one mode in one cell of one round")
	flag.DurationVar(&o.warm, "warmup", 100*time.Millisecond, "unmeasured time before each measured one")
	flag.IntVar(&o.peerDB, "peer-redis-db", 1, "first Redis logical database for -peers (each peer gets its own, so its key scans see only its keys)")
	flag.BoolVar(&o.peers, "peers", false, "also run go-gorm/caches and Pacific73/gorm-cache")
	flag.BoolVar(&o.ceiling, "ceiling", true, "also run the ceiling: GORM's statement building plus one MGET")
	flag.IntVar(&o.redisPool, "redis-pool", 64, "go-redis pool size (its default, 10 per CPU, would queue 32 goroutines)")
	flag.BoolVar(&o.capacity, "capacity", false, "measure Redis server time per hit instead (see README.md)")
	flag.StringVar(&o.capacityRedis, "capacity-redis", "", "Redis for -capacity (default: a redis-server this program starts on a free port in 7100-7199)")
	flag.IntVar(&o.capacityGoroutines, "capacity-goroutines", 64, "goroutines driving hits in -capacity")
	flag.DurationVar(&o.capacityD, "capacity-d", 3*time.Second, "measured time of each -capacity phase")
	flag.IntVar(&o.pipeline, "pipeline", 32, "GETs per pipeline in -capacity's pipelined GET phase")
	flag.Parse()
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	for _, f := range strings.Split(gs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-goroutines %q: want positive integers separated by commas", gs)
		}
		o.goroutines = append(o.goroutines, n)
	}
	switch {
	case o.rows < 2:
		return o, errors.New("-rows must be at least 2")
	case !(o.zipfS > 1):
		return o, errors.New("-zipf must be greater than 1")
	case o.rounds < 1:
		return o, errors.New("-rounds must be at least 1")
	case o.d <= 0 || o.warm < 0:
		return o, errors.New("-d must be positive and -warmup not negative")
	case o.redisPool < 1 || o.capacityGoroutines < 1 || o.pipeline < 1 || o.capacityD <= 0:
		return o, errors.New("-redis-pool, -capacity-goroutines, -pipeline and -capacity-d must be positive")
	}
	return o, nil
}

func (o options) dsn() string {
	switch o.db {
	case "postgres":
		return o.postgresDSN
	case "mysql":
		return o.mysqlDSN
	}
	return o.sqliteDSN
}

// envUsed names the environment variables this run read, for the command
// line in the report.
func (o options) envUsed() []string {
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var env []string
	if !given["redis"] && !o.capacity { // -capacity reads its own Redis
		env = append(env, "WT_REDIS_ADDR")
	}
	if o.db == "postgres" && !given["postgres"] {
		env = append(env, "WT_POSTGRES_DSN")
	}
	if o.db == "mysql" && !given["mysql"] {
		env = append(env, "WT_MYSQL_DSN")
	}
	return env
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if o.capacity {
		err = runCapacity(context.Background(), o)
	} else {
		err = runComparison(context.Background(), o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func progress(msg string) { fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), msg) }

func goVersion() string { return runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH }
func gomaxprocs() int   { return runtime.GOMAXPROCS(0) }

func newRunID() string { return strconv.FormatInt(time.Now().UnixNano()%1e12, 36) }

// setup is the table and the clients both commands work on.
type setup struct {
	d     *database
	rdb   *redis.Client
	ids   []uint
	runID string
}

// openSetup opens the database and Redis and seeds the table; close drops
// the table.
func openSetup(ctx context.Context, o options, redisAddr string, maxConns int) (*setup, error) {
	runID := newRunID()
	d, err := openDatabase(o.db, o.dsn(), maxConns, runID)
	if err != nil {
		return nil, err
	}
	rdb, err := newRedis(ctx, redisAddr, o.redisPool)
	if err != nil {
		d.close()
		return nil, err
	}
	s := &setup{d: d, rdb: rdb, runID: runID}
	plain, err := d.gorm()
	if err == nil {
		progress(fmt.Sprintf("seeding %d rows into %s", o.rows, d.version))
		s.ids, err = seed(plain, o.rows)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *setup) close() {
	if plain, err := s.d.gorm(); err == nil {
		if err := plain.Migrator().DropTable(&Row{}); err != nil {
			progress("drop table: " + err.Error())
		}
	}
	s.rdb.Close()
	s.d.close()
}

// warmUp reads every id once through m, with a few goroutines, so the
// measured rounds start from a warm cache in every cache mode alike.
func warmUp(ctx context.Context, m *mode, ids []uint) error {
	const workers = 8
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ids); i += workers {
				if err := m.read(ctx, ids[i]); err != nil {
					errs[w] = fmt.Errorf("warm %s, id %d: %w", m.name, ids[i], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func runComparison(ctx context.Context, o options) (err error) {
	maxG := 0
	for _, g := range o.goroutines {
		maxG = max(maxG, g)
	}
	s, err := openSetup(ctx, o, o.redisAddr, max(maxG, 8)*2)
	if err != nil {
		return err
	}
	defer s.close()

	modes := []*mode{}
	defer func() {
		for _, m := range modes {
			err = errors.Join(err, m.close(ctx))
		}
	}()
	plain, err := plainMode(s.d)
	if err != nil {
		return err
	}
	modes = append(modes, plain)
	plugin, _, err := pluginMode(s.d, s.rdb, "wtbench-"+s.runID)
	if err != nil {
		return err
	}
	modes = append(modes, plugin)
	if o.ceiling {
		c, err := ceilingMode(ctx, s.d, s.rdb, "wtbench-ceil-"+s.runID, s.ids)
		if err != nil {
			return err
		}
		modes = append(modes, c)
	}
	if o.peers {
		gc, err := gormCachesMode(ctx, s.d, o.redisAddr, o.peerDB, o.redisPool, "wtbench-caches-"+s.runID)
		if err != nil {
			return err
		}
		modes = append(modes, gc)
		pc, err := pacificMode(s.d, o.redisAddr, o.peerDB+1, o.redisPool)
		if err != nil {
			return err
		}
		modes = append(modes, pc)
	}
	// Read-only cells run first in every round, on caches warmed anew:
	// the writes of the previous round's 95/5 cells must not decide how
	// many reads the next read-only cells keep off the database.
	var cells []cell
	for _, w := range workloads {
		for _, g := range o.goroutines {
			cells = append(cells, cell{goroutines: g, work: w})
		}
	}
	total := time.Duration(o.rounds*len(cells)*len(modes)) * (o.warm + o.d)
	progress(fmt.Sprintf("%d modes × %d cells × %d rounds × %s: about %s plus warming", len(modes), len(cells), o.rounds, o.warm+o.d, total.Round(time.Second)))
	started := time.Now()
	keys := newKeyChooser(s.ids, o.zipfS, 42)
	startRound := func(round int) error {
		progress(fmt.Sprintf("round %d/%d: warming the caches", round+1, o.rounds))
		for _, m := range modes[1:] {
			if err := warmUp(ctx, m, s.ids); err != nil {
				return err
			}
		}
		if round == 0 {
			for _, m := range modes {
				if m.mark != nil {
					m.mark()
				}
			}
		}
		return nil
	}
	res, err := runInterleaved(ctx, modes, cells, keys, o.rounds, o.warm, o.d, startRound)
	if err != nil {
		return err
	}
	progress(fmt.Sprintf("done in %s", time.Since(started).Round(time.Second)))

	writeReport(os.Stdout, benchSetup{
		db: o.db, dbVersion: s.d.version, redisVersion: redisVersion(ctx, s.rdb), rows: o.rows, zipfS: o.zipfS,
		rounds: o.rounds, warm: o.warm, d: o.d, command: commandLine(o.envUsed()), started: started,
	}, modes, cells, res)
	return nil
}
