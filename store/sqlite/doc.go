// Package sqlite is the SQLite store of the outbox: it writes events for
// [omnibox.Outbox] and claims them for [omnibox.Relay], in an embedded
// database file, with no server. It works through database/sql with the
// pure-Go driver modernc.org/sqlite (no cgo), which it imports, and needs
// SQLite 3.38 or later (the driver bundles a much newer one).
//
// # Usage
//
//	db, err := sqlite.Open("app.db")
//	if err != nil { ... }
//	store, err := sqlite.New(&sqlite.Config{})
//	if err != nil { ... }
//	if err := store.Migrate(ctx, db); err != nil { ... }
//	outbox, err := omnibox.New(store, &omnibox.Config{})
//	relay, err := omnibox.NewRelay(db, store, publisher, &omnibox.RelayConfig{})
//
// Open the database with [Open]: it sets WAL journal mode, a busy timeout,
// immediate transactions and synchronous=FULL, and documents why. Opening it
// otherwise, [Store.Migrate] refuses a database that is not in WAL mode or
// has no busy timeout, with an error wrapping [ErrDatabaseSettings] that
// says what to add to the DSN. Without _txlock=immediate the relay still
// works (the first statement of its claim and of its Complete writes, so
// each takes the write lock before it reads), but the application's
// transactions that read before they write may fail with SQLITE_BUSY;
// errors caused by a lock say so and name the setting that avoids them.
//
// # Tables
//
// One table ([Config.Table], by default [DefaultTable]) holds the events. Its
// seq column, INTEGER PRIMARY KEY AUTOINCREMENT, is the rowid and the claim
// order, never reused. Each event has a partition (part, from
// [omnibox.PartitionOf]) and a state: 0 pending, 1 waiting for a retry at
// next_attempt_at, 2 dead (dead_at), 3 delivered (delivered_at; kept only
// with [Config.Retention], deleted at once otherwise). Partial indexes
// serve the claim: (part, seq) over pending and waiting events, (part,
// event_key, seq) over waiting and dead ones, and delivered_at over
// delivered ones, for [Store.Purge]. Table + "_parts" holds the lease of
// each of the 64 partitions (claimed_by, claimed_until), Table + "_relays"
// the relays seen within their lease. Timestamps are INTEGER microseconds
// since the Unix epoch (created_at in UTC, the others on the database's
// clock, which SQLite reads to the millisecond). The tables are STRICT, and
// CHECK constraints hold event_id, topic and event_key to the byte limits
// of [omnibox.Event] and metadata to valid JSON.
//
// # Migrations
//
// [Store.Migrate] creates and upgrades the table, recording the applied
// versions in Table + "_migrations"; it is idempotent and safe to run from
// several processes at once. To use a migration tool instead, take the same
// SQL from [Store.MigrationFS] (golang-migrate file layout) or
// [Store.Migrations]. Configured names are validated and quoted before they
// reach any SQL. Version 2 adds the partitions, retries and retention:
// events pending when it runs go to partition 0, in their order, their
// leases dropped; stop the relays of the old version before it runs.
//
// # Claiming
//
// [Store.Claim] follows the contract of [omnibox.RelayStore]. SQLite's single
// write lock serializes claims: the claim's first statement records the
// relay as live, a write, so the claim holds the write lock before it reads
// anything (from the start of the transaction with _txlock=immediate, from
// that statement without it), and a concurrent claim waits for it and then
// sees its leases. It counts the live relays, picks the free partitions
// whose oldest claimable event is oldest (one probe of the pending index per
// partition), takes up to an equal share of the limit from each, oldest
// first (SQLite has no LATERAL join: a recursive CTE walks the partitions'
// events in seq order, one probe of the pending index per event, and stops
// at the limit), marks the events and leases the partitions that gave some.
// It reads about Limit rows of the pending index, plus a probe per free
// partition, whatever the size of the backlog. [Store.Complete] records the outcome and frees the partitions.
// Failed events wait for their retry, then dead events for an operator:
// [Store.ListDead], [Store.Requeue] and [Store.Discard].
//
// # Limits
//
// SQLite has one writer at a time. Several relays on one database file are
// correct (they share the partitions) but gain little: their claims and
// completions take turns, and only publishing runs in parallel; for the
// same reason a relay runs one batch at a time here
// ([Store.RelayConcurrencyLimit]). All
// processes must run on one host, with the file on a local file system (WAL
// needs shared memory; network file systems are not supported).
package sqlite
