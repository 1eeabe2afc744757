package storetest

import (
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
	"github.com/omnibox-go/omnibox/inbox"
)

// InboxStore is what the inbox suite needs of a dialect's inbox store: the
// contract of [inbox.Store], plus migrating.
type InboxStore interface {
	inbox.Store
	// Migrate creates or upgrades the inbox table on db. It must be
	// idempotent and safe to run from several goroutines at once.
	Migrate(ctx context.Context, db *sql.DB) error
}

// InboxHarness connects the inbox suite to a dialect. Every field but
// NewOutboxStore is required.
type InboxHarness struct {
	// NewDB returns a fresh, empty, isolated database handle for one test
	// (a new schema or database) and cleans it up when the test ends. It is
	// called once per subtest. It must fail the test, never skip it, when the
	// database cannot be reached.
	NewDB func(t *testing.T) *sql.DB
	// NewOutboxStore returns the dialect's outbox store on db for its
	// default table, not yet migrated. The suite uses it to check that an
	// inbox and an outbox with default names live side by side in one
	// database, and can be written in one transaction. When nil, that case
	// is skipped.
	NewOutboxStore func(t *testing.T, db *sql.DB) (Store, error)
	// NewStore returns an inbox store on db for the table named table ("" =
	// the store's default), not yet migrated, or the constructor's error
	// (invalid names must give one wrapping [omnibox.ErrInvalidIdentifier]).
	NewStore func(t *testing.T, db *sql.DB, table string) (InboxStore, error)
	// SetProcessedAgo sets the processed_at of the recorded row params in
	// the inbox table named table ("" = the store's default) of db to the
	// database's current time minus ago, computed by the database (on the
	// clock Record stamps rows with), so that the suite can test Purge
	// without waiting. It fails the test when no row was changed.
	SetProcessedAgo func(t *testing.T, db *sql.DB, table string, params inbox.RecordParams, ago time.Duration)
}

