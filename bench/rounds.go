package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// workload is a mix of primary-key reads and writes over zipf-chosen rows.
type workload struct {
	name      string
	writeFrac float64
}

var workloads = []workload{{"read-only", 0}, {"95/5 read/write", 0.05}}

// keyChooser maps zipf ranks to ids through a fixed shuffle, so the hot rows
// are spread over the table rather than being its first ids.
type keyChooser struct {
	byRank []uint
	s      float64
}

func newKeyChooser(ids []uint, s float64, seed uint64) *keyChooser {
	byRank := append([]uint(nil), ids...)
	rand.New(rand.NewPCG(seed, 1)).Shuffle(len(byRank), func(i, j int) { byRank[i], byRank[j] = byRank[j], byRank[i] })
	return &keyChooser{byRank: byRank, s: s}
}

func (k *keyChooser) zipf(r *rand.Rand) *rand.Zipf {
	return rand.NewZipf(r, k.s, 1, uint64(len(k.byRank)-1))
}

// roundResult is what one mode did in one round.
type roundResult struct {
	ops, reads, dbReads, errors uint64
	firstErr                    error
	elapsed                     time.Duration
	lat                         histogram
}

const (
	phaseWarm = iota
	phaseMeasure
	phaseStop
)

// runRound runs m with g goroutines for warm (unmeasured) then d. An
// operation counts when it completes inside the measured window.
func runRound(ctx context.Context, m *mode, g int, w workload, keys *keyChooser, warm, d time.Duration, seed uint64) *roundResult {
	var phase atomic.Int32
	results := make([]roundResult, g)
	var wg sync.WaitGroup
	for i := range g {
		wg.Add(1)
		go func(res *roundResult, seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			z := keys.zipf(r)
			var pr probe
			pctx := withProbe(ctx, &pr)
			for {
				id := keys.byRank[z.Uint64()]
				isWrite := w.writeFrac > 0 && r.Float64() < w.writeFrac
				pr.stmts.Store(0)
				start := time.Now()
				var err error
				if isWrite {
					err = m.write(pctx, id, r.IntN(1000))
				} else {
					err = m.read(pctx, id)
				}
				lat := time.Since(start)
				switch phase.Load() {
				case phaseWarm:
					continue
				case phaseStop:
					return
				}
				res.ops++
				res.lat.record(lat)
				if !isWrite {
					res.reads++
					if pr.stmts.Load() > 0 {
						res.dbReads++
					}
				}
				if err != nil {
					if res.errors++; res.firstErr == nil {
						res.firstErr = err
					}
				}
			}
		}(&results[i], seed+uint64(i)*7919)
	}
	time.Sleep(warm)
	phase.Store(phaseMeasure)
	t0 := time.Now()
	time.Sleep(d)
	phase.Store(phaseStop)
	total := &roundResult{elapsed: time.Since(t0)}
	wg.Wait()
	for i := range results {
		r := &results[i]
		total.ops += r.ops
		total.reads += r.reads
		total.dbReads += r.dbReads
		if total.errors += r.errors; total.firstErr == nil {
			total.firstErr = r.firstErr
		}
		total.lat.merge(&r.lat)
	}
	return total
}

// cell is one (goroutines, workload) configuration.
type cell struct {
	goroutines int
	work       workload
}

// cellResult accumulates one mode's rounds in one cell.
type cellResult struct {
	rounds []*roundResult
	total  roundResult
}

func (c *cellResult) add(r *roundResult) {
	c.rounds = append(c.rounds, r)
	c.total.ops += r.ops
	c.total.reads += r.reads
	c.total.dbReads += r.dbReads
	c.total.elapsed += r.elapsed
	if c.total.errors += r.errors; c.total.firstErr == nil {
		c.total.firstErr = r.firstErr
	}
	c.total.lat.merge(&r.lat)
}

func (r *roundResult) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// runInterleaved runs every mode in every cell once per round, rounds
// outermost, the order of the modes rotated from cell to cell and round to
// round, so that load changes on the machine fall on all modes alike.
// startRound runs (unmeasured) before each round; it re-warms the caches,
// which the previous round's writes have invalidated.
// results[cell][mode] holds each mode's rounds.
func runInterleaved(ctx context.Context, modes []*mode, cells []cell, keys *keyChooser, rounds int, warm, d time.Duration, startRound func(round int) error) ([][]*cellResult, error) {
	results := make([][]*cellResult, len(cells))
	for i := range results {
		results[i] = make([]*cellResult, len(modes))
		for j := range modes {
			results[i][j] = &cellResult{}
		}
	}
	seed := uint64(1)
	for round := range rounds {
		if err := startRound(round); err != nil {
			return nil, err
		}
		for ci, c := range cells {
			for k := range modes {
				mi := (k + round + ci) % len(modes)
				seed++
				results[ci][mi].add(runRound(ctx, modes[mi], c.goroutines, c.work, keys, warm, d, seed*1_000_003))
			}
		}
	}
	return results, nil
}
