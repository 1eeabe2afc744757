package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// retryCases checks that a retried event waits for its delay, blocking only
// its key, and is claimed first once it is due.
func (s *suite) retryCases(t *testing.T) {
	t.Run("RetryWaitsAndBlocksOnlyItsKey", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		// k and l share a partition, m has its own.
		k, l, m := KeyInPartition("wait", 13), KeyInPartition("other", 13), KeyInPartition("far", 40)
		k1, l1, k2, m1, k3, l2 := newEvent("retry", k), newEvent("retry", l), newEvent("retry", k), newEvent("retry", m), newEvent("retry", k), newEvent("retry", l)
		write(t, b.db, b.outbox, k1, l1, k2, m1, k3, l2)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(k1, l1, k2, m1, k3, l2), got)

		// k1 fails: it waits an hour, and the relay gives back the later
		// events of its key.
		res := complete(t, b.db, b.store, omnibox.CompleteParams{
			Delivered: []int64{got[1].Seq, got[3].Seq},
			Owner:     "a/1",
			Released:  []int64{got[2].Seq, got[4].Seq, got[5].Seq},
			Retry:     []omnibox.FailedEvent{{Delay: time.Hour, Error: "boom", Seq: got[0].Seq}},
		})
		require.Equal(t, 2, res.Delivered)
		require.Equal(t, "boom", s.h.LastError(t, b.db, "", got[0].Seq))
		requirePending(t, b.db, b.store, 4) // a waiting event is pending

		// Neither k1 nor the later events of k are claimed; l's are.
		again := claim(t, b.db, b.store, params("b/1", 10))
		requireIDs(t, ids(l2), again)
		deliver(t, b.db, b.store, "b/1", again)
		require.Empty(t, claim(t, b.db, b.store, params("b/2", 10)))

		// New events of k stay behind k1; the other keys' flow.
		k4, l3, m2 := newEvent("retry", k), newEvent("retry", l), newEvent("retry", m)
		write(t, b.db, b.outbox, k4, l3, m2)
		requireIDs(t, ids(l3, m2), drain(t, b.db, b.store, "c", 10))
		requirePending(t, b.db, b.store, 4)
	})

	t.Run("RetryClaimedFirstAfterDelay", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		events := newEvents("retry-after", "retry-after", 3)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(events...), got)
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Owner:    "a/1",
			Released: seqs(got[1:]),
			Retry:    []omnibox.FailedEvent{{Delay: 300 * time.Millisecond, Error: "try again", Seq: got[0].Seq}},
		})

		// Once its delay has passed on the database's clock, the failed
		// event is claimed first, with its failed attempt counted; the later
		// events of its key come after it.
		first, owner := pollClaim(t, b.db, b.store, func(i int) omnibox.ClaimParams {
			return params(fmt.Sprintf("b/%d", i), 10)
		})
		require.Equal(t, events[0].ID, first[0].ID, "the retried event must be claimed first")
		require.Equal(t, 1, first[0].Attempts)
		deliver(t, b.db, b.store, owner, first)
		all := append(first, drain(t, b.db, b.store, "b", 10)...)
		requireIDs(t, ids(events...), all)
		require.Equal(t, []int{1, 0, 0}, attempts(all))
		requirePending(t, b.db, b.store, 0)
	})
}
