package sqlite_test

import (
	"cmp"
	"database/sql"
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/sqlite"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// inboxHarness runs the inbox conformance suite on a fresh database file per
// test, opened by open.
func inboxHarness(open func(t *testing.T) *sql.DB) storetest.InboxHarness {
	return storetest.InboxHarness{
		NewDB: open,
		NewOutboxStore: func(t *testing.T, _ *sql.DB) (storetest.Store, error) {
			t.Helper()
			s, err := sqlite.New(&sqlite.Config{})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		NewStore: func(t *testing.T, _ *sql.DB, table string) (storetest.InboxStore, error) {
			t.Helper()
			s, err := sqlite.NewInbox(&sqlite.InboxConfig{Table: table})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		SetProcessedAgo: func(t *testing.T, db *sql.DB, table string, p inbox.RecordParams, ago time.Duration) {
			t.Helper()
			setProcessedAgo(t, db, table, p, ago)
		},
	}
}

// setProcessedAgo sets the processed_at of p in the inbox table (validated
// names need no more than double quotes) to SQLite's clock minus ago, in
// microseconds since the epoch as the store stamps it.
func setProcessedAgo(t *testing.T, db *sql.DB, table string, p inbox.RecordParams, ago time.Duration) {
	t.Helper()
	table = `"` + cmp.Or(table, sqlite.DefaultInboxTable) + `"`
	res, err := db.ExecContext(t.Context(), "UPDATE "+table+
		" SET processed_at = "+sqlite.NowMicros+" - ? WHERE consumer = ? AND message_id = ?",
		ago.Microseconds(), p.Consumer, p.MessageID)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "no row for %+v", p)
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	// SQLite lets one transaction write at a time: a second delivery waits
	// in BeginTx (immediate transactions) or in its INSERT (deferred ones),
	// which the suite's concurrent cases allow as written.
	features := storetest.Features{NoClaimWhileWriting: true}

	t.Run("Open", func(t *testing.T) {
		t.Parallel()
		storetest.RunInbox(t, inboxHarness(func(t *testing.T) *sql.DB {
			db, _ := dbtest.SQLite(t)
			return db
		}), features)
	})

	// Without _txlock=immediate: Record, the first statement of its
	// transaction, takes the write lock before it reads.
	t.Run("DeferredTransactions", func(t *testing.T) {
		t.Parallel()
		storetest.RunInbox(t, inboxHarness(func(t *testing.T) *sql.DB {
			return openRaw(t, filepath.Join(t.TempDir(), "deferred.db"), "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
		}), features)
	})
}

func TestInboxConfig(t *testing.T) {
	t.Parallel()

	t.Run("NilConfig", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.NewInbox(nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
		require.Nil(t, s)
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, (&sqlite.InboxConfig{}).Validate())
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		up := s.Migrations()[0].Up
		require.Contains(t, up, `CREATE TABLE "omnibox_inbox" (`)
		require.Contains(t, up, `CREATE INDEX "omnibox_inbox_processed_at" ON "omnibox_inbox" (processed_at);`)
	})

	t.Run("InvalidNames", func(t *testing.T) {
		t.Parallel()
		bad := []string{
			" ", "Bad", "1x", "a-b", "x.y", "main.x", "omnibox inbox", "naïve", strings.Repeat("a", 100),
			"x;drop table y", `x"y`, "x'y", "x`y", "x]y", "x--", "x/*", "x\x00y",
			"sqlite_master", "sqlite_sequence", "sqlite_x",
		}
		for _, name := range bad {
			config := &sqlite.InboxConfig{Table: name}
			require.ErrorIs(t, config.Validate(), omnibox.ErrInvalidIdentifier, "%q", name)
			require.ErrorContains(t, config.Validate(), "InboxConfig.Table", "%q", name)
			s, err := sqlite.NewInbox(config)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "%q", name)
			require.Nil(t, s)
		}
	})
}

func TestInboxMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{Table: "seen"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 1)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_inbox", m.Name)
		require.Contains(t, m.Up, `CREATE TABLE "seen" (`)
		require.Contains(t, m.Up, `) STRICT;`)
		require.Contains(t, m.Up, `CREATE INDEX "seen_processed_at" ON "seen" (processed_at);`)
		require.NotContains(t, m.Up, "{{")
		require.NotContains(t, m.Up, "omnibox_inbox")
		require.Equal(t, "DROP TABLE IF EXISTS \"seen\";\n", m.Down)

		migrations[0].Up = "DROP TABLE x"
		require.Equal(t, m.Up, s.Migrations()[0].Up, "Migrations must return a copy")
	})

	// What a migration tool does: execute each file as it is.
	t.Run("FilesApplyAsTheyAre", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		ctx := t.Context()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{Table: "by_tool"})
		require.NoError(t, err)
		fsys := s.MigrationFS()
		names, err := fs.Glob(fsys, "*")
		require.NoError(t, err)
		require.Equal(t, []string{"0001_create_inbox.down.sql", "0001_create_inbox.up.sql"}, names)
		up, err := fs.ReadFile(fsys, "0001_create_inbox.up.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Up, string(up))
		_, err = db.ExecContext(ctx, string(up))
		require.NoError(t, err)
		p := inbox.RecordParams{Consumer: "c", MessageID: "m"}
		isNew, err := s.Record(ctx, db, p)
		require.NoError(t, err)
		require.True(t, isNew)

		down, err := fs.ReadFile(fsys, "0001_create_inbox.down.sql")
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, string(down))
		require.NoError(t, err)
		_, err = s.Processed(ctx, db, p)
		require.ErrorContains(t, err, "no such table")
	})

	t.Run("MigrateNilDB", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		require.ErrorIs(t, s.Migrate(t.Context(), nil), omnibox.ErrNilDB)
	})

	t.Run("RecordsVersions", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		require.NoError(t, s.Migrate(t.Context(), db))
		var (
			version, count int
			name           string
		)
		require.NoError(t, db.QueryRowContext(t.Context(),
			`SELECT max(version), max(name), count(*) FROM "omnibox_inbox_migrations"`).Scan(&version, &name, &count))
		require.Equal(t, 1, version)
		require.Equal(t, "create_inbox", name)
		require.Equal(t, 1, count)
	})

	t.Run("SettingsChecked", func(t *testing.T) {
		t.Parallel()
		db := openRaw(t, filepath.Join(t.TempDir(), "raw.db"), "")
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		err = s.Migrate(t.Context(), db)
		require.ErrorIs(t, err, sqlite.ErrDatabaseSettings)
	})

	t.Run("WithOutboxConcurrently", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		outbox, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		in, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 2 {
			wg.Go(func() { errs <- outbox.Migrate(t.Context(), db) })
			wg.Go(func() { errs <- in.Migrate(t.Context(), db) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	})
}

func TestInboxStore(t *testing.T) {
	t.Parallel()

	t.Run("NilExecutor", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		p := inbox.RecordParams{Consumer: "c", MessageID: "m"}
		_, err = s.Record(t.Context(), nil, p)
		require.ErrorIs(t, err, omnibox.ErrNilTx)
		_, err = s.Processed(t.Context(), nil, p)
		require.ErrorIs(t, err, omnibox.ErrNilDB)
		_, err = s.Purge(t.Context(), nil, inbox.PurgeParams{Limit: 1})
		require.ErrorIs(t, err, omnibox.ErrNilDB)
	})

	// processed_at is the database's clock, in microseconds since the epoch.
	t.Run("ProcessedAtIsTheDatabaseClock", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		ctx := t.Context()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, conn.Close()) }()

		const dbMillis = `CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)`
		var before, after, processedAt int64
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT "+dbMillis).Scan(&before))
		isNew, err := s.Record(ctx, conn, inbox.RecordParams{Consumer: "c", MessageID: "clock"})
		require.NoError(t, err)
		require.True(t, isNew)
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT "+dbMillis).Scan(&after))
		require.NoError(t, conn.QueryRowContext(ctx, `SELECT processed_at FROM "omnibox_inbox"`).Scan(&processedAt))
		require.Zero(t, processedAt%1000, "SQLite's clock has millisecond precision")
		require.GreaterOrEqual(t, processedAt, before*1000)
		require.LessOrEqual(t, processedAt, after*1000)
	})

	// The CHECK constraints hold the limits even for rows written around
	// the store.
	t.Run("TableChecksLimits", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		ctx := t.Context()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		for _, row := range [][2]string{
			{"", "m"}, {"c", ""}, {strings.Repeat("c", inbox.MaxConsumerLen+1), "m"}, {"c", strings.Repeat("é", inbox.MaxMessageIDLen/2+1)},
		} {
			_, err := db.ExecContext(ctx, `INSERT INTO "omnibox_inbox" (consumer, message_id, processed_at) VALUES (?, ?, 0)`, row[0], row[1])
			require.ErrorContains(t, err, "CHECK constraint failed", "%q", row)
		}
	})

	// Purge walks the processed_at index and deletes by rowid.
	t.Run("PurgeUsesTheIndex", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		ctx := t.Context()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+s.PurgeSQL(), 0, 100)
		require.NoError(t, err)
		defer rows.Close()
		var plan []string
		for rows.Next() {
			var id, parent, notUsed int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &notUsed, &detail))
			plan = append(plan, detail)
		}
		require.NoError(t, rows.Err())
		text := strings.Join(plan, "\n")
		t.Log(text)
		require.Contains(t, text, "USING COVERING INDEX omnibox_inbox_processed_at (processed_at<?)")
		require.Contains(t, text, "SEARCH omnibox_inbox USING INTEGER PRIMARY KEY (rowid=?)")
		require.NotContains(t, text, "TEMP B-TREE")
		require.NotContains(t, text, "SCAN omnibox_inbox")
	})

	// A transaction that read before it records, deferred, after another
	// connection wrote: SQLite refuses the write at once, and the error says
	// how to avoid it.
	t.Run("DeferredReadThenRecordHint", func(t *testing.T) {
		t.Parallel()
		db := openRaw(t, filepath.Join(t.TempDir(), "deferred.db"), "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
		ctx := t.Context()
		s, err := sqlite.NewInbox(&sqlite.InboxConfig{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		done, err := s.Processed(ctx, tx, inbox.RecordParams{Consumer: "c", MessageID: "m"})
		require.NoError(t, err)
		require.False(t, done)
		isNew, err := s.Record(ctx, db, inbox.RecordParams{Consumer: "c", MessageID: "other"})
		require.NoError(t, err)
		require.True(t, isNew)
		_, err = s.Record(ctx, tx, inbox.RecordParams{Consumer: "c", MessageID: "m"})
		require.Error(t, err)
		require.ErrorContains(t, err, "_txlock=immediate")
		require.False(t, errors.Is(err, inbox.ErrInvalid))
	})
}

// A table migrated by a newer omnibox (its migrations table records a
// version this release does not know) is refused, outbox and inbox alike,
// with an error naming the table, both versions and the fix.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := dbtest.SQLite(t)
	outbox, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)
	in, err := sqlite.NewInbox(&sqlite.InboxConfig{})
	require.NoError(t, err)
	for _, c := range []struct {
		table      string
		migrate    func() error
		migrations []sqlite.Migration
	}{
		{sqlite.DefaultTable, func() error { return outbox.Migrate(ctx, db) }, outbox.Migrations()},
		{sqlite.DefaultInboxTable, func() error { return in.Migrate(ctx, db) }, in.Migrations()},
	} {
		require.NoError(t, c.migrate())
		newest := c.migrations[len(c.migrations)-1].Version
		_, err := db.ExecContext(ctx, `INSERT INTO "`+c.table+`_migrations" (version, name) VALUES (?, ?)`, newest+5, "from_a_newer_omnibox")
		require.NoError(t, err)

		err = c.migrate()
		require.ErrorIs(t, err, omnibox.ErrSchemaTooNew)
		for _, want := range []string{c.table, "version " + strconv.Itoa(newest+5), "up to " + strconv.Itoa(newest), "upgrade github.com/omnibox-go/omnibox"} {
			require.ErrorContains(t, err, want)
		}
	}
}
