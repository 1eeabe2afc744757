package storetest

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// Store is what the suite needs of a dialect's store: the contracts of the
// root package (writing, relaying, dead events, purging), plus migrating and
// counting.
type Store interface {
	omnibox.Inserter
	omnibox.RelayStore
	omnibox.DeadLetterStore
	omnibox.Purger
	// Migrate creates or upgrades the store's tables on db. It must be
	// idempotent and safe to run from several goroutines at once.
	Migrate(ctx context.Context, db *sql.DB) error
	// Pending returns the number of events not yet delivered: pending or
	// waiting for a retry, not dead, not delivered and kept.
	Pending(ctx context.Context, db omnibox.DBTX) (int64, error)
}

// Harness connects the suite to a dialect. Every field is required.
type Harness struct {
	// BackdateDelivered sets the delivery time of the delivered event at seq,
	// kept in the outbox table named table ("" = the store's default) of db
	// by a store with a retention period, to age before the database's
	// current time, and reports whether there was such an event (delivered
	// and not purged). It lets the suite test Purge without waiting for a
	// retention period, and see which events Purge deleted.
	BackdateDelivered func(t *testing.T, db *sql.DB, table string, seq int64, age time.Duration) bool
	// LastError returns the last error recorded for the event at seq in the
	// outbox table named table ("" = the store's default) of db, or "" when
	// none is recorded. It lets the suite check what Complete records for
	// released and retried events, which the store interfaces do not read
	// back. The event must exist.
	LastError func(t *testing.T, db *sql.DB, table string, seq int64) string
	// NewDB returns a fresh, empty, isolated database handle for one test
	// (a new schema or database) and cleans it up when the test ends. It is
	// called once per subtest. It must fail the test, never skip it, when the
	// database cannot be reached.
	NewDB func(t *testing.T) *sql.DB
	// NewStore returns a store on db for the outbox table named table ("" =
	// the store's default), without a retention period (delivered events are
	// deleted), not yet migrated, or the constructor's error (invalid names
	// must give one wrapping [omnibox.ErrInvalidIdentifier]).
	NewStore func(t *testing.T, db *sql.DB, table string) (Store, error)
	// NewStoreWithRetention is NewStore for a store that keeps delivered
	// events for retention (> 0) before its Purge deletes them.
	NewStoreWithRetention func(t *testing.T, db *sql.DB, table string, retention time.Duration) (Store, error)
}

// Features lists what a dialect honestly cannot do; the zero value claims
// everything, and runs the whole suite.
type Features struct {
	// InboxWaitersMayDeadlock lets [RunInbox] accept errors from the
	// deliveries that wait on a transaction that recorded the same message
	// and then rolls back, when there are several of them (InnoDB: each
	// waiter holds a shared lock on the key and needs an exclusive one to
	// insert, a deadlock it breaks by failing all but one with error 1213).
	// Exactly one waiter must still record the message.
	InboxWaitersMayDeadlock bool
	// NoClaimWhileWriting skips the claim made while another transaction
	// that wrote an event is still open, for a database that lets one
	// transaction write at a time (SQLite): there a claim waits for that
	// transaction to end, so the case would wait on itself. The uncommitted
	// event must still be invisible to other connections, which the case
	// checks by counting. [RunInbox] reads it as "transactions begin one at
	// a time" and checks concurrent deliveries one after another.
	NoClaimWhileWriting bool
	// NoConcurrentClaims skips the case in which several relays claim and
	// complete at once, for a database that cannot run concurrent writing
	// transactions (SQLite: one writer at a time). Claims must still be
	// correct one after another, which the other cases check.
	NoConcurrentClaims bool
	// NoServerSideGuards skips the case in which a relay stops answering in
	// the middle of its claim transaction, for a database without a server
	// that could end the transaction (SQLite, in the relay's own process:
	// a relay that stops answering has stopped its transaction too). A
	// claim waiting for another transaction must still give up by its
	// deadline, which another case checks.
	NoServerSideGuards bool
}