// RunInbox runs the conformance suite of the inbox stores as parallel
// subtests of t: Record (new, duplicate in a later and in the same
// transaction, rolled back, per consumer, exact comparison of names and IDs,
// limits), Record under concurrency (a second delivery waits for the first
// transaction and sees its outcome; of many concurrent deliveries exactly
// one is new), Processed, Purge (bounded, oldest first, only rows older than
// OlderThan, on the database's clock), table names and migrations. f tells how a dialect differs:
// with [Features].NoClaimWhileWriting (one writing transaction at a time),
// the concurrent deliveries begin their transactions only when they record,
// since a second BeginTx may wait for the first transaction to end; with
// [Features].InboxWaitersMayDeadlock, deliveries waiting on one that rolls
// back may fail, as long as exactly one of them records the message.
func RunInbox(t *testing.T, h InboxHarness, f Features) {
	t.Helper()
	require.NotNil(t, h.NewDB, "storetest: InboxHarness.NewDB is required")
	require.NotNil(t, h.NewStore, "storetest: InboxHarness.NewStore is required")
	require.NotNil(t, h.SetProcessedAgo, "storetest: InboxHarness.SetProcessedAgo is required")

	type testBundle struct {
		db    *sql.DB
		store InboxStore
	}

	// setup gives a test a fresh database and a migrated inbox store on the
	// default table.
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		db := h.NewDB(t)
		store, err := h.NewStore(t, db, "")
		require.NoError(t, err)
		require.NoError(t, store.Migrate(t.Context(), db))
		return &testBundle{db: db, store: store}
	}

	t.Run("RecordNewThenDuplicateInLaterTx", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		p := newRecordParams("orders")

		inTx(t, b.db, func(tx *sql.Tx) {
			requireRecord(t, b.store, tx, p, true)
		})
		// The duplicate is no error, and the transaction goes on: a later
		// statement in it succeeds and commits.
		other := newRecordParams("orders")
		inTx(t, b.db, func(tx *sql.Tx) {
			requireRecord(t, b.store, tx, p, false)
			requireRecord(t, b.store, tx, other, true)
		})
		requireProcessed(t, b.store, b.db, other, true)

		// Outside a transaction too.
		isNew, err := b.store.Record(ctx, b.db, p)
		require.NoError(t, err)
		require.False(t, isNew)
	})

	t.Run("SameIDOtherConsumer", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p := newRecordParams("billing")
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, true) })

		shipping := inbox.RecordParams{Consumer: "shipping", MessageID: p.MessageID}
		requireProcessed(t, b.store, b.db, shipping, false)
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, shipping, true) })
		inTx(t, b.db, func(tx *sql.Tx) {
			requireRecord(t, b.store, tx, p, false)
			requireRecord(t, b.store, tx, shipping, false)
		})
	})

	t.Run("ProcessedBeforeAndAfterCommit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		p := newRecordParams("processed")

		requireProcessed(t, b.store, b.db, p, false)
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		requireRecord(t, b.store, tx, p, true)
		requireProcessed(t, b.store, tx, p, true)    // the recording transaction sees it
		requireProcessed(t, b.store, b.db, p, false) // others do not, yet
		require.NoError(t, tx.Commit())
		requireProcessed(t, b.store, b.db, p, true)
	})

	t.Run("RolledBackRecordLeavesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		p := newRecordParams("rollback")

		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		requireRecord(t, b.store, tx, p, true)
		require.NoError(t, tx.Rollback())

		requireProcessed(t, b.store, b.db, p, false)
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, true) })
		requireProcessed(t, b.store, b.db, p, true)
	})

	t.Run("DuplicateInSameTx", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p, other := newRecordParams("same-tx"), newRecordParams("same-tx")
		inTx(t, b.db, func(tx *sql.Tx) {
			requireRecord(t, b.store, tx, p, true)
			requireRecord(t, b.store, tx, p, false)
			requireRecord(t, b.store, tx, other, true)
			requireRecord(t, b.store, tx, p, false)
		})
		requireProcessed(t, b.store, b.db, p, true)
		requireProcessed(t, b.store, b.db, other, true)
	})

	// Two deliveries of one message, the first one's transaction still open
	// when the second records: the second waits for the first to end, then
	// sees its outcome. On SQLite the second transaction already waits in
	// BeginTx (one writer at a time), which the case allows: what it checks
	// is that the second Record does not return while the first transaction
	// is open, and what it returns afterwards.
	for _, firstCommits := range []bool{true, false} {
		name := "ConcurrentDeliveryFirstRollsBack"
		if firstCommits {
			name = "ConcurrentDeliveryFirstCommits"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := t.Context()
			p := newRecordParams("concurrent")

			tx1, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx1.Rollback() }()
			requireRecord(t, b.store, tx1, p, true)

			type result struct {
				isNew bool
				err   error
			}
			done := make(chan result, 1)
			go func() {
				isNew, err := recordInTx(ctx, b.db, b.store, p)
				done <- result{isNew, err}
			}()
			// A Record that does not wait would return meanwhile.
			select {
			case r := <-done:
				t.Fatalf("the second Record returned (%t, %v) while the first transaction was open", r.isNew, r.err)
			case <-time.After(200 * time.Millisecond):
			}
			if firstCommits {
				require.NoError(t, tx1.Commit())
			} else {
				require.NoError(t, tx1.Rollback())
			}
			r := <-done
			require.NoError(t, r.err)
			require.Equal(t, !firstCommits, r.isNew, "the second delivery must see the first one's outcome")
			requireProcessed(t, b.store, b.db, p, true)
		})
	}

	// Several deliveries wait on a first one that rolls back: exactly one of
	// them records the pair.
	t.Run("WaitersOnRolledBackRecord", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		p := newRecordParams("waiters")

		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		requireRecord(t, b.store, tx1, p, true)

		const waiters = 3
		results := make(chan error, waiters)
		var isNew atomic.Int32
		var wg sync.WaitGroup
		for range waiters {
			wg.Go(func() {
				ok, err := recordInTx(ctx, b.db, b.store, p)
				if ok {
					isNew.Add(1)
				}
				results <- err
			})
		}
		time.Sleep(200 * time.Millisecond) // let them reach the wait
		require.NoError(t, tx1.Rollback())
		wg.Wait()
		close(results)
		var failed []error
		for err := range results {
			if err != nil {
				failed = append(failed, err)
			}
		}
		if !f.InboxWaitersMayDeadlock {
			require.Empty(t, failed)
		}
		require.EqualValues(t, 1, isNew.Load(), "exactly one waiter must record the pair (errors: %v)", failed)
		requireProcessed(t, b.store, b.db, p, true)
	})

	t.Run("ConcurrentRecordsExactlyOneNew", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		p := newRecordParams("race")

		// Each goroutine begins its transaction, then all record at once.
		// Where one transaction writes at a time, a second BeginTx may wait
		// for the first transaction to end: there they begin when released.
		const n = 16
		var (
			isNew atomic.Int32
			errs  = make(chan error, n)
			ready sync.WaitGroup
			start = make(chan struct{})
			wg    sync.WaitGroup
		)
		ready.Add(n)
		for range n {
			wg.Go(func() {
				err := func() error {
					var tx *sql.Tx
					if !f.NoClaimWhileWriting {
						var err error
						tx, err = b.db.BeginTx(ctx, nil)
						ready.Done()
						if err != nil {
							return fmt.Errorf("begin: %w", err)
						}
						defer func() { _ = tx.Rollback() }()
						<-start
					} else {
						ready.Done()
						<-start
						var err error
						if tx, err = b.db.BeginTx(ctx, nil); err != nil {
							return fmt.Errorf("begin: %w", err)
						}
						defer func() { _ = tx.Rollback() }()
					}
					ok, err := b.store.Record(ctx, tx, p)
					if err != nil {
						return fmt.Errorf("record: %w", err)
					}
					if err := tx.Commit(); err != nil {
						return fmt.Errorf("commit: %w", err)
					}
					if ok {
						isNew.Add(1)
					}
					return nil
				}()
				errs <- err
			})
		}
		ready.Wait()
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.EqualValues(t, 1, isNew.Load(), "of %d concurrent deliveries exactly one must be new", n)
		requireProcessed(t, b.store, b.db, p, true)
	})

	t.Run("IDsAndConsumersCompareExactly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Each differs from the others only in case or spaces.
		variants := []inbox.RecordParams{
			{Consumer: "orders", MessageID: "MSG-1"},
			{Consumer: "orders", MessageID: "msg-1"},
			{Consumer: "orders", MessageID: "Msg-1"},
			{Consumer: "orders", MessageID: "MSG-1 "},
			{Consumer: "orders", MessageID: "MSG-1  "},
			{Consumer: "orders", MessageID: " MSG-1"},
			{Consumer: "Orders", MessageID: "MSG-1"},
			{Consumer: "orders ", MessageID: "MSG-1"},
			{Consumer: "ORDERS", MessageID: "MSG-1"},
		}
		inTx(t, b.db, func(tx *sql.Tx) {
			for _, p := range variants {
				requireRecord(t, b.store, tx, p, true)
			}
		})
		inTx(t, b.db, func(tx *sql.Tx) {
			for _, p := range variants {
				requireRecord(t, b.store, tx, p, false)
			}
		})
		requireProcessed(t, b.store, b.db, inbox.RecordParams{Consumer: "orders", MessageID: "mSG-1"}, false)
		requireProcessed(t, b.store, b.db, inbox.RecordParams{Consumer: "orders", MessageID: "MSG-1   "}, false)
	})

	t.Run("NonASCIIRoundTrip", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p := inbox.RecordParams{Consumer: "потребитель/消費者-ü", MessageID: "événement/🚀/\u00e9"}
		// The same text, decomposed (NFD): other bytes, so another ID.
		nfd := inbox.RecordParams{Consumer: p.Consumer, MessageID: "e\u0301ve\u0301nement/🚀/e\u0301"}
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, true) })
		requireProcessed(t, b.store, b.db, p, true)
		requireProcessed(t, b.store, b.db, nfd, false)
		inTx(t, b.db, func(tx *sql.Tx) {
			requireRecord(t, b.store, tx, nfd, true)
			requireRecord(t, b.store, tx, p, false)
		})
	})

	t.Run("Limits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		valid := []inbox.RecordParams{
			{Consumer: strings.Repeat("c", inbox.MaxConsumerLen), MessageID: "at-the-limit"},
			{Consumer: "at-the-limit", MessageID: strings.Repeat("m", inbox.MaxMessageIDLen)},
			// Multi-byte characters up to the byte limits exactly.
			{Consumer: strings.Repeat("é", inbox.MaxConsumerLen/2) + "c", MessageID: strings.Repeat("🚀", inbox.MaxMessageIDLen/4)},
			{Consumer: "c", MessageID: "m"},
		}
		invalid := []struct {
			name   string
			params inbox.RecordParams
			want   error
		}{
			{"EmptyMessageID", inbox.RecordParams{Consumer: "c"}, inbox.ErrEmptyMessageID},
			{"EmptyBoth", inbox.RecordParams{}, inbox.ErrEmptyMessageID},
			{"EmptyConsumer", inbox.RecordParams{MessageID: "m"}, inbox.ErrInvalid},
			{"LongConsumer", inbox.RecordParams{Consumer: strings.Repeat("c", inbox.MaxConsumerLen+1), MessageID: "m"}, inbox.ErrInvalid},
			{"LongMultiByteConsumer", inbox.RecordParams{Consumer: strings.Repeat("é", inbox.MaxConsumerLen/2+1), MessageID: "m"}, inbox.ErrInvalid},
			{"LongMessageID", inbox.RecordParams{Consumer: "c", MessageID: strings.Repeat("m", inbox.MaxMessageIDLen+1)}, inbox.ErrInvalid},
			{"LongMultiByteMessageID", inbox.RecordParams{Consumer: "c", MessageID: strings.Repeat("🚀", inbox.MaxMessageIDLen/4) + "m"}, inbox.ErrInvalid},
			{"InvalidUTF8Consumer", inbox.RecordParams{Consumer: "c\xff", MessageID: "m"}, inbox.ErrInvalid},
			{"InvalidUTF8MessageID", inbox.RecordParams{Consumer: "c", MessageID: "m\xc3"}, inbox.ErrInvalid},
			{"NULInConsumer", inbox.RecordParams{Consumer: "c\x00d", MessageID: "m"}, inbox.ErrInvalid},
			{"NULInMessageID", inbox.RecordParams{Consumer: "c", MessageID: "m\x00"}, inbox.ErrInvalid},
		}

		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		for _, c := range invalid {
			isNew, err := b.store.Record(ctx, tx, c.params)
			require.ErrorIs(t, err, c.want, "Record, %s", c.name)
			require.False(t, isNew, c.name)
			_, err = b.store.Processed(ctx, tx, c.params)
			require.ErrorIs(t, err, c.want, "Processed, %s", c.name)
		}
		// The rejected calls left the transaction usable.
		for _, p := range valid {
			requireRecord(t, b.store, tx, p, true)
		}
		require.NoError(t, tx.Commit())

		for _, p := range valid {
			requireProcessed(t, b.store, b.db, p, true)
		}
		inTx(t, b.db, func(tx *sql.Tx) {
			for _, p := range valid {
				requireRecord(t, b.store, tx, p, false)
			}
		})
	})

	t.Run("PurgeOldestFirstUpToLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()

		// Ages on the database's clock, which Purge's cutoff must also come
		// from: old[i] was processed olderThan + 1 min + (nOld-1-i) s ago,
		// so old[0] is the oldest. Rows a minute inside the window, and rows
		// recorded now, are kept. The margins of a minute or more dwarf the
		// test's run time.
		const (
			nOld      = 250
			olderThan = time.Hour
		)
		old := make([]inbox.RecordParams, nOld)
		for i := range old {
			old[i] = inbox.RecordParams{Consumer: "purge", MessageID: fmt.Sprintf("old-%03d", i)}
		}
		kept := []inbox.RecordParams{
			{Consumer: "purge", MessageID: "inside-1"},
			{Consumer: "purge", MessageID: "inside-2"},
			{Consumer: "purge", MessageID: "now-1"},
			{Consumer: "other", MessageID: "now-2"},
		}
		// Recorded in a scrambled order, so that insertion (or physical)
		// order is not processed_at order.
		inTx(t, b.db, func(tx *sql.Tx) {
			for i := range nOld {
				requireRecord(t, b.store, tx, old[(i*97)%nOld], true)
			}
			for _, p := range kept {
				requireRecord(t, b.store, tx, p, true)
			}
		})
		for i, p := range old {
			h.SetProcessedAgo(t, b.db, "", p, olderThan+time.Minute+time.Duration(nOld-1-i)*time.Second)
		}
		h.SetProcessedAgo(t, b.db, "", kept[0], olderThan-time.Minute)
		h.SetProcessedAgo(t, b.db, "", kept[1], olderThan-2*time.Minute)

		// Nothing is older than the oldest row plus a minute.
		n, err := b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: 100, OlderThan: olderThan + 2*time.Minute + nOld*time.Second})
		require.NoError(t, err)
		require.Zero(t, n)

		deleted := 0
		for _, want := range []int{100, 100, 50, 0} {
			n, err := b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: 100, OlderThan: olderThan})
			require.NoError(t, err)
			require.Equal(t, want, n, "rows purged")
			deleted += n
			for i, p := range old {
				requireProcessed(t, b.store, b.db, p, i >= deleted)
			}
			for _, p := range kept {
				requireProcessed(t, b.store, b.db, p, true)
			}
		}

		// A purged message is new again.
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, old[0], true) })
	})

	t.Run("PurgeValidatesParams", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		p := newRecordParams("purge-limit")
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, true) })
		h.SetProcessedAgo(t, b.db, "", p, 48*time.Hour)

		for _, limit := range []int{0, -1} {
			n, err := b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: limit, OlderThan: time.Hour})
			require.ErrorContains(t, err, "Limit", "Limit %d", limit)
			require.Zero(t, n)
		}
		// A negative age would reach into the future.
		n, err := b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: 10, OlderThan: -time.Hour})
		require.ErrorContains(t, err, "OlderThan")
		require.Zero(t, n)
		requireProcessed(t, b.store, b.db, p, true)

		// OlderThan zero purges everything recorded before the statement.
		n, err = b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: 10})
		require.NoError(t, err)
		require.Equal(t, 1, n)
	})

	t.Run("InvalidTableNamesRejected", func(t *testing.T) {
		t.Parallel()
		db := h.NewDB(t)
		// "" cannot be tried here: it asks NewStore for the default table.
		for _, name := range []string{" ", "Bad", "1x", "x;drop table y", "a-b", `x"y`, strings.Repeat("a", 100), "omnibox inbox", "naïve"} {
			store, err := h.NewStore(t, db, name)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "table name %q", name)
			require.Nil(t, store, "table name %q", name)
		}
	})

	t.Run("CustomTableIsSeparate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		custom, err := h.NewStore(t, b.db, "custom_inbox_2")
		require.NoError(t, err)
		require.NoError(t, custom.Migrate(t.Context(), b.db))

		p := newRecordParams("custom")
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, true) })
		requireProcessed(t, custom, b.db, p, false)
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, custom, tx, p, true) })

		h.SetProcessedAgo(t, b.db, "custom_inbox_2", p, 48*time.Hour)
		n, err := custom.Purge(t.Context(), b.db, inbox.PurgeParams{Limit: 10, OlderThan: 24 * time.Hour})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		requireProcessed(t, custom, b.db, p, false)
		requireProcessed(t, b.store, b.db, p, true)
	})

	t.Run("MigrateTwiceIsNoOp", func(t *testing.T) {
		t.Parallel()
		b := setup(t) // migrated once
		p := newRecordParams("migrate")
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, true) })

		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		requireProcessed(t, b.store, b.db, p, true)
		inTx(t, b.db, func(tx *sql.Tx) { requireRecord(t, b.store, tx, p, false) })
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

		p := newRecordParams("migrated")
		inTx(t, db, func(tx *sql.Tx) { requireRecord(t, store, tx, p, true) })
		requireProcessed(t, store, db, p, true)
	})

	t.Run("CoexistsWithOutbox", func(t *testing.T) {
		t.Parallel()
		if h.NewOutboxStore == nil {
			t.Skip("storetest: InboxHarness.NewOutboxStore is not set")
		}
		db := h.NewDB(t)
		ctx := t.Context()
		outboxStore, err := h.NewOutboxStore(t, db)
		require.NoError(t, err)
		inboxStore, err := h.NewStore(t, db, "")
		require.NoError(t, err)
		require.NoError(t, inboxStore.Migrate(ctx, db))
		require.NoError(t, outboxStore.Migrate(ctx, db))
		require.NoError(t, inboxStore.Migrate(ctx, db))
		outbox, err := omnibox.New(outboxStore, &omnibox.Config{})
		require.NoError(t, err)

		// The consumer's usual transaction: record the message, write the
		// event it causes.
		p := newRecordParams("coexist")
		ev := newEvent("coexist", "")
		inTx(t, db, func(tx *sql.Tx) {
			requireRecord(t, inboxStore, tx, p, true)
			require.NoError(t, outbox.WriteTx(ctx, tx, ev))
		})
		requireProcessed(t, inboxStore, db, p, true)
		requireIDs(t, []string{ev.ID}, claim(t, db, outboxStore, params("a/1", 10)))
	})
}

