package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchKey names one measured quantity: a metric of a database and broker
// ("-" when none is involved), with a variant (relays, mode, writer kind)
// and a size (backlog, rate, writers). Each run adds one sample.
type benchKey struct {
	db, broker, metric, variant string
	n                           int
}

// benchSamples holds the samples of every quantity, by run, so that ratios
// can be taken within a run.
type benchSamples struct {
	mu     sync.Mutex
	order  []benchKey
	values map[benchKey]map[int]float64
	notes  map[benchKey]string // why a quantity was not measured, or how it was
	failed []string            // measurements that failed
}

func newBenchSamples() *benchSamples {
	return &benchSamples{values: map[benchKey]map[int]float64{}, notes: map[benchKey]string{}}
}

func (s *benchSamples) add(k benchKey, run int, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.values[k]; !ok {
		s.order = append(s.order, k)
		s.values[k] = map[int]float64{}
	}
	s.values[k][run] = v
}

func (s *benchSamples) note(k benchKey, note string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes[k] = note
}

func (s *benchSamples) fail(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, what)
}

// median returns the median of the samples of k, and whether there are any.
func (s *benchSamples) median(k benchKey) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byRun := s.values[k]
	if len(byRun) == 0 {
		return 0, false
	}
	v := make([]float64, 0, len(byRun))
	for _, x := range byRun {
		v = append(v, x)
	}
	return median(v), true
}

// ratio returns the median over runs of num/den, taking only runs that have
// both samples, and whether there was any such run.
func (s *benchSamples) ratio(num, den benchKey) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return perRunRatio(s.values[num], s.values[den])
}

// perRunRatio returns the median of a[run]/b[run] over the runs present in
// both with b[run] > 0, and whether there was any.
func perRunRatio(a, b map[int]float64) (float64, bool) {
	var r []float64
	for run, x := range a {
		if y, ok := b[run]; ok && y > 0 {
			r = append(r, x/y)
		}
	}
	if len(r) == 0 {
		return 0, false
	}
	return median(r), true
}

// median returns the median of v (the mean of the middle two when len(v) is
// even), 0 for none. v is not modified.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted, which must be in ascending order; 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// parseInts parses a comma-separated list of integers, each in [lo, hi];
// flag names the flag in the error.
func parseInts(flag, list string, lo, hi int) ([]int, error) {
	var out []int
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("bench: -%s: %q is not a number between %d and %d", flag, s, lo, hi)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// parseWords parses a comma-separated list of words, each one of allowed;
// flag names the flag in the error. "all" stands for every allowed word.
func parseWords(flag, list string, allowed []string) ([]string, error) {
	if strings.TrimSpace(list) == "all" {
		return slices.Clone(allowed), nil
	}
	var out []string
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allowed, s) {
			return nil, fmt.Errorf("bench: -%s: %q is not one of %s (or all)", flag, s, strings.Join(allowed, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// verdict renders whether a target is met.
func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

// ms renders a duration in milliseconds with one decimal.
func ms(d float64) string { return strconv.FormatFloat(d, 'f', 1, 64) }
