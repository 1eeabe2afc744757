package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Zero(t, median(nil))
	require.Equal(t, 3.0, median([]float64{3}))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	in := []float64{3, 1, 2}
	median(in)
	require.Equal(t, []float64{3, 1, 2}, in, "median must not sort its argument")
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	require.Zero(t, percentile(nil, 50))
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(d, 50))
	require.Equal(t, 99*time.Millisecond, percentile(d, 99))
	require.Equal(t, 100*time.Millisecond, percentile(d, 100))
	require.Equal(t, time.Millisecond, percentile(d, 0.001))
	one := []time.Duration{7}
	require.Equal(t, time.Duration(7), percentile(one, 50))
	require.Equal(t, time.Duration(7), percentile(one, 99))
	// Nearest rank: the 99th percentile of 10 samples is the largest.
	require.Equal(t, 10*time.Millisecond, percentile(d[:10], 99))
}

func TestPerRunRatio(t *testing.T) {
	t.Parallel()
	_, ok := perRunRatio(nil, nil)
	require.False(t, ok)
	// Runs are matched by index; runs missing on either side, and zero
	// denominators, are left out.
	v, ok := perRunRatio(map[int]float64{0: 10, 1: 30, 2: 50, 3: 7}, map[int]float64{0: 5, 1: 10, 2: 0, 4: 1})
	require.True(t, ok)
	require.Equal(t, 2.5, v) // median of 2 and 3
}

func TestBenchSamples(t *testing.T) {
	t.Parallel()
	s := newBenchSamples()
	a := benchKey{"PostgreSQL", "kafka", "drain", "1 relays", 100}
	b := benchKey{"PostgreSQL", "kafka", "forwarder", "", 100}
	for run, v := range []float64{100, 300, 200} {
		s.add(a, run, v)
	}
	s.add(b, 0, 10)
	s.add(b, 2, 40)
	m, ok := s.median(a)
	require.True(t, ok)
	require.Equal(t, 200.0, m)
	r, ok := s.ratio(a, b)
	require.True(t, ok)
	require.Equal(t, 7.5, r) // runs 0 and 2: 10 and 5
	_, ok = s.median(benchKey{db: "MariaDB"})
	require.False(t, ok)
	require.Equal(t, []benchKey{a, b}, s.order)
}

func TestParseLists(t *testing.T) {
	t.Parallel()
	n, err := parseInts("backlogs", "10000, 100000,10000", 1, 1_000_000)
	require.NoError(t, err)
	require.Equal(t, []int{10000, 100000}, n)
	_, err = parseInts("backlogs", "10000,2000000", 1, 1_000_000)
	require.ErrorContains(t, err, "-backlogs")
	w, err := parseWords("modes", "all", benchModes)
	require.NoError(t, err)
	require.Equal(t, benchModes, w)
	w, err = parseWords("modes", "wake,poll", benchModes)
	require.NoError(t, err)
	require.Equal(t, []string{"wake", "poll"}, w)
	_, err = parseWords("modes", "listen", benchModes)
	require.ErrorContains(t, err, `"listen"`)
}

func TestParseBenchFlags_Quick(t *testing.T) {
	t.Parallel()
	c, err := parseBenchFlags([]string{"-quick", "-runs", "2"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2, c.runs, "an explicit flag wins over -quick")
	require.Equal(t, []int{1000, 5000}, c.backlogs)
	require.Equal(t, time.Second, c.latencyFor)
	c, err = parseBenchFlags(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []int{10_000, 100_000, 1_000_000}, c.backlogs)
	require.Equal(t, []int{1, 2, 4}, c.relays)
	require.Equal(t, benchSections, c.sections)
}

func TestParseBenchFlags_BatchAndConcurrency(t *testing.T) {
	t.Parallel()
	c, err := parseBenchFlags([]string{"-batch", "2000", "-concurrency", "1,4"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2000, c.batch)
	require.Equal(t, []drainCase{{1, 1}, {2, 1}, {4, 1}, {1, 4}, {2, 4}, {4, 4}}, c.cases())
	require.Equal(t, "1 relay, Concurrency 4", drainCase{1, 4}.String())
	require.Equal(t, "2 relays", drainCase{2, 2}.String())

	for _, args := range [][]string{{"-batch", "0"}, {"-batch", "100001"}, {"-concurrency", "0"}, {"-concurrency", "65"}, {"-concurrency", "two"}} {
		_, err := parseBenchFlags(args, io.Discard)
		require.ErrorContains(t, err, strings.TrimPrefix(args[0], "-"), "%v", args)
	}
}
