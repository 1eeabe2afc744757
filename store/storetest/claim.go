package storetest

import (
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// claimCases checks what a claim sees and takes: events visible only once
// committed, the claim order within a partition and a key, partition leases
// and their expiry, and the partitions the live relays share.
func (s *suite) claimCases(t *testing.T) {
	// Visibility.

	t.Run("EventVisibleOnlyAfterCommit", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		ev := newEvent("visible", "")
		require.NoError(t, b.outbox.WriteTx(ctx, tx, ev))

		if !s.f.NoClaimWhileWriting {
			require.Empty(t, claim(t, b.db, b.store, params("a/1", 10)), "an uncommitted event was claimed")
		}
		requirePending(t, b.db, b.store, 0)
		n, err := b.store.Pending(ctx, tx)
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "the writing transaction sees its own event")

		require.NoError(t, tx.Commit())
		requireIDs(t, ids(ev), claim(t, b.db, b.store, params("a/2", 10)))
	})

	t.Run("RolledBackEventNeverClaimed", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		rolledBack := newEvent("rolled-back", "")
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, b.outbox.WriteTx(ctx, tx, rolledBack))
		require.NoError(t, tx.Rollback())

		committed := newEvent("committed", "")
		write(t, b.db, b.outbox, committed)

		requirePending(t, b.db, b.store, 1)
		requireIDs(t, ids(committed), claim(t, b.db, b.store, params("a/1", 10)))
		require.Empty(t, claim(t, b.db, b.store, params("a/2", 10)))
	})

	// Claim order.

	t.Run("ClaimInInsertOrderWithinPartitionUpToLimit", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		// 12 events of one key, hence one partition: two transactions
		// through the outbox, and one calling Insert twice.
		events := newEvents("batch", "order", 12)
		write(t, b.db, b.outbox, events[0:4]...)
		write(t, b.db, b.outbox, events[4:8]...)
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events[8:10]}))
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events[10:12]}))
		})
		requirePending(t, b.db, b.store, 12)

		var last int64
		for i, want := range [][]omnibox.Event{events[0:5], events[5:10], events[10:12]} {
			owner := fmt.Sprintf("a/%d", i)
			got := claim(t, b.db, b.store, params(owner, 5))
			requireIDs(t, EventIDs(want), got)
			for _, ev := range got {
				require.Greater(t, ev.Seq, last, "seqs must increase in claim order")
				last = ev.Seq
				require.Zero(t, ev.Attempts, "claiming is not an attempt")
			}
			deliver(t, b.db, b.store, owner, got)
		}
		require.Empty(t, claim(t, b.db, b.store, params("a/9", 5)))
		requirePending(t, b.db, b.store, 0)
	})

	t.Run("ClaimInInsertOrderPerPartitionAndKey", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		// Five transactions, each interleaving keys a, b, c, no key, and a
		// key that shares a's partition.
		twin := KeyInPartition("a-twin", omnibox.PartitionOf(&omnibox.Event{Key: "a"}))
		var written []omnibox.Event
		for i := range 5 {
			var events []omnibox.Event
			for _, key := range []string{"a", "b", "", twin, "c", "a"} {
				events = append(events, newEvent(fmt.Sprintf("tx%d", i), key))
			}
			write(t, b.db, b.outbox, events...)
			written = append(written, events...)
		}

		claimed := drain(t, b.db, b.store, "a", 4)
		claimedEvents := make([]omnibox.Event, len(claimed))
		for i, ev := range claimed {
			claimedEvents[i] = ev.Event
		}
		require.ElementsMatch(t, EventIDs(written), EventIDs(claimedEvents), "every event claimed exactly once")
		byPartition := func(events []omnibox.Event) map[int][]string {
			m := make(map[int][]string)
			for _, ev := range events {
				p := omnibox.PartitionOf(&ev)
				m[p] = append(m[p], ev.ID)
			}
			return m
		}
		byKey := func(events []omnibox.Event) map[string][]string {
			m := make(map[string][]string)
			for _, ev := range events {
				if ev.Key != "" { // keyless events are ordered within their partition only
					m[ev.Key] = append(m[ev.Key], ev.ID)
				}
			}
			return m
		}
		require.Equal(t, byPartition(written), byPartition(claimedEvents), "claim order within each partition")
		require.Equal(t, byKey(written), byKey(claimedEvents), "claim order of each key")
		requirePending(t, b.db, b.store, 0)
	})

	// Partition leases.

	t.Run("PartitionLeaseBlocksOtherOwners", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		// k1 and k2 share a partition; k3 and the keyless x have their own.
		k1, k2, k3 := KeyInPartition("k1", 7), KeyInPartition("k2", 7), KeyInPartition("k3", 23)
		a1, c1, a2, x, a3 := newEvent("lease", k1), newEvent("lease", k3), newEvent("lease", k2), keylessIn("lease", 51), newEvent("lease", k1)
		write(t, b.db, b.outbox, a1, c1, a2, x, a3)

		relayA := func(owner string, limit int) omnibox.ClaimParams {
			return omnibox.ClaimParams{BlockOnDead: true, Lease: longLease, Limit: limit, Owner: owner, OwnerPrefix: "relay-a/", Relay: "relay-a"}
		}
		first := claim(t, b.db, b.store, relayA("relay-a/1", 1))
		requireIDs(t, ids(a1), first)

		// Another relay gets the other partitions, and nothing of the leased
		// one: neither k1's later event nor k2's.
		other := claim(t, b.db, b.store, params("relay-b/1", 10))
		requireIDs(t, ids(c1, x), other)
		require.Empty(t, claim(t, b.db, b.store, params("relay-b/2", 10)), "every partition with events is leased")

		// The same relay restarted (same prefix) takes its lease over, with
		// the whole partition; not relay-b's.
		second := claim(t, b.db, b.store, relayA("relay-a/2", 10))
		requireIDs(t, ids(a1, a2, a3), second)
		require.Equal(t, []int{0, 0, 0}, attempts(second))

		// The old owner lost its lease: its Complete changes nothing, and
		// frees no partition.
		res := complete(t, b.db, b.store, omnibox.CompleteParams{
			Dead:         []omnibox.FailedEvent{{Error: "late dead", Seq: second[2].Seq}},
			Delivered:    seqs(first),
			Owner:        "relay-a/1",
			Released:     []int64{other[0].Seq},
			ReleaseError: "late release",
			Retry:        []omnibox.FailedEvent{{Delay: time.Hour, Error: "late retry", Seq: second[1].Seq}},
		})
		require.Zero(t, res.Delivered, "a lost lease delivered events")
		requirePending(t, b.db, b.store, 5)
		for _, ev := range slices.Concat(second, other) {
			require.Empty(t, s.h.LastError(t, b.db, "", ev.Seq), "a lost lease recorded an error on %s", ev.ID)
		}
		dead, err := b.store.ListDead(t.Context(), b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		require.Empty(t, dead, "a lost lease marked an event dead")
		require.Empty(t, claim(t, b.db, b.store, params("relay-b/3", 10)), "a lost lease's Complete freed a partition")

		deliver(t, b.db, b.store, "relay-a/2", second)
		deliver(t, b.db, b.store, "relay-b/1", other)
		requirePending(t, b.db, b.store, 0)
	})

	t.Run("ExpiredLeaseClaimedAgain", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		events := newEvents("expired", KeyInPartition("expired", 5), 2)
		write(t, b.db, b.outbox, events...)
		first := claim(t, b.db, b.store, omnibox.ClaimParams{BlockOnDead: true, Lease: 50 * time.Millisecond, Limit: 10, Owner: "relay-a/1", Relay: "relay-a"})
		requireIDs(t, ids(events...), first)

		// Once the short lease has expired on the database's clock, another
		// relay takes the partition over; here with the first event only.
		again, owner := pollClaim(t, b.db, b.store, func(i int) omnibox.ClaimParams {
			return params(fmt.Sprintf("relay-b/%d", i), 1)
		})
		requireIDs(t, ids(events[0]), again)
		require.Zero(t, again[0].Attempts, "an expired lease is not a failed attempt")

		// The expired owner affects neither the event taken over nor the
		// one it claimed last, in a partition now leased to another.
		res := complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: seqs(first), Owner: "relay-a/1"})
		require.Zero(t, res.Delivered, "the expired owner delivered events of a partition leased again")
		requirePending(t, b.db, b.store, 2)
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "relay-a/1", Retry: []omnibox.FailedEvent{{Delay: time.Hour, Error: "late", Seq: first[1].Seq}}})
		require.Empty(t, s.h.LastError(t, b.db, "", first[1].Seq))

		deliver(t, b.db, b.store, owner, again)
		rest := drain(t, b.db, b.store, "relay-b", 10)
		requireIDs(t, ids(events[1]), rest)
		require.Zero(t, rest[0].Attempts)
		requirePending(t, b.db, b.store, 0)
	})

	// Sharing partitions among live relays.

	t.Run("LiveRelaysSharePartitions", func(t *testing.T) {
		t.Parallel()
		db := s.h.NewDB(t)
		ctx := t.Context()

		for _, relays := range []int{1, 2, 4} {
			store, err := s.h.NewStore(t, db, fmt.Sprintf("share_%d", relays))
			require.NoError(t, err)
			require.NoError(t, store.Migrate(ctx, db))
			events, headOrder := eventsInEveryPartition("share", 3)
			inTx(t, db, func(tx *sql.Tx) {
				require.NoError(t, store.Insert(ctx, tx, omnibox.InsertParams{Events: events}))
			})

			// The other relays claim once, and give their events back: they
			// stay live for their (long) lease.
			for r := 1; r < relays; r++ {
				owner := fmt.Sprintf("relay-%d/1", r)
				got := claim(t, db, store, params(owner, 1))
				require.Len(t, got, 1)
				complete(t, db, store, omnibox.CompleteParams{Owner: owner, Released: seqs(got)})
			}

			share := (omnibox.Partitions + relays - 1) / relays
			wantParts := headOrder[:share]
			var want []string
			for _, ev := range events {
				if slices.Contains(wantParts, omnibox.PartitionOf(&ev)) {
					want = append(want, ev.ID)
				}
			}
			got := claim(t, db, store, params("relay-0/1", 1000))
			require.ElementsMatch(t, wantParts, partitions(got),
				"with %d live relays a claim takes the %d partitions whose oldest event is oldest", relays, share)
			requireIDs(t, want, got)
		}
	})

	t.Run("ExpiredRelayStopsSharing", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)

		events, _ := eventsInEveryPartition("expired-relay", 2)
		Insert(t, b.db, b.store, events...)

		// relay-b is live for 50ms only.
		got := claim(t, b.db, b.store, omnibox.ClaimParams{BlockOnDead: true, Lease: 50 * time.Millisecond, Limit: 1, Owner: "relay-b/1", Relay: "relay-b"})
		require.Len(t, got, 1)
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "relay-b/1", Released: seqs(got)})

		// Until it expires on the database's clock, relay-a gets half the
		// partitions; then all of them.
		deadline := time.Now().Add(pollTimeout)
		for i := 0; ; i++ {
			owner := fmt.Sprintf("relay-a/%d", i)
			got := claim(t, b.db, b.store, params(owner, 1000))
			parts := len(partitions(got))
			complete(t, b.db, b.store, omnibox.CompleteParams{Owner: owner, Released: seqs(got)})
			if parts == omnibox.Partitions {
				break
			}
			require.Equal(t, omnibox.Partitions/2, parts, "claim %d: partitions taken with two live relays", i)
			require.True(t, time.Now().Before(deadline), "relay-b, live for 50ms, still counted after %s", pollTimeout)
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// eventsInEveryPartition returns perPartition rounds of events, each round
// one event in every partition (one key per partition), the partitions in a
// scrambled order that is the same each round; and that order, which is the
// order of the partitions' oldest events once written.
func eventsInEveryPartition(topic string, perPartition int) ([]omnibox.Event, []int) {
	order := make([]int, omnibox.Partitions)
	for i := range order {
		order[i] = (i * 29) % omnibox.Partitions // 29 is prime to 64: a permutation
	}
	keys := make([]string, omnibox.Partitions)
	for p := range keys {
		keys[p] = KeyInPartition(topic, p)
	}
	var events []omnibox.Event
	for range perPartition {
		for _, p := range order {
			events = append(events, newEvent(topic, keys[p]))
		}
	}
	return events, order
}
