package storetest_test

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The tests wait on the database far more than they compute: unless
	// -test.parallel says otherwise, run more of them at once than the
	// default (GOMAXPROCS, often 2 on CI runners).
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	goleak.VerifyTestMain(m)
}
