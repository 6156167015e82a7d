package writethrough

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// Fault injection between the plugin and Redis. faultProxy is a TCP proxy
// the plugin's clients connect through; it can cut every connection, refuse
// new ones (Redis down), stall replies (hold the bytes Redis sent), and drop
// replies after Redis executed the command (forward the request, discard
// the answer, then close the connection). The history checker runs under
// each fault, and under others that need no proxy: finishes skipped as if
// the process died after COMMIT, and keys evicted or deleted mid-flight.
//
// faultServer (a listener that speaks no Redis) and closedPort cover faults
// a proxy cannot fake; the timeout and lost-reply tests run single
// operations through the proxy.

// faultServer is a TCP server that speaks no Redis: it accepts and then
// either never answers (reply == "") or answers every command with reply.
func faultServer(t testing.TB, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Read command by command (so the client never blocks
				// writing) and answer each one, if at all.
				r := bufio.NewReader(c)
				for {
					if err := skipRESPCommand(r); err != nil {
						return
					}
					if reply != "" {
						if _, err := io.WriteString(c, reply); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// skipRESPCommand reads one client command: an array of bulk strings.
func skipRESPCommand(r *bufio.Reader) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "*") {
		return nil // an inline command: one line
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		head, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
		if err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, r, int64(size)+2); err != nil {
			return err
		}
	}
	return nil
}

// closedPort returns an address nothing listens on.
func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// envWithRedis is newEnv with the plugin talking to rdb.
func envWithRedis(t testing.TB, b backend, rdb redis.UniversalClient, cfg Config, models ...any) *env {
	b.redis = func(testing.TB) redis.UniversalClient { return rdb }
	return newEnv(t, b, cfg, models...)
}

func TestRedisFaultOnReadFallsBackToTheDatabase(t *testing.T) {
	faults := map[string]func(t testing.TB) string{
		"no answer":   func(t testing.TB) string { return faultServer(t, "") },
		"closed port": closedPort,
		"error reply": func(t testing.TB) string { return faultServer(t, "-ERR injected fault\r\n") },
		"garbage":     func(t testing.TB) string { return faultServer(t, "?garbage\r\n") },
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		for name, fault := range faults {
			t.Run(name, func(t *testing.T) {
				// The client's own timeouts are long and it does not bound
				// calls by their context: Config.ReadTimeout must still be
				// what ends a read that gets no answer.
				rdb := redis.NewClient(&redis.Options{
					Addr: fault(t), DialTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
				})
				t.Cleanup(func() { rdb.Close() })
				e := envWithRedis(t, b, rdb, Config{ReadTimeout: defaultReadTimeout}, &Product{})
				plain := e.plainDB()
				table := e.stmtSchema(&Product{}).Table
				rows := []Product{{Name: "a", Price: 1}, {Name: "b", Price: 2}}
				require.NoError(t, plain.Table(table).Create(&rows).Error)
				e.queries()

				read := func(f func() error) {
					t.Helper()
					start := time.Now()
					require.NoError(t, f())
					// Not a latency claim: only that the client's one-minute
					// timeout is not what ended the call.
					require.Less(t, time.Since(start), 30*time.Second, "the read waited for the client's timeout, not Config.ReadTimeout")
				}
				before := e.plugin.Stats().RedisErrors
				var one Product
				read(func() error { return e.db.First(&one, rows[0].ID).Error })
				require.Equal(t, "a", one.Name)
				require.Equal(t, int64(1), e.queries(), "the read went to the database")

				var list []Product
				read(func() error { return e.db.Find(&list, []uint{rows[0].ID, rows[1].ID}).Error })
				require.Len(t, list, 2)
				require.Equal(t, int64(1), e.queries())

				read(func() error {
					err := e.db.First(&Product{}, rows[1].ID+1000).Error
					if !errors.Is(err, gorm.ErrRecordNotFound) {
						return errors.New("want ErrRecordNotFound, got " + errString(err))
					}
					return nil
				})
				require.GreaterOrEqual(t, e.plugin.Stats().RedisErrors, before+3, "every failed Redis call is counted")
				require.Zero(t, e.plugin.Stats().Hits)
			})
		}
	})
}

