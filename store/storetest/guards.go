package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// guardCases checks the deadlines of a claim: one waiting for another
// transaction gives up by its deadline, and, unless
// [Features].NoServerSideGuards, the server ends a claim whose relay stopped
// answering.
func (s *suite) guardCases(t *testing.T) {
	t.Run("ClaimGivesUpByItsDeadline", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		events := newEvents("waiting", KeyInPartition("waiting", 9), 2)
		write(t, b.db, b.outbox, events...)
		held, _ := beginHeld(t, b.db, b.store, t.Context(), params("holder/1", 10))
		requireIDs(t, ids(events...), held)

		// While another claim's transaction is open, a claim with a
		// deadline returns by then (empty-handed, or with an error): it does
		// not wait for that transaction.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		got, err := tryClaim(ctx, b.db, b.store, params("waiter/1", 10))
		require.Less(t, time.Since(start), time.Second+deadlineSlack, "a claim with a 1s deadline returned after %s", time.Since(start))
		if err == nil {
			require.Empty(t, got, "a claim took events leased to an open claim")
		}
	})

	t.Run("FrozenClaimEndedByTheServer", func(t *testing.T) {
		if s.f.NoServerSideGuards {
			t.Skip("the database has no server to end a transaction (Features.NoServerSideGuards)")
		}
		t.Parallel()
		b := s.setup(t)

		events := newEvents("frozen", KeyInPartition("frozen", 7), 3)
		write(t, b.db, b.outbox, events...)

		// A relay claims with a 1.5s deadline, then stops answering: its
		// transaction is neither committed nor rolled back.
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		held, frozen := beginHeld(t, b.db, b.store, ctx, params("frozen-a/1", 10))
		requireIDs(t, ids(events...), held)

		// Another relay claims, each call with a 1s deadline, until it gets
		// the events: the server ends the frozen session soon after its
		// deadline, which undoes its lease and releases its locks. No call
		// waits past its deadline meanwhile.
		start := time.Now()
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			callStart := time.Now()
			got, err := tryClaim(ctx, b.db, b.store, params(fmt.Sprintf("frozen-b/%d", i), 10))
			cancel()
			require.Less(t, time.Since(callStart), time.Second+deadlineSlack, "claim %d, with a 1s deadline, returned after %s", i, time.Since(callStart))
			if err == nil && len(got) > 0 {
				requireIDs(t, ids(events...), got)
				break
			}
			require.Less(t, time.Since(start), frozenTimeout,
				"the frozen claim still holds its events %s after it was made (last claim: %d events, error %v)", time.Since(start), len(got), err)
			time.Sleep(50 * time.Millisecond)
		}
		require.Error(t, frozen.Commit(), "the server did not end the frozen claim's session")
	})
}
