package omnibox

import (
	"context"
	"fmt"
	"time"
)

// givenUpGrace is how long past its deadline the relay waits for a call
// before it gives the call up. Drivers and publishers that honour the
// context return within it; one that does not (lib/pq on a link that stopped
// answering) is left to finish on its own.
const givenUpGrace = 500 * time.Millisecond

// within runs fn with ctx and returns what it returns, unless fn is still
// running givenUpGrace after ctx's deadline (or end): then it returns an
// error wrapping [context.DeadlineExceeded] and leaves fn running in its
// goroutine, which ends when the call finally returns. what names the call in
// the error.
//
// Giving a call up is safe for the relay: a claim given up is taken over by
// the lane's next claim (the owner prefix is the lane's), an outcome given
// up is written again or left to the lease, and a publish given up releases
// its events, whose late arrival at the broker can only be a duplicate
// (see publish and docs/guarantees.md).
func within[T any](r *Relay, ctx context.Context, what string, fn func(context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case res := <-done:
		return res.v, res.err
	case <-ctx.Done():
	}
	t := time.NewTimer(givenUpGrace)
	defer t.Stop()
	select {
	case res := <-done:
		return res.v, res.err
	case <-t.C:
		r.stats.givenUp.Add(1)
		var zero T
		return zero, fmt.Errorf("omnibox: %s given up: no answer %s after its deadline (%w)", what, givenUpGrace, context.DeadlineExceeded)
	}
}
