package storetest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// Store is what the suite needs of a dialect's store: the two contracts of
// the root package, plus migrating and counting.
type Store interface {
	omnibox.Inserter
	omnibox.RelayStore
	// Migrate creates or upgrades the store's tables on db. It must be
	// idempotent and safe to run from several goroutines at once.
	Migrate(ctx context.Context, db *sql.DB) error
	// Pending returns the number of events not yet delivered.
	Pending(ctx context.Context, db omnibox.DBTX) (int64, error)
}

// Harness connects the suite to a dialect. Every field is required.
type Harness struct {
	// LastError returns the last error recorded for the event at seq in the
	// outbox table named table ("" = the store's default) of db, or "" when
	// none is recorded. It lets the suite check what [omnibox.RelayStore]
	// Release records, which the store interfaces do not read back.
	LastError func(t *testing.T, db *sql.DB, table string, seq int64) string
	// NewDB returns a fresh, empty, isolated database handle for one test
	// (a new schema or database) and cleans it up when the test ends. It is
	// called once per subtest. It must fail the test, never skip it, when the
	// database cannot be reached.
	NewDB func(t *testing.T) *sql.DB
	// NewStore returns a store on db for the outbox table named table ("" =
	// the store's default), not yet migrated, or the constructor's error
	// (invalid names must give one wrapping [omnibox.ErrInvalidIdentifier]).
	NewStore func(t *testing.T, db *sql.DB, table string) (Store, error)
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
	// NoConcurrentClaims skips the case in which several goroutines claim
	// and deliver at once, for a database that cannot run concurrent writing
	// transactions (SQLite: one writer at a time). Claims must still be
	// correct one after another, which the other cases check.
	NoConcurrentClaims bool
}

// Long enough never to expire during a test.
const longLease = time.Hour

