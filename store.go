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
// completing the claim with what became of each event.
//
// The claim contract, which the conformance suite in store/storetest checks
// for every dialect:
//   - Only committed events are claimed; an event written by a transaction
//     that rolled back never is.
//   - Events are spread over [Partitions] partitions by [PartitionOf] (the
//     key's hash, so all events of a key share a partition). A claim leases
//     whole partitions: while a partition is leased to one claim (until it
//     is completed, or its lease expires on the database's clock), no other
//     owner claims any of its events. Within a partition events are claimed
//     oldest first, in insert order; so events of a key are published in the
//     order they were written, even with many relays and across crashes,
//     while different partitions are relayed in parallel.
//   - A claim takes events from at most ceil(Partitions / live relays)
//     partitions, the ones whose oldest claimable event is oldest, so that
//     every live relay finds partitions to work on. A relay is live while it
//     has claimed within its last lease ([ClaimParams.Relay]). Concurrent
//     claims either wait for each other (a lock held for the claim
//     transaction: store/mysql, store/sqlite) or step over each other's
//     partitions (store/postgres); a claim that only met other claims must
//     not return empty-handed at once, or the relay would idle for a poll
//     interval with work waiting.
//   - An event waiting for its next attempt, and (with
//     [ClaimParams.BlockOnDead]) a dead event, blocks the later events of its
//     key, and only of its key: they are not claimed until it is delivered,
//     discarded or requeued. Events without a key block nothing.
//   - Two claims never hold the same event. Claiming does not count as an
//     attempt: attempts count failures, recorded by Complete.
//   - Claim and Complete are called with a context that has a deadline,
//     inside the claim's lease. A store must make the server give up by
//     then too, where the driver may not abort a call when the context
//     ends (lib/pq waits on a silent socket): a statement timeout, a lock
//     wait timeout, and a limit on how long the session may sit idle
//     inside the transaction, so that a relay cut off mid-transaction
//     cannot hold locks that stop other relays.
type RelayStore interface {
	// Claim leases partitions and up to params.Limit of their oldest
	// claimable events to params.Owner. It is called inside a transaction
	// that the relay commits right after, so tx is a *sql.Tx.
	Claim(ctx context.Context, tx DBTX, params ClaimParams) (*ClaimResult, error)
	// Complete records the outcome of a claim and gives its partitions up:
	// delivered events are deleted (or kept as delivered, when the store
	// keeps them for a retention period), failed ones scheduled for retry or
	// marked dead, released ones made claimable again. Only events and
	// partitions still leased to params.Owner are affected. It is called
	// inside a transaction that the relay commits right after.
	Complete(ctx context.Context, tx DBTX, params CompleteParams) (*CompleteResult, error)
}

// RelayTxOptioner is implemented by a store that wants the transactions in
// which the relay claims and completes begun with particular options.
// store/mysql asks for READ COMMITTED: InnoDB then takes no gap locks, which
// under REPEATABLE READ made concurrent relays and writers deadlock.
type RelayTxOptioner interface {
	// RelayTxOptions returns the options; nil means the driver's defaults.
	RelayTxOptions() *sql.TxOptions
}

// RelayConcurrencyLimiter is implemented by a store on which batches in
// flight at once do not pay: [NewRelay] lowers [RelayConfig.Concurrency] to
// the limit. store/sqlite returns 1: SQLite has one writer at a time, and a
// second batch loop would only take turns with the first while starving the
// application's writers of the write lock.
type RelayConcurrencyLimiter interface {
	// RelayConcurrencyLimit returns the most batches a relay should have in
	// flight at once, at least 1.
	RelayConcurrencyLimit() int
}

// ClaimParams are the arguments of [RelayStore.Claim].
type ClaimParams struct {
	// BlockOnDead makes a dead event block the later events of its key (see
	// [DeadBlocksKey]). When false, dead events are stepped over.
	BlockOnDead bool
	// Lease is how long the claim holds before another relay may take the
	// partitions over.
	Lease time.Duration
	// Limit is the most events to claim.
	Limit int
	// Nonce identifies the relay process: a random value of each
	// [Relay], recorded beside Relay. When Relay is recorded as live with
	// another non-empty nonce, another live process uses the same relay ID:
	// Claim then claims nothing and returns an error wrapping
	// [ErrRelayIDInUse], unless Restart is set. Empty skips the check.
	Nonce string
	// Owner names the claim. It must be unique per claim (the relay adds a
	// sequence number to its ID), since Complete matches on it.
	Owner string
	// OwnerPrefix, when not empty, lets the claim take over live leases whose
	// owner starts with it: the leases of an earlier run of a relay with the
	// same stable ID, which is known to be dead.
	OwnerPrefix string
	// Relay is the claiming relay's ID. The store records it as live for one
	// Lease, and shares the partitions among the live relays. Empty counts as
	// Owner (a relay claiming once).
	Relay string
	// Restart marks the first claim of a relay's run: a live record of Relay
	// with another Nonce is that of a predecessor that died, and the claim
	// replaces it instead of failing with [ErrRelayIDInUse]. (If it was in
	// fact a live twin, the twin's next claim fails.)
	Restart bool
}

