package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// retentionCases checks that delivered events kept for the retention period
// are out of the claims' way, and what Purge deletes, with and without a
// retention period.
func (s *suite) retentionCases(t *testing.T) {
	t.Run("RetentionKeepsDeliveredOutOfTheWay", func(t *testing.T) {
		t.Parallel()
		b := s.setupRetention(t)
		ctx := t.Context()

		events := newEvents("kept", "kept", 3)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(events...), got)
		res := complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: seqs(got[:1]), Owner: "b/1"})
		require.Zero(t, res.Delivered, "another owner's event was delivered")
		res = complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: seqs(got[:1]), Owner: "a/1", Released: seqs(got[1:])})
		require.Equal(t, 1, res.Delivered)
		requirePending(t, b.db, b.store, 2)

		// A delivered event kept is neither claimed again nor in the way of
		// its key, nor dead, nor pending.
		requireIDs(t, ids(events[1:]...), drain(t, b.db, b.store, "a", 10))
		requirePending(t, b.db, b.store, 0)
		require.Empty(t, claim(t, b.db, b.store, params("a/9", 10)))
		res = complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: seqs(got), Owner: "a/1"})
		require.Zero(t, res.Delivered, "delivered twice")
		dead, err := b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		require.Empty(t, dead)
		n, err := b.store.Requeue(ctx, b.db, seqs(got))
		require.NoError(t, err)
		require.Zero(t, n, "a delivered event was requeued")
		n, err = b.store.Discard(ctx, b.db, seqs(got))
		require.NoError(t, err)
		require.Zero(t, n, "a delivered event was discarded")

		// Kept, and not purged before the retention period.
		n, err = b.store.Purge(ctx, b.db, 100)
		require.NoError(t, err)
		require.Zero(t, n, "purged events delivered less than the retention period ago")
		for _, ev := range got {
			require.True(t, s.h.BackdateDelivered(t, b.db, "", ev.Seq, 0), "delivered event %s not kept", ev.ID)
		}
	})

	t.Run("PurgeDeletesOnlyExpiredOldestFirstInBatches", func(t *testing.T) {
		t.Parallel()
		b := s.setupRetention(t)
		ctx := t.Context()

		events := newEvents("purge", "", 6)
		write(t, b.db, b.outbox, events...)
		got := drain(t, b.db, b.store, "a", 10)
		require.ElementsMatch(t, ids(events...), claimedIDs(got))

		for _, limit := range []int{0, -1} {
			_, err := b.store.Purge(ctx, b.db, limit)
			require.Error(t, err, "limit %d", limit)
		}
		// Retention is an hour: three events are past it, one not.
		backdate := func(i int, age time.Duration) bool {
			t.Helper()
			return s.h.BackdateDelivered(t, b.db, "", got[i].Seq, age)
		}
		require.True(t, backdate(0, 3*time.Hour))
		require.True(t, backdate(1, 2*time.Hour))
		require.True(t, backdate(2, 4*time.Hour))
		require.True(t, backdate(3, 30*time.Minute))

		purge := func(limit int) int {
			t.Helper()
			n, err := b.store.Purge(ctx, b.db, limit)
			require.NoError(t, err)
			return n
		}
		require.Equal(t, 1, purge(1))
		require.False(t, backdate(2, 4*time.Hour), "Purge did not delete the oldest first")
		require.True(t, backdate(0, 3*time.Hour))
		require.Equal(t, 2, purge(5))
		require.Zero(t, purge(5))
		for i := 3; i < 6; i++ {
			require.True(t, backdate(i, 0), "an event delivered within the retention period was purged")
		}
		require.False(t, backdate(0, 0))
		require.False(t, backdate(1, 0))
	})

	t.Run("PurgeWithoutRetentionDeletesNothing", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		events := newEvents("no-retention", "", 2)
		write(t, b.db, b.outbox, events...)
		got := drain(t, b.db, b.store, "a", 10)
		for _, ev := range got {
			require.False(t, s.h.BackdateDelivered(t, b.db, "", ev.Seq, 0), "a store without retention kept a delivered event")
		}
		n, err := b.store.Purge(ctx, b.db, 10)
		require.NoError(t, err)
		require.Zero(t, n)
		_, err = b.store.Purge(ctx, b.db, 0)
		require.Error(t, err)
	})
}