// Run runs the conformance suite as parallel subtests of t. See the package
// documentation for what it checks.
func Run(t *testing.T, h Harness, f Features) {
	t.Helper()
	require.NotNil(t, h.BackdateDelivered, "storetest: Harness.BackdateDelivered is required")
	require.NotNil(t, h.LastError, "storetest: Harness.LastError is required")
	require.NotNil(t, h.NewDB, "storetest: Harness.NewDB is required")
	require.NotNil(t, h.NewStore, "storetest: Harness.NewStore is required")
	require.NotNil(t, h.NewStoreWithRetention, "storetest: Harness.NewStoreWithRetention is required")

	type testBundle struct {
		db     *sql.DB
		outbox *omnibox.Outbox
		store  Store
	}

	// setup gives a test a fresh database and a migrated store on the
	// default table.
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		db := h.NewDB(t)
		store, err := h.NewStore(t, db, "")
		require.NoError(t, err)
		require.NoError(t, store.Migrate(t.Context(), db))
		outbox, err := omnibox.New(store, &omnibox.Config{})
		require.NoError(t, err)
		return &testBundle{db: db, outbox: outbox, store: store}
	}

	// setupRetention is setup for a store that keeps delivered events for
	// an hour.
	setupRetention := func(t *testing.T) *testBundle {
		t.Helper()
		db := h.NewDB(t)
		store, err := h.NewStoreWithRetention(t, db, "", time.Hour)
		require.NoError(t, err)
		require.NoError(t, store.Migrate(t.Context(), db))
		outbox, err := omnibox.New(store, &omnibox.Config{})
		require.NoError(t, err)
		return &testBundle{db: db, outbox: outbox, store: store}
	}

	// Visibility.

	t.Run("EventVisibleOnlyAfterCommit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		ev := newEvent("visible", "")
		require.NoError(t, b.outbox.WriteTx(ctx, tx, ev))

		if !f.NoClaimWhileWriting {
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
		b := setup(t)
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
		b := setup(t)
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
		b := setup(t)

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
		b := setup(t)

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
			require.Empty(t, h.LastError(t, b.db, "", ev.Seq), "a lost lease recorded an error on %s", ev.ID)
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
		b := setup(t)

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
		require.Empty(t, h.LastError(t, b.db, "", first[1].Seq))

		deliver(t, b.db, b.store, owner, again)
		rest := drain(t, b.db, b.store, "relay-b", 10)
		requireIDs(t, ids(events[1]), rest)
		require.Zero(t, rest[0].Attempts)
		requirePending(t, b.db, b.store, 0)
	})

	// Sharing partitions among live relays.

	t.Run("LiveRelaysSharePartitions", func(t *testing.T) {
		t.Parallel()
		db := h.NewDB(t)
		ctx := t.Context()

		for _, relays := range []int{1, 2, 4} {
			store, err := h.NewStore(t, db, fmt.Sprintf("share_%d", relays))
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
		b := setup(t)

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

	// One live process per relay ID.

	t.Run("RelayIDInUseByAnotherProcess", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

		require.Empty(t, claim(t, b.db, b.store, nonceParams("twin-relay/1", "nonce-1")))
		events := newEvents("twin", KeyInPartition("twin", 3), 2)
		write(t, b.db, b.outbox, events...)

		// A second process with the same relay ID and another nonce, while
		// the first is live: an error naming the relay ID. Its transaction
		// is committed all the same, to show that it claimed and recorded
		// nothing: the first process goes on undisturbed, and gets the
		// events.
		_, err := claimCommitted(t, b.db, b.store, nonceParams("twin-relay/2", "nonce-2"))
		require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
		require.ErrorContains(t, err, "twin-relay")
		requireIDs(t, ids(events...), claim(t, b.db, b.store, nonceParams("twin-relay/3", "nonce-1")))
	})

	t.Run("RelayIDRestartReplacesTheRecord", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

		require.Empty(t, claim(t, b.db, b.store, nonceParams("restart/1", "nonce-1")))
		events := newEvents("restart", KeyInPartition("restart", 4), 2)
		write(t, b.db, b.outbox, events...)

		// The first claim of a new run replaces the live record of its
		// predecessor, and claims.
		restart := nonceParams("restart/2", "nonce-2")
		restart.Restart = true
		requireIDs(t, ids(events...), claim(t, b.db, b.store, restart))
		require.Empty(t, claim(t, b.db, b.store, nonceParams("restart/3", "nonce-2")))

		// Had the predecessor been a live twin, its next claim fails.
		_, err := tryClaim(t.Context(), b.db, b.store, nonceParams("restart/4", "nonce-1"))
		require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
	})

	t.Run("RelayIDFreeOnceItsRecordExpired", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

		first := nonceParams("expiring/1", "nonce-1")
		first.Lease = 50 * time.Millisecond
		require.Empty(t, claim(t, b.db, b.store, first))

		// Until the record expires on the database's clock the ID is in
		// use; then another process takes it without Restart.
		deadline := time.Now().Add(pollTimeout)
		for i := 0; ; i++ {
			_, err := tryClaim(t.Context(), b.db, b.store, nonceParams(fmt.Sprintf("expiring/2-%d", i), "nonce-2"))
			if err == nil {
				break
			}
			require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
			require.True(t, time.Now().Before(deadline), "a relay ID recorded for 50ms still in use after %s", pollTimeout)
			time.Sleep(20 * time.Millisecond)
		}
		_, err := tryClaim(t.Context(), b.db, b.store, nonceParams("expiring/3", "nonce-1"))
		require.ErrorIs(t, err, omnibox.ErrRelayIDInUse, "the new process's record is live")
	})

	t.Run("RelayIDEmptyNonceSkipsTheCheck", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

		require.Empty(t, claim(t, b.db, b.store, nonceParams("empty/1", "nonce-1")))
		require.Empty(t, claim(t, b.db, b.store, nonceParams("empty/2", "")), "a claim without a nonce checked it")
		require.Empty(t, claim(t, b.db, b.store, nonceParams("empty/3", "nonce-1")), "a record without a nonce conflicted")
	})

	// Deadlines.

	t.Run("ClaimGivesUpByItsDeadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

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
		if f.NoServerSideGuards {
			t.Skip("the database has no server to end a transaction (Features.NoServerSideGuards)")
		}
		t.Parallel()
		b := setup(t)

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

	// Complete.

	t.Run("CompleteDeliversOnlyOwnClaims", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

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
			require.False(t, h.BackdateDelivered(t, b.db, "", seq, 0), "a store without retention kept a delivered event")
		}
	})

	t.Run("ReleasedClaimableAtOnceWithError", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

		keyed := newEvents("release", "release", 3)
		x := newEvent("release", "")
		write(t, b.db, b.outbox, append(keyed, x)...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, ids(append(keyed, x)...), got)
		require.Equal(t, []int{0, 0, 0, 0}, attempts(got))

		// Another owner cannot release them.
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "b/1", Released: seqs(got), ReleaseError: "not mine"})
		require.Empty(t, h.LastError(t, b.db, "", got[0].Seq))
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
			require.Equal(t, reason, h.LastError(t, b.db, "", ev.Seq))
		}
		require.Equal(t, "x failed", h.LastError(t, b.db, "", got[3].Seq))

		// Claimable at once by anyone; releasing counts no attempt.
		again := claim(t, b.db, b.store, params("b/3", 10))
		requireIDs(t, ids(append(keyed, x)...), again)
		require.Equal(t, []int{0, 0, 0, 1}, attempts(again))

		// Released without an error, the last one recorded stays.
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "b/3", Released: seqs(again)})
		require.Equal(t, reason, h.LastError(t, b.db, "", got[0].Seq))
		require.Equal(t, "x failed", h.LastError(t, b.db, "", got[3].Seq))
		again = claim(t, b.db, b.store, params("a/2", 10))
		requireIDs(t, ids(append(keyed, x)...), again)
		require.Equal(t, []int{0, 0, 0, 1}, attempts(again))
	})

	t.Run("RetryWaitsAndBlocksOnlyItsKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t)

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
		require.Equal(t, "boom", h.LastError(t, b.db, "", got[0].Seq))
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
		b := setup(t)

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

	// Dead events.

	t.Run("DeadEventListedWithItsEvent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
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
		b := setup(t)
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
		b := setup(t)
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
		b := setup(t)
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
		b := setup(t)
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
		require.Equal(t, "later", h.LastError(t, b.db, "", waitingSeq))
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
		b := setup(t)
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
		b := setup(t)

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

	// Retention.

	t.Run("RetentionKeepsDeliveredOutOfTheWay", func(t *testing.T) {
		t.Parallel()
		b := setupRetention(t)
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
			require.True(t, h.BackdateDelivered(t, b.db, "", ev.Seq, 0), "delivered event %s not kept", ev.ID)
		}
	})

	t.Run("PurgeDeletesOnlyExpiredOldestFirstInBatches", func(t *testing.T) {
		t.Parallel()
		b := setupRetention(t)
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
			return h.BackdateDelivered(t, b.db, "", got[i].Seq, age)
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
		b := setup(t)
		ctx := t.Context()

		events := newEvents("no-retention", "", 2)
		write(t, b.db, b.outbox, events...)
		got := drain(t, b.db, b.store, "a", 10)
		for _, ev := range got {
			require.False(t, h.BackdateDelivered(t, b.db, "", ev.Seq, 0), "a store without retention kept a delivered event")
		}
		n, err := b.store.Purge(ctx, b.db, 10)
		require.NoError(t, err)
		require.Zero(t, n)
		_, err = b.store.Purge(ctx, b.db, 0)
		require.Error(t, err)
	})

	// Concurrency.

	t.Run("ConcurrentRelaysNeverShareAnEventAndKeepKeyOrder", func(t *testing.T) {
		t.Parallel()
		if f.NoConcurrentClaims {
			t.Skip("storetest: Features.NoConcurrentClaims is set")
		}
		b := setup(t)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()

		// 16 keys and keyless events; about one event in eight fails once.
		const total, relays = 600, 8
		events := make([]omnibox.Event, total)
		for i := range events {
			key := fmt.Sprintf("key-%d", i%17)
			if i%17 == 16 {
				key = ""
			}
			events[i] = newEvent("concurrent", key)
		}
		Insert(t, b.db, b.store, events...)
		failsOnce := func(id string) bool {
			hash := fnv.New32a()
			_, _ = hash.Write([]byte(id))
			return hash.Sum32()%8 == 0
		}

		var (
			mu        sync.Mutex
			delivered = make(map[string]bool, total)
			inFlight  = make(map[string]string) // event ID -> owner
			byKey     = make(map[string][]string)
			errs      = make(chan error, relays)
			wg        sync.WaitGroup
		)
		done := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(delivered) == total
		}
		// relay claims, publishes (failing some events once, and giving
		// back the later events of a failed one's key, as the relay does)
		// and completes, until every event is delivered.
		relay := func(r int) error {
			for i := 0; !done(); i++ {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("relay %d: %w", r, err)
				}
				owner := fmt.Sprintf("r%d/%d", r, i)
				got, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{
					BlockOnDead: true, Lease: time.Minute, Limit: 50, Owner: owner, Relay: fmt.Sprintf("r%d", r),
				})
				if err != nil {
					return fmt.Errorf("relay %d: %w", r, err)
				}
				if len(got) == 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				var p omnibox.CompleteParams
				p.Owner = owner
				failedKeys := make(map[string]bool)
				mu.Lock()
				for _, ev := range got {
					if prev, ok := inFlight[ev.ID]; ok {
						mu.Unlock()
						return fmt.Errorf("event %s claimed by %s while %s held it", ev.ID, owner, prev)
					}
					if delivered[ev.ID] {
						mu.Unlock()
						return fmt.Errorf("event %s claimed by %s after it was delivered", ev.ID, owner)
					}
					inFlight[ev.ID] = owner
					switch {
					case ev.Key != "" && failedKeys[ev.Key]:
						p.Released = append(p.Released, ev.Seq)
					case ev.Attempts == 0 && failsOnce(ev.ID):
						p.Retry = append(p.Retry, omnibox.FailedEvent{Error: "flaky", Seq: ev.Seq})
						if ev.Key != "" {
							failedKeys[ev.Key] = true
						}
					default:
						p.Delivered = append(p.Delivered, ev.Seq)
						delivered[ev.ID] = true
						if ev.Key != "" {
							byKey[ev.Key] = append(byKey[ev.Key], ev.ID)
						}
					}
				}
				for _, ev := range got {
					delete(inFlight, ev.ID)
				}
				mu.Unlock()
				res, err := tryComplete(ctx, b.db, b.store, p)
				if err != nil {
					return fmt.Errorf("relay %d: %w", r, err)
				}
				if res.Delivered != len(p.Delivered) {
					return fmt.Errorf("relay %d: %d of %d delivered events counted", r, res.Delivered, len(p.Delivered))
				}
			}
			return nil
		}
		for r := range relays {
			wg.Go(func() {
				err := relay(r)
				if err != nil {
					cancel() // the others stop too, instead of waiting for the timeout
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Len(t, delivered, total)
		want := make(map[string][]string)
		for _, ev := range events {
			if ev.Key != "" {
				want[ev.Key] = append(want[ev.Key], ev.ID)
			}
		}
		require.Equal(t, want, byKey, "each key's events delivered in insert order")
		requirePending(t, b.db, b.store, 0)
	})

	// Round trips, writes, names and migrations.

	t.Run("RoundTripIsExact", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		payload := make([]byte, omnibox.DefaultMaxPayloadBytes)
		for i := range payload {
			payload[i] = byte(i * 7) // every byte value, 0x00 and 0xff included
		}
		big := omnibox.Event{
			CreatedAt: time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.FixedZone("IST", 5*3600+1800)),
			ID:        "round-trip/événement/🚀",
			Key:       "ключ-🔑",
			Metadata:  map[string]string{"ключ": "值 🚀", "empty": "", "quotes": `"'\<>&`, "newline": "a\nb\tc"},
			Payload:   payload,
			Topic:     "topic.ümlaut",
		}
		write(t, b.db, b.outbox, big)
		// Through the store directly: nil payload and metadata, no key.
		bare := omnibox.Event{CreatedAt: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), ID: "bare", Topic: "t"}
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{bare}}))
		})

		got := claim(t, b.db, b.store, params("a/1", 10))
		require.Len(t, got, 2)

		g := got[0].Event
		require.Equal(t, big.ID, g.ID)
		require.Equal(t, big.Topic, g.Topic)
		require.Equal(t, big.Key, g.Key)
		require.Equal(t, big.Metadata, g.Metadata)
		require.Len(t, g.Payload, len(payload))
		require.True(t, bytes.Equal(payload, g.Payload), "payload changed on its way through the store")
		require.True(t, big.CreatedAt.Equal(g.CreatedAt), "CreatedAt: want %s, got %s", big.CreatedAt, g.CreatedAt)
		require.Equal(t, time.UTC, g.CreatedAt.Location(), "CreatedAt must come back in UTC")

		g = got[1].Event
		require.Equal(t, bare.ID, g.ID)
		require.Equal(t, bare.Topic, g.Topic)
		require.Empty(t, g.Key)
		require.Empty(t, g.Metadata)
		require.Empty(t, g.Payload)
		require.Equal(t, bare.CreatedAt, g.CreatedAt)
	})

	t.Run("DuplicateEventID", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		existing := newEvent("dup", "")
		write(t, b.db, b.outbox, existing)

		failing := func(name string, fn func(tx *sql.Tx) error) {
			t.Helper()
			tx, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			err = fn(tx)
			require.ErrorIs(t, err, omnibox.ErrDuplicateEventID, name)
			require.NoError(t, tx.Rollback())
		}
		// Through the outbox, the duplicate in the middle of a batch.
		failing("batch", func(tx *sql.Tx) error {
			return b.outbox.WriteTx(ctx, tx, newEvent("dup", ""), omnibox.Event{ID: existing.ID, Topic: "dup"}, newEvent("dup", ""))
		})
		// Twice in one batch.
		twice := newEvent("dup", "")
		failing("twice in a batch", func(tx *sql.Tx) error {
			return b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{twice, twice}})
		})
		// A successful call, then a failing one in the same transaction.
		failing("second call", func(tx *sql.Tx) error {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{newEvent("dup", "")}}))
			return b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{existing}})
		})

		requirePending(t, b.db, b.store, 1)
		requireIDs(t, ids(existing), claim(t, b.db, b.store, params("a/1", 10)))
	})

	t.Run("InsertNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(t.Context(), tx, omnibox.InsertParams{}))
		})
		requirePending(t, b.db, b.store, 0)
	})

	t.Run("InvalidTableNamesRejected", func(t *testing.T) {
		t.Parallel()
		db := h.NewDB(t)
		// "" cannot be tried here: it asks NewStore for the default table.
		for _, name := range []string{" ", "Bad", "1x", "x;drop table y", "a-b", `x"y`, strings.Repeat("a", 100), "omnibox outbox", "naïve"} {
			store, err := h.NewStore(t, db, name)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "table name %q", name)
			require.Nil(t, store, "table name %q", name)
			store, err = h.NewStoreWithRetention(t, db, name, time.Hour)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "table name %q, with retention", name)
			require.Nil(t, store, "table name %q, with retention", name)
		}
	})

	t.Run("CustomTableIsSeparate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		custom, err := h.NewStore(t, b.db, "custom_outbox_2")
		require.NoError(t, err)
		require.NoError(t, custom.Migrate(ctx, b.db))
		customOutbox, err := omnibox.New(custom, &omnibox.Config{})
		require.NoError(t, err)

		// One key, so one partition number, in both tables.
		inDefault, inCustom := newEvent("default", "same-key"), newEvent("custom", "same-key")
		write(t, b.db, b.outbox, inDefault)
		write(t, b.db, customOutbox, inCustom)

		// Leases and relays of one table do not count in the other.
		requireIDs(t, ids(inCustom), claim(t, b.db, custom, params("a/1", 10)))
		requireIDs(t, ids(inDefault), claim(t, b.db, b.store, params("b/1", 10)))
		requirePending(t, b.db, custom, 1)
		requirePending(t, b.db, b.store, 1)
	})

	t.Run("MigrateTwiceIsNoOp", func(t *testing.T) {
		t.Parallel()
		b := setup(t) // migrated once
		ev := newEvent("migrate", "")
		write(t, b.db, b.outbox, ev)

		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		requirePending(t, b.db, b.store, 1)
		requireIDs(t, ids(ev), claim(t, b.db, b.store, params("a/1", 10)))
	})

	t.Run("MigrateConcurrently", func(t *testing.T) {
		t.Parallel()
		db := h.NewDB(t)
		store, err := h.NewStore(t, db, "")
		require.NoError(t, err)

		const n = 4
		var (
			errs  = make(chan error, n)
			start = make(chan struct{})
			wg    sync.WaitGroup
		)
		for range n {
			wg.Go(func() {
				<-start
				errs <- store.Migrate(t.Context(), db)
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}

		outbox, err := omnibox.New(store, &omnibox.Config{})
		require.NoError(t, err)
		ev := newEvent("migrated", "")
		write(t, db, outbox, ev)
		requireIDs(t, ids(ev), claim(t, db, store, params("a/1", 10)))
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
