package sqlite_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

func TestOpen(t *testing.T) {
	t.Parallel()

	// Every pooled connection gets the settings, not only the first.
	t.Run("SettingsOnEveryConnection", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		ctx := t.Context()
		var conns []*sql.Conn
		for range 3 {
			conn, err := db.Conn(ctx)
			require.NoError(t, err)
			conns = append(conns, conn)
		}
		for i, conn := range conns {
			var (
				journalMode                           string
				busyTimeout, synchronous, foreignKeys int
			)
			require.NoError(t, conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journalMode))
			require.NoError(t, conn.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busyTimeout))
			require.NoError(t, conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&synchronous))
			require.NoError(t, conn.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&foreignKeys))
			require.Equal(t, "wal", journalMode, "connection %d", i)
			require.Equal(t, 10_000, busyTimeout, "connection %d", i)
			require.Equal(t, 2, synchronous, "connection %d: synchronous must be FULL", i)
			require.Equal(t, 1, foreignKeys, "connection %d", i)
		}
		for _, conn := range conns {
			require.NoError(t, conn.Close())
		}
	})

	// BeginTx takes the write lock at once (BEGIN IMMEDIATE); a read-only
	// transaction takes none. Another handle without a busy timeout shows
	// it: its write fails at once while the lock is held.
	t.Run("TransactionsAreImmediate", func(t *testing.T) {
		t.Parallel()
		db, path := dbtest.SQLite(t)
		ctx := t.Context()
		other := openRaw(t, path, "")
		write := func() error {
			_, err := other.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
			return err
		}

		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		err = write()
		require.ErrorContains(t, err, "SQLITE_BUSY", "an empty transaction from BeginTx must hold the write lock")
		require.NoError(t, tx.Rollback())
		require.NoError(t, write())

		readOnly, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		require.NoError(t, err)
		var n int
		require.NoError(t, readOnly.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n))
		require.NoError(t, write(), "a read-only transaction must not hold the write lock")
		require.NoError(t, readOnly.Rollback())
	})

	// Any character may appear in the path: the URI escapes those it gives
	// a meaning to.
	t.Run("PathsAreEscaped", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "file:///a/b%3Fc%23d%25e f/ü.db", sqlite.FileURI("/a/b?c#d%e f/ü.db"))

		dir := filepath.Join(t.TempDir(), "we?ird #dir %41")
		require.NoError(t, os.Mkdir(dir, 0o755))
		path := filepath.Join(dir, "out?box#1 %2e näme's.db")
		db, err := sqlite.Open(path)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, db.Close()) })
		s, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))

		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		require.Contains(t, names, "out?box#1 %2e näme's.db", "the database file must have exactly the given name")
	})

	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"", ":memory:", "file:x.db", "file::memory:?cache=shared", "a\x00b"} {
			db, err := sqlite.Open(path)
			require.Error(t, err, "%q", path)
			require.Nil(t, db)
		}
		db, err := sqlite.Open(filepath.Join(t.TempDir(), "missing", "dir", "x.db"))
		require.Error(t, err, "a missing directory")
		require.Nil(t, db)
	})
}

// TestOpenRelativePath is not parallel: it changes the working directory.
func TestOpenRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	db, err := sqlite.Open("relative.db")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	_, err = os.Stat(filepath.Join(dir, "relative.db"))
	require.NoError(t, err)
}

