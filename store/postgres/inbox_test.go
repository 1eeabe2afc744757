package postgres

import (
	"context"
	"database/sql"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/migration"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// inboxHarness runs the inbox conformance suite on the PostgreSQL test
// server through driver, each test in its own schema.
func inboxHarness(driver string) storetest.InboxHarness {
	var schemas sync.Map // *sql.DB -> schema
	schemaOf := func(t *testing.T, db *sql.DB) string {
		t.Helper()
		schema, ok := schemas.Load(db)
		require.True(t, ok, "db was not made by NewDB")
		return schema.(string)
	}
	return storetest.InboxHarness{
		NewDB: func(t *testing.T) *sql.DB {
			t.Helper()
			db, schema := dbtest.Postgres(t, driver)
			schemas.Store(db, schema)
			t.Cleanup(func() { schemas.Delete(db) })
			return db
		},
		NewOutboxStore: func(t *testing.T, db *sql.DB) (storetest.Store, error) {
			t.Helper()
			s, err := New(&Config{Schema: schemaOf(t, db)})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.InboxStore, error) {
			t.Helper()
			s, err := NewInbox(&InboxConfig{Schema: schemaOf(t, db), Table: table})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		SetProcessedAgo: func(t *testing.T, db *sql.DB, table string, p inbox.RecordParams, ago time.Duration) {
			t.Helper()
			s, err := NewInbox(&InboxConfig{Schema: schemaOf(t, db), Table: table})
			require.NoError(t, err)
			res, err := db.ExecContext(t.Context(), "UPDATE "+s.table+" SET processed_at = statement_timestamp() - $1::bigint * interval '1 microsecond'"+
				" WHERE consumer = $2 AND message_id = $3", ago.Microseconds(), p.Consumer, p.MessageID)
			require.NoError(t, err)
			n, err := res.RowsAffected()
			require.NoError(t, err)
			require.EqualValues(t, 1, n, "no row for %+v", p)
		},
	}
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			storetest.RunInbox(t, inboxHarness(driver), storetest.Features{})
		})
	}
}

type inboxBundle struct {
	db     *sql.DB
	schema string
	store  *InboxStore
}

// setupInbox opens a fresh schema through driver and migrates an inbox store
// on the default table in it.
func setupInbox(t *testing.T, driver string) *inboxBundle {
	t.Helper()
	db, schema := dbtest.Postgres(t, driver)
	store, err := NewInbox(&InboxConfig{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(t.Context(), db))
	return &inboxBundle{db: db, schema: schema, store: store}
}

func TestInboxConfig(t *testing.T) {
	t.Parallel()

	t.Run("NilConfig", func(t *testing.T) {
		t.Parallel()
		s, err := NewInbox(nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
		require.Nil(t, s)
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, (&InboxConfig{}).Validate())
		s, err := NewInbox(&InboxConfig{})
		require.NoError(t, err)
		require.Equal(t, `"omnibox_inbox"`, s.table)
		up := s.Migrations()[0].Up
		require.Contains(t, up, `CREATE TABLE "omnibox_inbox" (`)
		require.Contains(t, up, `CONSTRAINT "omnibox_inbox_pkey" PRIMARY KEY (consumer, message_id)`)
		require.Contains(t, up, `CREATE INDEX "omnibox_inbox_processed_at" ON "omnibox_inbox" (processed_at);`)
		require.NotContains(t, up, "SCHEMA")
	})

	t.Run("InvalidNames", func(t *testing.T) {
		t.Parallel()
		bad := []string{" ", "Bad", "1x", "x;drop table y", "a-b", `x"y`, strings.Repeat("a", 100), "omnibox inbox", "x.y"}
		for _, name := range bad {
			for _, config := range []*InboxConfig{{Table: name}, {Schema: name}} {
				require.ErrorIs(t, config.Validate(), omnibox.ErrInvalidIdentifier, "%+v", config)
				s, err := NewInbox(config)
				require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "%+v", config)
				require.Nil(t, s)
			}
		}
		require.ErrorContains(t, (&InboxConfig{Schema: "Bad"}).Validate(), "InboxConfig.Schema")
		require.ErrorContains(t, (&InboxConfig{Table: "Bad"}).Validate(), "InboxConfig.Table")
	})
}

func TestInboxMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := NewInbox(&InboxConfig{Schema: "app", Table: "seen"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 1)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_inbox", m.Name)
		require.Contains(t, m.Up, `CREATE SCHEMA IF NOT EXISTS "app";`)
		require.Contains(t, m.Up, `CREATE TABLE "app"."seen" (`)
		require.Contains(t, m.Up, `CREATE INDEX "seen_processed_at" ON "app"."seen" (processed_at);`)
		require.NotContains(t, m.Up, "{{")
		require.Equal(t, "DROP TABLE IF EXISTS \"app\".\"seen\";\n", m.Down)

		migrations[0].Up = "DROP TABLE x"
		require.Equal(t, m.Up, s.Migrations()[0].Up, "Migrations must return a copy")
	})

	t.Run("MigrationFS", func(t *testing.T) {
		t.Parallel()
		s, err := NewInbox(&InboxConfig{Schema: "app"})
		require.NoError(t, err)
		fsys := s.MigrationFS()
		names, err := fs.Glob(fsys, "*")
		require.NoError(t, err)
		require.Equal(t, []string{"0001_create_inbox.down.sql", "0001_create_inbox.up.sql"}, names)
		up, err := fs.ReadFile(fsys, "0001_create_inbox.up.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Up, string(up))
		down, err := fs.ReadFile(fsys, "0001_create_inbox.down.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Down, string(down))
	})

	t.Run("MigrateNilDB", func(t *testing.T) {
		t.Parallel()
		s, err := NewInbox(&InboxConfig{})
		require.NoError(t, err)
		require.ErrorIs(t, s.Migrate(t.Context(), nil), omnibox.ErrNilDB)
	})

	t.Run("RecordsVersionsCreatesSchemaAndTheDownDrops", func(t *testing.T) {
		t.Parallel()
		db, schema := dbtest.Postgres(t, "pgx")
		sub := schema + "_inbox"
		t.Cleanup(func() {
			_, err := db.ExecContext(context.WithoutCancel(t.Context()), `DROP SCHEMA IF EXISTS "`+sub+`" CASCADE`)
			require.NoError(t, err)
		})
		s, err := NewInbox(&InboxConfig{Schema: sub})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		require.NoError(t, s.Migrate(t.Context(), db))
		var (
			version, count int
			name           string
		)
		require.NoError(t, db.QueryRowContext(t.Context(),
			`SELECT max(version), max(name), count(*) FROM "`+sub+`"."omnibox_inbox_migrations"`).Scan(&version, &name, &count))
		require.Equal(t, 1, version)
		require.Equal(t, "create_inbox", name)
		require.Equal(t, 1, count)

		_, err = db.ExecContext(t.Context(), s.Migrations()[0].Down)
		require.NoError(t, err)
		_, err = s.Processed(t.Context(), db, inbox.RecordParams{Consumer: "c", MessageID: "m"})
		require.ErrorContains(t, err, "does not exist")
	})

	// The outbox and the inbox migrate the same new schema at once.
	t.Run("WithOutboxIntoNewSchemaConcurrently", func(t *testing.T) {
		t.Parallel()
		db, schema := dbtest.Postgres(t, "postgres")
		sub := schema + "_both"
		t.Cleanup(func() {
			_, err := db.ExecContext(context.WithoutCancel(t.Context()), `DROP SCHEMA IF EXISTS "`+sub+`" CASCADE`)
			require.NoError(t, err)
		})
		outbox, err := New(&Config{Schema: sub})
		require.NoError(t, err)
		in, err := NewInbox(&InboxConfig{Schema: sub})
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
		s, err := NewInbox(&InboxConfig{})
		require.NoError(t, err)
		p := inbox.RecordParams{Consumer: "c", MessageID: "m"}
		_, err = s.Record(t.Context(), nil, p)
		require.ErrorIs(t, err, omnibox.ErrNilTx)
		_, err = s.Processed(t.Context(), nil, p)
		require.ErrorIs(t, err, omnibox.ErrNilDB)
		_, err = s.Purge(t.Context(), nil, inbox.PurgeParams{Limit: 1})
		require.ErrorIs(t, err, omnibox.ErrNilDB)
	})

	// processed_at comes from the database's clock (statement_timestamp),
	// whatever the session time zone.
	t.Run("ProcessedAtIsTheDatabaseClock", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t, "postgres")
		ctx := t.Context()
		conn, err := b.db.Conn(ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, conn.Close()) }()
		_, err = conn.ExecContext(ctx, "SET TIME ZONE 'Pacific/Kiritimati'")
		require.NoError(t, err)
		defer func() { _, _ = conn.ExecContext(ctx, "RESET TIME ZONE") }()

		p := inbox.RecordParams{Consumer: "c", MessageID: "clock"}
		var dbBefore, dbAfter, processedAt time.Time
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT clock_timestamp()").Scan(&dbBefore))
		isNew, err := b.store.Record(ctx, conn, p)
		require.NoError(t, err)
		require.True(t, isNew)
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT clock_timestamp()").Scan(&dbAfter))
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT processed_at FROM "+b.store.table+" WHERE message_id = $1", p.MessageID).Scan(&processedAt))
		require.False(t, processedAt.Before(dbBefore.Truncate(time.Microsecond)), "%s before %s", processedAt, dbBefore)
		require.False(t, processedAt.After(dbAfter), "%s after %s", processedAt, dbAfter)
	})

	// Record waits for the uncommitted row of another transaction on the
	// primary key; the server shows the wait as a lock wait, on a
	// transaction ID.
	t.Run("SecondRecordWaitsOnTheFirstTransaction", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t, "pgx")
		ctx := t.Context()
		p := inbox.RecordParams{Consumer: "c", MessageID: "wait"}
		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		isNew, err := b.store.Record(ctx, tx1, p)
		require.NoError(t, err)
		require.True(t, isNew)

		tx2, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx2.Rollback() }()
		var pid int
		require.NoError(t, tx2.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		done := make(chan bool, 1)
		go func() {
			isNew, err := b.store.Record(ctx, tx2, p)
			if err != nil {
				t.Errorf("second Record: %v", err)
			}
			done <- isNew
		}()
		// Poll the server until the second backend waits on a lock.
		require.Eventually(t, func() bool {
			var waiting bool
			err := b.db.QueryRowContext(ctx,
				"SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock' AND wait_event = 'transactionid')", pid).Scan(&waiting)
			return err == nil && waiting
		}, 10*time.Second, 10*time.Millisecond)
		require.NoError(t, tx1.Commit())
		require.False(t, <-done)
		require.NoError(t, tx2.Commit())
	})

	// Under REPEATABLE READ, a pair committed after the transaction took its
	// snapshot makes the INSERT fail with a serialization failure (40001),
	// as documented; it is never reported as new.
	t.Run("RepeatableReadSerializationFailure", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t, "postgres")
		ctx := t.Context()
		p := inbox.RecordParams{Consumer: "c", MessageID: "rr"}
		tx, err := b.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		done, err := b.store.Processed(ctx, tx, p) // takes the snapshot
		require.NoError(t, err)
		require.False(t, done)

		isNew, err := b.store.Record(ctx, b.db, p) // committed by another
		require.NoError(t, err)
		require.True(t, isNew)

		isNew, err = b.store.Record(ctx, tx, p)
		require.ErrorContains(t, err, "40001")
		require.False(t, isNew)
	})

	// Purge picks its rows through the processed_at index: EXPLAIN shows an
	// index scan, not a sequential scan of the table, and a bounded number
	// of rows whatever the table's size.
	t.Run("PurgeUsesTheIndex", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t, "postgres")
		ctx := t.Context()
		_, err := b.db.ExecContext(ctx, "INSERT INTO "+b.store.table+
			" (consumer, message_id, processed_at) SELECT 'c', 'm-' || g, timestamptz '2001-01-01' + g * interval '1 second' FROM generate_series(1, 20000) g")
		require.NoError(t, err)
		_, err = b.db.ExecContext(ctx, "ANALYZE "+b.store.table)
		require.NoError(t, err)

		// With the parameters bound (custom plan), and as a generic plan, as
		// a prepared statement may get after five executions.
		// Every row is older than twenty years.
		olderThan := (20 * 365 * 24 * time.Hour).Microseconds()
		for _, mode := range []string{"custom", "generic"} {
			tx, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback() }()
			var rows *sql.Rows
			if mode == "custom" {
				rows, err = tx.QueryContext(ctx, "EXPLAIN (ANALYZE, COSTS OFF) "+b.store.purgeSQL, olderThan, int64(100))
			} else {
				_, err = tx.ExecContext(ctx, "SET LOCAL plan_cache_mode = force_generic_plan")
				require.NoError(t, err)
				_, err = tx.ExecContext(ctx, "PREPARE omnibox_purge AS "+b.store.purgeSQL)
				require.NoError(t, err)
				rows, err = tx.QueryContext(ctx, "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE omnibox_purge("+strconv.FormatInt(olderThan, 10)+", 100)")
			}
			require.NoError(t, err)
			var plan []string
			for rows.Next() {
				var line string
				require.NoError(t, rows.Scan(&line))
				plan = append(plan, line)
			}
			require.NoError(t, rows.Err())
			text := strings.Join(plan, "\n")
			t.Logf("%s plan:\n%s", mode, text)
			require.Contains(t, text, "Index Scan using omnibox_inbox_processed_at", mode)
			require.Contains(t, text, "rows=100 ", mode)
			require.Contains(t, text, "Tid Scan", mode)
			require.NotContains(t, text, "Seq Scan", mode)
			require.NotContains(t, text, "Sort", mode)
			require.NoError(t, tx.Rollback())
		}
	})
}

