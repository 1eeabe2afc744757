package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/storetest"
)

var drivers = []string{"postgres", "pgx"}

// harness runs the conformance suite on the PostgreSQL test server through
// driver, each test in its own schema.
func harness(driver string) storetest.Harness {
	var schemas sync.Map // *sql.DB -> schema
	schemaOf := func(t *testing.T, db *sql.DB) string {
		t.Helper()
		schema, ok := schemas.Load(db)
		require.True(t, ok, "db was not made by NewDB")
		return schema.(string)
	}
	return storetest.Harness{
		LastError: func(t *testing.T, db *sql.DB, table string, seq int64) string {
			t.Helper()
			s, err := New(&Config{Schema: schemaOf(t, db), Table: table})
			require.NoError(t, err)
			var lastError sql.NullString
			require.NoError(t, db.QueryRowContext(t.Context(), "SELECT last_error FROM "+s.table+" WHERE seq = $1", seq).Scan(&lastError))
			return lastError.String
		},
		NewDB: func(t *testing.T) *sql.DB {
			t.Helper()
			db, schema := dbtest.Postgres(t, driver)
			schemas.Store(db, schema)
			t.Cleanup(func() { schemas.Delete(db) })
			return db
		},
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) {
			t.Helper()
			s, err := New(&Config{Schema: schemaOf(t, db), Table: table})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, harness(driver), storetest.Features{})
		})
	}
}

type testBundle struct {
	db     *sql.DB
	schema string
	store  *Store
}

// setup opens a fresh schema through driver and migrates a store on the
// default table in it.
func setup(t *testing.T, driver string) *testBundle {
	t.Helper()
	db, schema := dbtest.Postgres(t, driver)
	store, err := New(&Config{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(t.Context(), db))
	return &testBundle{db: db, schema: schema, store: store}
}

func TestConfig(t *testing.T) {
	t.Parallel()

	t.Run("NilConfig", func(t *testing.T) {
		t.Parallel()
		s, err := New(nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
		require.Nil(t, s)
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, (&Config{}).Validate())
		s, err := New(&Config{})
		require.NoError(t, err)
		require.Equal(t, `"omnibox_outbox"`, s.table)
		require.Contains(t, s.Migrations()[0].Up, `CREATE TABLE "omnibox_outbox" (`)
		require.NotContains(t, s.Migrations()[0].Up, "SCHEMA")
	})

	t.Run("InvalidNames", func(t *testing.T) {
		t.Parallel()
		bad := []string{" ", "Bad", "1x", "x;drop table y", "a-b", `x"y`, strings.Repeat("a", 100), "omnibox outbox", "x.y"}
		for _, name := range bad {
			for _, config := range []*Config{{Table: name}, {Schema: name}} {
				require.ErrorIs(t, config.Validate(), omnibox.ErrInvalidIdentifier, "%+v", config)
				s, err := New(config)
				require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "%+v", config)
				require.Nil(t, s)
			}
		}
		err := (&Config{Schema: "Bad"}).Validate()
		require.ErrorContains(t, err, "Config.Schema")
		err = (&Config{Table: "Bad"}).Validate()
		require.ErrorContains(t, err, "Config.Table")
	})
}

func TestMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{Schema: "app", Table: "events"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 1)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_outbox", m.Name)
		require.Contains(t, m.Up, `CREATE SCHEMA IF NOT EXISTS "app";`)
		require.Contains(t, m.Up, `CREATE TABLE "app"."events" (`)
		require.Contains(t, m.Up, `CONSTRAINT "events_event_id_key" UNIQUE (event_id)`)
		require.NotContains(t, m.Up, "{{")
		require.Equal(t, "DROP TABLE IF EXISTS \"app\".\"events\";\n", m.Down)

		// A copy: the caller cannot change the store's migrations.
		migrations[0].Up = "DROP TABLE x"
		require.Equal(t, m.Up, s.Migrations()[0].Up)
	})

	t.Run("MigrationFS", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{Schema: "app", Table: "events"})
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

	t.Run("MigrateNilDB", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{})
		require.NoError(t, err)
		require.ErrorIs(t, s.Migrate(t.Context(), nil), omnibox.ErrNilDB)
	})

	t.Run("RecordsVersionsAndCreatesSchema", func(t *testing.T) {
		t.Parallel()
		db, schema := dbtest.Postgres(t, "postgres")
		// A schema that does not exist yet, dropped with the test's schema
		// gone or not.
		sub := schema + "_sub"
		t.Cleanup(func() {
			_, err := db.ExecContext(context.WithoutCancel(t.Context()), `DROP SCHEMA IF EXISTS "`+sub+`" CASCADE`)
			require.NoError(t, err)
		})
		s, err := New(&Config{Schema: sub, Table: "outbox"})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		require.NoError(t, s.Migrate(t.Context(), db))

		var (
			version int
			name    string
			count   int
		)
		require.NoError(t, db.QueryRowContext(t.Context(),
			`SELECT max(version), max(name), count(*) FROM "`+sub+`"."outbox_migrations"`).Scan(&version, &name, &count))
		require.Equal(t, 1, version)
		require.Equal(t, "create_outbox", name)
		require.Equal(t, 1, count)
	})

	t.Run("TheDownMigrationDropsTheTable", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "pgx")
		_, err := b.db.ExecContext(t.Context(), b.store.Migrations()[0].Down)
		require.NoError(t, err)
		_, err = b.store.Pending(t.Context(), b.db)
		require.ErrorContains(t, err, "does not exist")
	})

	t.Run("UnqualifiedNamesFollowSearchPath", func(t *testing.T) {
		t.Parallel()
		_, schema := dbtest.Postgres(t, "postgres") // for its lifecycle only
		u, err := url.Parse(dbtest.PostgresURL())
		require.NoError(t, err)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		for _, driver := range drivers {
			db, err := sql.Open(driver, u.String())
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })

			s, err := New(&Config{Table: "unqualified_" + driver})
			require.NoError(t, err)
			require.NoError(t, s.Migrate(t.Context(), db))
			var inSchema bool
			require.NoError(t, db.QueryRowContext(t.Context(),
				"SELECT EXISTS (SELECT FROM pg_tables WHERE schemaname = $1 AND tablename = $2)", schema, "unqualified_"+driver).Scan(&inSchema))
			require.True(t, inSchema, "the table was not created in the search_path schema")
		}
	})

	t.Run("ReservedWordsAsNames", func(t *testing.T) {
		t.Parallel()
		db, schema := dbtest.Postgres(t, "pgx")
		s, err := New(&Config{Schema: schema, Table: "user"})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		insert(t, db, s, newEvents(1)...)
		require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 1)
	})
}

func TestClaim(t *testing.T) {
	t.Parallel()

	t.Run("InvalidParams", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "postgres")
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

	// While one claim's transaction is open, a concurrent claim returns
	// nothing rather than wait or read the same rows.
	t.Run("ConcurrentClaimReturnsNothing", func(t *testing.T) {
		t.Parallel()
		for _, driver := range drivers {
			b := setup(t, driver)
			ctx := t.Context()
			insert(t, b.db, b.store, newEvents(3)...)

			tx1, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx1.Rollback() }()
			res, err := b.store.Claim(ctx, tx1, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "a/1"})
			require.NoError(t, err)
			require.Len(t, res.Events, 1)

			tx2, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx2.Rollback() }()
			res, err = b.store.Claim(ctx, tx2, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "b/1"})
			require.NoError(t, err)
			require.Empty(t, res.Events)
			require.NoError(t, tx2.Rollback())

			require.NoError(t, tx1.Commit())
			// Once committed, the live lease at the head blocks others.
			require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "b/2"}))
		}
	})
}

func TestInsert(t *testing.T) {
	t.Parallel()

	// More events than one statement can carry: several chunks, in order,
	// and all or nothing within the transaction.
	t.Run("ChunkedInOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "postgres")
		ctx := t.Context()
		events := newEvents(2*maxInsertRows + 3)
		insert(t, b.db, b.store, events...)

		n, err := b.store.Pending(ctx, b.db)
		require.NoError(t, err)
		require.EqualValues(t, len(events), n)

		rows, err := b.db.QueryContext(ctx, "SELECT event_id FROM "+b.store.table+" ORDER BY seq")
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
		b := setup(t, "pgx")
		ctx := t.Context()
		events := newEvents(maxInsertRows + 2)
		events[len(events)-1].ID = events[0].ID

		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		err = b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events})
		require.ErrorIs(t, err, omnibox.ErrDuplicateEventID)
		require.ErrorContains(t, err, b.schema+".omnibox_outbox")
		require.NoError(t, tx.Rollback())

		n, err := b.store.Pending(ctx, b.db)
		require.NoError(t, err)
		require.Zero(t, n)
	})
}