func TestRedisFaultOnWriteIsBoundedByWriteTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		// As on reads: the client's one-minute timeouts, which it does not
		// shorten for a context's deadline, must not be what ends a write.
		rdb := redis.NewClient(&redis.Options{
			Addr: faultServer(t, ""), DialTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		})
		t.Cleanup(func() { rdb.Close() })
		e := envWithRedis(t, b, rdb, Config{WriteTimeout: 200 * time.Millisecond}, &Plain{})
		plain := e.plainDB()
		table := e.stmtSchema(&Plain{}).Table
		old := Plain{Name: "old"}
		require.NoError(t, plain.Table(table).Create(&old).Error)

		write := func(what string, f func() error) {
			t.Helper()
			start := time.Now()
			err := f()
			require.Less(t, time.Since(start), 30*time.Second, "%s waited for the client's timeout, not Config.WriteTimeout", what)
			require.ErrorContains(t, err, "policy strict", what)
		}
		write("create", func() error { return e.db.Create(&Plain{Name: "new"}).Error })
		write("update", func() error { return e.db.Model(&old).Update("name", "changed").Error })
		write("delete", func() error { return e.db.Delete(&old).Error })

		var rows []Plain
		require.NoError(t, plain.Table(table).Find(&rows).Error)
		require.Equal(t, []Plain{{ID: old.ID, Name: "old"}}, rows, "strict: nothing was written that the cache could not follow")
	})
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// faultProxy forwards connections to target, with faults switched on and
// off while it runs.
type faultProxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	cond     *sync.Cond // broadcast when a stall ends or a link closes
	links    map[*proxyLink]struct{}
	down     bool          // refuse new connections
	stalled  bool          // hold server→client bytes
	dropRate float64       // chance that a reply is discarded
	dropHold time.Duration // how long a link lingers after dropping a reply
	dropNext int           // replies to drop for certain, before dropRate applies
	rng      *rand.Rand
	closed   bool
	wg       sync.WaitGroup

	cuts, drops, refused atomic.Int64
}

// proxyLink is one client connection and its connection to Redis.
type proxyLink struct {
	client, server net.Conn
	once           sync.Once
	closed         atomic.Bool
}

func (l *proxyLink) close() {
	l.once.Do(func() {
		l.closed.Store(true)
		l.client.Close()
		l.server.Close()
	})
}

// newFaultProxy listens on a free loopback port and forwards to target
// until the test ends.
func newFaultProxy(t testing.TB, target string) *faultProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &faultProxy{ln: ln, target: target, links: map[*proxyLink]struct{}{}, rng: rand.New(rand.NewPCG(1, 2))}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is where clients connect.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down, closed := p.down, p.closed
		p.mu.Unlock()
		if down || closed {
			p.refused.Add(1)
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &proxyLink{client: c, server: s}
		p.mu.Lock()
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.up(l)
		go p.downstream(l)
	}
}

// up forwards requests; they always reach Redis.
func (p *faultProxy) up(l *proxyLink) {
	defer p.wg.Done()
	_, _ = io.Copy(l.server, l.client)
	p.drop(l)
}

