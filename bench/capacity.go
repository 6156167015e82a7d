package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// -capacity asks what a cache hit costs the Redis server, the resource a
// cache exists to spend instead of the database's. It drives warm hits
// through the plugin from many goroutines, then raw GETs of the plugin's own
// row entries, unpipelined and pipelined, and reads INFO commandstats and
// INFO cpu before and after each phase. The commands are whatever the plugin
// sent: the report lists every command that ran, so it reads the same
// whether a hit is an EVALSHA or an MGET.

// cmdStat is one command's line of INFO commandstats.
type cmdStat struct{ calls, usec uint64 }

// serverSnap is what the server said at one moment.
type serverSnap struct {
	cmds map[string]cmdStat
	cpu  float64 // used_cpu_user + used_cpu_sys, seconds
}

func snapServer(ctx context.Context, rdb *redis.Client) (serverSnap, error) {
	info, err := rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return serverSnap{}, fmt.Errorf("INFO: %w", err)
	}
	return parseServerInfo(info)
}

// parseServerInfo reads the commandstats and cpu sections of an INFO reply.
func parseServerInfo(info string) (serverSnap, error) {
	s := serverSnap{cmds: map[string]cmdStat{}}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok {
			name, fields, _ := strings.Cut(rest, ":")
			var st cmdStat
			for _, f := range strings.Split(fields, ",") {
				k, v, _ := strings.Cut(f, "=")
				n, _ := strconv.ParseUint(v, 10, 64)
				switch k {
				case "calls":
					st.calls = n
				case "usec":
					st.usec = n
				}
			}
			s.cmds[name] = st
		}
	}
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			return s, fmt.Errorf("INFO cpu has no %s", f)
		}
		s.cpu += v
	}
	return s, nil
}

// cmdCounter is a go-redis hook counting the commands this client sent, by
// name. A script's own redis.call commands show in commandstats but not
// here, which is how they are told apart from the client's.
type cmdCounter struct{ counts sync.Map } // name -> *atomic.Uint64

func (c *cmdCounter) add(name string) {
	v, ok := c.counts.Load(name)
	if !ok {
		v, _ = c.counts.LoadOrStore(name, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

func (c *cmdCounter) snapshot() map[string]uint64 {
	out := map[string]uint64{}
	c.counts.Range(func(k, v any) bool { out[k.(string)] = v.(*atomic.Uint64).Load(); return true })
	return out
}

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.add(strings.ToLower(cmd.Name()))
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.add(strings.ToLower(cmd.Name()))
		}
		return next(ctx, cmds)
	}
}

// cmdLine is one command's share of a phase.
type cmdLine struct {
	name                    string
	serverCalls, clientCall uint64
	usec                    uint64  // server time of all its calls
	ownUsec                 float64 // the share of usec spent on calls the client sent
}

// newCmdLine is a command's share of a phase: the server ran it calls
// times for usec in all, and this client sent clientCalls of them. Calls
// beyond those ran inside a script (or came from another client of a shared
// server), so their time is not this client's top-level time: a script's
// time already includes its inner commands'.
func newCmdLine(name string, calls, usec, clientCalls uint64) cmdLine {
	l := cmdLine{name: name, serverCalls: calls, usec: usec, clientCall: clientCalls}
	if calls > 0 {
		l.ownUsec = float64(usec) * min(1, float64(clientCalls)/float64(calls))
	}
	return l
}

// phaseResult is one capacity phase.
type phaseResult struct {
	name     string
	ops      uint64
	errors   uint64
	firstErr error
	elapsed  time.Duration
	cmds     []cmdLine
	cpu      float64 // server CPU seconds
	note     string
}

func (p *phaseResult) perOp(x float64) float64 { return x / float64(max(p.ops, 1)) }

// serverUsec is the server's command time for the phase, counting a
// script's inner commands once (inside the script's own time).
func (p *phaseResult) serverUsec() float64 {
	var t float64
	for _, c := range p.cmds {
		t += c.ownUsec
	}
	return t
}

// ignoredCommands are this program's own INFO calls at the phase edges.
var ignoredCommands = map[string]bool{"info": true}

