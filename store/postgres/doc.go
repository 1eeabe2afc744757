// Package postgres is the PostgreSQL store of the outbox: it writes events
// for [omnibox.Outbox] and claims them for [omnibox.Relay]. It works through
// database/sql with either github.com/lib/pq or github.com/jackc/pgx/v5/stdlib
// (import the driver you use; this package imports neither) and needs
// PostgreSQL 11 or later.
//
// # Usage
//
//	store, err := postgres.New(&postgres.Config{Schema: "app"})
//	if err != nil { ... }
//	if err := store.Migrate(ctx, db); err != nil { ... }
//	outbox, err := omnibox.New(store, &omnibox.Config{})
//	relay, err := omnibox.NewRelay(db, store, publisher, &omnibox.RelayConfig{})
//
// # Table
//
// One table ([Config.Table], by default [DefaultTable]) holds the events. Its
// seq column, an identity primary key, is the claim order within a
// partition; part is the event's partition ([omnibox.PartitionOf]) and
// state says whether it is pending (0), waiting for a retry at
// next_attempt_at (1), dead (2, since dead_at) or delivered (3, since
// delivered_at, kept only with a [Config.Retention]). attempts and
// last_error record the failures. Partial indexes serve the claim: (part,
// seq) over pending and waiting events, (part, event_key, seq) over failed
// ones. Table + "_parts" has a row per partition with its lease (claimed_by,
// claimed_until) and the seqs the claim holding it took (claimed_seqs), and
// Table + "_relays" the relays seen claiming within their lease.
//
// # Migrations
//
// [Store.Migrate] creates and upgrades the table, recording the applied
// versions in Table + "_migrations"; it is idempotent and safe to run from
// several processes at once. To use a migration tool instead, take the same
// SQL from [Store.MigrationFS] (golang-migrate file layout) or
// [Store.Migrations]. Configured names are validated and quoted before they
// reach any SQL.
//
// # Claiming
//
// [Store.Claim] runs in the relay's transaction, at READ COMMITTED
// ([Store.RelayTxOptions]); claims run concurrently. It records the relay as
// live and counts the others, then one statement takes, among the partitions
// not leased to another live claim, the ones whose oldest claimable event is
// oldest (at most 64 / live relays), locking each with FOR UPDATE SKIP
// LOCKED provided its row did not change since the statement's snapshot, the
// oldest claimable events of each up to a share of Limit, and leases those
// partitions. A leased partition is claimed by no one else until
// [Store.Complete] gives it up or the lease expires, which keeps each key's
// events in order with several relays and after a crash, while the
// partitions are relayed in parallel. The claim reads about Limit rows
// (plus one per partition) whatever the size of the backlog, as long as no
// large backlog of one key waits behind a failed event of that key: those
// events are read, and stepped over, by every claim.
//
// The migrations' advisory lock keys are derived from the configured schema
// and table names. With an empty [Config.Schema], outbox tables of the same
// name in different schemas share their keys: their migrations then exclude
// each other, which is correct but slower. Set Schema to avoid it.
package postgres