// downstream forwards replies, unless stalled (held until the stall ends)
// or dropped (discarded; the link closes dropHold later).
func (p *faultProxy) downstream(l *proxyLink) {
	defer p.wg.Done()
	defer p.drop(l)
	buf := make([]byte, 32<<10)
	dropping := false
	for {
		n, err := l.server.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.stalled && !l.closed.Load() && !p.closed {
				p.cond.Wait()
			}
			if !dropping && (p.dropNext > 0 || p.dropRate > 0 && p.rng.Float64() < p.dropRate) {
				dropping = true
				p.dropNext = max(p.dropNext-1, 0)
				p.drops.Add(1)
				time.AfterFunc(p.dropHold, func() { p.drop(l) })
			}
			p.mu.Unlock()
			if !dropping {
				if _, werr := l.client.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// drop closes one link and forgets it.
func (p *faultProxy) drop(l *proxyLink) {
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// cut closes every open connection.
func (p *faultProxy) cut() {
	p.mu.Lock()
	links := make([]*proxyLink, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	p.cuts.Add(1)
	for _, l := range links {
		p.drop(l)
	}
}

// setDown refuses (down) or accepts new connections; going down also cuts
// the open ones.
func (p *faultProxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.cut()
	}
}

// setStall holds (true) or releases every reply.
func (p *faultProxy) setStall(stall bool) {
	p.mu.Lock()
	p.stalled = stall
	p.cond.Broadcast()
	p.mu.Unlock()
}

// setDrop discards each reply with probability rate; the link closes hold
// after the first dropped reply.
func (p *faultProxy) setDrop(rate float64, hold time.Duration) {
	p.mu.Lock()
	p.dropRate, p.dropHold = rate, hold
	p.mu.Unlock()
}

// dropNextReplies discards the next n replies (each closes its link hold
// later).
func (p *faultProxy) dropNextReplies(n int, hold time.Duration) {
	p.mu.Lock()
	p.dropNext, p.dropHold = n, hold
	p.mu.Unlock()
}

// heal switches every fault off.
func (p *faultProxy) heal() {
	p.setDrop(0, 0)
	p.dropNextReplies(0, 0)
	p.setStall(false)
	p.setDown(false)
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.stalled = false
	p.cond.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

func (p *faultProxy) String() string {
	return fmt.Sprintf("cuts %d, refused %d, dropped replies %d", p.cuts.Load(), p.refused.Load(), p.drops.Load())
}

// Redis servers of our own, for faults that must not touch the shared one
// (maxmemory, eviction policies, restarts, cluster mode).

var redisPorts atomic.Int32

// redisServer is a redis-server process of our own.
type redisServer struct {
	bin, addr, dir string
	args           []string
	cmd            *exec.Cmd
	exited         chan struct{}
}

// startRedis starts redis-server on a free port in 7100-7199 with the given
// extra arguments and stops it when the test ends. It skips the test when
// redis-server is not installed and no Redis is configured either (CI has
// both).
func startRedis(t testing.TB, args ...string) string {
	return newRedisServer(t, args...).addr
}

func newRedisServer(t testing.TB, args ...string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("WT_REDIS_ADDR") == "" {
			t.Skip("redis-server is not installed")
		}
		t.Fatalf("WT_REDIS_ADDR is set but redis-server is not on PATH: %v", err)
	}
	for range 100 {
		port := 7100 + int(redisPorts.Add(1)-1)%100
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // in use
		}
		ln.Close()
		s := &redisServer{bin: bin, addr: "127.0.0.1:" + strconv.Itoa(port), dir: t.TempDir(), args: args}
		err = s.start()
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		if strings.Contains(err.Error(), "Address already in use") {
			continue // taken meanwhile, or its cluster bus port is
		}
		t.Fatal(err)
	}
	t.Fatal("no free port in 7100-7199 for redis-server")
	return nil
}

// start runs the server and waits until it answers.
func (s *redisServer) start() error {
	_, port, _ := net.SplitHostPort(s.addr)
	logFile := filepath.Join(s.dir, "redis.log")
	full := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", logFile}, s.args...)
	s.cmd = exec.Command(s.bin, full...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c.Ping(context.Background()).Err() == nil {
			return nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server on %s exited: %s", s.addr, log)
		default:
		}
	}
	s.stop()
	log, _ := os.ReadFile(logFile)
	return fmt.Errorf("redis-server on %s did not answer: %s", s.addr, log)
}

// stop kills the server (no shutdown: its data is gone, as in a crash).
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Fault scenarios.

// faultWindow runs fn between 25% and 75% of the run (or until ctx ends),
// then heals; it returns when ctx ends.
func faultWindow(ctx context.Context, total time.Duration, fn func(ctx context.Context), heal func()) {
	select {
	case <-time.After(total / 4):
	case <-ctx.Done():
		return
	}
	fctx, cancel := context.WithTimeout(ctx, total/2)
	fn(fctx)
	cancel()
	heal()
	<-ctx.Done()
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	tk := time.NewTicker(d)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			fn()
		}
	}
}

// sleepCtx sleeps d or until ctx ends, and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// historyFault is one fault scenario.
type historyFault struct {
	name string
	// prepare adjusts the run: it may put a proxy or another Redis in front
	// of the instances, install hooks, and set the fault function.
	prepare func(t *testing.T, b backend, opts *historyOpts)
}

// prepareCut puts a proxy in front of Redis that cuts every connection
// every 100ms, and once refuses them (Redis down) for 600ms, longer than
// the 300ms WriteTimeout: fences fail, and so (policy Strict) do writes.
func prepareCut(t *testing.T, b backend, opts *historyOpts) {
	px := newFaultProxy(t, opts.redisAddr)
	opts.redisAddr = px.Addr()
	opts.cfg.WriteTimeout = 300 * time.Millisecond
	total := opts.duration
	opts.fault = func(ctx context.Context, w *histWorld) {
		faultWindow(ctx, total, func(ctx context.Context) {
			go every(ctx, 100*time.Millisecond, px.cut)
			if sleepCtx(ctx, total/8) {
				px.setDown(true)
				sleepCtx(ctx, 600*time.Millisecond)
				px.setDown(false)
			}
			<-ctx.Done()
		}, px.heal)
		t.Logf("proxy: %v", px)
	}
}

var historyFaults = []historyFault{
	{name: "cut", prepare: prepareCut},
	{name: "cut-available", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// The same cuts under policy Available: writes commit when their
		// keys cannot be fenced, and the process reads those keys from the
		// database until their invalidation lands. Other processes may
		// serve the old value meanwhile (the documented window), so all
		// readers and writers share one instance here.
		prepareCut(t, b, opts)
		opts.cfg.OnRedisError = Available
		opts.instances = 1
	}},
	{name: "stall", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// Replies are held for 600ms at a time, with 100ms gaps.
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		total := opts.duration
		opts.fault = func(ctx context.Context, w *histWorld) {
			faultWindow(ctx, total, func(ctx context.Context) {
				for ctx.Err() == nil {
					px.setStall(true)
					sleepCtx(ctx, 600*time.Millisecond)
					px.setStall(false)
					sleepCtx(ctx, 100*time.Millisecond)
				}
			}, px.heal)
		}
	}},
	{name: "drop-reply", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// One reply in ten is discarded after Redis executed the command;
		// the connection dies 30ms later.
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		total := opts.duration
		opts.fault = func(ctx context.Context, w *histWorld) {
			faultWindow(ctx, total, func(ctx context.Context) {
				px.setDrop(0.1, 30*time.Millisecond)
				<-ctx.Done()
			}, px.heal)
			t.Logf("proxy: %v", px)
		}
	}},
	{name: "crash-before-finish", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// One finish in three is skipped, as if the process died between
		// the database COMMIT and its cache write.
		var on atomic.Bool
		var n, skipped atomic.Int64
		opts.hooks = func(int) *testHooks {
			return &testHooks{beforeFinish: func() bool {
				if on.Load() && n.Add(1)%3 == 0 {
					skipped.Add(1)
					return false
				}
				return true
			}}
		}
		total := opts.duration
		opts.fault = func(ctx context.Context, w *histWorld) {
			faultWindow(ctx, total, func(ctx context.Context) {
				on.Store(true)
				<-ctx.Done()
			}, func() { on.Store(false) })
			t.Logf("finishes skipped: %d", skipped.Load())
		}
	}},
	{name: "delete-keys", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// Keys vanish mid-flight, as under eviction: every 2ms a random
		// key of the run (a row's value, lease or fence, a shard's
		// generation or table fence) is deleted.
		addr := opts.redisAddr
		total := opts.duration
		opts.fault = func(ctx context.Context, w *histWorld) {
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			var deleted atomic.Int64
			faultWindow(ctx, total, func(ctx context.Context) {
				deleteRandomKeys(ctx, c, w.keys(t), 2*time.Millisecond, &deleted)
			}, func() {})
			t.Logf("keys deleted: %d", deleted.Load())
		}
	}},
	{name: "restart", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// A Redis of our own is killed (its data gone: fences, leases,
		// generations, values) and started again after 300ms, twice.
		srv := newRedisServer(t)
		opts.redisAddr = srv.addr
		total := opts.duration
		opts.fault = func(ctx context.Context, w *histWorld) {
			restarts := 0
			faultWindow(ctx, total, func(ctx context.Context) {
				for ctx.Err() == nil && restarts < 2 {
					srv.stop()
					time.Sleep(300 * time.Millisecond) // Redis stays down this long
					if err := srv.start(); err != nil {
						t.Errorf("restarting Redis: %v", err)
						return
					}
					restarts++
					sleepCtx(ctx, total/6)
				}
			}, func() {})
			t.Logf("redis restarts: %d", restarts)
		}
	}},
	{name: "maxmemory", prepare: func(t *testing.T, b backend, opts *historyOpts) {
		// A Redis of our own with a small maxmemory and allkeys-random:
		// a filler keeps it full, so any key (values, fences, leases,
		// generations) can be evicted at any time.
		addr := startRedis(t, "--maxmemory", "3mb", "--maxmemory-policy", "allkeys-random")
		opts.redisAddr = addr
		total := opts.duration
		opts.fault = func(ctx context.Context, w *histWorld) {
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			faultWindow(ctx, total, func(ctx context.Context) {
				fillRedis(ctx, c, w.prefix)
			}, func() {})
			info, _ := c.Info(context.Background(), "stats").Result()
			for _, line := range strings.Split(info, "\n") {
				if strings.HasPrefix(line, "evicted_keys:") {
					t.Logf("redis %s", strings.TrimSpace(line))
				}
			}
		}
	}},
}

