package omniboxtest_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// recorder is a testing.TB that records a failure or a skip instead of
// ending the test, and ends the calling goroutine as the real ones do.
type recorder struct {
	testing.TB
	mu              sync.Mutex
	failed, skipped bool
	msg             string
	cleanups        []func()
}

// runRecorded runs fn with a recorder wrapping t, in a goroutine of its
// own, then runs the cleanups fn registered, last first, and returns the
// record.
func runRecorded(t *testing.T, fn func(testing.TB)) *recorder {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return r
}

func (r *recorder) Helper() {}

func (r *recorder) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.msg += fmt.Sprintf(format, args...)
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.Errorf("%s", fmt.Sprint(args...))
	runtime.Goexit()
}

func (r *recorder) Skip(...any)          { r.skip() }
func (r *recorder) Skipf(string, ...any) { r.skip() }
func (r *recorder) SkipNow()             { r.skip() }

func (r *recorder) skip() {
	r.mu.Lock()
	r.skipped = true
	r.mu.Unlock()
	runtime.Goexit()
}
