package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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
	newStore := func(t *testing.T, db *sql.DB, table string, retention time.Duration) (storetest.Store, error) {
		t.Helper()
		s, err := New(&Config{Retention: retention, Schema: schemaOf(t, db), Table: table})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return storetest.Harness{
		BackdateDelivered: func(t *testing.T, db *sql.DB, table string, seq int64, age time.Duration) bool {
			t.Helper()
			s, err := New(&Config{Schema: schemaOf(t, db), Table: table})
			require.NoError(t, err)
			r, err := db.ExecContext(t.Context(), "UPDATE "+s.table+
				" SET delivered_at = statement_timestamp() - $2::bigint * interval '1 microsecond' WHERE seq = $1 AND state = 3",
				seq, age.Microseconds())
			require.NoError(t, err)
			n, err := r.RowsAffected()
			require.NoError(t, err)
			return n == 1
		},
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
			return newStore(t, db, table, 0)
		},
		NewStoreWithRetention: newStore,
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
		require.Len(t, migrations, 4)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_outbox", m.Name)
		require.Contains(t, m.Up, `CREATE SCHEMA IF NOT EXISTS "app";`)
		require.Contains(t, m.Up, `CREATE TABLE "app"."events" (`)
		require.Contains(t, m.Up, `CONSTRAINT "events_event_id_key" UNIQUE (event_id)`)
		require.NotContains(t, m.Up, "{{")
		require.Equal(t, "DROP TABLE IF EXISTS \"app\".\"events\";\n", m.Down)

		m2 := migrations[1]
		require.Equal(t, 2, m2.Version)
		require.Equal(t, "partitions_retries", m2.Name)
		for _, want := range []string{
			`ALTER TABLE "app"."events"`,
			`CREATE TABLE "app"."events_parts" (`,
			`CREATE TABLE "app"."events_relays" (`,
			`CREATE INDEX "events_pending_idx" ON "app"."events" (part, seq) WHERE state IN (0, 1);`,
			`ADD CONSTRAINT "events_part_check" CHECK (part BETWEEN 0 AND 63)`,
		} {
			require.Contains(t, m2.Up, want)
		}
		require.Contains(t, m2.Down, `DROP TABLE IF EXISTS "app"."events_parts";`)
		for _, m := range migrations {
			require.NotContains(t, m.Up+m.Down, "{{")
		}

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
		require.Equal(t, []string{
			"0001_create_outbox.down.sql", "0001_create_outbox.up.sql",
			"0002_partitions_retries.down.sql", "0002_partitions_retries.up.sql",
			"0003_claim_in_parts.down.sql", "0003_claim_in_parts.up.sql",
			"0004_relay_nonce.down.sql", "0004_relay_nonce.up.sql",
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
		require.Equal(t, 4, version)
		require.Equal(t, "relay_nonce", name) // max(name)
		require.Equal(t, 4, count)
	})

	t.Run("TheDownMigrationsDropTheTables", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "pgx")
		migrations := b.store.Migrations()
		for _, m := range slices.Backward(migrations) {
			_, err := b.db.ExecContext(t.Context(), m.Down)
			require.NoError(t, err, "down migration %d", m.Version)
		}
		_, err := b.store.Pending(t.Context(), b.db)
		require.ErrorContains(t, err, "does not exist")
		var tables int
		require.NoError(t, b.db.QueryRowContext(t.Context(),
			"SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'omnibox_outbox%' AND tablename <> 'omnibox_outbox_migrations'", b.schema).Scan(&tables))
		require.Zero(t, tables, "a table of the outbox is left")
	})

	// Events written before the upgrade to version 2 are put in their
	// partition (as PartitionOf computes it), so that a key's events keep
	// their order across the upgrade; version 2 reverts to version 1 and
	// back.
	t.Run("UpgradeFromVersion1", func(t *testing.T) {
		t.Parallel()
		db, schema := dbtest.Postgres(t, "postgres")
		ctx := t.Context()
		s, err := New(&Config{Schema: schema})
		require.NoError(t, err)
		v1, v2, v3, v4 := s.Migrations()[0], s.Migrations()[1], s.Migrations()[2], s.Migrations()[3]
		_, err = db.ExecContext(ctx, v1.Up)
		require.NoError(t, err)

		// Written by the previous version: claimed once (attempts counted
		// claims), one still claimed.
		old := newEvents(6)
		for i, key := range []string{"", "ключ-🔑", "a", "", "a", "b"} {
			old[i].Key = key
		}
		for _, ev := range old {
			_, err := db.ExecContext(ctx, "INSERT INTO "+s.table+` (event_id, topic, event_key, payload, created_at, attempts, claimed_by, claimed_until)
				VALUES ($1, $2, $3, $4, $5, 1, 'old/1', now() + interval '1 hour')`, ev.ID, ev.Topic, ev.Key, ev.Payload, ev.CreatedAt)
			require.NoError(t, err)
		}
		_, err = db.ExecContext(ctx, v2.Up+v3.Up+v4.Up)
		require.NoError(t, err)

		rows, err := db.QueryContext(ctx, "SELECT event_id, event_key, part, state, attempts FROM "+s.table+" ORDER BY seq")
		require.NoError(t, err)
		defer rows.Close()
		var n int
		for rows.Next() {
			var (
				ev                    omnibox.Event
				part, state, attempts int
			)
			require.NoError(t, rows.Scan(&ev.ID, &ev.Key, &part, &state, &attempts))
			require.Equal(t, old[n].ID, ev.ID)
			require.Equal(t, omnibox.PartitionOf(&ev), part, "partition of %s (key %q)", ev.ID, ev.Key)
			require.Zero(t, state)
			require.Zero(t, attempts)
			n++
		}
		require.NoError(t, rows.Err())
		require.Equal(t, len(old), n)

		// New events of key "a" come after the old ones.
		newA := storetest.NumberedEvents(100, 1)[0]
		newA.Key = "a"
		insert(t, db, s, newA)
		got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 100, Owner: "new/1"})
		require.Equal(t, []string{old[0].ID, old[1].ID, old[2].ID, old[3].ID, old[4].ID, old[5].ID, newA.ID}, claimedIDs(got))

		// Down to version 1 and up again.
		_, err = db.ExecContext(ctx, v4.Down+v3.Down+v2.Down)
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, "UPDATE "+s.table+" SET claimed_until = now(), claimed_by = 'old/2'")
		require.NoError(t, err, "version 1 has claimed_until and claimed_by")
		_, err = db.ExecContext(ctx, v2.Up+v3.Up+v4.Up)
		require.NoError(t, err)
		n64, err := s.Pending(ctx, db)
		require.NoError(t, err)
		require.EqualValues(t, len(old)+1, n64)
	})

	// A schema of the previous release (version 3) upgrades to the relay
	// nonce: relays recorded before it, or by relays of the previous
	// release still running, have none and conflict with nothing.
	t.Run("UpgradeFromVersion3", func(t *testing.T) {
		t.Parallel()
		db, schema := dbtest.Postgres(t, "pgx")
		ctx := t.Context()
		s, err := New(&Config{Schema: schema})
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, s.migrator.tracking.Create)
		require.NoError(t, err)
		for _, m := range s.Migrations()[:3] {
			_, err := db.ExecContext(ctx, m.Up)
			require.NoError(t, err)
			_, err = db.ExecContext(ctx, s.migrator.tracking.Insert, m.Version, m.Name)
			require.NoError(t, err)
		}
		relays := `"` + schema + `"."omnibox_outbox_relays"`
		_, err = db.ExecContext(ctx, "INSERT INTO "+relays+" (relay_id, seen_until) VALUES ('old', now() + interval '1 hour')")
		require.NoError(t, err)

		require.NoError(t, s.Migrate(ctx, db))
		// The previous release's statement still records a relay.
		_, err = db.ExecContext(ctx, "INSERT INTO "+relays+" (relay_id, seen_until) VALUES ('older', now() + interval '1 hour')"+
			" ON CONFLICT (relay_id) DO UPDATE SET seen_until = EXCLUDED.seen_until")
		require.NoError(t, err)
		for _, relay := range []string{"old", "older"} {
			claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Nonce: "n1", Owner: relay + "/1", Relay: relay})
			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = s.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Nonce: "n2", Owner: relay + "/2", Relay: relay})
			require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
			require.ErrorContains(t, err, `"`+relay+`"`)
			require.NoError(t, tx.Rollback())
		}
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

	t.Run("InvalidCompleteAndListDeadParams", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "postgres")
		_, err := b.store.Complete(t.Context(), b.db, omnibox.CompleteParams{Delivered: []int64{1}})
		require.ErrorContains(t, err, "Owner is empty")
		_, err = b.store.ListDead(t.Context(), b.db, omnibox.ListDeadParams{Limit: -1})
		require.ErrorContains(t, err, "Limit must not be negative")
	})

	// Claims run concurrently: while one claim's transaction is open, another
	// does not wait for it. It steps over the partition being taken and
	// takes the others.
	t.Run("ConcurrentClaimsStepOverEachOther", func(t *testing.T) {
		t.Parallel()
		for _, driver := range drivers {
			b := setup(t, driver)
			ctx := t.Context()
			events := newEvents(3)
			for i := range events {
				events[i].Key = "one-partition"
			}
			insert(t, b.db, b.store, events...)

			tx1, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx1.Rollback() }()
			res, err := b.store.Claim(ctx, tx1, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "a/1"})
			require.NoError(t, err)
			require.Equal(t, []string{events[0].ID}, claimedIDs(res.Events))

			// An event in another partition, written after the first claim.
			other := storetest.NumberedEvents(10, 1)[0]
			for i := 0; omnibox.PartitionOf(&other) == omnibox.PartitionOf(&events[0]); i++ {
				other.Key = fmt.Sprintf("other-%d", i)
			}
			insert(t, b.db, b.store, other)

			claimBeside := func(owner string) []omnibox.ClaimedEvent {
				t.Helper()
				done := make(chan []omnibox.ClaimedEvent, 1)
				go func() {
					defer close(done)
					tx, err := b.db.BeginTx(ctx, nil)
					if err != nil {
						return
					}
					defer func() { _ = tx.Rollback() }()
					res, err := b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: owner})
					if err != nil || tx.Commit() != nil {
						return
					}
					done <- append([]omnibox.ClaimedEvent{}, res.Events...)
				}()
				select {
				case got, ok := <-done:
					require.True(t, ok, "the claim of %s failed", owner)
					return got
				case <-time.After(20 * time.Second):
					t.Fatalf("the claim of %s waited for the open claim", owner)
					return nil
				}
			}
			require.Equal(t, []string{other.ID}, claimedIDs(claimBeside("b/1")), "%s: the free partition", driver)
			require.Empty(t, claimBeside("c/1"), "%s: the partition being taken by a/1 is stepped over", driver)
			require.NoError(t, tx1.Commit())
			require.Empty(t, claimBeside("d/1"), "%s: both partitions are leased", driver)
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
// statement over a backlog of 1,000 and of 100,000 events (keyed, in every
// partition, with some waiting and dead events) touches the same number of
// rows, and no more than one probe per partition for the heads, the share
// of Limit taken from each head partition, and the reading of Limit rows. It
// checks the plan both with the parameters bound (custom plan, as the
// drivers' unnamed statements get) and as a generic plan (as a prepared
// statement may get after five executions).
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
		// Keys k0..k639, key k<i> in partition i % 64. The last 128 rows
		// are failed events (waiting or dead; two in every partition),
		// later than the claimed ones: checking that no failed event blocks
		// a claimed one reads none of them.
		_, err = db.ExecContext(ctx, `INSERT INTO `+s.table+` (event_id, topic, event_key, payload, created_at, part, state, next_attempt_at, dead_at)
			SELECT 'event-' || g, 'topic', 'k' || (g % 640), '\x00'::bytea, now(), g % 64,
				CASE WHEN g > $1 - 128 THEN 1 + g % 2 ELSE 0 END,
				CASE WHEN g > $1 - 128 AND g % 2 = 0 THEN now() + interval '1 hour' END,
				CASE WHEN g > $1 - 128 AND g % 2 = 1 THEN now() END
			FROM generate_series(1, $1) g`, backlog)
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, "ANALYZE "+s.table)
		require.NoError(t, err)

		for _, mode := range []string{"custom", "generic"} {
			plan := explainClaim(t, db, s, mode, limit)
			n, claimed := rowsTouched(t, plan, fmt.Sprintf("backlog_%d", backlog))
			t.Logf("backlog %d, %s plan: %d rows touched, %d claimed\n%s", backlog, mode, n, claimed, indentJSON(plan))
			require.Equal(t, limit, claimed, "the claim must lease Limit events")
			// Heads: a row per partition; picked: at most Limit plus a row
			// per partition (the share is rounded up); reading them: Limit.
			require.LessOrEqual(t, n, 2*omnibox.Partitions+2*limit, "the claim read more than its probes and lookups")
			touched[mode][backlog] = n
		}
	}
	for mode, byBacklog := range touched {
		require.Equal(t, byBacklog[1_000], byBacklog[100_000], "%s plan: rows touched depend on the backlog", mode)
	}
}