// deleteRandomKeys deletes one of keys, at random, every d.
func deleteRandomKeys(ctx context.Context, c *redis.Client, keys []string, d time.Duration, deleted *atomic.Int64) {
	rng := rand.New(rand.NewPCG(3, 4))
	every(ctx, d, func() {
		if c.Del(ctx, keys[rng.IntN(len(keys))]).Val() == 1 {
			deleted.Add(1)
		}
	})
}

// fillRedis writes 1kB filler keys as fast as it can, keeping a
// maxmemory-limited Redis evicting.
func fillRedis(ctx context.Context, c *redis.Client, prefix string) {
	val := strings.Repeat("x", 1024)
	i := 0
	for ctx.Err() == nil {
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := 0; j < 50; j++ {
				i++
				p.Set(ctx, fmt.Sprintf("%s-filler:%d", prefix, i), val, time.Minute)
			}
			return nil
		})
		sleepCtx(ctx, 5*time.Millisecond)
	}
}

// faultDuration is one fault run's length: a quarter of
// WT_HISTORY_SECONDS, at least 2s (the fault is on for the middle half).
func faultDuration(t testing.TB) time.Duration {
	return max(historySeconds(t)/4, 2*time.Second)
}

func TestHistoryUnderFaults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		skipMiniredisWithServers(t, b)
		for _, f := range historyFaults {
			t.Run(f.name, func(t *testing.T) {
				opts := defaultHistoryOpts(historyRedis(t, b), faultDuration(t))
				opts.quietHits = 0 // the fault keeps the cache cold part of the time
				f.prepare(t, b, &opts)
				res := runHistory(t, b, opts)
				requireHistory(t, b.name+" "+f.name, res, 0)
				require.Positive(t, res.hits, "no read was a cache hit")
			})
		}
	})
}

