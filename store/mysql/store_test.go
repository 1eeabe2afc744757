package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"sync"
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
		require.Equal(t, "omnibox_outbox", s.tableName)
		up := s.Migrations()[0].Up
		require.Contains(t, up, "CREATE TABLE IF NOT EXISTS `omnibox_outbox` (")
		require.NotContains(t, up, "`.`", "names must be unqualified")
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
		require.Len(t, migrations, 1)
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
	})

	t.Run("MigrationFS", func(t *testing.T) {
		t.Parallel()
		s, err := New(&Config{Database: "app", Table: "events"})
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
		require.Equal(t, []string{"outbox", "outbox_lock", "outbox_migrations"}, tables)

		var (
			version, count, locks int
			name                  string
		)
		require.NoError(t, db.QueryRowContext(t.Context(),
			"SELECT MAX(version), MAX(name), COUNT(*) FROM `"+other+"`.`outbox_migrations`").Scan(&version, &name, &count))
		require.Equal(t, 1, version)
		require.Equal(t, "create_outbox", name)
		require.Equal(t, 1, count)
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM `"+other+"`.`outbox_lock`").Scan(&locks))
		require.Equal(t, 1, locks)
	})

	t.Run("TheDownMigrationDropsTheTables", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, stmt := range splitStatements(b.store.Migrations()[0].Down) {
			_, err := b.db.ExecContext(t.Context(), stmt)
			require.NoError(t, err)
		}
		_, err := b.store.Pending(t.Context(), b.db)
		require.ErrorContains(t, err, "doesn't exist")
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
	require.Equal(t, 1, got[0].Attempts)
	n, err := s.MarkDelivered(t.Context(), db, omnibox.MarkDeliveredParams{Owner: "rélay/😀/1", Seqs: []int64{got[0].Seq}})
	require.NoError(t, err)
	require.Equal(t, 1, n)
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
				insert(t, db, s, newEvents(1)...)
				require.Len(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"}), 1)
				require.Empty(t, claim(t, db, s, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/1"}))
				insert(t, db, s, newEventsFrom(1, 1)...)
				// (a/1's lease still blocks; release it to test a short one)
				require.NoError(t, s.Release(t.Context(), db, omnibox.ReleaseParams{Owner: "a/1", Seqs: seqsAll(t, db, s)}))
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
		} {
			_, err := b.store.Claim(t.Context(), b.db, p)
			require.Error(t, err, "%+v", p)
		}
	})

	// While one claim's transaction is open, a concurrent claim returns
	// nothing rather than wait or read the same rows.
	t.Run("ConcurrentClaimReturnsNothing", func(t *testing.T) {
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
	})

	// An event inserted by a transaction still open does not hold the claim
	// up: the claim neither sees nor waits for it, as on PostgreSQL. Once
	// committed, it is claimed at the head.
	t.Run("UncommittedInsertDoesNotBlock", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(2)

		open, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = open.Rollback() }()
		require.NoError(t, b.store.Insert(ctx, open, omnibox.InsertParams{Events: events[:1]})) // the lower seq
		insert(t, b.db, b.store, events[1])

		// A locking read of the head would wait for the open transaction
		// (innodb_lock_wait_timeout, 50s by default); this context ends
		// well before.
		claimCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		got, err := tryClaim(claimCtx, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.NoError(t, err)
		require.Equal(t, ids(events[1:]), claimedIDs(got))

		require.NoError(t, open.Commit())
		got2 := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "b/1"})
		require.Equal(t, ids(events[:1]), claimedIDs(got2), "the late event is claimed first, up to the live lease")
		require.Less(t, got2[0].Seq, got[0].Seq)
	})

	// A transaction whose snapshot predates another claim still cannot
	// lease the same events: the claim checks the rows' latest version.
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

	// Owners and prefixes are compared byte for byte, whatever their
	// characters: no case folding, no padding, no collation.
	t.Run("OwnersComparedExactly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		events := newEvents(2)
		insert(t, b.db, b.store, events...)

		owner := strings.Repeat("€", maxOwnerLen/3) // 255 bytes, 85 characters
		require.Len(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 1, Owner: owner}), 1)

		for _, other := range []string{owner + " ", owner[:len(owner)-3], owner[:len(owner)-3] + "\u20ac\u0000"} {
			n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: other, Seqs: seqsAll(t, b.db, b.store)})
			require.NoError(t, err)
			require.Zero(t, n, "owner %q", other)
		}

		// A non-ASCII prefix takes over its own leases, and only those.
		prefix := "relé-ß/"
		first := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: prefix + "1", OwnerPrefix: "€"})
		require.Len(t, first, 2, "the owner prefix € takes the 255-byte owner's lease over")
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "relé-s/1", OwnerPrefix: "relé-s/"}))
		require.Empty(t, claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "RELÉ-ß/1", OwnerPrefix: "RELÉ-ß/"}))
		again := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: prefix + "2", OwnerPrefix: prefix})
		require.Equal(t, ids(events), claimedIDs(again))
		require.Equal(t, []int{3, 2}, []int{again[0].Attempts, again[1].Attempts})

		n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: prefix + "2", Seqs: seqsAll(t, b.db, b.store)})
		require.NoError(t, err)
		require.Equal(t, 2, n)
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

	t.Run("ReleaseKeepsLongAndInvalidErrors", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		insert(t, b.db, b.store, newEvents(2)...)
		got := claim(t, b.db, b.store, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "a/1"})
		require.Len(t, got, 2)
		long := strings.Repeat("€", 30_000) // 90,000 bytes
		require.NoError(t, b.store.Release(t.Context(), b.db, omnibox.ReleaseParams{Owner: "a/1", Seqs: []int64{got[0].Seq}, Error: long}))
		require.NoError(t, b.store.Release(t.Context(), b.db, omnibox.ReleaseParams{Owner: "a/1", Seqs: []int64{got[1].Seq}, Error: "bad \xff byte"}))
		lastErrors := map[int64]string{}
		for _, ev := range got {
			var s string
			require.NoError(t, b.db.QueryRowContext(t.Context(), "SELECT last_error FROM "+b.store.table+" WHERE seq = ?", ev.Seq).Scan(&s))
			lastErrors[ev.Seq] = s
		}
		require.Equal(t, long[:maxLastErrorLen/3*3], lastErrors[got[0].Seq])
		require.True(t, utf8.ValidString(lastErrors[got[0].Seq]))
		require.Equal(t, "bad \uFFFD byte", lastErrors[got[1].Seq])
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
			n, err := b.store.MarkDelivered(t.Context(), db, omnibox.MarkDeliveredParams{Owner: owner, Seqs: seqsOf(got)})
			require.NoError(t, err)
			require.Equal(t, len(got), n)
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
			n, err := b.store.MarkDelivered(ctx, b.db, omnibox.MarkDeliveredParams{Owner: fmt.Sprintf("a/%d", size), Seqs: seqsOf(got)})
			require.NoError(t, err)
			require.Equal(t, 1, n)
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
// the outbox table however large the backlog. It runs the real Claim over a
// backlog of 1,000 and of 100,000 events and counts, with the session's
// Handler_read_* status counters, the index and table rows that all its
// statements read: the same for both backlogs, and at most three passes of
// Limit rows (the head, the locking read and the update). It also checks
// with EXPLAIN FORMAT=JSON that the head is read through the primary key
// without sorting, and on MariaDB with ANALYZE FORMAT=JSON that it reads
// Limit rows.
func TestClaimReadsAboutLimitRows(t *testing.T) {
	t.Parallel()
	const limit = 100
	db, database := dbtest.MySQL(t)
	ctx := t.Context()
	var version string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version))
	mariaDB := strings.Contains(strings.ToLower(version), "mariadb")

	reads := map[int]int64{}
	for _, backlog := range []int{1_000, 100_000} {
		s, err := New(&Config{Database: database, Table: fmt.Sprintf("backlog_%d", backlog)})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		fillBacklog(t, db, s, backlog)

		plan := explain(t, db, "EXPLAIN FORMAT=JSON "+s.headPrefix+fmt.Sprint(limit))
		requirePrimaryKeyScan(t, plan)
		if mariaDB {
			analyzed := explain(t, db, "ANALYZE FORMAT=JSON "+s.headPrefix+fmt.Sprint(limit))
			rRows := tableNodes(analyzed)[0]["r_rows"]
			t.Logf("backlog %d: the head read %v rows", backlog, rRows)
			require.LessOrEqual(t, rRows, float64(limit), "the head read more than Limit rows")
		}

		n, claimed := handlerReadsOfClaim(t, db, s, limit)
		t.Logf("backlog %d: the claim read %d rows (Handler_read_*) and leased %d events", backlog, n, claimed)
		require.Equal(t, limit, claimed, "the claim must lease Limit events")
		require.LessOrEqual(t, n, int64(3*limit+10), "the claim read more than three passes of Limit rows")
		reads[backlog] = n
	}
	require.Equal(t, reads[1_000], reads[100_000], "the rows a claim reads depend on the backlog")
}

