package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// busyTimeout is how long a connection opened by [Open] waits for a lock
// held by another connection before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// openParams are the DSN parameters of [Open], as modernc.org/sqlite reads
// them (it runs each _pragma on every new connection, busy_timeout first).
var openParams = strings.Join([]string{
	fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()),
	"_pragma=journal_mode(WAL)",
	"_pragma=synchronous(FULL)",
	"_pragma=foreign_keys(1)",
	"_txlock=immediate",
}, "&")

// Open opens the SQLite database file at path, creating it when missing,
// through the pure-Go driver modernc.org/sqlite (registered as "sqlite"; no
// cgo), with the settings the store relies on. Every connection of the
// returned pool gets:
//
//   - journal_mode=WAL: readers and the writer do not block each other, so
//     the relay's claims do not stall the application's reads. WAL is a
//     property of the file: it stays on for every later connection.
//   - busy_timeout=10000 (10s): a connection that finds another writing
//     waits for it instead of failing at once with SQLITE_BUSY. SQLite has
//     one writer at a time, so concurrent writers (the application, the
//     relay) take turns. Waiters poll the lock with growing sleeps (up to
//     100ms), in no order, so under heavy write contention one can wait
//     much longer than the others: the timeout is generous for that reason.
//     The wait also ends when the context of the call is done.
//   - _txlock=immediate: BeginTx starts BEGIN IMMEDIATE, which takes the write
//     lock up front. A deferred transaction that reads and then writes fails
//     with SQLITE_BUSY, without waiting, when another connection wrote in
//     between; an immediate one cannot. Transactions begun with
//     sql.TxOptions{ReadOnly: true} stay deferred and take no write lock.
//   - synchronous=FULL: each commit is on disk before it returns. With
//     NORMAL, a power loss or OS crash (not a crash of the process) may undo
//     the last commits; the relay may already have published their events,
//     which would leave a published event whose transaction never happened.
//   - foreign_keys=ON, for the application's own tables.
//
// Many goroutines writing at once: SQLite's busy handler is not fair. Under
// heavy write contention a waiter that sleeps long keeps losing the lock to
// newcomers and fails with SQLITE_BUSY after the timeout (seen with 8
// writing goroutines plus a relay, under the race detector). If your
// process writes from many goroutines, call db.SetMaxOpenConns(1): database/sql
// then queues them, each until its context ends, and the busy timeout only
// serves other processes. The price: a goroutine holding a transaction must
// not use the pool outside it (it would wait on itself), and reads outside
// transactions wait for the writer. Open leaves the pool unlimited because
// that price is yours to choose.
//
// Open checks the settings on one connection before it returns, so a file
// that cannot use WAL (on a file system without shared memory, say) is an
// error. path is a file path, absolute or relative to the working directory
// (made absolute now); it may hold any character. In-memory databases
// (":memory:") and URIs ("file:...") are refused: each pooled connection to
// ":memory:" would be a separate database, and an outbox that vanishes with
// the process is no outbox.
func Open(path string) (*sql.DB, error) {
	switch {
	case path == "":
		return nil, errors.New("sqlite: open: path is empty")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return nil, fmt.Errorf("sqlite: open %q: give the path of a database file; in-memory databases and URIs are not supported", path)
	case strings.ContainsRune(path, 0):
		return nil, fmt.Errorf("sqlite: open %q: path contains a NUL byte", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	db, err := sql.Open("sqlite", fileURI(abs)+"?"+openParams)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*busyTimeout)
	defer cancel()
	if err := checkDatabase(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	return db, nil
}

// fileURI returns the SQLite URI (https://sqlite.org/uri.html) of the file at
// the absolute path abs: "file://" and the path with the characters that a
// URI gives a meaning to ('%', '?', '#') percent-encoded.
func fileURI(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows drive: file:///C:/dir/db
	}
	var b strings.Builder
	b.WriteString("file://")
	for i := range len(p) {
		switch c := p[i]; c {
		case '%', '?', '#':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