// TestTimeoutsBoundStalledRedis: while Redis holds its replies, a read
// answers from the database within Config.ReadTimeout (plus the database's
// own time), and a write fails (policy Strict) within Config.WriteTimeout,
// whatever timeouts the Redis client itself has (go-redis ignores context
// deadlines unless Options.ContextTimeoutEnabled is set, and waits 5s).
func TestTimeoutsBoundStalledRedis(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		opts.instances = 1
		opts.cfg.WriteTimeout = 300 * time.Millisecond
		w := newHistWorld(t, b, opts)
		db, cfg := w.instances[0].db, w.instances[0].plugin.cfg
		require.NoError(t, db.First(&HistRow{}, 1).Error)
		require.NoError(t, db.Find(&[]HistRow{}, []int64{1, 2}).Error)

		px.setStall(true)
		defer px.setStall(false)
		// Generous room for the database on a loaded machine: the client on its
		// own would wait 5s.
		slack := 2 * time.Second
		for i := int64(1); i <= 3; i++ {
			start := time.Now()
			var r HistRow
			require.NoError(t, db.First(&r, i).Error)
			require.Equal(t, i, r.ID)
			require.Less(t, time.Since(start), cfg.ReadTimeout+slack, "First waited for a stalled Redis")

			start = time.Now()
			var rs []HistRow
			require.NoError(t, db.Find(&rs, []int64{i, i + 10}).Error)
			require.Len(t, rs, 2)
			require.Less(t, time.Since(start), cfg.ReadTimeout+slack, "Find waited for a stalled Redis")
		}
		start := time.Now()
		err := db.Model(&HistRow{ID: 5}).Update("payload", "stalled").Error
		require.Error(t, err, "policy Strict: a write that cannot fence fails")
		require.Less(t, time.Since(start), cfg.WriteTimeout+slack, "the write waited for a stalled Redis")
		var r HistRow
		require.NoError(t, w.direct.First(&r, 5).Error)
		require.Equal(t, initialPayload, r.Payload, "the failed write did not commit")
	})
}

