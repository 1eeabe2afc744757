// Package mysql is the MySQL and MariaDB store of the outbox: it writes
// events for [omnibox.Outbox] and claims them for [omnibox.Relay]. It works
// through database/sql with github.com/go-sql-driver/mysql (which it
// imports, for its error type) and needs MySQL 8.0.16 or later or MariaDB
// 10.6 or later, with InnoDB tables.
//
// # Usage
//
//	store, err := mysql.New(&mysql.Config{})
//	if err != nil { ... }
//	if err := store.Migrate(ctx, db); err != nil { ... }
//	outbox, err := omnibox.New(store, &omnibox.Config{})
//	relay, err := omnibox.NewRelay(db, store, publisher, &omnibox.RelayConfig{})
//
// # DSN
//
// The store needs nothing of the DSN but what go-sql-driver/mysql does by
// default: a utf8mb4 connection with autocommit on. parseTime, loc,
// time_zone and interpolateParams may be set either way: times are written
// and read as UTC text, and leases use UTC_TIMESTAMP(6), not the session
// time zone. multiStatements is never needed. A connection with another
// character set, or with autocommit off, is refused by [Store.Migrate] and
// [Store.Claim] with an error that says how to fix the DSN.
//
// # Tables
//
// One table ([Config.Table], by default [DefaultTable]) holds the events.
// Its seq column, an auto-increment primary key, is the claim order. Each
// event has a partition (part, from [omnibox.PartitionOf]) and a state: 0
// pending, 1 waiting for a retry at next_attempt_at, 2 dead (dead_at), 3
// delivered (delivered_at; kept only with [Config.Retention], deleted at
// once otherwise). attempts counts the failed attempts and last_error keeps
// the last one. MySQL has no partial indexes, so two stored generated
// columns stand in for them: the claim walks the index (part, pending, seq),
// pending being 1 for states 0 and 1, so it never reads the delivered
// events kept for retention; the index (part, failed_key, state, seq),
// failed_key being the key of a waiting or dead event and NULL otherwise,
// finds the failed events that block the later events of their key; an
// index on delivered_at serves [Store.Purge]. Times are UTC DATETIME(6) on
// the database's clock (UTC_TIMESTAMP(6)). event_id and event_key are
// binary, compared byte for byte; the other text columns are utf8mb4 with
// the utf8mb4_bin collation. Table + "_parts" holds the lease of each of the
// 64 partitions (claimed_by, claimed_until), Table + "_relays" the relays
// seen within their lease, and the one-row Table + "_lock" serializes
// claims.
//
// # Migrations
//
// [Store.Migrate] creates and upgrades the tables, recording the applied
// versions in Table + "_migrations". MySQL's DDL is not transactional, so it
// runs under a named lock (GET_LOCK) on one connection, and every statement
// is idempotent (MySQL has no ADD COLUMN IF NOT EXISTS: such a change is one
// atomic ALTER TABLE, run through PREPARE only when information_schema shows
// it is missing): it is safe to run from several processes at once, and
// again after a failure. To use a migration tool instead, take the same SQL
// from [Store.MigrationFS] (golang-migrate file layout) or
// [Store.Migrations]. Configured names are validated and quoted before they
// reach any SQL. Version 2 adds the partitions, retries and retention (it
// rebuilds the table): events pending when it runs go to partition 0, in
// their order, their leases dropped; stop the relays of the old version
// before it runs.
//
// # Claiming
//
// [Store.Claim] follows the contract of [omnibox.RelayStore] and runs in
// the relay's transaction. It first locks the lock table's row with FOR
// UPDATE; when another claim holds it, the claim waits for it (claims take
// milliseconds). It records the relay as live, then one plain
// (non-locking) read finds, for each free partition, its oldest claimable
// event (a correlated subquery probing the pending index) and counts the
// live relays; it keeps the partitions whose oldest claimable event is
// oldest, as many as the live relays leave it. A second read takes up to an
// equal share of the limit from each (one UNION ALL branch per partition,
// an index range stopped by a LIMIT, since MariaDB has no LATERAL join).
// One UPDATE then leases the partitions and marks the events, checking
// again on the latest rows that they are free and pending, and a last read
// returns the events leased. The plain reads neither see nor wait for
// uncommitted inserts, and the claim reads about Limit index entries, plus
// a probe per free partition, whatever the size of the backlog.
// [Store.Complete] records the outcome and frees the partitions. Failed
// events wait for their retry, then dead events for an operator:
// [Store.ListDead], [Store.Requeue] and [Store.Discard].
package mysql