// Run runs the conformance suite as parallel subtests of t.
func Run(t *testing.T, h Harness, f Features) {
	t.Helper()
	require.NotNil(t, h.LastError, "storetest: Harness.LastError is required")
	require.NotNil(t, h.NewDB, "storetest: Harness.NewDB is required")
	require.NotNil(t, h.NewStore, "storetest: Harness.NewStore is required")

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
		requireIDs(t, []string{ev.ID}, claim(t, b.db, b.store, params("a/2", 10)))
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
		requireIDs(t, []string{committed.ID}, claim(t, b.db, b.store, params("a/1", 10)))
		require.Empty(t, claim(t, b.db, b.store, params("a/2", 10)))
	})

	t.Run("ClaimOldestFirstInInsertOrderUpToLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		// 12 events: two transactions through the outbox, and one calling
		// Insert twice.
		events := newEvents("batch", "", 12)
		write(t, b.db, b.outbox, events[0:4]...)
		write(t, b.db, b.outbox, events[4:8]...)
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events[8:10]}))
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events[10:12]}))
		})

		var last int64
		for i, want := range [][]omnibox.Event{events[0:5], events[5:10], events[10:12]} {
			owner := fmt.Sprintf("a/%d", i)
			got := claim(t, b.db, b.store, params(owner, 5))
			requireIDs(t, EventIDs(want), got)
			for _, ev := range got {
				require.Greater(t, ev.Seq, last, "seqs must increase in claim order")
				last = ev.Seq
				require.Equal(t, 1, ev.Attempts)
			}
			n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: owner, Seqs: seqs(got)})
			require.NoError(t, err)
			require.Equal(t, len(got), n)
		}
		require.Empty(t, claim(t, b.db, b.store, params("a/9", 5)))
		requirePending(t, b.db, b.store, 0)
	})

	t.Run("ClaimIncrementsAttempts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		write(t, b.db, b.outbox, newEvents("attempts", "", 2)...)
		for attempt := 1; attempt <= 3; attempt++ {
			owner := fmt.Sprintf("a/%d", attempt)
			got := claim(t, b.db, b.store, params(owner, 10))
			require.Len(t, got, 2)
			for _, ev := range got {
				require.Equal(t, attempt, ev.Attempts)
			}
			require.NoError(t, b.store.Release(ctx, b.db, omnibox.ReleaseParams{Owner: owner, Seqs: seqs(got)}))
		}
	})

	t.Run("LiveLeaseAtHeadBlocksOtherOwners", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		events := newEvents("lease", "", 3)
		write(t, b.db, b.outbox, events...)

		first := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: longLease, Limit: 2, Owner: "relay-a/1", OwnerPrefix: "relay-a/"})
		requireIDs(t, EventIDs(events[:2]), first)

		// The third event is free, but the live lease at the head blocks it.
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: longLease, Limit: 10, Owner: "relay-b/1", OwnerPrefix: "relay-b/"}))
		require.Empty(t, claim(t, b.db, b.store, params("relay-b/2", 10)))

		// The same relay restarted (same prefix) takes its leases over.
		second := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: longLease, Limit: 10, Owner: "relay-a/2", OwnerPrefix: "relay-a/"})
		requireIDs(t, EventIDs(events), second)
		require.Equal(t, []int{2, 2, 1}, attempts(second))

		// The old owner lost its lease: it can neither deliver nor release.
		n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: "relay-a/1", Seqs: seqs(first)})
		require.NoError(t, err)
		require.Zero(t, n)
		require.NoError(t, b.store.Release(ctx, b.db, omnibox.ReleaseParams{Owner: "relay-a/1", Seqs: seqs(first), Error: "late"}))
		require.Empty(t, claim(t, b.db, b.store, params("relay-b/3", 10)))

		// A free head followed by a live lease: only the free prefix is
		// claimed.
		require.NoError(t, b.store.Release(ctx, b.db, omnibox.ReleaseParams{Owner: "relay-a/2", Seqs: seqs(second[:1])}))
		requireIDs(t, EventIDs(events[:1]), claim(t, b.db, b.store, params("relay-b/4", 10)))
	})

	t.Run("ExpiredLeaseClaimedAgain", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		events := newEvents("expired", "", 2)
		write(t, b.db, b.outbox, events...)
		first := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: 50 * time.Millisecond, Limit: 10, Owner: "relay-a/1"})
		requireIDs(t, EventIDs(events), first)

		// Poll until the short lease has expired on the database's clock.
		var (
			again []omnibox.ClaimedEvent
			owner string
		)
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; len(again) == 0; i++ {
			require.True(t, time.Now().Before(deadline), "the 50ms lease was never claimed again")
			time.Sleep(20 * time.Millisecond)
			owner = fmt.Sprintf("relay-b/%d", i)
			again = claim(t, b.db, b.store, params(owner, 10))
		}
		requireIDs(t, EventIDs(events), again)
		require.Equal(t, []int{2, 2}, attempts(again))

		n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: "relay-a/1", Seqs: seqs(first)})
		require.NoError(t, err)
		require.Zero(t, n, "the expired owner must not deliver events leased again")
		n, err = b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: owner, Seqs: seqs(again)})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		requirePending(t, b.db, b.store, 0)
	})

	t.Run("ConcurrentClaimersNeverShareAnEvent", func(t *testing.T) {
		t.Parallel()
		if f.NoConcurrentClaims {
			t.Skip("storetest: Features.NoConcurrentClaims is set")
		}
		b := setup(t)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()

		const total, workers = 2000, 8
		events := make([]omnibox.Event, total)
		for i := range events {
			events[i] = newEvent("concurrent", fmt.Sprintf("key-%d", i%10))
		}
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events}))
		})

		var (
			delivered atomic.Int64
			mu        sync.Mutex
			order     []string // claimed IDs in claim order
			seen      = make(map[string]string, total)
			errs      = make(chan error, workers)
			wg        sync.WaitGroup
		)
		for w := range workers {
			wg.Go(func() {
				err := func() error {
					for i := 0; delivered.Load() < total; i++ {
						if err := ctx.Err(); err != nil {
							return fmt.Errorf("worker %d: %d of %d delivered: %w", w, delivered.Load(), total, err)
						}
						owner := fmt.Sprintf("w%d/%d", w, i)
						got, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 50, Owner: owner})
						if err != nil {
							return fmt.Errorf("worker %d: %w", w, err)
						}
						if len(got) == 0 {
							time.Sleep(2 * time.Millisecond)
							continue
						}
						mu.Lock()
						for _, ev := range got {
							if prev, dup := seen[ev.ID]; dup {
								mu.Unlock()
								return fmt.Errorf("event %s claimed by %s and again by %s", ev.ID, prev, owner)
							}
							seen[ev.ID] = owner
							order = append(order, ev.ID)
						}
						mu.Unlock()
						n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: owner, Seqs: seqs(got)})
						if err != nil {
							return fmt.Errorf("worker %d: mark delivered: %w", w, err)
						}
						if n != len(got) {
							return fmt.Errorf("worker %d: marked %d of %d events delivered", w, n, len(got))
						}
						delivered.Add(int64(n))
					}
					return nil
				}()
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
		require.EqualValues(t, total, delivered.Load())
		require.Len(t, seen, total)
		// One batch is in flight at a time, so delivery follows insert order.
		require.Equal(t, EventIDs(events), order)
		requirePending(t, b.db, b.store, 0)
	})

	t.Run("MarkDeliveredOnlyOwnLeases", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		events := newEvents("deliver", "", 4)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 2))
		requireIDs(t, EventIDs(events[:2]), got)

		all := seqs(got)
		n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: "b/1", Seqs: all})
		require.NoError(t, err)
		require.Zero(t, n, "another owner's events were deleted")
		requirePending(t, b.db, b.store, 4)

		// Unclaimed events (seqs past the claimed ones) are not deleted either.
		withOthers := append(all, all[1]+1, all[1]+2, all[1]+1000)
		n, err = b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: "a/1", Seqs: withOthers})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		requirePending(t, b.db, b.store, 2)

		n, err = b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: "a/1", Seqs: all})
		require.NoError(t, err)
		require.Zero(t, n, "already delivered")
		n, err = b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: "a/1"})
		require.NoError(t, err)
		require.Zero(t, n)

		requireIDs(t, EventIDs(events[2:]), claim(t, b.db, b.store, params("b/2", 10)))
	})

	t.Run("ReleaseMakesEventsClaimableAndRecordsError", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		events := newEvents("release", "", 3)
		write(t, b.db, b.outbox, events...)
		got := claim(t, b.db, b.store, params("a/1", 10))
		requireIDs(t, EventIDs(events), got)

		// Another owner cannot release them.
		require.NoError(t, b.store.Release(ctx, b.db, omnibox.ReleaseParams{Owner: "b/1", Seqs: seqs(got), Error: "not mine"}))
		require.Empty(t, claim(t, b.db, b.store, params("b/2", 10)))
		require.Empty(t, h.LastError(t, b.db, "", got[0].Seq))

		const reason = `kafka: broker down — "ключ" 值 🚀`
		require.NoError(t, b.store.Release(ctx, b.db, omnibox.ReleaseParams{Owner: "a/1", Seqs: seqs(got[:2]), Error: reason}))
		require.Equal(t, reason, h.LastError(t, b.db, "", got[0].Seq))
		require.Equal(t, reason, h.LastError(t, b.db, "", got[1].Seq))
		require.Empty(t, h.LastError(t, b.db, "", got[2].Seq))

		// Claimable at once, up to the event still leased.
		again := claim(t, b.db, b.store, params("b/3", 10))
		requireIDs(t, EventIDs(events[:2]), again)
		require.Equal(t, []int{2, 2}, attempts(again))
	})

	t.Run("PerKeyOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		// Five transactions, each interleaving keys a, b, c and no key.
		var written []omnibox.Event
		for i := range 5 {
			var events []omnibox.Event
			for _, key := range []string{"a", "b", "", "c", "a"} {
				events = append(events, newEvent(fmt.Sprintf("tx%d", i), key))
			}
			write(t, b.db, b.outbox, events...)
			written = append(written, events...)
		}

		var claimed []omnibox.ClaimedEvent
		for i := 0; ; i++ {
			owner := fmt.Sprintf("a/%d", i)
			got := claim(t, b.db, b.store, params(owner, 4))
			if len(got) == 0 {
				break
			}
			claimed = append(claimed, got...)
			n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: owner, Seqs: seqs(got)})
			require.NoError(t, err)
			require.Equal(t, len(got), n)
		}
		byKey := func(events []omnibox.Event) map[string][]string {
			m := make(map[string][]string)
			for _, ev := range events {
				m[ev.Key] = append(m[ev.Key], ev.ID)
			}
			return m
		}
		claimedEvents := make([]omnibox.Event, len(claimed))
		for i, ev := range claimed {
			claimedEvents[i] = ev.Event
		}
		require.Equal(t, byKey(written), byKey(claimedEvents))
		require.Equal(t, EventIDs(written), EventIDs(claimedEvents))
	})

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
		requireIDs(t, []string{existing.ID}, claim(t, b.db, b.store, params("a/1", 10)))
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

		inDefault, inCustom := newEvent("default", ""), newEvent("custom", "")
		write(t, b.db, b.outbox, inDefault)
		write(t, b.db, customOutbox, inCustom)

		requireIDs(t, []string{inCustom.ID}, claim(t, b.db, custom, params("a/1", 10)))
		requireIDs(t, []string{inDefault.ID}, claim(t, b.db, b.store, params("a/2", 10)))
	})

	t.Run("MigrateTwiceIsNoOp", func(t *testing.T) {
		t.Parallel()
		b := setup(t) // migrated once
		ev := newEvent("migrate", "")
		write(t, b.db, b.outbox, ev)

		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		requirePending(t, b.db, b.store, 1)
		requireIDs(t, []string{ev.ID}, claim(t, b.db, b.store, params("a/1", 10)))
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
		requireIDs(t, []string{ev.ID}, claim(t, db, store, params("a/1", 10)))
	})
}

