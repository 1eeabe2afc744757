package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// deadCases checks dead events: listed with their event, blocking their key
// with BlockOnDead and stepped over without it, requeued and discarded (and
// only they), listed page by page and by topic; and that keyless events
// block nothing.
func (s *suite) deadCases(t *testing.T) {
	t.Run("DeadEventListedWithItsEvent", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		ev := omnibox.Event{
			CreatedAt: time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.UTC),
			ID:        "dead/événement/🚀",
			Key:       "ключ-🔑",
			Metadata:  map[string]string{"ключ": "值 🚀", "empty": ""},
			Payload:   []byte{0, 1, 2, 0xff, '"', '\\'},
			Topic:     "topic.dead",
		}
		other := newEvent("alive", "")
		write(t, b.db, b.outbox, ev, other)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(ev, other), got)
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Delivered: seqs(got[1:]),
			Owner:     "a/1",
			Retry:     []omnibox.FailedEvent{{Error: "first", Seq: got[0].Seq}},
		})
		got = claim(t, b.db, b.store, params("a/2", 10))
		requireIDs(t, ids(ev), got)
		require.Equal(t, 1, got[0].Attempts)

		const reason = "fatal: message too large — ключ"
		complete(t, b.db, b.store, omnibox.CompleteParams{Dead: []omnibox.FailedEvent{{Error: reason, Seq: got[0].Seq}}, Owner: "a/2"})
		requirePending(t, b.db, b.store, 0) // dead events are not pending
		require.Empty(t, claim(t, b.db, b.store, params("a/3", 10)))

		dead, err := b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		require.Len(t, dead, 1)
		d := dead[0]
		require.Equal(t, got[0].Seq, d.Seq)
		require.Equal(t, 2, d.Attempts, "two failed attempts")
		require.Equal(t, reason, d.LastError)
		require.Equal(t, time.UTC, d.DiedAt.Location(), "DiedAt must come back in UTC")
		require.WithinDuration(t, time.Now(), d.DiedAt, time.Hour, "DiedAt is when the event died")
		require.Equal(t, ev.ID, d.ID)
		require.Equal(t, ev.Topic, d.Topic)
		require.Equal(t, ev.Key, d.Key)
		require.Equal(t, ev.Metadata, d.Metadata)
		require.Equal(t, ev.Payload, d.Payload)
		require.True(t, ev.CreatedAt.Equal(d.CreatedAt), "CreatedAt: want %s, got %s", ev.CreatedAt, d.CreatedAt)
		require.Equal(t, time.UTC, d.CreatedAt.Location())
	})

	t.Run("DeadEventBlocksItsKeyWithBlockOnDead", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		k, l := KeyInPartition("dead", 30), KeyInPartition("alive", 30)
		d1, l1, d2 := newEvent("dead", k), newEvent("dead", l), newEvent("dead", k)
		write(t, b.db, b.outbox, d1, l1, d2)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(d1, l1, d2), got)
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Dead:      []omnibox.FailedEvent{{Error: "fatal", Seq: got[0].Seq}},
			Delivered: []int64{got[1].Seq},
			Owner:     "a/1",
			Released:  []int64{got[2].Seq},
		})

		require.Empty(t, claim(t, b.db, b.store, params("a/2", 10)), "a dead event's key went on")
		l2, d3 := newEvent("dead", l), newEvent("dead", k)
		write(t, b.db, b.outbox, l2, d3)
		requireIDs(t, ids(l2), drain(t, b.db, b.store, "a", 10))
		requirePending(t, b.db, b.store, 2)

		// Requeued, the dead event goes first again, with no attempts.
		n, err := b.store.Requeue(ctx, b.db, []int64{got[0].Seq})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		requirePending(t, b.db, b.store, 3)
		all := drain(t, b.db, b.store, "b", 10)
		requireIDs(t, ids(d1, d2, d3), all)
		require.Equal(t, []int{0, 0, 0}, attempts(all))
		dead, err := b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		require.Empty(t, dead)
	})

	t.Run("DeadEventSteppedOverWithoutBlockOnDead", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		events := newEvents("dead", "stepped-over", 3)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Dead:     []omnibox.FailedEvent{{Error: "fatal", Seq: got[0].Seq}},
			Owner:    "a/1",
			Released: seqs(got[1:]),
		})

		p := params("a/2", 10)
		p.BlockOnDead = false
		again := claim(t, b.db, b.store, p)
		requireIDs(t, ids(events[1:]...), again)
		deliver(t, b.db, b.store, "a/2", again)

		dead, err := b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, events[0].ID, dead[0].ID)
	})

	t.Run("DiscardLetsItsKeyFlow", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		events := newEvents("discard", "discard", 2)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Dead:     []omnibox.FailedEvent{{Error: "fatal", Seq: got[0].Seq}},
			Owner:    "a/1",
			Released: seqs(got[1:]),
		})
		require.Empty(t, claim(t, b.db, b.store, params("a/2", 10)))

		// The pending event and an unknown seq are not discarded.
		n, err := b.store.Discard(ctx, b.db, []int64{got[0].Seq, got[1].Seq, got[1].Seq + 1000})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		dead, err := b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		require.Empty(t, dead)
		requirePending(t, b.db, b.store, 1)
		requireIDs(t, ids(events[1]), drain(t, b.db, b.store, "a", 10))
	})

	t.Run("RequeueAndDiscardTouchOnlyDeadEvents", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		// Four keys in four partitions.
		dead, waiting := newEvent("only-dead", KeyInPartition("d", 1)), newEvent("only-dead", KeyInPartition("w", 2))
		leased, pending := newEvent("only-dead", KeyInPartition("c", 3)), newEvent("only-dead", KeyInPartition("p", 4))
		write(t, b.db, b.outbox, dead, waiting)
		got := claim(t, b.db, b.store, params("a/1", 10))
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Dead:  []omnibox.FailedEvent{{Error: "fatal", Seq: got[0].Seq}},
			Owner: "a/1",
			Retry: []omnibox.FailedEvent{{Delay: time.Hour, Error: "later", Seq: got[1].Seq}},
		})
		deadSeq, waitingSeq := got[0].Seq, got[1].Seq
		write(t, b.db, b.outbox, leased)
		got = claim(t, b.db, b.store, params("a/2", 10))
		requireIDs(t, ids(leased), got)
		leasedSeq := got[0].Seq
		write(t, b.db, b.outbox, pending)

		others := []int64{waitingSeq, leasedSeq, leasedSeq + 1, leasedSeq + 1000}
		for _, list := range [][]int64{nil, {}, others} {
			n, err := b.store.Requeue(ctx, b.db, list)
			require.NoError(t, err)
			require.Zero(t, n, "requeued %v", list)
			n, err = b.store.Discard(ctx, b.db, list)
			require.NoError(t, err)
			require.Zero(t, n, "discarded %v", list)
		}
		requirePending(t, b.db, b.store, 3)
		require.Equal(t, "later", s.h.LastError(t, b.db, "", waitingSeq))
		requireIDs(t, ids(pending), claim(t, b.db, b.store, params("b/1", 10)))

		n, err := b.store.Requeue(ctx, b.db, []int64{deadSeq, deadSeq})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		n, err = b.store.Requeue(ctx, b.db, []int64{deadSeq})
		require.NoError(t, err)
		require.Zero(t, n, "no longer dead")
		n, err = b.store.Discard(ctx, b.db, []int64{deadSeq})
		require.NoError(t, err)
		require.Zero(t, n, "no longer dead")
		requirePending(t, b.db, b.store, 4)
	})

	t.Run("ListDeadPagesAndFilters", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		var events []omnibox.Event
		for i := range 6 {
			events = append(events, newEvent([]string{"dead-a", "dead-b"}[i%2], ""))
		}
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		require.Len(t, got, 6)
		failed := make([]omnibox.FailedEvent, len(got))
		for i, ev := range got {
			failed[i] = omnibox.FailedEvent{Error: "fatal " + ev.ID, Seq: ev.Seq}
		}
		complete(t, b.db, b.store, omnibox.CompleteParams{Dead: failed, Owner: "a/1"})

		list := func(p omnibox.ListDeadParams) []string {
			t.Helper()
			dead, err := b.store.ListDead(ctx, b.db, p)
			require.NoError(t, err)
			out := make([]string, len(dead))
			for i, d := range dead {
				out[i] = d.ID
				require.Equal(t, "fatal "+d.ID, d.LastError)
				require.Equal(t, seqOf(t, got, d.ID), d.Seq)
			}
			return out
		}
		require.Equal(t, ids(events...), list(omnibox.ListDeadParams{}))
		require.Equal(t, ids(events[:4]...), list(omnibox.ListDeadParams{Limit: 4}))
		require.Equal(t, ids(events[4:]...), list(omnibox.ListDeadParams{AfterSeq: got[3].Seq, Limit: 4}))
		require.Empty(t, list(omnibox.ListDeadParams{AfterSeq: got[5].Seq}))
		require.Equal(t, ids(events[0], events[2], events[4]), list(omnibox.ListDeadParams{Topic: "dead-a"}))
		require.Equal(t, ids(events[3], events[5]), list(omnibox.ListDeadParams{AfterSeq: got[1].Seq, Topic: "dead-b"}))
		require.Equal(t, ids(events[1]), list(omnibox.ListDeadParams{Limit: 1, Topic: "dead-b"}))
		require.Empty(t, list(omnibox.ListDeadParams{Topic: "dead"}))
	})

	t.Run("KeylessEventsBlockNothing", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		// Keyless events in one partition, with a keyed one.
		const part = 44
		x1, x2, x3, k1 := keylessIn("keyless", part), keylessIn("keyless", part), keylessIn("keyless", part), newEvent("keyless", KeyInPartition("keyed", part))
		write(t, b.db, b.outbox, x1, x2, x3, k1)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(x1, x2, x3, k1), got)
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Dead:     []omnibox.FailedEvent{{Error: "fatal", Seq: got[1].Seq}},
			Owner:    "a/1",
			Released: seqs(got[2:]),
			Retry:    []omnibox.FailedEvent{{Delay: time.Hour, Error: "later", Seq: got[0].Seq}},
		})

		x4 := keylessIn("keyless", part)
		write(t, b.db, b.outbox, x4)
		requireIDs(t, ids(x3, k1, x4), drain(t, b.db, b.store, "a", 10))
	})
}
