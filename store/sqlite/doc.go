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
// works (its claim is one statement, which takes the write lock before it
// reads), but the application's transactions that read before they write
// may fail with SQLITE_BUSY; errors caused by a lock say so and name the
// setting that avoids them.
//
// # Table
//
// One table ([Config.Table], by default [DefaultTable]) holds the pending
// events. Its seq column, INTEGER PRIMARY KEY AUTOINCREMENT, is the rowid and
// the claim order, never reused; delivered events are deleted, so every row
// is pending and the rowid B-tree is all a claim needs. Timestamps are
// INTEGER microseconds since the Unix epoch (created_at in UTC,
// claimed_until on the database's clock). The table is STRICT, and CHECK
// constraints hold event_id, topic and event_key to the byte limits of
// [omnibox.Event] and metadata to valid JSON.
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
// [Store.Claim] is one statement: it reads the first Limit rows in seq order
// through the primary key, keeps those before the first row under another
// owner's live lease, and leases them. SQLite runs it under its single write
// lock, so claims are serialized without an advisory lock: a concurrent
// claim waits for the lock, then finds the head leased and returns nothing.
// A live lease at the head thus blocks every other relay, which keeps events
// in order with several relays and after a crash, and the claim reads about
// Limit rows whatever the size of the backlog.
//
// # Limits
//
// SQLite has one writer at a time. Several relays on one database file are
// correct but gain nothing: they take turns. All processes must run on one
// host, with the file on a local file system (WAL needs shared memory;
// network file systems are not supported).
package sqlite