// params returns claim parameters with a long lease and no owner prefix.
func params(owner string, limit int) omnibox.ClaimParams {
	return omnibox.ClaimParams{Lease: longLease, Limit: limit, Owner: owner}
}

// claim runs one claim in its own transaction, committed, as the relay does.
func claim(t *testing.T, db *sql.DB, store Store, p omnibox.ClaimParams) []omnibox.ClaimedEvent {
	t.Helper()
	events, err := tryClaim(t.Context(), db, store, p)
	require.NoError(t, err)
	return events
}

// tryClaim is claim for goroutines other than the test's: it returns the
// error instead of failing the test. It also checks the result's order.
func tryClaim(ctx context.Context, db *sql.DB, store Store, p omnibox.ClaimParams) ([]omnibox.ClaimedEvent, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := store.Claim(ctx, tx, p)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("claim: commit: %w", err)
	}
	if res == nil {
		return nil, errors.New("claim: nil result without error")
	}
	if len(res.Events) > p.Limit {
		return nil, fmt.Errorf("claim: %d events returned, more than Limit %d", len(res.Events), p.Limit)
	}
	for i := 1; i < len(res.Events); i++ {
		if res.Events[i].Seq <= res.Events[i-1].Seq {
			return nil, fmt.Errorf("claim: events not in seq order: %d after %d", res.Events[i].Seq, res.Events[i-1].Seq)
		}
	}
	return res.Events, nil
}

