package sqlite_test

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/sqlite"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// harness runs the conformance suite on a fresh database file per test,
// opened by open.
func harness(open func(t *testing.T) *sql.DB) storetest.Harness {
	return storetest.Harness{
		LastError: func(t *testing.T, db *sql.DB, table string, seq int64) string {
			t.Helper()
			s, err := sqlite.New(&sqlite.Config{Table: table})
			require.NoError(t, err)
			var lastError sql.NullString
			require.NoError(t, db.QueryRowContext(t.Context(), "SELECT last_error FROM "+s.QuotedTable()+" WHERE seq = ?", seq).Scan(&lastError))
			return lastError.String
		},
		NewDB: open,
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) {
			t.Helper()
			s, err := sqlite.New(&sqlite.Config{Table: table})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	// SQLite lets one transaction write at a time: a claim waits for any
	// transaction that wrote to end.
	features := storetest.Features{NoClaimWhileWriting: true}

	t.Run("Open", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, harness(func(t *testing.T) *sql.DB {
			db, _ := dbtest.SQLite(t)
			return db
		}), features)
	})

	// Without _txlock=immediate, BeginTx starts deferred transactions. The
	// claim does not depend on it: it is one statement, which takes the
	// write lock before it reads.
	t.Run("DeferredTransactions", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, harness(func(t *testing.T) *sql.DB {
			return openRaw(t, filepath.Join(t.TempDir(), "deferred.db"), "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
		}), features)
	})
}

// openRaw opens path with sql.Open and the DSN parameters params, not with
// sqlite.Open, and closes the handle when the test ends.
func openRaw(t *testing.T, path, params string) *sql.DB {
	t.Helper()
	dsn := path
	if params != "" {
		dsn += "?" + params
	}
	db, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	require.NoError(t, db.PingContext(t.Context()))
	return db
}

type testBundle struct {
	db    *sql.DB
	path  string
	store *sqlite.Store
}

// setup opens a fresh database and migrates a store on the default table.
func setup(t *testing.T) *testBundle {
	t.Helper()
	db, path := dbtest.SQLite(t)
	store, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(t.Context(), db))
	return &testBundle{db: db, path: path, store: store}
}

func TestConfig(t *testing.T) {
	t.Parallel()

	t.Run("NilConfig", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.New(nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
		require.Nil(t, s)
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, (&sqlite.Config{}).Validate())
		s, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		require.Equal(t, `"omnibox_outbox"`, s.QuotedTable())
		require.Contains(t, s.Migrations()[0].Up, `CREATE TABLE "omnibox_outbox" (`)
	})

	t.Run("InvalidNames", func(t *testing.T) {
		t.Parallel()
		bad := []string{
			" ", "Bad", "1x", "a-b", "x.y", "main.x", "omnibox outbox", "naïve", strings.Repeat("a", 100),
			// Injection attempts.
			"x;drop table y", `x"y`, "x'y", "x`y", "x]y", "x--", "x/*", "x\x00y",
			// Reserved by SQLite.
			"sqlite_master", "sqlite_sequence", "sqlite_x",
		}
		for _, name := range bad {
			config := &sqlite.Config{Table: name}
			require.ErrorIs(t, config.Validate(), omnibox.ErrInvalidIdentifier, "%q", name)
			require.ErrorContains(t, config.Validate(), "Config.Table", "%q", name)
			s, err := sqlite.New(config)
			require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "%q", name)
			require.Nil(t, s)
		}
		require.NoError(t, (&sqlite.Config{Table: "sqlitex"}).Validate())
	})
}

func TestMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.New(&sqlite.Config{Table: "events"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 1)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_outbox", m.Name)
		require.Contains(t, m.Up, `CREATE TABLE "events" (`)
		require.Contains(t, m.Up, `seq           INTEGER PRIMARY KEY AUTOINCREMENT,`)
		require.Contains(t, m.Up, `) STRICT;`)
		require.Contains(t, m.Up, `CREATE UNIQUE INDEX "events_event_id_key" ON "events" (event_id);`)
		require.NotContains(t, m.Up, "{{")
		require.NotContains(t, m.Up, "omnibox_outbox")
		require.Equal(t, "DROP TABLE IF EXISTS \"events\";\n", m.Down)

		// A copy: the caller cannot change the store's migrations.
		migrations[0].Up = "DROP TABLE x"
		require.Equal(t, m.Up, s.Migrations()[0].Up)
	})

	t.Run("MigrationFS", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.New(&sqlite.Config{Table: "events"})
		require.NoError(t, err)
		fsys := s.MigrationFS()
		names, err := fs.Glob(fsys, "*")
		require.NoError(t, err)
		require.Equal(t, []string{"0001_create_outbox.down.sql", "0001_create_outbox.up.sql"}, names)
		up, err := fs.ReadFile(fsys, "0001_create_outbox.up.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Up, string(up))
		down, err := fs.ReadFile(fsys, "0001_create_outbox.down.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Down, string(down))
	})

	// What a migration tool does: execute each file as it is.
	t.Run("FilesApplyAsTheyAre", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		s, err := sqlite.New(&sqlite.Config{Table: "by_tool"})
		require.NoError(t, err)
		up, err := fs.ReadFile(s.MigrationFS(), "0001_create_outbox.up.sql")
		require.NoError(t, err)
		_, err = db.ExecContext(t.Context(), string(up))
		require.NoError(t, err)
		insert(t, db, s, newEvents(2)...)
		require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 2)

		down, err := fs.ReadFile(s.MigrationFS(), "0001_create_outbox.down.sql")
		require.NoError(t, err)
		_, err = db.ExecContext(t.Context(), string(down))
		require.NoError(t, err)
		_, err = s.Pending(t.Context(), db)
		require.ErrorContains(t, err, "no such table")
	})

	t.Run("MigrateNilDB", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.New(&sqlite.Config{})
		require.NoError(t, err)
		require.ErrorIs(t, s.Migrate(t.Context(), nil), omnibox.ErrNilDB)
	})

	t.Run("RecordsVersions", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, b.store.Migrate(t.Context(), b.db))

		var (
			version   int
			name      string
			appliedAt string
			count     int
		)
		require.NoError(t, b.db.QueryRowContext(t.Context(),
			`SELECT max(version), max(name), max(applied_at), count(*) FROM "omnibox_outbox_migrations"`).Scan(&version, &name, &appliedAt, &count))
		require.Equal(t, 1, version)
		require.Equal(t, "create_outbox", name)
		require.Equal(t, 1, count)
		_, err := time.Parse(time.RFC3339Nano, appliedAt)
		require.NoError(t, err, "applied_at %q", appliedAt)
	})

	t.Run("TheDownMigrationDropsTheTable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.db.ExecContext(t.Context(), b.store.Migrations()[0].Down)
		require.NoError(t, err)
		_, err = b.store.Pending(t.Context(), b.db)
		require.ErrorContains(t, err, "no such table")
		var indexes int
		require.NoError(t, b.db.QueryRowContext(t.Context(), "SELECT count(*) FROM sqlite_schema WHERE type = 'index'").Scan(&indexes))
		require.Zero(t, indexes)
	})

	t.Run("KeywordsAsNames", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		for _, table := range []string{"order", "group", "select", "user"} {
			s, err := sqlite.New(&sqlite.Config{Table: table})
			require.NoError(t, err)
			require.NoError(t, s.Migrate(t.Context(), db))
			insert(t, db, s, newEvents(1)...)
			got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"})
			require.Len(t, got, 1)
			require.NoError(t, s.Release(t.Context(), db, omnibox.ReleaseParams{Owner: "a/1", Seqs: []int64{got[0].Seq}, Error: "x"}))
			n, err := s.MarkDelivered(t.Context(), db, omnibox.MarkDeliveredParams{Owner: "a/1", Seqs: []int64{got[0].Seq}})
			require.NoError(t, err)
			require.Zero(t, n)
		}
	})

	// The schema holds the limits of omnibox.Event even for rows written
	// without the outbox.
	t.Run("SchemaEnforcesLimits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ins := func(id, topic, key string, payload any, metadata string) error {
			_, err := b.db.ExecContext(t.Context(), `INSERT INTO "omnibox_outbox" (event_id, topic, event_key, payload, metadata, created_at) VALUES (?, ?, ?, ?, ?, 0)`,
				id, topic, key, payload, metadata)
			return err
		}
		require.NoError(t, ins(strings.Repeat("é", 64), strings.Repeat("t", 255), strings.Repeat("k", 255), []byte{}, `{"a":"b"}`), "at the limits")
		for _, c := range []struct {
			name string
			err  error
		}{
			{"event_id too long", ins(strings.Repeat("é", 64)+"x", "t", "", []byte{}, "{}")},
			{"empty event_id", ins("", "t", "", []byte{}, "{}")},
			{"topic too long", ins("a", strings.Repeat("t", 256), "", []byte{}, "{}")},
			{"empty topic", ins("b", "", "", []byte{}, "{}")},
			{"key too long", ins("c", "t", strings.Repeat("k", 256), []byte{}, "{}")},
			{"NULL payload", ins("d", "t", "", nil, "{}")},
			{"text payload", ins("e", "t", "", "text", "{}")},
			{"metadata not JSON", ins("f", "t", "", []byte{}, "{")},
		} {
			require.Error(t, c.err, c.name)
		}
		require.NoError(t, ins("Case", "t", "", []byte{}, "{}"))
		require.NoError(t, ins("case", "t", "", []byte{}, "{}"), "event IDs are case-sensitive")
		err := ins("case", "t", "", []byte{}, "{}")
		require.ErrorContains(t, err, "UNIQUE constraint failed: omnibox_outbox.event_id")
	})
}