// TestFillBoundedByReadTimeout: the fill after a miss is part of the read,
// so Redis stalling between the database query and the fill delays the
// read by at most Config.ReadTimeout, not Config.WriteTimeout.
func TestFillBoundedByReadTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		opts.instances = 1
		opts.cfg.WriteTimeout = 5 * time.Second
		var armed atomic.Bool
		opts.hooks = func(int) *testHooks {
			return &testHooks{beforeFill: func(string) {
				if armed.Load() {
					px.setStall(true)
				}
			}}
		}
		w := newHistWorld(t, b, opts)
		db, cfg := w.instances[0].db, w.instances[0].plugin.cfg
		require.NoError(t, db.First(&HistRow{}, 10).Error) // Redis knows the scripts
		defer px.setStall(false)

		armed.Store(true)
		start := time.Now()
		var r HistRow
		require.NoError(t, db.First(&r, 1).Error)
		took := time.Since(start)
		require.Equal(t, int64(1), r.ID)
		require.Less(t, took, cfg.ReadTimeout+2*time.Second, "the read waited for its fill longer than ReadTimeout allows")
	})
}

// TestLostReadReplyKeepsTheLease: Redis ran the read script (and so gave
// the reader the lease) but the reply was lost with its connection; the
// client retries, and the retried script finds the reader's own lease. The
// reader must know the lease is its own: read the database, fill, and move
// on, not wait for itself until the lease expires (leaving the key
// uncacheable meanwhile).
func TestLostReadReplyKeepsTheLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opts := defaultHistoryOpts(historyRedis(t, b), time.Second)
		px := newFaultProxy(t, opts.redisAddr)
		opts.redisAddr = px.Addr()
		opts.instances = 1
		opts.cfg.LeaseTTL = 5 * time.Second
		w := newHistWorld(t, b, opts)
		db := w.instances[0].db
		// Let Redis learn the scripts, so the reply dropped below is the
		// lease script's own, not a NOSCRIPT.
		require.NoError(t, db.First(&HistRow{}, 10).Error)
		require.NoError(t, db.Find(&[]HistRow{}, []int64{10, 11}).Error)
		// The reply to drop is the lease script's, which follows the hit
		// read (MGET): the drop is armed as the script is sent.
		arm := &dropOnLease{px: px}
		addHook(w.instances[0].plugin, arm)

		for _, tc := range []struct {
			name string
			ids  []int64
		}{{"First", []int64{1}}, {"Find", []int64{2, 3, 4}}} {
			t.Run(tc.name, func(t *testing.T) {
				read := func() (hit bool) {
					t.Helper()
					ctx, probe := withProbe(t.Context())
					var rows []HistRow
					var err error
					if len(tc.ids) == 1 {
						var r HistRow
						err = db.WithContext(ctx).First(&r, tc.ids[0]).Error
						rows = append(rows, r)
					} else {
						err = db.WithContext(ctx).Find(&rows, tc.ids).Error
					}
					require.NoError(t, err)
					require.Len(t, rows, len(tc.ids))
					return probe.Load() == 0
				}
				arm.armed.Store(true)
				start := time.Now()
				require.False(t, read(), "the first read misses")
				require.False(t, arm.armed.Load(), "the lease script's reply was dropped")
				took := time.Since(start)
				require.Less(t, took, opts.cfg.LeaseTTL/2, "the reader waited for its own lease")
				require.True(t, read(), "the reader that held the lease filled the key")
			})
		}
	})
}

// dropOnLease is a go-redis hook that, once armed, makes the fault proxy
// drop the reply to the next lease script call (alone or in a pipeline).
type dropOnLease struct {
	px    *faultProxy
	armed atomic.Bool
}

func (h *dropOnLease) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *dropOnLease) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h *dropOnLease) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.check(cmds...)
		return next(ctx, cmds)
	}
}

func (h *dropOnLease) check(cmds ...redis.Cmder) {
	for _, c := range cmds {
		if isScript(c, leaseScript) && h.armed.CompareAndSwap(true, false) {
			h.px.dropNextReplies(1, 0)
			return
		}
	}
}