// explainClaim runs EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the claim
// statement (one relay: all 64 partitions; dead events block their key) in
// a transaction that it rolls back, and returns the plan.
func explainClaim(t *testing.T, db *sql.DB, s *Store, mode string, limit int) []byte {
	t.Helper()
	ctx := t.Context()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	const explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
	lease := time.Minute.Microseconds()
	var plan []byte
	switch mode {
	case "custom":
		require.NoError(t, tx.QueryRowContext(ctx, explain+s.claimSQL, omnibox.Partitions, limit, "", "explain/1", lease, true).Scan(&plan))
	case "generic":
		_, err = tx.ExecContext(ctx, "SET LOCAL plan_cache_mode = force_generic_plan")
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, "PREPARE omnibox_claim AS "+s.claimSQL)
		require.NoError(t, err)
		require.NoError(t, tx.QueryRowContext(ctx,
			fmt.Sprintf("%s EXECUTE omnibox_claim(%d, %d, '', 'explain/2', %d, true)", explain, omnibox.Partitions, limit, lease)).Scan(&plan))
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
// rows the statement returned (the claimed events). A sequential scan of the
// table fails the test.
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
		case n.RelationName == table:
			require.NotEqual(t, "Seq Scan", n.NodeType, "the claim scans the whole outbox table")
			touched += (n.ActualRows + n.RowsRemovedByFilter + n.RowsRemovedByRechk) * loops
		}
		for _, child := range n.Plans {
			walk(child)
		}
	}
	walk(explained[0].Plan)
	return touched, explained[0].Plan.ActualRows
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