// TestClaimReadsAboutLimitRows proves that a claim reads about Limit rows of
// the outbox table however large the backlog: EXPLAIN ANALYZE of the claim
// statement over a backlog of 1,000 and of 100,000 events touches the same
// number of rows, and no more than the statement's two primary-key lookups
// of Limit rows each. It checks the plan both with the parameters bound
// (custom plan, as the drivers' unnamed statements get) and as a generic
// plan (as a prepared statement may get after five executions).
func TestClaimReadsAboutLimitRows(t *testing.T) {
	t.Parallel()
	const limit = 100
	db, schema := dbtest.Postgres(t, "postgres")
	ctx := t.Context()

	touched := map[string]map[int]int{"custom": {}, "generic": {}}
	for _, backlog := range []int{1_000, 100_000} {
		s, err := New(&Config{Schema: schema, Table: fmt.Sprintf("backlog_%d", backlog)})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		_, err = db.ExecContext(ctx, `INSERT INTO `+s.table+` (event_id, topic, payload, created_at)
			SELECT 'event-' || g, 'topic', '\x00'::bytea, now() FROM generate_series(1, $1) g`, backlog)
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, "ANALYZE "+s.table)
		require.NoError(t, err)

		for _, mode := range []string{"custom", "generic"} {
			plan := explainClaim(t, db, s, mode, limit)
			n, claimed := rowsTouched(t, plan, fmt.Sprintf("backlog_%d", backlog))
			t.Logf("backlog %d, %s plan: %d rows touched, %d claimed\n%s", backlog, mode, n, claimed, indentJSON(plan))
			require.Equal(t, limit, claimed, "the claim must lease Limit events")
			require.LessOrEqual(t, n, 2*limit, "the claim read more than its two lookups of Limit rows")
			touched[mode][backlog] = n
		}
	}
	for mode, byBacklog := range touched {
		require.Equal(t, byBacklog[1_000], byBacklog[100_000], "%s plan: rows touched depend on the backlog", mode)
	}
}

// explainClaim runs EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the claim
// statement in a transaction that it rolls back, and returns the plan.
func explainClaim(t *testing.T, db *sql.DB, s *Store, mode string, limit int) []byte {
	t.Helper()
	ctx := t.Context()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	const explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
	var plan []byte
	switch mode {
	case "custom":
		require.NoError(t, tx.QueryRowContext(ctx, explain+s.claimSQL, limit, "", "explain/1", time.Minute.Microseconds()).Scan(&plan))
	case "generic":
		_, err = tx.ExecContext(ctx, "SET LOCAL plan_cache_mode = force_generic_plan")
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, "PREPARE omnibox_claim AS "+s.claimSQL)
		require.NoError(t, err)
		require.NoError(t, tx.QueryRowContext(ctx,
			fmt.Sprintf("%s EXECUTE omnibox_claim(%d, '', 'explain/2', %d)", explain, limit, time.Minute.Microseconds())).Scan(&plan))
		_, err = tx.ExecContext(ctx, "DEALLOCATE omnibox_claim")
		require.NoError(t, err)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	return plan
}

type planNode struct {
	ActualLoops         int        `json:"Actual Loops"`
	ActualRows          int        `json:"Actual Rows"`
	NodeType            string     `json:"Node Type"`
	Plans               []planNode `json:"Plans"`
	RelationName        string     `json:"Relation Name"`
	RowsRemovedByFilter int        `json:"Rows Removed by Filter"`
	RowsRemovedByRechk  int        `json:"Rows Removed by Index Recheck"`
}

// rowsTouched sums, over the scan nodes on table, the rows returned plus the
// rows removed by filters (EXPLAIN reports both per loop), and returns the
// rows the ModifyTable (Update) node updated. A sequential scan of the table
// fails the test.
func rowsTouched(t *testing.T, plan []byte, table string) (touched, claimed int) {
	t.Helper()
	var explained []struct {
		Plan planNode `json:"Plan"`
	}
	require.NoError(t, json.Unmarshal(plan, &explained))
	require.Len(t, explained, 1)
	var walk func(n planNode)
	walk = func(n planNode) {
		loops := max(n.ActualLoops, 1)
		switch {
		case n.NodeType == "ModifyTable":
			claimed = n.ActualRows * loops
		case n.RelationName == table:
			require.NotEqual(t, "Seq Scan", n.NodeType, "the claim scans the whole outbox table")
			touched += (n.ActualRows + n.RowsRemovedByFilter + n.RowsRemovedByRechk) * loops
		}
		for _, child := range n.Plans {
			walk(child)
		}
	}
	walk(explained[0].Plan)
	return touched, claimed
}

func indentJSON(b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

// claim runs one claim in a committed transaction.
func claim(t *testing.T, db *sql.DB, s *Store, p omnibox.ClaimParams) []omnibox.ClaimedEvent {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, err := s.Claim(t.Context(), tx, p)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	return res.Events
}

// insert writes events in one committed transaction.
func insert(t *testing.T, db *sql.DB, s *Store, events ...omnibox.Event) {
	t.Helper()
	storetest.Insert(t, db, s, events...)
}

func newEvents(n int) []omnibox.Event { return storetest.NumberedEvents(0, n) }

var ids = storetest.EventIDs
