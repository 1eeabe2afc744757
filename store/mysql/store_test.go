package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // loc=Europe/Berlin without the system's zoneinfo
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// dsnVariants are the DSN settings the conformance suite runs with: the
// bare DSN (no parseTime), and one that changes everything the store must
// not depend on.
var dsnVariants = []struct {
	name      string
	configure func(t *testing.T, cfg *mysql.Config)
	qualified bool // the store names Config.Database
}{
	{name: "Bare", configure: func(*testing.T, *mysql.Config) {}},
	{name: "ParseTimeLocInterpolateTimeZone", configure: func(t *testing.T, cfg *mysql.Config) {
		t.Helper()
		loc, err := time.LoadLocation("Europe/Berlin")
		require.NoError(t, err)
		cfg.ParseTime = true
		cfg.Loc = loc
		cfg.InterpolateParams = true
		cfg.ClientFoundRows = true
		cfg.Params = map[string]string{"time_zone": "'-07:00'"}
	}, qualified: true},
}

// openVariant opens another handle on database with the DSN changed by
// configure, closed when the test ends.
func openVariant(t *testing.T, database string, configure func(t *testing.T, cfg *mysql.Config)) *sql.DB {
	t.Helper()
	cfg := dbtest.MySQLConfig(t, database)
	configure(t, cfg)
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

// harness runs the conformance suite on the MySQL test server, each test in
// its own database, through handles configured by configure.
func harness(configure func(t *testing.T, cfg *mysql.Config), qualified bool) storetest.Harness {
	var databases sync.Map // *sql.DB -> database
	config := func(t *testing.T, db *sql.DB, table string) *Config {
		t.Helper()
		database, ok := databases.Load(db)
		require.True(t, ok, "db was not made by NewDB")
		if !qualified {
			return &Config{Table: table}
		}
		return &Config{Database: database.(string), Table: table}
	}
	return storetest.Harness{
		BackdateDelivered: func(t *testing.T, db *sql.DB, table string, seq int64, age time.Duration) bool {
			t.Helper()
			s, err := New(config(t, db, table))
			require.NoError(t, err)
			res, err := db.ExecContext(t.Context(), "UPDATE "+s.table+
				" SET delivered_at = DATE_SUB(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND) WHERE seq = ? AND state = 3", age.Microseconds(), seq)
			require.NoError(t, err)
			n, err := res.RowsAffected()
			require.NoError(t, err)
			return n == 1
		},
		LastError: func(t *testing.T, db *sql.DB, table string, seq int64) string {
			t.Helper()
			s, err := New(config(t, db, table))
			require.NoError(t, err)
			var lastError sql.NullString
			require.NoError(t, db.QueryRowContext(t.Context(), "SELECT last_error FROM "+s.table+" WHERE seq = ?", seq).Scan(&lastError))
			return lastError.String
		},
		NewDB: func(t *testing.T) *sql.DB {
			t.Helper()
			_, database := dbtest.MySQL(t)
			db := openVariant(t, database, configure)
			databases.Store(db, database)
			t.Cleanup(func() { databases.Delete(db) })
			return db
		},
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) {
			t.Helper()
			s, err := New(config(t, db, table))
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		NewStoreWithRetention: func(t *testing.T, db *sql.DB, table string, retention time.Duration) (storetest.Store, error) {
			t.Helper()
			c := config(t, db, table)
			c.Retention = retention
			s, err := New(c)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	for _, v := range dsnVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, harness(v.configure, v.qualified), storetest.Features{})
		})
	}
}

type testBundle struct {
	database string
	db       *sql.DB
	store    *Store
}

// setup opens a fresh database (bare DSN) and migrates a store on the
// default table in it.
func setup(t *testing.T) *testBundle {
	t.Helper()
	db, database := dbtest.MySQL(t)
	store, err := New(&Config{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(t.Context(), db))
	return &testBundle{database: database, db: db, store: store}
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
		require.Equal(t, "`omnibox_outbox`", s.table)
		require.Equal(t, "`omnibox_outbox_lock`", s.lockTable)
		require.Equal(t, "`omnibox_outbox_parts`", s.partsTable)
		require.Equal(t, "omnibox_outbox", s.tableName)
		require.Zero(t, s.retention)
		up := s.Migrations()[0].Up
		require.Contains(t, up, "CREATE TABLE IF NOT EXISTS `omnibox_outbox` (")
		require.NotContains(t, up, "`.`", "names must be unqualified")
		up = s.Migrations()[1].Up
		require.Contains(t, up, "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'omnibox_outbox' AND COLUMN_NAME = 'part'")
		require.Contains(t, up, "CREATE TABLE IF NOT EXISTS `omnibox_outbox_parts` (")
		require.NotContains(t, up, "`.`", "names must be unqualified")
	})

	t.Run("Retention", func(t *testing.T) {
		t.Parallel()
		err := (&Config{Retention: -time.Second}).Validate()
		require.ErrorContains(t, err, "Config.Retention must not be negative")
		s, err := New(&Config{Retention: -time.Second})
		require.Error(t, err)
		require.Nil(t, s)
		s, err = New(&Config{Retention: 36 * time.Hour})
		require.NoError(t, err)
		require.Equal(t, 36*time.Hour, s.retention)
		require.Contains(t, s.deliverPrefix, "SET state = 3")
		s, err = New(&Config{})
		require.NoError(t, err)
		require.Contains(t, s.deliverPrefix, "DELETE FROM")
	})

	t.Run("InvalidNames", func(t *testing.T) {
		t.Parallel()
		bad := []string{
			" ", "Bad", "1x", "x;drop table y", "a-b", "x`y", "x`; DROP TABLE y; -- ", `x"y`, "x'y",
			strings.Repeat("a", 100), "omnibox outbox", "x.y", "naïve", "x\x00y", "x/*", "x#",
		}
		for _, name := range bad {
			for _, config := range []*Config{{Table: name}, {Database: name}} {
				require.ErrorIs(t, config.Validate(), omnibox.ErrInvalidIdentifier, "%+v", config)
				s, err := New(config)
				require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "%+v", config)
				require.Nil(t, s)
			}
		}
		require.ErrorContains(t, (&Config{Database: "Bad"}).Validate(), "Config.Database")
		require.ErrorContains(t, (&Config{Table: "Bad"}).Validate(), "Config.Table")
	})
}

func TestMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{Database: "app", Table: "events"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 3)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_outbox", m.Name)
		require.Contains(t, m.Up, "CREATE TABLE IF NOT EXISTS `app`.`events` (")
		require.Contains(t, m.Up, "UNIQUE KEY `events_event_id_key` (event_id)")
		require.Contains(t, m.Up, "CONSTRAINT `events_metadata_check` CHECK (JSON_VALID(metadata))")
		require.Contains(t, m.Up, "CREATE TABLE IF NOT EXISTS `app`.`events_lock` (")
		require.Contains(t, m.Up, "INSERT INTO `app`.`events_lock` (id) VALUES (1) ON DUPLICATE KEY UPDATE id = id;")
		require.NotContains(t, m.Up, "{{")
		require.NotContains(t, m.Up, "CREATE DATABASE", "the store never creates databases")
		require.Equal(t, "DROP TABLE IF EXISTS `app`.`events_lock`;\n\nDROP TABLE IF EXISTS `app`.`events`;\n", m.Down)

		up := splitStatements(m.Up)
		require.Len(t, up, 3)
		require.True(t, strings.HasPrefix(up[0], "-- The outbox table."), up[0])
		require.True(t, strings.HasSuffix(up[0], "COLLATE = utf8mb4_bin"), up[0])
		require.True(t, strings.HasPrefix(up[2], "INSERT INTO"), up[2])
		require.Equal(t, []string{"DROP TABLE IF EXISTS `app`.`events_lock`", "DROP TABLE IF EXISTS `app`.`events`"}, splitStatements(m.Down))

		// A copy: the caller cannot change the store's migrations.
		migrations[0].Up = "DROP TABLE x"
		require.Equal(t, m.Up, s.Migrations()[0].Up)

		m = migrations[1]
		require.Equal(t, 2, m.Version)
		require.Equal(t, "partitions_retries", m.Name)
		require.NotContains(t, m.Up+m.Down, "{{")
		require.Contains(t, m.Up, "WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'events' AND COLUMN_NAME = 'part'")
		require.Contains(t, m.Up, "'ALTER TABLE `app`.`events`\n")
		require.Contains(t, m.Up, "CREATE TABLE IF NOT EXISTS `app`.`events_parts` (")
		require.Contains(t, m.Up, "CREATE TABLE IF NOT EXISTS `app`.`events_relays` (")
		require.Contains(t, m.Up, "INSERT INTO `app`.`events_parts` (part) VALUES")
		require.Contains(t, m.Up, "(62), (63)\nON DUPLICATE KEY UPDATE part = part;")
		up = splitStatements(m.Up)
		require.Len(t, up, 8)
		require.True(t, strings.HasPrefix(up[1], "PREPARE"), up[1])
		require.True(t, strings.HasPrefix(up[2], "EXECUTE"), up[2])
		require.Equal(t, []string{
			"DROP TABLE IF EXISTS `app`.`events_relays`",
			"DROP TABLE IF EXISTS `app`.`events_parts`",
		}, splitStatements(m.Down)[:2])
	})

	t.Run("MigrationFS", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{Database: "app", Table: "events"})
		require.NoError(t, err)
		fsys := s.MigrationFS()
		names, err := fs.Glob(fsys, "*")
		require.NoError(t, err)
		require.Equal(t, []string{
			"0001_create_outbox.down.sql", "0001_create_outbox.up.sql",
			"0002_partitions_retries.down.sql", "0002_partitions_retries.up.sql",
			"0003_relay_nonce.down.sql", "0003_relay_nonce.up.sql",
		}, names)
		up, err := fs.ReadFile(fsys, "0001_create_outbox.up.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Up, string(up))
		down, err := fs.ReadFile(fsys, "0001_create_outbox.down.sql")
		require.NoError(t, err)
		require.Equal(t, s.Migrations()[0].Down, string(down))
	})

	t.Run("SplitStatements", func(t *testing.T) {
		t.Parallel()
		script := "-- a comment; not a statement\n" +
			"CREATE TABLE t (x VARCHAR(3) DEFAULT ';', `a;b` INT) COMMENT \"x;y\";\n" +
			"/* block; comment */\n" +
			"# hash comment;\n" +
			"INSERT INTO t VALUES ('it\\'s;', 1);;\n" +
			"-- only a comment at the end\n" +
			"SELECT 1"
		require.Equal(t, []string{
			"-- a comment; not a statement\nCREATE TABLE t (x VARCHAR(3) DEFAULT ';', `a;b` INT) COMMENT \"x;y\"",
			"/* block; comment */\n# hash comment;\nINSERT INTO t VALUES ('it\\'s;', 1)",
			"-- only a comment at the end\nSELECT 1",
		}, splitStatements(script))
		require.Empty(t, splitStatements("-- nothing\n  ;\n--\n;--"))
		require.Equal(t, []string{"SELECT 1--1"}, splitStatements("SELECT 1--1;"), "--1 is not a comment")
	})

	t.Run("MigrateNilDB", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{})
		require.NoError(t, err)
		require.ErrorIs(t, s.Migrate(t.Context(), nil), omnibox.ErrNilDB)
	})

	t.Run("RecordsVersionsInTheConfiguredDatabase", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		_, other := dbtest.MySQL(t) // the tables go there, not in db's database
		s, err := New(&Config{Database: other, Table: "outbox"})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		require.NoError(t, s.Migrate(t.Context(), db))

		rows, err := db.QueryContext(t.Context(),
			"SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME", other)
		require.NoError(t, err)
		defer rows.Close()
		var tables []string
		for rows.Next() {
			var name, engine string
			require.NoError(t, rows.Scan(&name, &engine))
			require.Equal(t, "InnoDB", engine)
			tables = append(tables, name)
		}
		require.NoError(t, rows.Err())
		require.Equal(t, []string{"outbox", "outbox_lock", "outbox_migrations", "outbox_parts", "outbox_relays"}, tables)

		var (
			version, count, locks, parts int
			name                         string
		)
		require.NoError(t, db.QueryRowContext(t.Context(),
			"SELECT MAX(version), MAX(name), COUNT(*) FROM `"+other+"`.`outbox_migrations`").Scan(&version, &name, &count))
		require.Equal(t, 3, version)
		require.Equal(t, "relay_nonce", name)
		require.Equal(t, 3, count)
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM `"+other+"`.`outbox_lock`").Scan(&locks))
		require.Equal(t, 1, locks)
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM `"+other+"`.`outbox_parts`").Scan(&parts))
		require.Equal(t, omnibox.Partitions, parts)
	})

	t.Run("TheDownMigrationDropsTheTables", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		migrations := b.store.Migrations()
		for _, m := range slices.Backward(migrations) {
			for _, stmt := range splitStatements(m.Down) {
				_, err := b.db.ExecContext(t.Context(), stmt)
				require.NoError(t, err)
			}
		}
		_, err := b.store.Pending(t.Context(), b.db)
		require.ErrorContains(t, err, "doesn't exist")
		var tables int
		require.NoError(t, b.db.QueryRowContext(t.Context(),
			"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> 'omnibox_outbox_migrations'", b.database).Scan(&tables))
		require.Zero(t, tables)
	})

	t.Run("ReservedWordsAsNames", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		s, err := New(&Config{Database: database, Table: "order"})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		insert(t, db, s, newEvents(1)...)
		require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 1)
	})

	t.Run("NoDatabaseSelected", func(t *testing.T) {
		t.Parallel()
		_, database := dbtest.MySQL(t) // for its lifecycle only
		db := openVariant(t, database, func(_ *testing.T, cfg *mysql.Config) { cfg.DBName = "" })
		s, err := New(&Config{})
		require.NoError(t, err)
		err = s.Migrate(t.Context(), db)
		require.ErrorContains(t, err, "no database selected")
		require.ErrorContains(t, err, "Config.Database")

		// Naming the database in the config is enough.
		s, err = New(&Config{Database: database})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
	})

	// A migration interrupted after its first statement (MySQL's DDL
	// commits at once) is completed by the next Migrate.
	t.Run("ResumesAPartialMigration", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		s, err := New(&Config{})
		require.NoError(t, err)
		_, err = db.ExecContext(t.Context(), splitStatements(s.Migrations()[0].Up)[0])
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		insert(t, db, s, newEvents(1)...)
		require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 1)
	})

	// Events pending under the first schema are kept, in partition 0, in
	// order, with their attempts; leases of the old schema are dropped.
	t.Run("UpgradesFromTheFirstVersion", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		s, err := New(&Config{})
		require.NoError(t, err)
		migrateFirst(t, db, s)
		events := newEvents(3)
		for i, ev := range events {
			_, err := db.ExecContext(t.Context(), "INSERT INTO "+s.table+
				" (event_id, topic, event_key, payload, created_at, attempts, claimed_by, claimed_until)"+
				" VALUES (?, ?, 'k', x'01', ?, ?, IF(? = 1, 'old/1', NULL), IF(? = 1, DATE_ADD(UTC_TIMESTAMP(6), INTERVAL 1 HOUR), NULL))",
				ev.ID, ev.Topic, ev.CreatedAt.Format(timeLayout), i, i, i)
			require.NoError(t, err)
		}
		require.NoError(t, s.Migrate(t.Context(), db))
		var parts, states int
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT SUM(part), SUM(state) FROM "+s.table).Scan(&parts, &states))
		require.Zero(t, parts)
		require.Zero(t, states)
		n, err := s.Pending(t.Context(), db)
		require.NoError(t, err)
		require.EqualValues(t, 3, n)
		got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.Equal(t, ids(events), claimedIDs(got))
		require.Equal(t, []int{0, 1, 2}, []int{got[0].Attempts, got[1].Attempts, got[2].Attempts})
	})

	// The second migration run again after it stopped half way (after its
	// ALTER TABLE, which commits at once), or run twice by hand, completes.
	t.Run("ResumesAPartialSecondMigration", func(t *testing.T) {
		t.Parallel()
		for _, done := range []int{3, 5, 8} {
			db, _ := dbtest.MySQL(t)
			s, err := New(&Config{})
			require.NoError(t, err)
			migrateFirst(t, db, s)
			up := splitStatements(s.Migrations()[1].Up)
			for _, stmt := range up[:done] {
				_, err := db.ExecContext(t.Context(), stmt)
				require.NoError(t, err)
			}
			if done == len(up) { // once more, by hand
				for _, stmt := range up {
					_, err := db.ExecContext(t.Context(), stmt)
					require.NoError(t, err, stmt)
				}
			}
			require.NoError(t, s.Migrate(t.Context(), db))
			insert(t, db, s, newEvents(3)...)
			require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 3, "after %d statements", done)
			requireParts(t, db, s, map[string]int{"a/1": len(distinctParts(newEvents(3)))})
		}
	})

	// The second migration's down migration (stopped half way, then run
	// twice: it is idempotent too) restores the first schema, with the
	// events not delivered; the up migration then applies again.
	t.Run("SecondMigrationDownAndUpAgain", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		s, err := New(&Config{Retention: time.Hour})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		events := keyed("k", newEvents(4))
		insert(t, db, s, events...)
		got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		complete(t, db, s, omnibox.CompleteParams{
			Owner:     "a/1",
			Delivered: []int64{got[0].Seq},
			Retry:     []omnibox.FailedEvent{{Seq: got[1].Seq, Delay: time.Hour, Error: "e"}},
			Dead:      []omnibox.FailedEvent{{Seq: got[2].Seq, Error: "e"}},
			Released:  []int64{got[3].Seq},
		})

		down := splitStatements(s.Migrations()[1].Down)
		require.Len(t, down, 15)
		for _, stmt := range down[:10] { // stopped after the first ALTER TABLE
			_, err := db.ExecContext(t.Context(), stmt)
			require.NoError(t, err, stmt)
		}
		for range 2 {
			for _, stmt := range down {
				_, err := db.ExecContext(t.Context(), stmt)
				require.NoError(t, err, stmt)
			}
		}
		var columns []string
		rows, err := db.QueryContext(t.Context(),
			"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'omnibox_outbox' ORDER BY ORDINAL_POSITION")
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			columns = append(columns, c)
		}
		require.NoError(t, rows.Err())
		require.Equal(t, []string{"seq", "event_id", "topic", "event_key", "payload", "metadata", "created_at", "attempts",
			"claimed_by", "last_error", "claimed_until"}, columns)
		require.Equal(t, seqsOf(got[1:]), seqsAll(t, db, s), "only the delivered event is gone")

		_, err = db.ExecContext(t.Context(), "DELETE FROM omnibox_outbox_migrations WHERE version IN (2, 3)") // the relay table is gone
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		again := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/2"})
		require.Equal(t, ids(events[1:]), claimedIDs(again), "waiting and dead events are pending again")
	})

	// A schema of the previous release (version 2) upgrades to the relay
	// nonce: relays recorded before it, or by relays of the previous
	// release still running, have none and conflict with nothing.
	t.Run("UpgradeFromVersion2", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		ctx := t.Context()
		s, err := New(&Config{})
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, s.migrator.tracking.Create)
		require.NoError(t, err)
		for _, m := range s.Migrations()[:2] {
			for _, stmt := range splitStatements(m.Up) {
				_, err := db.ExecContext(ctx, stmt)
				require.NoError(t, err, stmt)
			}
			_, err = db.ExecContext(ctx, s.migrator.tracking.Insert, m.Version, m.Name)
			require.NoError(t, err)
		}
		_, err = db.ExecContext(ctx, "INSERT INTO omnibox_outbox_relays (relay_id, seen_until) VALUES ('old', DATE_ADD(UTC_TIMESTAMP(6), INTERVAL 1 HOUR))")
		require.NoError(t, err)

		require.NoError(t, s.Migrate(ctx, db))
		require.NoError(t, s.Migrate(ctx, db))
		// The previous release's statement still records a relay.
		_, err = db.ExecContext(ctx, "INSERT INTO omnibox_outbox_relays (relay_id, seen_until) VALUES ('older', DATE_ADD(UTC_TIMESTAMP(6), INTERVAL 1 HOUR))"+
			" ON DUPLICATE KEY UPDATE seen_until = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL 1 HOUR)")
		require.NoError(t, err)
		for _, relay := range []string{"old", "older"} {
			claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Nonce: "n1", Owner: relay + "/1", Relay: relay})
			_, err = tryClaim(ctx, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Nonce: "n2", Owner: relay + "/2", Relay: relay})
			require.ErrorIs(t, err, omnibox.ErrRelayIDInUse)
			require.ErrorContains(t, err, `"`+relay+`"`)
		}

		// And back down.
		for _, stmt := range splitStatements(s.Migrations()[2].Down) {
			_, err := db.ExecContext(ctx, stmt)
			require.NoError(t, err, stmt)
		}
		var n int
		require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.COLUMNS"+
			" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'omnibox_outbox_relays' AND COLUMN_NAME = 'nonce'").Scan(&n))
		require.Zero(t, n)
	})

	t.Run("RefusesATableOfAnotherEngine", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		_, err := db.ExecContext(t.Context(), "CREATE TABLE omnibox_outbox (seq BIGINT PRIMARY KEY) ENGINE = MyISAM")
		require.NoError(t, err)
		s, err := New(&Config{})
		require.NoError(t, err)
		for range 2 { // and again once the version is recorded
			err = s.Migrate(t.Context(), db)
			require.ErrorContains(t, err, database+".omnibox_outbox uses the \"MyISAM\" engine; the outbox needs InnoDB")
		}
	})

	t.Run("ReleasesItsLock", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		db.SetMaxOpenConns(1) // the pooled connection Migrate used is the one checked
		s, err := New(&Config{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		var holder sql.NullInt64
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT IS_USED_LOCK(?)", migrateLockName(database, DefaultTable)).Scan(&holder))
		require.False(t, holder.Valid, "the migration lock is still held by connection %d", holder.Int64)
	})

	// Migrate waits for the migration lock held by another session, for as
	// long as its context allows, and does nothing without it.
	t.Run("WaitsForTheLock", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		other := openVariant(t, database, func(*testing.T, *mysql.Config) {})
		holder, err := other.Conn(t.Context())
		require.NoError(t, err)
		defer func() { _ = holder.Close() }()
		name := migrateLockName(database, DefaultTable)
		var got int
		require.NoError(t, holder.QueryRowContext(t.Context(), "SELECT GET_LOCK(?, 0)", name).Scan(&got))
		require.Equal(t, 1, got)

		s, err := New(&Config{})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		err = s.Migrate(ctx, db)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "migration lock")
		var tables int
		require.NoError(t, db.QueryRowContext(t.Context(),
			"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", database).Scan(&tables))
		require.Zero(t, tables, "Migrate created tables without the lock")

		require.NoError(t, holder.QueryRowContext(t.Context(), "SELECT RELEASE_LOCK(?)", name).Scan(&got))
		require.Equal(t, 1, got)
		require.NoError(t, s.Migrate(t.Context(), db))
	})

	// The tables name their character sets, so the database's default does
	// not matter.
	t.Run("DatabaseDefaultCharsetDoesNotMatter", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		_, err := db.ExecContext(t.Context(), "ALTER DATABASE `"+database+"` CHARACTER SET latin1 COLLATE latin1_swedish_ci")
		require.NoError(t, err)
		s, err := New(&Config{})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		requireRoundTrip(t, db, s)
	})
}