var recordCounter atomic.Int64

// newRecordParams returns params for consumer with a unique message ID.
func newRecordParams(consumer string) inbox.RecordParams {
	return inbox.RecordParams{Consumer: consumer, MessageID: fmt.Sprintf("%s-msg-%d", consumer, recordCounter.Add(1))}
}

// requireRecord records p through tx and checks whether it was new.
func requireRecord(t *testing.T, store inbox.Store, tx omnibox.DBTX, p inbox.RecordParams, wantNew bool) {
	t.Helper()
	isNew, err := store.Record(t.Context(), tx, p)
	require.NoError(t, err, "Record(%q, %q)", p.Consumer, p.MessageID)
	require.Equal(t, wantNew, isNew, "Record(%q, %q): is new", p.Consumer, p.MessageID)
}

// requireProcessed checks whether p is recorded, as seen by db.
func requireProcessed(t *testing.T, store inbox.Store, db omnibox.DBTX, p inbox.RecordParams, want bool) {
	t.Helper()
	done, err := store.Processed(t.Context(), db, p)
	require.NoError(t, err, "Processed(%q, %q)", p.Consumer, p.MessageID)
	require.Equal(t, want, done, "Processed(%q, %q)", p.Consumer, p.MessageID)
}

// recordInTx records p in a transaction of its own and commits it, as a
// consumer does; for goroutines other than the test's, it returns errors
// instead of failing the test.
func recordInTx(ctx context.Context, db *sql.DB, store inbox.Store, p inbox.RecordParams) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("record: begin: %w", err)
	}
	isNew, err := store.Record(ctx, tx, p)
	if err != nil {
		return false, errors.Join(fmt.Errorf("record: %w", err), tx.Rollback())
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("record: commit: %w", err)
	}
	return isNew, nil
}
