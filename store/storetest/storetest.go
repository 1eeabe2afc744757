package storetest

import (
	"context"
	"database/sql"
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

	s := &suite{f: f, h: h, setup: setup, setupRetention: setupRetention}
	s.claimCases(t)
	s.relayIDCases(t)
	s.guardCases(t)
	s.completeCases(t)
	s.retryCases(t)
	s.deadCases(t)
	s.retentionCases(t)
	s.concurrencyCases(t)
	s.writeCases(t)
	s.tableCases(t)
}

// suite is what the case groups of [Run] share: the dialect's harness and
// features, and the setups of a test.
type suite struct {
	f              Features
	h              Harness
	setup          func(t *testing.T) *testBundle
	setupRetention func(t *testing.T) *testBundle
}

// testBundle is what a case of [Run] works on: a fresh database, a migrated
// store on its default table, and an outbox writing to it.
type testBundle struct {
	db     *sql.DB
	outbox *omnibox.Outbox
	store  Store
}