// A table migrated by a newer omnibox (its migrations table records a
// version this release does not know) is refused, outbox and inbox alike,
// with an error naming the table, both versions and the fix.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, schema := dbtest.Postgres(t, "postgres")
	outbox, err := New(&Config{Schema: schema})
	require.NoError(t, err)
	in, err := NewInbox(&InboxConfig{Schema: schema})
	require.NoError(t, err)
	for _, m := range []*migrator{outbox.migrator, in.migrator} {
		require.NoError(t, m.migrate(ctx, db))
		newest := migration.Newest(m.migrations)
		_, err := db.ExecContext(ctx, m.tracking.Insert, newest+5, "from_a_newer_omnibox")
		require.NoError(t, err)

		err = m.migrate(ctx, db)
		require.ErrorIs(t, err, omnibox.ErrSchemaTooNew)
		for _, want := range []string{m.tableName, "version " + strconv.Itoa(newest+5), "up to " + strconv.Itoa(newest), "upgrade github.com/omnibox-go/omnibox"} {
			require.ErrorContains(t, err, want)
		}
	}
	// Still refused through the exported methods.
	require.ErrorIs(t, outbox.Migrate(ctx, db), omnibox.ErrSchemaTooNew)
	require.ErrorIs(t, in.Migrate(ctx, db), omnibox.ErrSchemaTooNew)
}
