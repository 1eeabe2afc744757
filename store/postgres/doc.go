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
// One table ([Config.Table], by default [DefaultTable]) holds the pending
// events. Its seq column, an identity primary key, is the claim order;
// delivered events are deleted, so every row is pending and the primary key
// index is all a claim needs. Leases live in claimed_by and claimed_until;
// attempts and last_error record the relay's tries.
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
// [Store.Claim] runs in the relay's transaction. It first takes a
// transaction-level advisory lock for the table (pg_try_advisory_xact_lock);
// when another claim holds it, the claim returns nothing rather than wait.
// Then one statement reads the first Limit rows in seq order through the
// primary key, keeps those before the first row under another owner's live
// lease, and leases them. A live lease at the head thus blocks every other
// relay, which keeps events in order with several relays and after a crash,
// and the claim reads about Limit rows whatever the size of the backlog.
//
// The advisory lock keys are derived from the configured schema and table
// names. With an empty [Config.Schema], outbox tables of the same name in
// different schemas share their keys: claims on them then exclude each
// other, which is correct but slower. Set Schema to avoid it.
package postgres
