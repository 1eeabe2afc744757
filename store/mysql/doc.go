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
// One table ([Config.Table], by default [DefaultTable]) holds the pending
// events. Its seq column, an auto-increment primary key, is the claim order;
// delivered events are deleted, so every row is pending and the primary key
// is all a claim needs. Leases live in claimed_by and claimed_until (UTC, on
// the database's clock); attempts and last_error record the relay's tries.
// event_id is VARBINARY(128), compared byte for byte; text columns are
// utf8mb4 with the utf8mb4_bin collation. A one-row table, Table + "_lock",
// serializes claims.
//
// # Migrations
//
// [Store.Migrate] creates and upgrades the tables, recording the applied
// versions in Table + "_migrations". MySQL's DDL is not transactional, so it
// runs under a named lock (GET_LOCK) on one connection, and every statement
// is idempotent: it is safe to run from several processes at once, and again
// after a failure. To use a migration tool instead, take the same SQL from
// [Store.MigrationFS] (golang-migrate file layout) or [Store.Migrations].
// Configured names are validated and quoted before they reach any SQL.
//
// # Claiming
//
// [Store.Claim] runs in the relay's transaction. It first locks the lock
// table's row with FOR UPDATE SKIP LOCKED; when another claim holds it, the
// claim returns nothing rather than wait. Then it reads the first Limit rows
// in seq order through the primary key without locking them (so it neither
// sees nor waits for uncommitted inserts), locks those before the first row
// under another owner's live lease, checks them again on their latest
// version and leases them. A live lease at the head thus blocks every other
// relay, which keeps events in order with several relays and after a crash,
// and the claim reads about Limit rows whatever the size of the backlog.
package mysql
