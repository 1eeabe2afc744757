package omnibox

import (
	"context"
	"database/sql"
	"time"
)

// DBTX is what stores run their queries on: *sql.DB, *sql.Tx and *sql.Conn
// all satisfy it.
type DBTX interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ DBTX = (*sql.DB)(nil)
	_ DBTX = (*sql.Tx)(nil)
	_ DBTX = (*sql.Conn)(nil)
)

// Inserter writes events into the outbox table. It is what [Outbox] needs of
// a store.
type Inserter interface {
	// Insert writes the events, in the given order, through tx. Events come
	// validated and complete (ID, CreatedAt set). Events inserted by one call,
	// and by successive calls in one transaction, must be claimed later in that
	// order. The write must be all or nothing: on error no event of the call may
	// remain written. An ID already present must produce an error wrapping
	// [ErrDuplicateEventID].
	Insert(ctx context.Context, tx DBTX, params InsertParams) error
}

// InsertParams are the arguments of [Inserter.Insert].
type InsertParams struct {
	// Events to write, in order.
	Events []Event
}

// RelayStore is what [Relay] needs of a store: claiming pending events, then
// marking them delivered or releasing them.
//
// The claim contract, which the conformance suite in store/storetest checks
// for every dialect:
//   - Only committed events are claimed; an event written by a transaction
//     that rolled back never is.
//   - Events are claimed in the order they were inserted, from the oldest
//     pending one (there is no cursor, so an event committed late by a long
//     transaction is still found).
//   - A claim is a lease: it lasts [ClaimParams.Lease], measured on the
//     database's clock. While a lease on the oldest pending event is live,
//     claims by other owners return nothing, so at most one batch is in
//     flight and events are published in order. A lease that expired (its
//     relay died) may be claimed again.
//   - Two concurrent claims never return the same event.
//   - Claiming increments the events' attempt count.
type RelayStore interface {
	// Claim leases up to params.Limit of the oldest pending events to
	// params.Owner. It is called inside a transaction that the relay commits
	// right after, so tx is a *sql.Tx.
	Claim(ctx context.Context, tx DBTX, params ClaimParams) (*ClaimResult, error)
	// MarkDelivered records that the events were published. Only events
	// still leased to params.Owner are affected; it reports how many were.
	MarkDelivered(ctx context.Context, db DBTX, params MarkDeliveredParams) (int, error)
	// Release gives up params.Owner's lease on the events so they can be
	// claimed again at once, recording params.Error as their last error.
	Release(ctx context.Context, db DBTX, params ReleaseParams) error
}

// ClaimParams are the arguments of [RelayStore.Claim].
type ClaimParams struct {
	// Lease is how long the claim holds before another relay may take the
	// events over.
	Lease time.Duration
	// Limit is the most events to claim.
	Limit int
	// Owner names the claim. It must be unique per claim (the relay adds a
	// sequence number to its ID), since delivering and releasing match on it.
	Owner string
	// OwnerPrefix, when not empty, lets the claim take over live leases whose
	// owner starts with it: the leases of an earlier run of a relay with the
	// same stable ID, which is known to be dead.
	OwnerPrefix string
}

// ClaimResult is what [RelayStore.Claim] returns.
type ClaimResult struct {
	// Events claimed, oldest first.
	Events []ClaimedEvent
}

// ClaimedEvent is an event as the relay sees it.
type ClaimedEvent struct {
	Event
	// Attempts counts the claims of this event, this one included.
	Attempts int
	// Seq is the store's position of the event: claims return events in Seq
	// order. It is what MarkDelivered and Release take.
	Seq int64
}

// MarkDeliveredParams are the arguments of [RelayStore.MarkDelivered].
type MarkDeliveredParams struct {
	// Owner is the claim's owner, as given to Claim.
	Owner string
	// Seqs of the events published.
	Seqs []int64
}

// ReleaseParams are the arguments of [RelayStore.Release].
type ReleaseParams struct {
	// Error is recorded as the events' last error; may be empty.
	Error string
	// Owner is the claim's owner, as given to Claim.
	Owner string
	// Seqs of the events to release.
	Seqs []int64
}