func TestInsert(t *testing.T) {
	t.Parallel()

	// More events than one statement can carry: several chunks, in order,
	// and all or nothing within the transaction.
	t.Run("ChunkedInOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(2*sqlite.MaxInsertRows + 3)
		insert(t, b.db, b.store, events...)

		n, err := b.store.Pending(ctx, b.db)
		require.NoError(t, err)
		require.EqualValues(t, len(events), n)

		rows, err := b.db.QueryContext(ctx, `SELECT event_id FROM "omnibox_outbox" ORDER BY seq`)
		require.NoError(t, err)
		defer rows.Close()
		var got []string
		for rows.Next() {
			var id string
			require.NoError(t, rows.Scan(&id))
			got = append(got, id)
		}
		require.NoError(t, rows.Err())
		require.Equal(t, ids(events), got)
	})

	t.Run("DuplicateInLastChunkLeavesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(sqlite.MaxInsertRows + 2)
		events[len(events)-1].ID = events[0].ID

		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		err = b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events})
		require.ErrorIs(t, err, omnibox.ErrDuplicateEventID)
		require.ErrorContains(t, err, "omnibox_outbox")
		require.NoError(t, tx.Rollback())

		n, err := b.store.Pending(ctx, b.db)
		require.NoError(t, err)
		require.Zero(t, n)
	})

	// seq values are never reused, even once the newest events were
	// delivered and deleted.
	t.Run("SeqNeverReused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(3)...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"})
		require.Len(t, got, 3)
		n, err := b.store.MarkDelivered(t.Context(), b.db, omnibox.MarkDeliveredParams{Owner: "a/1", Seqs: seqsOf(got)})
		require.NoError(t, err)
		require.Equal(t, 3, n)

		insert(t, b.db, b.store, omnibox.Event{CreatedAt: time.Now().UTC(), ID: "after", Payload: []byte{}, Topic: "t"})
		again := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/2"})
		require.Len(t, again, 1)
		require.Greater(t, again[0].Seq, got[2].Seq)
	})
}

func TestClaim(t *testing.T) {
	t.Parallel()

	t.Run("InvalidParams", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, p := range []omnibox.ClaimParams{
			{Lease: time.Second, Limit: 0, Owner: "a"},
			{Lease: time.Second, Limit: -1, Owner: "a"},
			{Lease: 0, Limit: 1, Owner: "a"},
			{Lease: time.Nanosecond, Limit: 1, Owner: "a"},
			{Lease: time.Second, Limit: 1, Owner: ""},
		} {
			_, err := b.store.Claim(t.Context(), b.db, p)
			require.Error(t, err, "%+v", p)
		}
	})

	// While one claim's transaction is open, a concurrent claim waits for
	// it, then finds the head leased and returns nothing.
	t.Run("ConcurrentClaimWaitsThenFindsHeadLeased", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		insert(t, b.db, b.store, newEvents(3)...)

		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		res, err := b.store.Claim(ctx, tx1, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "a/1"})
		require.NoError(t, err)
		require.Len(t, res.Events, 1)

		type result struct {
			events []omnibox.ClaimedEvent
			err    error
		}
		done := make(chan result, 1)
		go func() {
			events, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "b/1"})
			done <- result{events, err}
		}()
		require.NoError(t, tx1.Commit())
		r := <-done
		require.NoError(t, r.err)
		require.Empty(t, r.events, "the second claim must see the first one's lease")
	})

	// The lease is kept to the microsecond: the database's clock has
	// millisecond precision, so claimed_until ends in the lease's
	// microseconds.
	t.Run("LeaseKeptToTheMicrosecond", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(1)...)
		lease := time.Minute + 123*time.Microsecond
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: lease, Limit: 1, Owner: "a/1"})
		require.Len(t, got, 1)
		var until int64
		require.NoError(t, b.db.QueryRowContext(t.Context(), `SELECT claimed_until FROM "omnibox_outbox" WHERE seq = ?`, got[0].Seq).Scan(&until))
		require.EqualValues(t, 123, until%1000)
	})
}

// claim runs one claim in a committed transaction.
func claim(t *testing.T, db *sql.DB, s *sqlite.Store, p omnibox.ClaimParams) []omnibox.ClaimedEvent {
	t.Helper()
	events, err := tryClaim(t.Context(), db, s, p)
	require.NoError(t, err)
	return events
}

func tryClaim(ctx context.Context, db *sql.DB, s *sqlite.Store, p omnibox.ClaimParams) ([]omnibox.ClaimedEvent, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	res, err := s.Claim(ctx, tx, p)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return res.Events, nil
}

// insert writes events in one committed transaction.
func insert(t *testing.T, db *sql.DB, s *sqlite.Store, events ...omnibox.Event) {
	t.Helper()
	storetest.Insert(t, db, s, events...)
}

func newEvents(n int) []omnibox.Event { return storetest.NumberedEvents(0, n) }

var ids = storetest.EventIDs

func seqsOf(events []omnibox.ClaimedEvent) []int64 {
	out := make([]int64, len(events))
	for i, ev := range events {
		out[i] = ev.Seq
	}
	return out
}