// A database opened without sqlite.Open behaves as the package documents.
func TestWithoutOpenSettings(t *testing.T) {
	t.Parallel()

	t.Run("MigrateRefusesDefaults", func(t *testing.T) {
		t.Parallel()
		db := openRaw(t, filepath.Join(t.TempDir(), "plain.db"), "")
		s, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		err = s.Migrate(t.Context(), db)
		require.ErrorIs(t, err, sqlite.ErrDatabaseSettings)
		require.ErrorContains(t, err, `journal_mode is "delete"`)
		require.ErrorContains(t, err, "_pragma=journal_mode(WAL)")
		requireNoTable(t, db)
	})

	t.Run("MigrateRefusesNoBusyTimeout", func(t *testing.T) {
		t.Parallel()
		db := openRaw(t, filepath.Join(t.TempDir(), "wal.db"), "_pragma=journal_mode(WAL)")
		s, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		err = s.Migrate(t.Context(), db)
		require.ErrorIs(t, err, sqlite.ErrDatabaseSettings)
		require.ErrorContains(t, err, "busy_timeout is 0")
		require.ErrorContains(t, err, "_pragma=busy_timeout(5000)")
		requireNoTable(t, db)
	})

	t.Run("MigrateRefusesInMemory", func(t *testing.T) {
		t.Parallel()
		db, err := sql.Open("sqlite", ":memory:?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, db.Close()) })
		s, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		err = s.Migrate(t.Context(), db)
		require.ErrorIs(t, err, sqlite.ErrDatabaseSettings)
		require.ErrorContains(t, err, `journal_mode is "memory"`)
	})

	// Without a busy timeout, a write fails at once while another
	// connection holds the write lock, and the error says how to fix it.
	t.Run("NoBusyTimeoutFailsAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		raw := openRaw(t, b.path, "")
		insert(t, b.db, b.store, newEvents(1)...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: 3600e9, Limit: 1, Owner: "a/1"})
		require.Len(t, got, 1)

		holder, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = holder.Rollback() }()

		_, err = b.store.Complete(ctx, raw, omnibox.CompleteParams{Delivered: seqsOf(got), Owner: "a/1"})
		require.ErrorContains(t, err, "SQLITE_BUSY")
		require.ErrorContains(t, err, "busy_timeout")
		tx, err := raw.BeginTx(ctx, nil)
		require.NoError(t, err)
		err = b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{{CreatedAt: got[0].CreatedAt, ID: "x", Payload: []byte{}, Topic: "t"}}})
		require.ErrorContains(t, err, "busy_timeout")
		require.NoError(t, tx.Rollback())

		require.NoError(t, holder.Rollback())
		res, err := b.store.Complete(ctx, raw, omnibox.CompleteParams{Delivered: seqsOf(got), Owner: "a/1"})
		require.NoError(t, err)
		require.Equal(t, 1, res.Delivered)
	})

	// A deferred transaction that reads and then writes fails, without
	// waiting, when another connection wrote in between; the error says
	// how to fix it. With sqlite.Open's immediate transactions the other
	// writer waits instead, and both commit.
	t.Run("DeferredReadThenWrite", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		deferred := openRaw(t, b.path, "_pragma=busy_timeout(10000)")
		events := newEvents(4)

		tx, err := deferred.BeginTx(ctx, nil)
		require.NoError(t, err)
		_, err = b.store.Pending(ctx, tx) // the read: the transaction now has a snapshot
		require.NoError(t, err)
		insert(t, b.db, b.store, events[0]) // another connection writes
		err = b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events[1:2]})
		require.ErrorContains(t, err, "SQLITE_BUSY")
		require.ErrorContains(t, err, "_txlock=immediate")
		require.NoError(t, tx.Rollback())

		tx, err = b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = b.store.Pending(ctx, tx)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			other, err := b.db.BeginTx(ctx, nil) // waits for tx
			if err != nil {
				done <- err
				return
			}
			defer func() { _ = other.Rollback() }()
			if err := b.store.Insert(ctx, other, omnibox.InsertParams{Events: events[3:4]}); err != nil {
				done <- err
				return
			}
			done <- other.Commit()
		}()
		require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events[2:3]}))
		require.NoError(t, tx.Commit())
		require.NoError(t, <-done)
		n, err := b.store.Pending(ctx, b.db)
		require.NoError(t, err)
		require.EqualValues(t, 3, n)
	})
}

func requireNoTable(t *testing.T, db *sql.DB) {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRowContext(t.Context(), "SELECT count(*) FROM sqlite_schema").Scan(&n))
	require.Zero(t, n, "a refused Migrate must create nothing")
}
