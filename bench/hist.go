package main

import (
	"math/bits"
	"time"
)

// histogram records latencies in log-linear buckets (64 per power of two,
// under 1.6% error), so workers record without allocating and merge cheaply.
type histogram struct {
	counts [64 + 58*64]uint64
	n      uint64
}

func bucketOf(ns uint64) int {
	if ns < 64 {
		return int(ns)
	}
	shift := bits.Len64(ns) - 7
	return 64 + shift*64 + int(ns>>shift) - 64
}

// bucketValue is the middle of bucket i, in nanoseconds.
func bucketValue(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	shift := (i - 64) / 64
	m := uint64((i-64)%64 + 64)
	return m<<shift + (uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1), or 0 with no samples.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return time.Duration(bucketValue(i))
		}
	}
	return time.Duration(bucketValue(len(h.counts) - 1))
}
