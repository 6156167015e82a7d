package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

// benchSetup is what the report says about how the numbers were taken.
type benchSetup struct {
	db, dbVersion, redisVersion string
	rows                        int
	zipfS                       float64
	rounds                      int
	warm, d                     time.Duration
	command                     string
	started                     time.Time
}

// writeReport prints the comparison as markdown that can go in a README
// verbatim.
func writeReport(w io.Writer, s benchSetup, modes []*mode, cells []cell, res [][]*cellResult) {
	fmt.Fprintf(w, "#### %s + Redis: %d rows, zipf s=%.2f, primary-key reads\n\n", s.db, s.rows, s.zipfS)
	fmt.Fprintf(w, "%s, %s, %s, GOMAXPROCS %d, %s; %d interleaved rounds of %s (after %s unmeasured) per mode and row of the table.\n\n",
		s.dbVersion, s.redisVersion, goVersion(), gomaxprocs(), s.started.Format("2006-01-02"), s.rounds, s.d, s.warm)
	fmt.Fprintf(w, "```sh\n%s\n```\n\n", s.command)
	fmt.Fprintln(w, "| goroutines | workload | mode | ops/s | × plain GORM (rounds) | p50 µs | p99 µs | reads off DB |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|")
	var problems []string
	for ci, c := range cells {
		plain := res[ci][0]
		for mi, m := range modes {
			r := res[ci][mi]
			ratio := "1.00"
			if mi > 0 {
				ratio = ratioCell(r, plain)
			}
			off := "—"
			if r.total.reads > 0 {
				off = fmt.Sprintf("%.1f%%", 100*float64(r.total.reads-r.total.dbReads)/float64(r.total.reads))
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", c.goroutines, c.work.name, m.name,
				thousands(r.total.throughput()), ratio, micros(r.total.lat.quantile(0.50)), micros(r.total.lat.quantile(0.99)), off)
			if r.total.errors > 0 {
				problems = append(problems, fmt.Sprintf("- %s, %d goroutines, %s: %d of %d operations failed; first: %v",
					m.name, c.goroutines, c.work.name, r.total.errors, r.total.ops, r.total.firstErr))
			}
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "ops/s: operations completed per second, all rounds together. × plain GORM: that over plain GORM's, with the")
	fmt.Fprintln(w, "lowest and highest ratio of single rounds (each against plain GORM in the same round) in brackets. p50/p99: latency of")
	fmt.Fprintln(w, "every operation (reads and writes). reads off DB: reads that sent no SQL statement at all.")
	var notes []string
	for _, m := range modes {
		if m.stats != nil {
			notes = append(notes, fmt.Sprintf("- %s counters over the rounds: %s", m.name, m.stats()))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	if len(problems) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "**Errors:**")
		fmt.Fprintln(w, strings.Join(problems, "\n"))
	}
}

// ratioCell is a mode's throughput over plain GORM's, all rounds together,
// and the range of the per-round ratios.
func ratioCell(r, plain *cellResult) string {
	pt := plain.total.throughput()
	if pt == 0 {
		return "—"
	}
	var per []float64
	for i, rr := range r.rounds {
		if i < len(plain.rounds) && plain.rounds[i].throughput() > 0 {
			per = append(per, rr.throughput()/plain.rounds[i].throughput())
		}
	}
	out := fmt.Sprintf("%.2f", r.total.throughput()/pt)
	if len(per) > 1 {
		out += fmt.Sprintf(" (%.2f–%.2f)", slices.Min(per), slices.Max(per))
	}
	return out
}

func micros(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	if us < 100 {
		return fmt.Sprintf("%.1f", us)
	}
	return thousands(us)
}

// thousands formats x rounded, with commas between thousands.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandLine is the command that reproduces this run: the environment
// variables it read and its own arguments.
func commandLine(env []string) string {
	parts := []string{"cd bench &&"}
	for _, name := range env {
		if v, ok := os.LookupEnv(name); ok {
			parts = append(parts, name+"="+shellQuote(v))
		}
	}
	parts = append(parts, "go run .")
	for _, a := range os.Args[1:] {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}