func claimedIDs(events []omnibox.ClaimedEvent) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}

// TestConcurrentClaimsNeverTakeAnEventTwice runs claimers that complete each
// batch at once, so that partitions are leased and freed many times while
// other claims are running: a claim must never take a partition whose row
// changed after its snapshot (it would read events another claim has since
// delivered and deleted). No lease expires, so every event is claimed once.
func TestConcurrentClaimsNeverTakeAnEventTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, "postgres")
	ctx := t.Context()
	const total, claimers = 6000, 6
	events := storetest.NumberedEvents(0, total)
	for i := range events {
		events[i].Key = fmt.Sprintf("k%d", i%300)
	}
	insert(t, b.db, b.store, events...)

	var (
		mu      sync.Mutex
		claimed = make(map[int64]string, total)
		twice   []string
	)
	var wg sync.WaitGroup
	for c := range claimers {
		wg.Go(func() {
			for n := 0; ; n++ {
				owner := fmt.Sprintf("c%d/%d", c, n)
				tx, err := b.db.BeginTx(ctx, b.store.RelayTxOptions())
				if !assert.NoError(t, err) {
					return
				}
				res, err := b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 50, Owner: owner, Relay: fmt.Sprintf("c%d", c)})
				if !assert.NoError(t, err) || !assert.NoError(t, tx.Commit()) {
					return
				}
				mu.Lock()
				seqs := make([]int64, 0, len(res.Events))
				for _, ev := range res.Events {
					if prev, ok := claimed[ev.Seq]; ok {
						twice = append(twice, fmt.Sprintf("seq %d by %s and %s", ev.Seq, prev, owner))
					}
					claimed[ev.Seq] = owner
					seqs = append(seqs, ev.Seq)
				}
				done := len(claimed) >= total
				mu.Unlock()
				tx, err = b.db.BeginTx(ctx, b.store.RelayTxOptions())
				if !assert.NoError(t, err) {
					return
				}
				_, err = b.store.Complete(ctx, tx, omnibox.CompleteParams{Owner: owner, Delivered: seqs})
				if !assert.NoError(t, err) || !assert.NoError(t, tx.Commit()) {
					return
				}
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, twice[:min(len(twice), 10)], "%d events claimed twice (the first 10 shown)", len(twice))
	require.Len(t, claimed, total)
}

