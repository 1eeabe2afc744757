package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
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
		BackdateDelivered: func(t *testing.T, db *sql.DB, table string, seq int64, age time.Duration) bool {
			t.Helper()
			s, err := sqlite.New(&sqlite.Config{Table: table})
			require.NoError(t, err)
			// On the database's clock, as the store measures it.
			res, err := db.ExecContext(t.Context(), "UPDATE "+s.QuotedTable()+
				" SET delivered_at = CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000 - ?"+
				" WHERE seq = ? AND state = 3", age.Microseconds(), seq)
			require.NoError(t, err)
			n, err := res.RowsAffected()
			require.NoError(t, err)
			return n == 1
		},
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
		NewStoreWithRetention: func(t *testing.T, db *sql.DB, table string, retention time.Duration) (storetest.Store, error) {
			t.Helper()
			s, err := sqlite.New(&sqlite.Config{Retention: retention, Table: table})
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
	// transaction that wrote to end. It has no server that could end a
	// transaction whose relay stopped answering: that relay is the process
	// that holds the transaction.
	features := storetest.Features{NoClaimWhileWriting: true, NoServerSideGuards: true}

	// sqlite.Open's settings, with a longer busy timeout: the suite's
	// concurrent case runs 8 relays that write back to back, and SQLite's
	// busy handler, which is not fair, can keep one of them waiting for
	// longer than 10s on a loaded machine (see sqlite.Open).
	t.Run("Open", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, harness(func(t *testing.T) *sql.DB {
			return openRaw(t, filepath.Join(t.TempDir(), "outbox.db"), patientOpenParams(t))
		}), features)
	})

	// Without _txlock=immediate, BeginTx starts deferred transactions. The
	// claim does not depend on it: its first statement writes, so it takes
	// the write lock before the claim reads.
	t.Run("DeferredTransactions", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, harness(func(t *testing.T) *sql.DB {
			return openRaw(t, filepath.Join(t.TempDir(), "deferred.db"), "_pragma=busy_timeout(60000)&_pragma=journal_mode(WAL)")
		}), features)
	})
}

// patientOpenParams returns the DSN parameters of sqlite.Open with a busy
// timeout of 60s instead of 10s.
func patientOpenParams(t *testing.T) string {
	t.Helper()
	params := strings.Replace(sqlite.OpenParams, "_pragma=busy_timeout(10000)", "_pragma=busy_timeout(60000)", 1)
	require.NotEqual(t, sqlite.OpenParams, params, "sqlite.Open's busy timeout is not 10s any more")
	return params
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

	t.Run("NegativeRetention", func(t *testing.T) {
		t.Parallel()
		config := &sqlite.Config{Retention: -time.Second}
		require.ErrorContains(t, config.Validate(), "Config.Retention")
		s, err := sqlite.New(config)
		require.ErrorContains(t, err, "Config.Retention")
		require.Nil(t, s)
		require.NoError(t, (&sqlite.Config{Retention: time.Hour}).Validate())
	})
}

func TestMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := sqlite.New(&sqlite.Config{Table: "events"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 3)
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

		m2 := migrations[1]
		require.Equal(t, 2, m2.Version)
		require.Equal(t, "partitions_retries", m2.Name)
		require.Contains(t, m2.Up, `ALTER TABLE "events" ADD COLUMN part INTEGER NOT NULL DEFAULT 0`)
		require.Contains(t, m2.Up, `CREATE INDEX "events_pending_idx" ON "events" (part, seq) WHERE state IN (0, 1);`)
		require.Contains(t, m2.Up, `CREATE TABLE "events_parts" (`)
		require.Contains(t, m2.Up, `CREATE TABLE "events_relays" (`)
		require.Contains(t, m2.Down, `DROP TABLE IF EXISTS "events_parts";`)
		for _, m := range migrations {
			require.NotContains(t, m.Up+m.Down, "{{")
			require.NotContains(t, m.Up+m.Down, "omnibox_outbox")
		}

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
		require.Equal(t, []string{
			"0001_create_outbox.down.sql", "0001_create_outbox.up.sql",
			"0002_partitions_retries.down.sql", "0002_partitions_retries.up.sql",
			"0003_relay_nonce.down.sql", "0003_relay_nonce.up.sql",
		}, names)
		for _, m := range s.Migrations() {
			base := fmt.Sprintf("%04d_%s", m.Version, m.Name)
			up, err := fs.ReadFile(fsys, base+".up.sql")
			require.NoError(t, err)
			require.Equal(t, m.Up, string(up))
			down, err := fs.ReadFile(fsys, base+".down.sql")
			require.NoError(t, err)
			require.Equal(t, m.Down, string(down))
		}
	})

	// What a migration tool does: execute each file as it is.
	t.Run("FilesApplyAsTheyAre", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		s, err := sqlite.New(&sqlite.Config{Table: "by_tool"})
		require.NoError(t, err)
		ups, err := fs.Glob(s.MigrationFS(), "*.up.sql")
		require.NoError(t, err)
		for _, name := range ups {
			up, err := fs.ReadFile(s.MigrationFS(), name)
			require.NoError(t, err)
			_, err = db.ExecContext(t.Context(), string(up))
			require.NoError(t, err, name)
		}
		insert(t, db, s, newEvents(2)...)
		require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 2)

		downs, err := fs.Glob(s.MigrationFS(), "*.down.sql")
		require.NoError(t, err)
		slices.Reverse(downs)
		for _, name := range downs {
			down, err := fs.ReadFile(s.MigrationFS(), name)
			require.NoError(t, err)
			_, err = db.ExecContext(t.Context(), string(down))
			require.NoError(t, err, name)
		}
		_, err = s.Pending(t.Context(), db)
		require.ErrorContains(t, err, "no such table")
		requireNoSchema(t, db, "by_tool_migrations")
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
		require.Equal(t, 3, version)
		require.Equal(t, "relay_nonce", name)
		require.Equal(t, 3, count)
		_, err := time.Parse(time.RFC3339Nano, appliedAt)
		require.NoError(t, err, "applied_at %q", appliedAt)
	})

	t.Run("TheDownMigrationsDropEverything", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		migrations := b.store.Migrations()
		slices.Reverse(migrations)
		for _, m := range migrations {
			_, err := b.db.ExecContext(t.Context(), m.Down)
			require.NoError(t, err, "down %d", m.Version)
		}
		_, err := b.store.Pending(t.Context(), b.db)
		require.ErrorContains(t, err, "no such table")
		requireNoSchema(t, b.db, "omnibox_outbox_migrations")
	})

	// Events pending in a table of version 1 are kept by the upgrade (in
	// partition 0, in order, their lease dropped), and the downgrade keeps
	// the undelivered ones.
	t.Run("UpgradeAndDowngradeKeepEvents", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.SQLite(t)
		ctx := t.Context()
		s, err := sqlite.New(&sqlite.Config{Retention: time.Hour})
		require.NoError(t, err)
		v1 := s.Migrations()[0]
		_, err = db.ExecContext(ctx, v1.Up)
		require.NoError(t, err)
		for i, id := range []string{"old-1", "old-2", "old-3"} {
			_, err = db.ExecContext(ctx, `INSERT INTO "omnibox_outbox" (event_id, topic, event_key, payload, created_at, attempts, claimed_by, claimed_until)
				VALUES (?, 't', ?, x'', 0, ?, 'gone/1', 9000000000000000)`, id, fmt.Sprint("key-", i%2), i)
			require.NoError(t, err)
		}
		// The tracking table, as Migrate would have left it after version 1.
		_, err = db.ExecContext(ctx, `CREATE TABLE "omnibox_outbox_migrations" (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT '') STRICT;
			INSERT INTO "omnibox_outbox_migrations" (version, name) VALUES (1, 'create_outbox')`)
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))

		requirePending(t, db, s, 3)
		got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"})
		require.Equal(t, []string{"old-1", "old-2", "old-3"}, claimedIDs(got))
		require.Equal(t, []int{0, 1, 2}, []int{got[0].Attempts, got[1].Attempts, got[2].Attempts})
		var elsewhere int
		require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM "omnibox_outbox" WHERE part <> 0`).Scan(&elsewhere))
		require.Zero(t, elsewhere, "events written before the upgrade are in partition 0")
		storetest.Complete(t, db, s, omnibox.CompleteParams{Delivered: []int64{got[0].Seq}, Owner: "a/1", Released: []int64{got[1].Seq, got[2].Seq}})

		_, err = db.ExecContext(ctx, s.Migrations()[1].Down)
		require.NoError(t, err)
		var ids []string
		rows, err := db.QueryContext(ctx, `SELECT event_id FROM "omnibox_outbox" WHERE claimed_until IS NULL ORDER BY seq`)
		require.NoError(t, err)
		for rows.Next() {
			var id string
			require.NoError(t, rows.Scan(&id))
			ids = append(ids, id)
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		require.Equal(t, []string{"old-2", "old-3"}, ids, "the delivered event is dropped, the others kept")
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
			storetest.Complete(t, db, s, omnibox.CompleteParams{Owner: "a/1", Released: []int64{got[0].Seq}, ReleaseError: "x"})
			res := storetest.Complete(t, db, s, omnibox.CompleteParams{Owner: "a/1", Delivered: []int64{got[0].Seq}})
			require.Zero(t, res.Delivered)
			got = claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/2"})
			require.Len(t, got, 1)
			storetest.Complete(t, db, s, omnibox.CompleteParams{Owner: "a/2", Dead: []omnibox.FailedEvent{{Seq: got[0].Seq, Error: "x"}}})
			dead, err := s.ListDead(t.Context(), db, omnibox.ListDeadParams{})
			require.NoError(t, err)
			require.Len(t, dead, 1)
			n, err := s.Requeue(t.Context(), db, []int64{dead[0].Seq})
			require.NoError(t, err)
			require.Equal(t, 1, n)
			_, err = s.Purge(t.Context(), db, 10)
			require.NoError(t, err)
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
		res := storetest.Complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "a/1", Delivered: seqsOf(got)})
		require.Equal(t, 3, res.Delivered)

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
	// it, then finds the partition leased and returns nothing.
	t.Run("ConcurrentClaimWaitsThenFindsPartitionLeased", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(3)
		for i := range events {
			events[i].Key = "one-key"
		}
		insert(t, b.db, b.store, events...)

		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		res, err := b.store.Claim(ctx, tx1, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "a/1", Relay: "a"})
		require.NoError(t, err)
		require.Len(t, res.Events, 1)

		type result struct {
			events []omnibox.ClaimedEvent
			err    error
		}
		done := make(chan result, 1)
		go func() {
			events, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "b/1", Relay: "b"})
			done <- result{events, err}
		}()
		require.NoError(t, tx1.Commit())
		r := <-done
		require.NoError(t, r.err)
		require.Empty(t, r.events, "the second claim must see the first one's lease")
	})

	// Given the pool rather than a transaction, Claim runs in a transaction
	// of its own: its statements cannot interleave with another claim's.
	t.Run("OnTheDatabase", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(3)
		for i := range events {
			events[i].Key = "one-key"
		}
		insert(t, b.db, b.store, events...)
		res, err := b.store.Claim(ctx, b.db, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "a/1"})
		require.NoError(t, err)
		require.Equal(t, []string{events[0].ID}, claimedIDs(res.Events))
		res, err = b.store.Claim(ctx, b.db, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "b/1"})
		require.NoError(t, err)
		require.Empty(t, res.Events, "the partition is leased to a/1")
	})

	// Events of many keys, one claim of all of them: every partition that
	// gave events is leased to the owner, the others stay free.
	t.Run("LeasesThePartitionsThatGaveEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(20)
		for i := range events {
			events[i].Key = storetest.KeyInPartition("k", i%5)
		}
		insert(t, b.db, b.store, events...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 100, Owner: "a/1"})
		require.Len(t, got, 20)
		var leased []int
		rows, err := b.db.QueryContext(ctx, `SELECT part FROM "omnibox_outbox_parts" WHERE claimed_by = 'a/1' ORDER BY part`)
		require.NoError(t, err)
		for rows.Next() {
			var part int
			require.NoError(t, rows.Scan(&part))
			leased = append(leased, part)
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		require.Equal(t, []int{0, 1, 2, 3, 4}, leased)
		storetest.Complete(t, b.db, b.store, omnibox.CompleteParams{Delivered: seqsOf(got), Owner: "a/1"})
		var n int
		require.NoError(t, b.db.QueryRowContext(ctx, `SELECT count(*) FROM "omnibox_outbox_parts" WHERE claimed_by IS NOT NULL OR claimed_until IS NOT NULL`).Scan(&n))
		require.Zero(t, n, "Complete frees the partitions")
		requirePending(t, b.db, b.store, 0)
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
		require.NoError(t, b.db.QueryRowContext(t.Context(), `SELECT claimed_until FROM "omnibox_outbox_parts" WHERE part = ?`,
			omnibox.PartitionOf(&got[0].Event)).Scan(&until))
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

func claimedIDs(events []omnibox.ClaimedEvent) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}

func requirePending(t *testing.T, db *sql.DB, s *sqlite.Store, want int64) {
	t.Helper()
	n, err := s.Pending(t.Context(), db)
	require.NoError(t, err)
	require.Equal(t, want, n, "pending events")
}

// requireNoSchema requires db to hold no table, index or trigger but the
// migrations table named keep.
func requireNoSchema(t *testing.T, db *sql.DB, keep string) {
	t.Helper()
	var left []string
	rows, err := db.QueryContext(t.Context(), "SELECT name FROM sqlite_schema WHERE name NOT IN (?, 'sqlite_sequence') ORDER BY name", keep)
	require.NoError(t, err)
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		left = append(left, name)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	require.Empty(t, left, "left after the down migrations")
}

func seqsOf(events []omnibox.ClaimedEvent) []int64 {
	out := make([]int64, len(events))
	for i, ev := range events {
		out[i] = ev.Seq
	}
	return out
}