// requireRoundTrip writes an event full of non-ASCII text and a time in
// Berlin's daylight saving gap, claims it and checks that it comes back
// unchanged, then delivers it.
func requireRoundTrip(t *testing.T, db *sql.DB, s *Store) {
	t.Helper()
	ev := omnibox.Event{
		// 02:30 on 2024-03-31 does not exist in Europe/Berlin: a driver
		// parsing DATETIME in that zone would move it by an hour.
		CreatedAt: time.Date(2024, 3, 31, 2, 30, 0, 123456000, time.UTC),
		ID:        "Événement/🚀/" + omnibox.MetadataKey,
		Key:       "ключ 🔑",
		Metadata:  map[string]string{"ключ": "值 🚀", "quote": `'"\`},
		Payload:   []byte{0, 0xff, '\'', '\\', '"', 0x1a, '\n'},
		Topic:     "topic/ümlaut/😀",
	}
	insert(t, db, s, ev)
	got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "rélay/😀/1"})
	require.Len(t, got, 1)
	require.Equal(t, ev.ID, got[0].ID)
	require.Equal(t, ev.Key, got[0].Key)
	require.Equal(t, ev.Metadata, got[0].Metadata)
	require.Equal(t, ev.Payload, got[0].Payload)
	require.Equal(t, ev.Topic, got[0].Topic)
	require.Equal(t, ev.CreatedAt, got[0].CreatedAt)
	require.Zero(t, got[0].Attempts)
	require.Equal(t, 1, complete(t, db, s, omnibox.CompleteParams{Owner: "rélay/😀/1", Delivered: []int64{got[0].Seq}}).Delivered)
}

// TestDSN checks what the store needs of the DSN: nothing but a utf8mb4
// connection with autocommit, and a clear error saying how to fix the DSN
// otherwise.
func TestDSN(t *testing.T) {
	t.Parallel()

	t.Run("SettingsThatDoNotMatter", func(t *testing.T) {
		t.Parallel()
		berlin, err := time.LoadLocation("Europe/Berlin")
		require.NoError(t, err)
		variants := map[string]func(*testing.T, *mysql.Config){
			"Bare":               func(*testing.T, *mysql.Config) {},
			"ParseTimeLocBerlin": func(_ *testing.T, cfg *mysql.Config) { cfg.ParseTime, cfg.Loc = true, berlin },
			"InterpolateParams":  func(_ *testing.T, cfg *mysql.Config) { cfg.InterpolateParams = true },
			"SessionTimeZone":    func(_ *testing.T, cfg *mysql.Config) { cfg.Params = map[string]string{"time_zone": "'+13:00'"} },
			"ClientFoundRows":    func(_ *testing.T, cfg *mysql.Config) { cfg.ClientFoundRows = true },
			"CharsetUTF8MB4":     func(t *testing.T, cfg *mysql.Config) { require.NoError(t, cfg.Apply(mysql.Charset("utf8mb4", ""))) },
			"CollationUnicode":   func(_ *testing.T, cfg *mysql.Config) { cfg.Collation = "utf8mb4_unicode_ci" },
			"SQLModeANSIQuotes": func(_ *testing.T, cfg *mysql.Config) {
				cfg.Params = map[string]string{"sql_mode": "'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'"}
			},
			"NonStrictSQLMode": func(_ *testing.T, cfg *mysql.Config) { cfg.Params = map[string]string{"sql_mode": "''"} },
			"ReadCommittedSession": func(t *testing.T, cfg *mysql.Config) {
				cfg.Params = map[string]string{isolationVariable(t): "'READ-COMMITTED'"}
			},
		}
		for name, configure := range variants {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				_, database := dbtest.MySQL(t)
				db := openVariant(t, database, configure)
				s, err := New(&Config{})
				require.NoError(t, err)
				require.NoError(t, s.Migrate(t.Context(), db))
				requireRoundTrip(t, db, s)

				// Leases are on the database's UTC clock whatever the
				// session's time zone: a long one holds, a short one lapses.
				events := newEvents(2)
				events[0].Key, events[1].Key = "k", "k" // one partition
				insert(t, db, s, events...)
				got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
				require.Len(t, got, 2)
				require.Empty(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/1"}))
				// (a/1's lease still holds; release it to test a short one)
				complete(t, db, s, omnibox.CompleteParams{Owner: "a/1", Released: seqsOf(got)})
				require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: 50 * time.Millisecond, Limit: 10, Owner: "c/1"}), 2)
				requireClaimedAgain(t, db, s, 2)
			})
		}
	})

	t.Run("OtherCharsetsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(1)...)
		for _, charset := range []string{"utf8mb3", "latin1"} {
			db := openVariant(t, b.database, func(t *testing.T, cfg *mysql.Config) {
				require.NoError(t, cfg.Apply(mysql.Charset(charset, "")))
			})
			err := b.store.Migrate(t.Context(), db)
			require.ErrorContains(t, err, "character_set_client="+charset)
			require.ErrorContains(t, err, "remove charset= from the DSN")

			tx, err := db.BeginTx(t.Context(), nil)
			require.NoError(t, err)
			_, err = b.store.Claim(t.Context(), tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"})
			require.ErrorContains(t, err, "not utf8mb4")
			require.NoError(t, tx.Rollback())
		}
		n, err := b.store.Pending(t.Context(), b.db)
		require.NoError(t, err)
		require.EqualValues(t, 1, n)
		require.Len(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"}), 1, "nothing was claimed")
	})

	t.Run("AutocommitOffRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(1)...)
		db := openVariant(t, b.database, func(_ *testing.T, cfg *mysql.Config) {
			cfg.Params = map[string]string{"autocommit": "0"}
		})
		err := b.store.Migrate(t.Context(), db)
		require.ErrorContains(t, err, "autocommit is off")
		tx, err := db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		_, err = b.store.Claim(t.Context(), tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "a/1"})
		require.ErrorContains(t, err, "remove autocommit=0")
		require.NoError(t, tx.Rollback())
	})
}

// isolationVariable returns the name of the session's isolation level
// variable: tx_isolation on MariaDB before 11.1, transaction_isolation on
// MySQL 8 and later MariaDB.
func isolationVariable(t *testing.T) string {
	t.Helper()
	db, _ := dbtest.MySQL(t)
	var level string
	if err := db.QueryRowContext(t.Context(), "SELECT @@transaction_isolation").Scan(&level); err == nil {
		return "transaction_isolation"
	}
	return "tx_isolation"
}

// requireClaimedAgain polls until want events whose short lease lapsed are
// claimed again.
func requireClaimedAgain(t *testing.T, db *sql.DB, s *Store, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		require.True(t, time.Now().Before(deadline), "the short lease never lapsed")
		time.Sleep(20 * time.Millisecond)
		if got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: fmt.Sprintf("d/%d", i)}); len(got) > 0 {
			require.Len(t, got, want)
			return
		}
	}
}

func seqsAll(t *testing.T, db *sql.DB, s *Store) []int64 {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT seq FROM "+s.table+" ORDER BY seq")
	require.NoError(t, err)
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var seq int64
		require.NoError(t, rows.Scan(&seq))
		seqs = append(seqs, seq)
	}
	require.NoError(t, rows.Err())
	return seqs
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
			{Lease: time.Second, Limit: 1, Owner: strings.Repeat("a", maxOwnerLen+1)},
			{Lease: time.Second, Limit: 1, Owner: "a\xff/1"},
			{Lease: time.Second, Limit: 1, Owner: "a/1", Relay: strings.Repeat("a", maxOwnerLen+1)},
		} {
			_, err := b.store.Claim(t.Context(), b.db, p)
			require.Error(t, err, "%+v", p)
		}
	})

	// While one claim's transaction is open, a concurrent claim waits for
	// it, then sees what it leased.
	t.Run("ConcurrentClaimWaitsForTheFirst", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := keyed("k", newEvents(3))
		insert(t, b.db, b.store, events...)

		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		res, err := b.store.Claim(ctx, tx1, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "a/1"})
		require.NoError(t, err)
		require.Len(t, res.Events, 1)

		second := make(chan []omnibox.ClaimedEvent, 1)
		go func() {
			got, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{Lease: time.Minute, Limit: 10, Owner: "b/1"})
			if err != nil {
				second <- nil
				return
			}
			second <- append([]omnibox.ClaimedEvent{}, got...)
		}()
		select {
		case <-second:
			t.Fatal("the second claim did not wait for the first")
		case <-time.After(100 * time.Millisecond):
		}
		require.NoError(t, tx1.Commit())
		got := <-second
		require.NotNil(t, got, "the second claim failed")
		require.Empty(t, got, "the partition is leased to a/1")
	})

	// An event inserted by a transaction still open does not hold the claim
	// up: the claim neither sees nor waits for it, as on PostgreSQL.
	t.Run("UncommittedInsertDoesNotBlock", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := keyed("k", newEvents(2)) // one partition

		open, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = open.Rollback() }()
		require.NoError(t, b.store.Insert(ctx, open, omnibox.InsertParams{Events: events[:1]})) // the lower seq
		insert(t, b.db, b.store, events[1])

		// A locking read of the partition would wait for the open
		// transaction (innodb_lock_wait_timeout, 50s by default); this
		// context ends well before.
		claimCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		got, err := tryClaim(claimCtx, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.NoError(t, err)
		require.Equal(t, ids(events[1:]), claimedIDs(got))

		require.NoError(t, open.Commit())
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/1"}), "the partition is leased to a/1")
		complete(t, b.db, b.store, omnibox.CompleteParams{Owner: "a/1", Delivered: seqsOf(got)})
		got2 := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/2"})
		require.Equal(t, ids(events[:1]), claimedIDs(got2))
		require.Less(t, got2[0].Seq, got[0].Seq)
	})

	// A transaction whose snapshot predates another claim still cannot
	// lease the same events: the lease checks the partitions' latest
	// version.
	t.Run("StaleSnapshotCannotClaimTwice", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		insert(t, b.db, b.store, newEvents(3)...)

		stale, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = stale.Rollback() }()
		n, err := b.store.Pending(ctx, stale) // takes the snapshot
		require.NoError(t, err)
		require.EqualValues(t, 3, n)

		require.Len(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"}), 3)

		res, err := b.store.Claim(ctx, stale, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/1"})
		require.NoError(t, err)
		require.Empty(t, res.Events, "events leased to a/1 were claimed again")
		require.NoError(t, stale.Commit())
		requireParts(t, b.db, b.store, map[string]int{"a/1": 3})
	})

	// A claim whose snapshot predates the completion of an expired lease
	// does not return the events that the completion delivered, retried or
	// killed: the lease checks the events' latest version too.
	t.Run("StaleSnapshotSkipsCompletedEvents", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := keyed("k", newEvents(4))
		insert(t, b.db, b.store, events...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Millisecond, Limit: 10, Owner: "a/1"})
		require.Len(t, got, 4)
		time.Sleep(20 * time.Millisecond) // a/1's lease lapses

		stale, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = stale.Rollback() }()
		_, err = b.store.Pending(ctx, stale) // takes the snapshot
		require.NoError(t, err)

		res := complete(t, b.db, b.store, omnibox.CompleteParams{
			Owner:     "a/1",
			Delivered: []int64{got[0].Seq},
			Retry:     []omnibox.FailedEvent{{Seq: got[1].Seq, Delay: time.Hour, Error: "later"}},
			Dead:      []omnibox.FailedEvent{{Seq: got[2].Seq, Error: "dead"}},
			Released:  []int64{got[3].Seq},
		})
		require.Equal(t, 1, res.Delivered)

		claimed, err := b.store.Claim(ctx, stale, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/1"})
		require.NoError(t, err)
		// The snapshot shows all four pending; only the released one still
		// is.
		require.Equal(t, ids(events[3:]), claimedIDs(claimed.Events))
		require.NoError(t, stale.Commit())
	})

	// Relays whose leases keep expiring while they publish, so that others
	// take their partitions over while they complete: no claim or
	// completion fails (no deadlock between a claim and the old owner's
	// completion), and each event is delivered, by the one owner still
	// holding it, exactly once.
	t.Run("TakeoversDoNotDeadlock", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const total = 1000
		events := newEvents(total)
		for i := range events {
			events[i].Key = fmt.Sprintf("k%d", i%50)
		}
		insert(t, b.db, b.store, events...)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		var (
			delivered atomic.Int64
			errs      = make(chan error, 6)
			wg        sync.WaitGroup
		)
		for r := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					owner := fmt.Sprintf("r%d/%d", r, i)
					got, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{Lease: 10 * time.Millisecond, Limit: 20, Owner: owner, Relay: fmt.Sprint(r)})
					if err != nil {
						errs <- fmt.Errorf("claim: %w", err)
						return
					}
					if len(got) == 0 {
						if n, err := b.store.Pending(ctx, b.db); err != nil || n == 0 {
							errs <- err
							return
						}
						continue
					}
					time.Sleep(time.Duration(i%4) * 8 * time.Millisecond) // past the lease, one time in two
					tx, err := b.db.BeginTx(ctx, nil)
					if err != nil {
						errs <- err
						return
					}
					res, err := b.store.Complete(ctx, tx, omnibox.CompleteParams{Owner: owner, Delivered: seqsOf(got)})
					if err == nil {
						err = tx.Commit()
					}
					if err != nil {
						_ = tx.Rollback()
						errs <- fmt.Errorf("complete: %w", err)
						return
					}
					delivered.Add(int64(res.Delivered))
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.EqualValues(t, total, delivered.Load())
	})

	t.Run("MissingLockRow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(1)...)
		_, err := b.db.ExecContext(t.Context(), "DELETE FROM "+b.store.lockTable)
		require.NoError(t, err)
		_, err = tryClaim(t.Context(), b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.ErrorContains(t, err, "has no row; run Store.Migrate")
		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		require.Len(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/2"}), 1)
	})

	t.Run("MissingPartitionRowsRestoredByMigrate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(20)...)
		_, err := b.db.ExecContext(t.Context(), "DELETE FROM "+b.store.partsTable)
		require.NoError(t, err)
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: "a/1"}))
		require.NoError(t, b.store.Migrate(t.Context(), b.db))
		require.Len(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: "a/2"}), 20)
	})

	// Owners, relays and prefixes are compared byte for byte, whatever
	// their characters: no case folding, no padding, no collation.
	t.Run("OwnersComparedExactly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		events := keyed("k", newEvents(2))
		insert(t, b.db, b.store, events...)

		owner := strings.Repeat("€", maxOwnerLen/3) // 255 bytes, 85 characters
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 1, Owner: owner})
		require.Len(t, got, 1)

		for _, other := range []string{owner + " ", owner[:len(owner)-3], owner[:len(owner)-3] + "\u20ac\u0000"} {
			res := complete(t, b.db, b.store, omnibox.CompleteParams{Owner: other, Delivered: seqsAll(t, b.db, b.store)})
			require.Zero(t, res.Delivered, "owner %q", other)
		}
		requireParts(t, b.db, b.store, map[string]int{owner: 1})

		// A non-ASCII prefix takes over its own leases, and only those.
		prefix := "relé-ß/"
		first := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: prefix + "1", OwnerPrefix: "€"})
		require.Len(t, first, 2, "the owner prefix € takes the 255-byte owner's lease over")
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "relé-s/1", OwnerPrefix: "relé-s/"}))
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "RELÉ-ß/1", OwnerPrefix: "RELÉ-ß/"}))
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "relé-ß 1", OwnerPrefix: "relé-ß "}))
		again := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: prefix + "2", OwnerPrefix: prefix})
		require.Equal(t, ids(events), claimedIDs(again))
		require.Equal(t, []int{0, 0}, []int{again[0].Attempts, again[1].Attempts}, "claiming is no attempt")

		require.Equal(t, 2, complete(t, b.db, b.store, omnibox.CompleteParams{Owner: prefix + "2", Delivered: seqsOf(again)}).Delivered)
		requireParts(t, b.db, b.store, map[string]int{})

		// Relay IDs differing by a trailing space are two relays.
		for _, relay := range []string{"r", "r ", "R"} {
			claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 1, Owner: relay + "/1", Relay: relay})
		}
		relays := map[string]bool{}
		rows, err := b.db.QueryContext(t.Context(), "SELECT relay_id FROM `omnibox_outbox_relays`")
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var relay string
			require.NoError(t, rows.Scan(&relay))
			relays[relay] = true
		}
		require.NoError(t, rows.Err())
		require.True(t, relays["r"] && relays["r "] && relays["R"], "%q", relays)
	})

	t.Run("EventIDsComparedExactly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		now := time.Now().Truncate(time.Microsecond).UTC()
		var events []omnibox.Event
		for _, id := range []string{"id", "ID", "id ", "ıd", "İd", "ｉｄ", "i\u0307d"} {
			events = append(events, omnibox.Event{CreatedAt: now, ID: id, Topic: "t"})
		}
		insert(t, b.db, b.store, events...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: "a/1"})
		require.Equal(t, ids(events), claimedIDs(got))

		long := omnibox.Event{CreatedAt: now, ID: strings.Repeat("🚀", omnibox.MaxIDLen/4), Topic: strings.Repeat("ü", omnibox.MaxTopicLen/2), Key: strings.Repeat("k", omnibox.MaxKeyLen)}
		insert(t, b.db, b.store, long)
		tx, err := b.db.BeginTx(t.Context(), nil)
		require.NoError(t, err)
		err = b.store.Insert(t.Context(), tx, omnibox.InsertParams{Events: []omnibox.Event{long}})
		require.ErrorIs(t, err, omnibox.ErrDuplicateEventID)
		require.NoError(t, tx.Rollback())
	})

	// Keys are compared byte for byte too: a failed event blocks the later
	// events of its exact key only, even keys that a collation would take
	// for the same (they hash to other partitions, mostly, but the check
	// must not rely on it).
	t.Run("KeysComparedExactly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		keys := []string{"k", "k ", "K", " "}
		var events []omnibox.Event
		for i, key := range keys {
			for j := range 2 {
				ev := newEventsFrom(10*i+j, 1)[0]
				ev.Key = key
				events = append(events, ev)
			}
		}
		insert(t, b.db, b.store, events...)
		// Put them all in one partition, as keys sharing a hash would be.
		_, err := b.db.ExecContext(t.Context(), "UPDATE "+b.store.table+" SET part = 7")
		require.NoError(t, err)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: "a/1"})
		require.Equal(t, ids(events), claimedIDs(got))
		// The first events of "k" and of " " (a key, not the lack of one)
		// wait for a retry: only the second of each is blocked.
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Owner:    "a/1",
			Retry:    []omnibox.FailedEvent{{Seq: got[0].Seq, Delay: time.Hour, Error: "e"}, {Seq: got[6].Seq, Delay: time.Hour, Error: "e"}},
			Released: append(seqsOf(got[1:6]), got[7].Seq),
		})
		again := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: "a/2"})
		require.Equal(t, ids(events[2:6]), claimedIDs(again))
	})
}

// TestComplete checks what Complete records in MySQL's columns.
func TestComplete(t *testing.T) {
	t.Parallel()

	t.Run("KeepsLongAndInvalidErrors", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(4)...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.Len(t, got, 4)
		long := strings.Repeat("€", 30_000) // 90,000 bytes
		complete(t, b.db, b.store, omnibox.CompleteParams{
			Owner:        "a/1",
			Released:     []int64{got[0].Seq},
			ReleaseError: long,
			Retry:        []omnibox.FailedEvent{{Seq: got[1].Seq, Error: "bad \xff byte", Delay: time.Hour}},
			Dead:         []omnibox.FailedEvent{{Seq: got[2].Seq, Error: long + "x"}, {Seq: got[3].Seq}},
		})
		lastErrors := map[int64]sql.NullString{}
		for _, ev := range got {
			var s sql.NullString
			require.NoError(t, b.db.QueryRowContext(t.Context(), "SELECT last_error FROM "+b.store.table+" WHERE seq = ?", ev.Seq).Scan(&s))
			lastErrors[ev.Seq] = s
		}
		require.Equal(t, long[:maxLastErrorLen/3*3], lastErrors[got[0].Seq].String)
		require.True(t, utf8.ValidString(lastErrors[got[0].Seq].String))
		require.Equal(t, "bad \uFFFD byte", lastErrors[got[1].Seq].String)
		require.Equal(t, long[:maxLastErrorLen/3*3], lastErrors[got[2].Seq].String)
		require.False(t, lastErrors[got[3].Seq].Valid, "an empty error is recorded as NULL")
	})

	// Failed events with one error and delay are updated together; each
	// keeps its own attempts count.
	t.Run("GroupsFailures", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []failedGroup{
			{delay: 1000, lastError: "a", seqs: []int64{1, 3}},
			{delay: 2000, lastError: "a", seqs: []int64{2}},
			{delay: 0, lastError: nil, seqs: []int64{4, 5}},
		}, groupFailed([]omnibox.FailedEvent{
			{Seq: 1, Error: "a", Delay: time.Millisecond},
			{Seq: 2, Error: "a", Delay: 2 * time.Millisecond},
			{Seq: 3, Error: "a", Delay: time.Millisecond},
			{Seq: 4},
			{Seq: 5, Delay: -time.Second},
		}, true))
		require.Equal(t, []failedGroup{
			{lastError: "a", seqs: []int64{1, 2}},
		}, groupFailed([]omnibox.FailedEvent{{Seq: 1, Error: "a", Delay: time.Millisecond}, {Seq: 2, Error: "a"}}, false))
	})

	// Completing leaves the other owners' partitions leased, and reads the
	// partition table without locking it.
	t.Run("FreesOnlyItsPartitions", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := keyed("a", newEventsFrom(0, 2))
		c := keyed("c", newEventsFrom(10, 2))
		require.NotEqual(t, omnibox.PartitionOf(&a[0]), omnibox.PartitionOf(&c[0]))
		insert(t, b.db, b.store, a...)
		gotA := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 2, Owner: "a/1"})
		insert(t, b.db, b.store, c...)
		gotC := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 2, Owner: "c/1"})
		require.Equal(t, ids(a), claimedIDs(gotA))
		require.Equal(t, ids(c), claimedIDs(gotC))
		requireParts(t, b.db, b.store, map[string]int{"a/1": 1, "c/1": 1})

		// Two completions in open transactions do not wait for each other.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		txA, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = txA.Rollback() }()
		_, err = b.store.Complete(ctx, txA, omnibox.CompleteParams{Owner: "a/1", Delivered: seqsOf(gotA)})
		require.NoError(t, err)
		txC, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = txC.Rollback() }()
		_, err = b.store.Complete(ctx, txC, omnibox.CompleteParams{Owner: "c/1", Delivered: seqsOf(gotC)})
		require.NoError(t, err)
		require.NoError(t, txC.Commit())
		require.NoError(t, txA.Commit())
		requireParts(t, b.db, b.store, map[string]int{})
	})
}

// TestRetention checks the delivered events kept for Config.Retention and
// their purge.
func TestRetention(t *testing.T) {
	t.Parallel()

	t.Run("KeptThenPurgedOldestFirst", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		s, err := New(&Config{Retention: time.Hour})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		events := newEvents(5)
		insert(t, db, s, events...)
		got := claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.Len(t, got, 5)
		require.Equal(t, 5, complete(t, db, s, omnibox.CompleteParams{Owner: "a/1", Delivered: seqsOf(got)}).Delivered)

		pending, err := s.Pending(t.Context(), db)
		require.NoError(t, err)
		require.Zero(t, pending)
		require.Empty(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/2"}))
		var kept int
		require.NoError(t, db.QueryRowContext(t.Context(),
			"SELECT COUNT(*) FROM "+s.table+" WHERE state = 3 AND delivered_at IS NOT NULL AND claimed_by IS NULL").Scan(&kept))
		require.Equal(t, 5, kept)

		n, err := s.Purge(t.Context(), db, 10)
		require.NoError(t, err)
		require.Zero(t, n, "delivered within the retention period")

		// Age three of them past the retention period, the last one the
		// oldest.
		for i, seq := range []int64{got[4].Seq, got[1].Seq, got[2].Seq} {
			_, err := db.ExecContext(t.Context(), "UPDATE "+s.table+
				" SET delivered_at = DATE_SUB(UTC_TIMESTAMP(6), INTERVAL ? MINUTE) WHERE seq = ?", 120-i, seq)
			require.NoError(t, err)
		}
		n, err = s.Purge(t.Context(), db, 2)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		require.Equal(t, []int64{got[0].Seq, got[2].Seq, got[3].Seq}, seqsAll(t, db, s), "the two oldest are purged first")
		n, err = s.Purge(t.Context(), db, 2)
		require.NoError(t, err)
		require.Equal(t, 1, n)

		_, err = s.Purge(t.Context(), db, 0)
		require.ErrorContains(t, err, "limit must be positive")
	})

	t.Run("NoRetentionPurgesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		n, err := b.store.Purge(t.Context(), b.db, 10)
		require.NoError(t, err)
		require.Zero(t, n)
		_, err = b.store.Purge(t.Context(), b.db, -1)
		require.Error(t, err)
	})

	// Delivered events kept in a partition do not slow its claims down:
	// the claim's index holds pending events only.
	t.Run("DeliveredEventsAreNotRead", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		const limit = 10
		s, err := New(&Config{Database: database, Retention: time.Hour})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		fillBacklog(t, db, s, 20_000, 19_000) // 19,000 delivered, then 1,000 pending
		n, claimed := handlerReadsOfClaim(t, db, s, limit)
		t.Logf("the claim read %d rows", n)
		require.Equal(t, limit, claimed)
		require.Less(t, n, int64(1_000))
	})
}

func TestInsert(t *testing.T) {
	t.Parallel()

	t.Run("ChunkLength", func(t *testing.T) {
		t.Parallel()
		small := make([]omnibox.Event, maxInsertRows+5)
		require.Equal(t, maxInsertRows, insertChunkLen(small))
		require.Equal(t, 5, insertChunkLen(small[maxInsertRows:]))
		require.Zero(t, insertChunkLen(nil))

		mib := omnibox.Event{Payload: make([]byte, 1<<20)}
		big := []omnibox.Event{mib, mib, mib, mib, mib, mib}
		require.Equal(t, 3, insertChunkLen(big), "4 MiB of data per statement")
		huge := omnibox.Event{Payload: make([]byte, 2*maxInsertBytes)}
		require.Equal(t, 1, insertChunkLen([]omnibox.Event{huge, mib}), "an event larger than the budget goes alone")
	})

	// More events than one statement can carry: several chunks, in order.
	t.Run("ChunkedInOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(2*maxInsertRows + 3)
		insert(t, b.db, b.store, events...)

		n, err := b.store.Pending(ctx, b.db)
		require.NoError(t, err)
		require.EqualValues(t, len(events), n)

		rows, err := b.db.QueryContext(ctx, "SELECT event_id, part FROM "+b.store.table+" ORDER BY seq")
		require.NoError(t, err)
		defer rows.Close()
		var got []string
		for rows.Next() {
			var (
				id   string
				part int
			)
			require.NoError(t, rows.Scan(&id, &part))
			require.Equal(t, omnibox.PartitionOf(&events[len(got)]), part, "event %s", id)
			got = append(got, id)
		}
		require.NoError(t, rows.Err())
		require.Equal(t, ids(events), got)
	})

	// 20 MiB of payloads in one call: more than the server's
	// max_allowed_packet (16 MiB on MariaDB) would take in one statement,
	// even when interpolateParams=true inlines them.
	t.Run("ChunkedByBytes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var maxPacket int
		require.NoError(t, b.db.QueryRowContext(t.Context(), "SELECT @@max_allowed_packet").Scan(&maxPacket))
		for _, interpolate := range []bool{false, true} {
			db := openVariant(t, b.database, func(_ *testing.T, cfg *mysql.Config) { cfg.InterpolateParams = interpolate })
			events := newEvents(20)
			for i := range events {
				events[i].ID = fmt.Sprintf("big-%t-%d", interpolate, i)
				events[i].Payload = bytes.Repeat([]byte{byte(i), 0, '\'', '\\'}, 1<<18) // 1 MiB, a quarter to escape
			}
			require.Greater(t, 20<<20, maxPacket, "the test needs a max_allowed_packet under 20 MiB")
			insert(t, db, b.store, events...)
			owner := fmt.Sprintf("a/%t", interpolate)
			got := claim(t, db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: owner})
			require.Equal(t, ids(events), claimedIDs(got))
			for i, ev := range got {
				require.True(t, bytes.Equal(events[i].Payload, ev.Payload), "payload %d changed", i)
			}
			require.Equal(t, len(got), complete(t, db, b.store, omnibox.CompleteParams{Owner: owner, Delivered: seqsOf(got)}).Delivered)
		}
	})

	// MySQL keeps the transaction going after a failed statement: the
	// events of a failed call must not be committed with it, while those of
	// earlier calls are.
	t.Run("FailedCallLeavesNothingEvenIfCommitted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		for _, size := range []int{3, maxInsertRows + 2} { // one chunk, two chunks
			kept := newEventsFrom(1_000_000+size, 1)
			events := newEventsFrom(2_000_000+size, size)
			events[len(events)-1].ID = events[0].ID

			tx, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: kept}))
			err = b.store.Insert(ctx, tx, omnibox.InsertParams{Events: events})
			require.ErrorIs(t, err, omnibox.ErrDuplicateEventID)
			require.ErrorContains(t, err, "omnibox_outbox")
			require.NoError(t, tx.Commit())

			got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: fmt.Sprintf("a/%d", size)})
			require.Equal(t, ids(kept), claimedIDs(got), "size %d", size)
			require.Equal(t, 1, complete(t, b.db, b.store, omnibox.CompleteParams{Owner: fmt.Sprintf("a/%d", size), Delivered: seqsOf(got)}).Delivered)
		}
	})

	t.Run("SeveralChunksNeedATransaction", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NoError(t, b.store.Insert(t.Context(), b.db, omnibox.InsertParams{Events: newEvents(2)}), "one statement needs no transaction")
		err := b.store.Insert(t.Context(), b.db, omnibox.InsertParams{Events: newEventsFrom(10, maxInsertRows+1)})
		require.ErrorContains(t, err, "pass a *sql.Tx")
		n, err := b.store.Pending(t.Context(), b.db)
		require.NoError(t, err)
		require.EqualValues(t, 2, n)
	})

	t.Run("CreatedAtOutOfRange", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, at := range []time.Time{
			time.Date(999, 12, 31, 23, 59, 59, 0, time.UTC),
			time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		} {
			events := newEvents(2)
			events[1].CreatedAt = at
			tx, err := b.db.BeginTx(t.Context(), nil)
			require.NoError(t, err)
			err = b.store.Insert(t.Context(), tx, omnibox.InsertParams{Events: events})
			require.ErrorIs(t, err, omnibox.ErrInvalidEvent)
			var evErr *omnibox.EventError
			require.ErrorAs(t, err, &evErr)
			require.Equal(t, 1, evErr.Index)
			require.NoError(t, tx.Rollback())
		}
		for _, at := range []time.Time{
			time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		} {
			ev := newEventsFrom(at.Year(), 1)[0]
			ev.CreatedAt = at
			insert(t, b.db, b.store, ev)
		}
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.Len(t, got, 2)
		require.Equal(t, time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), got[0].CreatedAt)
		require.Equal(t, time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), got[1].CreatedAt)
	})
}

// TestClaimReadsAboutLimitRows proves that a claim reads about Limit rows of
// the outbox table however large the backlog, delivered events kept for
// retention included. It runs the real Claim over a backlog of 1,000
// pending events, and over one of 36,000 pending events after 64,000
// delivered ones (laid out alike: keys, keyless events and events waiting
// for a retry recur with the same pattern), and counts, with the session's
// Handler_read_* status counters, the index and table rows that all its
// statements read: the same for both backlogs, and a few per partition and
// per event.
// It also checks with EXPLAIN FORMAT=JSON that the per-partition scans go
// through the pending index without sorting and that the probe for failed
// events of a key uses the failed index, and on MariaDB with ANALYZE
// FORMAT=JSON that a partition's scan reads about its share of rows.
func TestClaimReadsAboutLimitRows(t *testing.T) {
	t.Parallel()
	const limit = 100
	db, database := dbtest.MySQL(t)
	ctx := t.Context()
	var version string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version))
	mariaDB := strings.Contains(strings.ToLower(version), "mariadb")

	reads := map[int]int64{}
	for _, backlog := range []struct{ total, delivered int }{{1_000, 0}, {100_000, 64_000}} {
		s, err := New(&Config{Database: database, Retention: time.Hour, Table: fmt.Sprintf("backlog_%d", backlog.total)})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		fillBacklog(t, db, s, backlog.total, backlog.delivered)
		_, err = db.ExecContext(ctx, "ANALYZE TABLE "+s.table)
		require.NoError(t, err)

		for _, blockOnDead := range []bool{false, true} {
			heads := fmt.Sprintf(s.headsPrefix, s.claimable(blockOnDead)) + s.headsSuffix
			requireIndexScans(t, explain(t, db, "EXPLAIN FORMAT=JSON "+heads, "x", "x"))
			scan := s.scanPrefix + "3 AND o.pending = 1 AND " + s.claimable(blockOnDead) + " ORDER BY o.seq LIMIT 2) UNION ALL " +
				s.scanPrefix + "4 AND o.pending = 1 AND " + s.claimable(blockOnDead) + " ORDER BY o.seq LIMIT 2)"
			requireIndexScans(t, explain(t, db, "EXPLAIN FORMAT=JSON "+scan))
			if mariaDB {
				one := s.scanPrefix + "6 AND o.pending = 1 AND " + s.claimable(blockOnDead) + " ORDER BY o.seq LIMIT 10)"
				analyzed := explain(t, db, "ANALYZE FORMAT=JSON "+one)
				for _, table := range tableNodes(analyzed) {
					if table["table_name"] == "o" {
						t.Logf("backlog %d: a partition's scan for 10 events read %v index entries", backlog.total, table["r_rows"])
						require.LessOrEqual(t, table["r_rows"], float64(20), "a partition's scan read more than twice its share")
					}
				}
			}
		}

		n, claimed := handlerReadsOfClaim(t, db, s, limit)
		t.Logf("backlog %d: the claim read %d rows (Handler_read_*) and leased %d events", backlog.total, n, claimed)
		require.Equal(t, limit, claimed, "the claim must lease Limit events")
		// Per partition, the heads read two index entries (its first pending
		// event and the probe for a failed one of its key), which MariaDB
		// counts twice (with its subquery cache's lookups), and the lease
		// one; per event, the candidates read about as many as the heads,
		// the lease and the final read one each (by primary key).
		require.LessOrEqual(t, n, int64(6*omnibox.Partitions+6*limit), "the claim read more than expected")
		reads[backlog.total] = n
	}
	require.Equal(t, reads[1_000], reads[100_000], "the rows a claim reads depend on the backlog")
}

// fillBacklog inserts n events with one INSERT ... SELECT over a cross join
// of digits (portable, unlike MariaDB's seq_1_to_n, and without MySQL's
// cte_max_recursion_depth of 1000). Event i is in partition i % 64; three
// in four have the key "k<i % 640>" (so a key stays in one partition), the
// others none; the first delivered events are delivered (state 3), and of
// the others those with i % 100 = 10 wait for a retry an hour away.
func fillBacklog(t *testing.T, db *sql.DB, s *Store, n, delivered int) {
	t.Helper()
	const digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4" +
		" UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
	_, err := db.ExecContext(t.Context(), "INSERT INTO "+s.table+
		" (event_id, topic, event_key, payload, created_at, part, state, next_attempt_at, delivered_at)"+
		" SELECT CONCAT('event-', n), 'topic', IF(n % 4 = 3, '', CONCAT('k', n % 640)), x'00', UTC_TIMESTAMP(6), n % 64,"+
		" CASE WHEN n < ? THEN 3 WHEN n % 100 = 10 THEN 1 ELSE 0 END,"+
		" IF(n >= ? AND n % 100 = 10, DATE_ADD(UTC_TIMESTAMP(6), INTERVAL 1 HOUR), NULL),"+
		" IF(n < ?, UTC_TIMESTAMP(6), NULL) FROM ("+
		"SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS n FROM "+
		digits+" a CROSS JOIN "+digits+" b CROSS JOIN "+digits+" c CROSS JOIN "+digits+" e CROSS JOIN "+digits+" f"+
		") nums WHERE n < ? ORDER BY n", delivered, delivered, delivered, n)
	require.NoError(t, err)
	pending, err := s.Pending(t.Context(), db)
	require.NoError(t, err)
	require.EqualValues(t, n-delivered, pending)
}

// handlerReadsOfClaim runs a claim in a transaction that it rolls back and
// returns the rows its statements read, by the session's Handler_read_*
// counters, and the number of events it claimed.
func handlerReadsOfClaim(t *testing.T, db *sql.DB, s *Store, limit int) (reads int64, claimed int) {
	t.Helper()
	ctx := t.Context()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	before := handlerReads(t, tx)
	overhead := handlerReads(t, tx) - before // of SHOW STATUS itself
	before += overhead
	res, err := s.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: limit, Owner: "explain/1"})
	require.NoError(t, err)
	return handlerReads(t, tx) - before - overhead, len(res.Events)
}

func handlerReads(t *testing.T, tx *sql.Tx) int64 {
	t.Helper()
	rows, err := tx.QueryContext(t.Context(), "SHOW SESSION STATUS LIKE 'Handler_read%'")
	require.NoError(t, err)
	defer rows.Close()
	var total int64
	for rows.Next() {
		var (
			name  string
			value int64
		)
		require.NoError(t, rows.Scan(&name, &value))
		total += value
	}
	require.NoError(t, rows.Err())
	return total
}

func explain(t *testing.T, db *sql.DB, query string, args ...any) map[string]any {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	var plan string
	require.NoError(t, tx.QueryRowContext(t.Context(), query, args...).Scan(&plan))
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(plan), &v), plan)
	return v
}

// requireIndexScans checks that the plan reads the outbox table as o
// through the pending index and as b through the failed index, each by ref
// (an equality on the index's leading columns), and that nothing is
// sorted.
func requireIndexScans(t *testing.T, plan map[string]any) {
	t.Helper()
	want := map[string]string{"o": pendingIndex, "b": failedIndex}
	seen := map[string]bool{}
	for _, table := range tableNodes(plan) {
		name, _ := table["table_name"].(string)
		index, ok := want[name]
		if !ok {
			continue
		}
		seen[name] = true
		require.Equal(t, index, table["key"], "table %s: %v", name, plan)
		require.Equal(t, "ref", table["access_type"], "table %s: %v", name, plan)
	}
	require.True(t, seen["o"] && seen["b"], "%v", plan)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				require.NotEqual(t, "filesort", k, "a sort: %v", plan)
				if k == "using_filesort" {
					require.Equal(t, false, child, "a sort: %v", plan)
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(plan)
}

// tableNodes returns the "table" objects of an EXPLAIN FORMAT=JSON plan.
func tableNodes(v any) []map[string]any {
	var out []map[string]any
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if table, ok := child.(map[string]any); ok && k == "table" {
				out = append(out, table)
			}
			out = append(out, tableNodes(child)...)
		}
	case []any:
		for _, child := range v {
			out = append(out, tableNodes(child)...)
		}
	}
	return out
}

// claim runs one claim in a committed transaction.
func claim(t *testing.T, db *sql.DB, s *Store, p omnibox.ClaimParams) []omnibox.ClaimedEvent {
	t.Helper()
	events, err := tryClaim(t.Context(), db, s, p)
	require.NoError(t, err)
	return events
}

func tryClaim(ctx context.Context, db *sql.DB, s *Store, p omnibox.ClaimParams) ([]omnibox.ClaimedEvent, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	res, err := s.Claim(ctx, tx, p)
	if err != nil {
		return nil, err
	}
	return res.Events, tx.Commit()
}

// insert writes events in one committed transaction.
func insert(t *testing.T, db *sql.DB, s *Store, events ...omnibox.Event) {
	t.Helper()
	storetest.Insert(t, db, s, events...)
}

func newEvents(n int) []omnibox.Event { return newEventsFrom(0, n) }

func newEventsFrom(from, n int) []omnibox.Event { return storetest.NumberedEvents(from, n) }

var ids = storetest.EventIDs

func claimedIDs(events []omnibox.ClaimedEvent) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}

func seqsOf(events []omnibox.ClaimedEvent) []int64 {
	out := make([]int64, len(events))
	for i, ev := range events {
		out[i] = ev.Seq
	}
	return out
}

// complete runs one Complete in a committed transaction.
func complete(t *testing.T, db *sql.DB, s *Store, p omnibox.CompleteParams) *omnibox.CompleteResult {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, err := s.Complete(t.Context(), tx, p)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	return res
}

// keyed sets the key of events, which puts them in one partition.
func keyed(key string, events []omnibox.Event) []omnibox.Event {
	for i := range events {
		events[i].Key = key
	}
	return events
}

// requireParts checks how many partitions each owner leases.
func requireParts(t *testing.T, db *sql.DB, s *Store, want map[string]int) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SELECT claimed_by, COUNT(*) FROM "+s.partsTable+" WHERE claimed_by IS NOT NULL GROUP BY claimed_by")
	require.NoError(t, err)
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var (
			owner string
			n     int
		)
		require.NoError(t, rows.Scan(&owner, &n))
		got[owner] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got)
}

// migrateFirst applies the first migration only, as a store of the first
// version did.
func migrateFirst(t *testing.T, db *sql.DB, s *Store) {
	t.Helper()
	m := *s.migrator
	m.migrations = m.migrations[:1]
	m.after = nil
	m.tables = m.tables[:3]
	require.NoError(t, m.migrate(t.Context(), db))
}

// distinctParts returns the partitions of events.
func distinctParts(events []omnibox.Event) map[int]bool {
	parts := map[int]bool{}
	for i := range events {
		parts[omnibox.PartitionOf(&events[i])] = true
	}
	return parts
}

// TestGuards checks the session variables that Claim, Complete and Purge
// set from their context's deadline, and that they set none without one.
func TestGuards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var version string
	require.NoError(t, b.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version))
	show := "SELECT @@innodb_lock_wait_timeout, @@max_execution_time, @@wait_timeout"
	if strings.Contains(strings.ToLower(version), "mariadb") {
		show = "SELECT @@innodb_lock_wait_timeout, @@max_statement_time, @@idle_transaction_timeout"
	}
	conn, err := b.db.Conn(ctx)
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	read := func(t *testing.T) [3]float64 {
		t.Helper()
		var v [3]float64
		require.NoError(t, conn.QueryRowContext(ctx, show).Scan(&v[0], &v[1], &v[2]))
		return v
	}
	before := read(t)
	run := func(t *testing.T, ctx context.Context, call func(ctx context.Context, tx *sql.Tx)) {
		t.Helper()
		tx, err := conn.BeginTx(t.Context(), b.store.RelayTxOptions())
		require.NoError(t, err)
		call(ctx, tx)
		require.NoError(t, tx.Commit())
	}
	claimCall := func(ctx context.Context, tx *sql.Tx) {
		_, err := b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 1, Owner: "guard/1"})
		require.NoError(t, err)
	}
	run(t, ctx, claimCall)
	require.Equal(t, before, read(t), "a claim without a deadline set a guard")

	deadline, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for name, call := range map[string]func(ctx context.Context, tx *sql.Tx){
		"Claim": claimCall,
		"Complete": func(ctx context.Context, tx *sql.Tx) {
			_, err := b.store.Complete(ctx, tx, omnibox.CompleteParams{Owner: "guard/1"})
			require.NoError(t, err)
		},
	} {
		_, err := conn.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = DEFAULT")
		require.NoError(t, err)
		run(t, deadline, call)
		got := read(t)
		require.EqualValues(t, 5, got[0], "%s: innodb_lock_wait_timeout", name)
		require.Greater(t, got[1], 0.0, "%s: statement time limit", name)
		require.EqualValues(t, 5, got[2], "%s: idle timeout", name)
	}

	kept, err := New(&Config{Retention: time.Hour})
	require.NoError(t, err)
	_, err = kept.Purge(deadline, b.db, 10)
	require.NoError(t, err)
}