// TestGuards checks the server-side guards that Claim, Complete and Purge
// set from their context's deadline: for the rest of the transaction only,
// and not at all without a deadline.
func TestGuards(t *testing.T) {
	t.Parallel()
	const show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')"
	type settings struct{ statement, lock, idle string }
	read := func(t *testing.T, db omnibox.DBTX) settings {
		t.Helper()
		var got settings
		require.NoError(t, db.QueryRowContext(t.Context(), show).Scan(&got.statement, &got.lock, &got.idle))
		return got
	}
	// seconds reports whether a setting is between 1 and 5 seconds, as
	// PostgreSQL shows it ("4999ms", "5s").
	inBudget := func(setting string) bool {
		d, err := time.ParseDuration(setting)
		return err == nil && d > time.Second && d <= 5*time.Second
	}

	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			b := setup(t, driver)
			conn, err := b.db.Conn(t.Context())
			require.NoError(t, err)
			defer func() { _ = conn.Close() }()
			before := read(t, conn)

			run := func(t *testing.T, ctx context.Context, call func(ctx context.Context, tx *sql.Tx)) settings {
				t.Helper()
				tx, err := conn.BeginTx(t.Context(), nil)
				require.NoError(t, err)
				call(ctx, tx)
				inside := read(t, tx)
				require.NoError(t, tx.Commit())
				require.Equal(t, before, read(t, conn), "a guard outlived its transaction")
				return inside
			}
			deadline, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			for name, call := range map[string]func(ctx context.Context, tx *sql.Tx){
				"Claim": func(ctx context.Context, tx *sql.Tx) {
					_, err := b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "guard/1"})
					require.NoError(t, err)
				},
				"CompleteDelivered": func(ctx context.Context, tx *sql.Tx) {
					_, err := b.store.Complete(ctx, tx, omnibox.CompleteParams{Owner: "guard/1"})
					require.NoError(t, err)
				},
				"CompleteFailed": func(ctx context.Context, tx *sql.Tx) {
					_, err := b.store.Complete(ctx, tx, omnibox.CompleteParams{Owner: "guard/1", Retry: []omnibox.FailedEvent{{Seq: 1}}})
					require.NoError(t, err)
				},
			} {
				inside := run(t, deadline, call)
				require.True(t, inBudget(inside.statement) && inBudget(inside.lock) && inBudget(inside.idle),
					"%s with a 5s deadline set %+v", name, inside)
				require.Equal(t, before, run(t, t.Context(), call), "%s without a deadline changed the settings", name)
			}

			// Purge on a pool runs in a transaction of its own; on a
			// transaction it sets the guards for the rest of it.
			kept, err := New(&Config{Retention: time.Hour, Schema: b.schema})
			require.NoError(t, err)
			_, err = kept.Purge(deadline, b.db, 10)
			require.NoError(t, err)
			inside := run(t, deadline, func(ctx context.Context, tx *sql.Tx) {
				_, err := kept.Purge(ctx, tx, 10)
				require.NoError(t, err)
			})
			require.True(t, inBudget(inside.statement) && inBudget(inside.lock) && inBudget(inside.idle), "Purge set %+v", inside)
		})
	}
}
