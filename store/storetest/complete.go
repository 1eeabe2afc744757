package storetest

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// completeCases checks that Complete delivers only the events of its own
// claim, and that released events are claimable at once, with their error
// recorded.
func (s *suite) completeCases(t *testing.T) {
	t.Run("CompleteDeliversOnlyOwnClaims", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		events := newEvents("deliver", "deliver", 4)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 2))
		requireIDs(t, ids(events[:2]...), got)

		all := seqs(got)
		res := complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: all, Owner: "b/1"})
		require.Zero(t, res.Delivered, "another owner's events were delivered")
		requirePending(t, b.db, b.store, 4)

		// Unclaimed events (seqs past the claimed ones) are not delivered
		// either.
		withOthers := append(slices.Clone(all), all[1]+1, all[1]+2, all[1]+1000)
		res = complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: withOthers, Owner: "a/1"})
		require.Equal(t, 2, res.Delivered)
		requirePending(t, b.db, b.store, 2)

		res = complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: all, Owner: "a/1"})
		require.Zero(t, res.Delivered, "already delivered")
		res = complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "a/1"})
		require.Zero(t, res.Delivered)

		// Delivered events are gone: not claimed again, not kept.
		again := claim(t, b.db, b.store, params("b/2", 10))
		requireIDs(t, ids(events[2:]...), again)
		for _, seq := range all {
			require.False(t, s.h.BackdateDelivered(t, b.db, "", seq, 0), "a store without retention kept a delivered event")
		}
	})

	t.Run("ReleasedClaimableAtOnceWithError", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		keyed := newEvents("release", "release", 3)
		x := newEvent("release", "")
		write(t, b.db, b.outbox, append(keyed, x)...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(append(keyed, x)...), got)
		require.Equal(t, []int{0, 0, 0, 0}, attempts(got))

		// Another owner cannot release them.
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "b/1", Released: seqs(got), ReleaseError: "not mine"})
		require.Empty(t, s.h.LastError(t, b.db, "", got[0].Seq))
		require.Empty(t, claim(t, b.db, b.store, params("b/2", 10)), "still leased")

		// x fails (with no delay), the others are given back with an error.
		const reason = `kafka: broker down — "ключ" 值 🚀`
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Owner:        "a/1",
			Released:     seqs(got[:3]),
			ReleaseError: reason,
			Retry:        []omnibox.FailedEvent{{Error: "x failed", Seq: got[3].Seq}},
		})
		for _, ev := range got[:3] {
			require.Equal(t, reason, s.h.LastError(t, b.db, "", ev.Seq))
		}
		require.Equal(t, "x failed", s.h.LastError(t, b.db, "", got[3].Seq))

		// Claimable at once by anyone; releasing counts no attempt.
		again := claim(t, b.db, b.store, params("b/3", 10))
		requireIDs(t, ids(append(keyed, x)...), again)
		require.Equal(t, []int{0, 0, 0, 1}, attempts(again))

		// Released without an error, the last one recorded stays.
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "b/3", Released: seqs(again)})
		require.Equal(t, reason, s.h.LastError(t, b.db, "", got[0].Seq))
		require.Equal(t, "x failed", s.h.LastError(t, b.db, "", got[3].Seq))
		again = claim(t, b.db, b.store, params("a/2", 10))
		requireIDs(t, ids(append(keyed, x)...), again)
		require.Equal(t, []int{0, 0, 0, 1}, attempts(again))
	})
}