// inTx runs fn in a transaction on db and commits it.
func inTx(t *testing.T, db *sql.DB, fn func(tx *sql.Tx)) {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	fn(tx)
	require.NoError(t, tx.Commit())
}

// write writes events through the outbox in one committed transaction.
func write(t *testing.T, db *sql.DB, outbox *omnibox.Outbox, events ...omnibox.Event) {
	t.Helper()
	inTx(t, db, func(tx *sql.Tx) {
		require.NoError(t, outbox.WriteTx(t.Context(), tx, events...))
	})
}

var eventCounter atomic.Int64

// newEvent returns a complete event (so it can go to Store.Insert directly)
// with a unique ID.
func newEvent(topic, key string) omnibox.Event {
	n := eventCounter.Add(1)
	return omnibox.Event{
		CreatedAt: time.Now().Truncate(time.Microsecond).UTC(),
		ID:        fmt.Sprintf("%s-%d", topic, n),
		Key:       key,
		Metadata:  map[string]string{"n": fmt.Sprint(n)},
		Payload:   fmt.Appendf(nil, `{"n":%d}`, n),
		Topic:     topic,
	}
}

func newEvents(topic, key string, n int) []omnibox.Event {
	events := make([]omnibox.Event, n)
	for i := range events {
		events[i] = newEvent(topic, key)
	}
	return events
}

func requirePending(t *testing.T, db *sql.DB, store Store, want int64) {
	t.Helper()
	n, err := store.Pending(t.Context(), db)
	require.NoError(t, err)
	require.Equal(t, want, n, "pending events")
}

func requireIDs(t *testing.T, want []string, got []omnibox.ClaimedEvent) {
	t.Helper()
	gotIDs := make([]string, len(got))
	for i, ev := range got {
		gotIDs[i] = ev.ID
	}
	require.Equal(t, want, gotIDs, "claimed event IDs")
}

func seqs(events []omnibox.ClaimedEvent) []int64 {
	out := make([]int64, len(events))
	for i, ev := range events {
		out[i] = ev.Seq
	}
	return out
}

func attempts(events []omnibox.ClaimedEvent) []int {
	out := make([]int, len(events))
	for i, ev := range events {
		out[i] = ev.Attempts
	}
	return out
}