// ClaimResult is what [RelayStore.Claim] returns.
type ClaimResult struct {
	// Events claimed: oldest first within each partition.
	Events []ClaimedEvent
}

// ClaimedEvent is an event as the relay sees it.
type ClaimedEvent struct {
	Event
	// Attempts counts the failed attempts to publish the event so far.
	Attempts int
	// Seq is the store's position of the event: within a partition, claims
	// return events in Seq order. It is what Complete takes.
	Seq int64
}

// CompleteParams are the arguments of [RelayStore.Complete]. An event may
// appear in at most one of the lists.
type CompleteParams struct {
	// Dead are events that failed for the last time: their attempt count
	// is incremented, their error recorded, and they are kept as dead events
	// (see [DeadLetterStore]).
	Dead []FailedEvent
	// Delivered are the seqs of the events published.
	Delivered []int64
	// Owner is the claim's owner, as given to Claim.
	Owner string
	// Released are the seqs of events given back unpublished, without
	// counting an attempt (the broker was down, or an earlier event of their
	// key failed): they can be claimed again at once.
	Released []int64
	// ReleaseError, when not empty, is recorded as the last error of the
	// released events.
	ReleaseError string
	// Retry are events that failed: their attempt count is incremented,
	// their error recorded, and they are not claimed again before their
	// Delay has passed (on the database's clock).
	Retry []FailedEvent
}

// FailedEvent is an event whose publication failed.
type FailedEvent struct {
	// Delay is how long to wait before the next attempt (Retry only).
	Delay time.Duration
	// Error is recorded as the event's last error.
	Error string
	// Seq identifies the event.
	Seq int64
}

// CompleteResult is what [RelayStore.Complete] returns.
type CompleteResult struct {
	// Delivered counts the delivered events that were still leased to the
	// owner. Fewer than len(Delivered) means the lease was lost: another
	// relay took the partition over and will publish those events again.
	Delivered int
}

// DeadEvent is an event that failed [RelayConfig.MaxAttempts] times and is
// no longer retried.
type DeadEvent struct {
	Event
	// Attempts counts the failed attempts.
	Attempts int
	// DiedAt is when the event was marked dead.
	DiedAt time.Time
	// LastError is the error of the last attempt.
	LastError string
	// Seq identifies the event for Requeue and Discard.
	Seq int64
}

// ListDeadParams are the arguments of [DeadLetterStore.ListDead].
type ListDeadParams struct {
	// AfterSeq lists the dead events with a larger Seq: pass the last Seq of
	// a page to get the next. 0 starts at the beginning.
	AfterSeq int64
	// Limit is the most events returned; 0 means 100.
	Limit int
	// Topic, when not empty, lists only that topic's dead events.
	Topic string
}

// DeadLetterStore lets operators see and act on dead events. The dialect
// stores implement it.
type DeadLetterStore interface {
	// ListDead returns dead events in Seq order.
	ListDead(ctx context.Context, db DBTX, params ListDeadParams) ([]DeadEvent, error)
	// Requeue makes the dead events among seqs pending again, with their
	// attempt count reset, and reports how many it requeued. A requeued event
	// keeps its place: it is published before the later events of its key.
	Requeue(ctx context.Context, db DBTX, seqs []int64) (int, error)
	// Discard deletes the dead events among seqs and reports how many it
	// deleted; the later events of their keys are then relayed.
	Discard(ctx context.Context, db DBTX, seqs []int64) (int, error)
}

// Purger deletes delivered events kept for a retention period. A store that
// keeps delivered events implements it and [Relay] calls it periodically.
type Purger interface {
	// Purge deletes up to limit delivered events older than the store's
	// retention period, oldest first, and reports how many it deleted.
	Purge(ctx context.Context, db DBTX, limit int) (int, error)
}