// fillBacklog inserts n events with one INSERT ... SELECT over a cross join
// of digits (portable, unlike MariaDB's seq_1_to_n, and without MySQL's
// cte_max_recursion_depth of 1000).
func fillBacklog(t *testing.T, db *sql.DB, s *Store, n int) {
	t.Helper()
	const digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4" +
		" UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
	_, err := db.ExecContext(t.Context(), "INSERT INTO "+s.table+" (event_id, topic, payload, created_at)"+
		" SELECT CONCAT('event-', n), 'topic', x'00', UTC_TIMESTAMP(6) FROM ("+
		"SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS n FROM "+
		digits+" a CROSS JOIN "+digits+" b CROSS JOIN "+digits+" c CROSS JOIN "+digits+" e CROSS JOIN "+digits+" f"+
		") nums WHERE n < ? ORDER BY n", n)
	require.NoError(t, err)
	pending, err := s.Pending(t.Context(), db)
	require.NoError(t, err)
	require.EqualValues(t, n, pending)
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

func explain(t *testing.T, db *sql.DB, query string) map[string]any {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	var plan string
	require.NoError(t, tx.QueryRowContext(t.Context(), query).Scan(&plan))
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(plan), &v), plan)
	return v
}

// requirePrimaryKeyScan checks that every table access of the plan goes
// through the primary key and that nothing is sorted.
func requirePrimaryKeyScan(t *testing.T, plan map[string]any) {
	t.Helper()
	nodes := tableNodes(plan)
	require.NotEmpty(t, nodes)
	for _, table := range nodes {
		require.Equal(t, "PRIMARY", table["key"], "%v", plan)
		require.NotEqual(t, "ALL", table["access_type"], "a full scan: %v", plan)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				require.NotEqual(t, "filesort", k, "the head is sorted: %v", plan)
				if k == "using_filesort" {
					require.Equal(t, false, child, "the head is sorted: %v", plan)
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