// measurePhase runs op from g goroutines for d and diffs the server's
// counters around it. op returns how many operations it did.
func measurePhase(ctx context.Context, rdb *redis.Client, counter *cmdCounter, name string, g int, d time.Duration, op func(r *rand.Rand) (int, error)) (*phaseResult, error) {
	before, err := snapServer(ctx, rdb)
	if err != nil {
		return nil, err
	}
	clientBefore := counter.snapshot()
	var stop atomic.Bool
	var ops, errs atomic.Uint64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 99))
			for !stop.Load() {
				n, err := op(r)
				ops.Add(uint64(n))
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	after, err := snapServer(ctx, rdb)
	if err != nil {
		return nil, err
	}
	clientAfter := counter.snapshot()

	p := &phaseResult{name: name, ops: ops.Load(), errors: errs.Load(), elapsed: elapsed, cpu: after.cpu - before.cpu}
	if e, ok := firstErr.Load().(error); ok {
		p.firstErr = e
	}
	for cmd, a := range after.cmds {
		b := before.cmds[cmd]
		if a.calls == b.calls || ignoredCommands[cmd] {
			continue
		}
		p.cmds = append(p.cmds, newCmdLine(cmd, a.calls-b.calls, a.usec-b.usec, clientAfter[cmd]-clientBefore[cmd]))
	}
	slices.SortFunc(p.cmds, func(x, y cmdLine) int { return strings.Compare(x.name, y.name) })
	return p, nil
}

// rowEntries finds the plugin's row entries under prefix: string keys of at
// least minLen bytes (a row's encoding; generation counters and markers are
// shorter), so the GET phases read the very bytes a hit reads.
func rowEntries(ctx context.Context, rdb *redis.Client, prefix string, minLen int64) ([]string, error) {
	var all []string
	it := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for it.Next(ctx) {
		all = append(all, it.Val())
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	pipe := rdb.Pipeline()
	types := make([]*redis.StatusCmd, len(all))
	lens := make([]*redis.IntCmd, len(all))
	for i, k := range all {
		types[i] = pipe.Type(ctx, k)
		lens[i] = pipe.StrLen(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // STRLEN fails on non-strings; judged per key below
	var rows []string
	for i, k := range all {
		if types[i].Val() == "string" && lens[i].Val() >= minLen {
			rows = append(rows, k)
		}
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("found no row entries under %s:* (%d keys)", prefix, len(all))
	}
	return rows, nil
}

func runCapacity(ctx context.Context, o options) (err error) {
	addr, private := o.capacityRedis, o.capacityRedis == ""
	if private {
		pr, err := startPrivateRedis(ctx)
		if err != nil {
			return err
		}
		defer pr.stop()
		addr = pr.addr
		progress("started a private redis-server at " + addr)
	}
	o.redisPool = max(o.redisPool, o.capacityGoroutines)
	s, err := openSetup(ctx, o, addr, 16)
	if err != nil {
		return err
	}
	defer s.close()
	counter := &cmdCounter{}
	s.rdb.AddHook(counter)
	prefix := "wtcap-" + s.runID
	m, p, err := pluginMode(s.d, s.rdb, prefix)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.close(ctx)) }()
	progress("warming writethrough")
	if err := warmUp(ctx, m, s.ids); err != nil {
		return err
	}
	keys, err := rowEntries(ctx, s.rdb, prefix, 64)
	if err != nil {
		return err
	}
	g, d := o.capacityGoroutines, o.capacityD
	ids := s.ids

	progress(fmt.Sprintf("phase 1/3: writethrough hits, %d goroutines, %s", g, d))
	st0 := p.Stats()
	hits, err := measurePhase(ctx, s.rdb, counter, "writethrough hit (First by id)", g, d, func(r *rand.Rand) (int, error) {
		return 1, m.read(ctx, ids[r.IntN(len(ids))])
	})
	if err != nil {
		return err
	}
	st1 := p.Stats()
	hits.note = fmt.Sprintf("plugin counters: hits %d, misses %d, bypasses %d, Redis errors %d", st1.Hits-st0.Hits, st1.Misses-st0.Misses, st1.Bypasses-st0.Bypasses, st1.RedisErrors-st0.RedisErrors)

	progress(fmt.Sprintf("phase 2/3: GET of the same %d entries, %d goroutines, %s", len(keys), g, d))
	get, err := measurePhase(ctx, s.rdb, counter, "GET, one per call", g, d, func(r *rand.Rand) (int, error) {
		return 1, s.rdb.Get(ctx, keys[r.IntN(len(keys))]).Err()
	})
	if err != nil {
		return err
	}

	progress(fmt.Sprintf("phase 3/3: pipelined GET, %d per pipeline, %d goroutines, %s", o.pipeline, g, d))
	pipelined, err := measurePhase(ctx, s.rdb, counter, fmt.Sprintf("GET, pipelined by %d", o.pipeline), g, d, func(r *rand.Rand) (int, error) {
		_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for range o.pipeline {
				pipe.Get(ctx, keys[r.IntN(len(keys))])
			}
			return nil
		})
		return o.pipeline, err
	})
	if err != nil {
		return err
	}

	writeCapacityReport(os.Stdout, o, s, addr, private, len(keys), []*phaseResult{hits, get, pipelined})
	return nil
}

