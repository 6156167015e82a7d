package main

import (
	"math"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if rel := math.Abs(float64(got-c.want)) / float64(c.want); rel > 0.02 {
			t.Errorf("q%.2f = %s, want %s within 2%%", c.q, got, c.want)
		}
	}
	var empty histogram
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("empty histogram p50 = %s, want 0", got)
	}
}

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 123456789, 1 << 40, math.MaxUint64} {
		i := bucketOf(v)
		if i < 0 || i >= len(histogram{}.counts) {
			t.Fatalf("bucketOf(%d) = %d, out of range", v, i)
		}
		if got := bucketValue(i); v >= 64 && math.Abs(float64(got)-float64(v))/float64(v) > 0.016 {
			t.Errorf("bucketValue(bucketOf(%d)) = %d: more than 1.6%% off", v, got)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b histogram
	a.record(time.Millisecond)
	b.record(3 * time.Millisecond)
	b.record(3 * time.Millisecond)
	a.merge(&b)
	if a.n != 3 || a.quantile(0.5) < 2900*time.Microsecond {
		t.Fatalf("merged n=%d p50=%s, want 3 samples with p50 about 3ms", a.n, a.quantile(0.5))
	}
}

func TestParseServerInfo(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_get:calls=2,usec=30,usec_per_call=15.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=1,usec=142,usec_per_call=142.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=4,usec=8,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n" +
		"\r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n"
	s, err := parseServerInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.cmds["get"]; got != (cmdStat{calls: 2, usec: 30}) {
		t.Errorf("get = %+v", got)
	}
	if got := s.cmds["evalsha"]; got != (cmdStat{calls: 1, usec: 142}) {
		t.Errorf("evalsha = %+v", got)
	}
	if got := s.cmds["client|setinfo"]; got.calls != 4 {
		t.Errorf("client|setinfo = %+v", got)
	}
	if math.Abs(s.cpu-3.75) > 1e-9 {
		t.Errorf("cpu = %v, want 3.75 (user + sys, not children)", s.cpu)
	}
	if _, err := parseServerInfo("# Commandstats\r\n"); err == nil {
		t.Error("an INFO reply without a cpu section parsed without error")
	}
}

// A script's inner commands are in commandstats but not sent by the client;
// their time is inside the script's, so the phase's server time counts the
// script and only the client's own share of the rest.
func TestServerUsecCountsInnerCommandsOnce(t *testing.T) {
	p := &phaseResult{ops: 10, cmds: []cmdLine{
		newCmdLine("evalsha", 10, 100, 10), // 10 hits, one script call each
		newCmdLine("get", 20, 30, 0),       // two GETs inside each script
		newCmdLine("mget", 10, 20, 5),      // half from another client of a shared server
	}}
	if got := p.perOp(p.serverUsec()); got != 11 {
		t.Fatalf("server µs per op = %v, want 11 (100 + 0 + 10 over 10 ops)", got)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"-db":                         "-db",
		"127.0.0.1:6379":              "127.0.0.1:6379",
		"host=x port=1":               "'host=x port=1'",
		"it's":                        `'it'\''s'`,
		"":                            "''",
		"root@tcp(h:1)/t?parseTime=1": "'root@tcp(h:1)/t?parseTime=1'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 1234567.6: "1,234,568"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %s, want %s", in, got, want)
		}
	}
}