func writeCapacityReport(w io.Writer, o options, s *setup, addr string, private bool, entries int, phases []*phaseResult) {
	ctx := context.Background()
	fmt.Fprintf(w, "#### Redis capacity: a writethrough hit against a GET of the same entry\n\n")
	where := "a private redis-server this run started (nothing else talks to it)"
	if !private {
		where = "the shared server at " + addr + " (other clients' commands and CPU are mixed in)"
	}
	fmt.Fprintf(w, "%s on %s; %s, %s, GOMAXPROCS %d, %s; %d rows, %d row entries; %d goroutines, %s per phase.\n\n",
		redisVersion(ctx, s.rdb), where, s.d.version, goVersion(), gomaxprocs(), time.Now().Format("2006-01-02"),
		len(s.ids), entries, o.capacityGoroutines, o.capacityD)
	fmt.Fprintf(w, "```sh\n%s\n```\n\n", commandLine(o.envUsed()))

	fmt.Fprintln(w, "| phase | ops/s | server µs per op (commandstats) | Redis CPU µs per op | ops/s one Redis core could serve |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, p := range phases {
		cpuUs := p.perOp(p.cpu * 1e6)
		bound := "—"
		if cpuUs > 0 {
			bound = thousands(1e6 / cpuUs)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %s |\n", p.name, thousands(float64(p.ops)/p.elapsed.Seconds()), p.perOp(p.serverUsec()), cpuUs, bound)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| phase | command | server calls per op | sent by the client per op | µs per call | server µs per op |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, p := range phases {
		for _, c := range p.cmds {
			fmt.Fprintf(w, "| %s | %s | %.3f | %.3f | %.2f | %.2f |\n", p.name, strings.ToUpper(c.name), p.perOp(float64(c.serverCalls)), p.perOp(float64(c.clientCall)),
				float64(c.usec)/float64(max(c.serverCalls, 1)), p.perOp(c.ownUsec))
		}
	}
	fmt.Fprintln(w)
	if len(phases) >= 2 && phases[1].serverUsec() > 0 {
		h, g := phases[0], phases[1]
		fmt.Fprintf(w, "A hit costs the server %.1f× a GET's command time and %.1f× its CPU.\n\n",
			h.perOp(h.serverUsec())/g.perOp(g.serverUsec()), h.perOp(h.cpu)/max(g.perOp(g.cpu), 1e-12))
	}
	fmt.Fprintln(w, "ops/s is what this client reached (on a small machine the client, not Redis, is usually the limit).")
	fmt.Fprintln(w, "Server µs per op: INFO commandstats time of the commands the client sent (a script's inner commands count once,")
	fmt.Fprintln(w, "inside the script's time). Redis CPU: INFO cpu (user + sys), which adds reading, parsing and replying.")
	fmt.Fprintln(w, "Server calls beyond those sent by the client ran inside scripts.")
	for _, p := range phases {
		if p.note != "" {
			fmt.Fprintf(w, "\n- %s: %s", p.name, p.note)
		}
		if p.errors > 0 {
			fmt.Fprintf(w, "\n- **%s: %d errors**; first: %v", p.name, p.errors, p.firstErr)
		}
	}
	fmt.Fprintln(w)
}
