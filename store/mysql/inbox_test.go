package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/migration"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// inboxHarness runs the inbox conformance suite on the MySQL test server,
// each test in its own database, through handles configured by configure.
func inboxHarness(configure func(t *testing.T, cfg *mysql.Config), qualified bool) storetest.InboxHarness {
	var databases sync.Map // *sql.DB -> database
	databaseOf := func(t *testing.T, db *sql.DB) string {
		t.Helper()
		database, ok := databases.Load(db)
		require.True(t, ok, "db was not made by NewDB")
		if !qualified {
			return ""
		}
		return database.(string)
	}
	return storetest.InboxHarness{
		NewDB: func(t *testing.T) *sql.DB {
			t.Helper()
			_, database := dbtest.MySQL(t)
			db := openVariant(t, database, configure)
			databases.Store(db, database)
			t.Cleanup(func() { databases.Delete(db) })
			return db
		},
		NewOutboxStore: func(t *testing.T, db *sql.DB) (storetest.Store, error) {
			t.Helper()
			s, err := New(&Config{Database: databaseOf(t, db)})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		NewStore: func(t *testing.T, db *sql.DB, table string) (storetest.InboxStore, error) {
			t.Helper()
			s, err := NewInbox(&InboxConfig{Database: databaseOf(t, db), Table: table})
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		SetProcessedAgo: func(t *testing.T, db *sql.DB, table string, p inbox.RecordParams, ago time.Duration) {
			t.Helper()
			s, err := NewInbox(&InboxConfig{Database: databaseOf(t, db), Table: table})
			require.NoError(t, err)
			setProcessedAgo(t, db, s, p, ago)
		},
	}
}

// setProcessedAgo sets the processed_at of p to the database's clock minus
// ago.
func setProcessedAgo(t *testing.T, db *sql.DB, s *InboxStore, p inbox.RecordParams, ago time.Duration) {
	t.Helper()
	res, err := db.ExecContext(t.Context(), "UPDATE "+s.table+" SET processed_at = UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND"+
		" WHERE consumer = CAST(? AS BINARY) AND message_id = CAST(? AS BINARY)", ago.Microseconds(), p.Consumer, p.MessageID)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "no row for %+v", p)
}

func TestInboxConformance(t *testing.T) {
	t.Parallel()
	for _, v := range dsnVariants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			// InnoDB fails all but one of several deliveries that wait on a
			// transaction that rolls back (see InboxStore.Record).
			storetest.RunInbox(t, inboxHarness(v.configure, v.qualified), storetest.Features{InboxWaitersMayDeadlock: true})
		})
	}
}

type inboxBundle struct {
	database string
	db       *sql.DB
	store    *InboxStore
}

// setupInbox opens a fresh database (bare DSN) and migrates an inbox store
// on the default table in it.
func setupInbox(t *testing.T) *inboxBundle {
	t.Helper()
	db, database := dbtest.MySQL(t)
	store, err := NewInbox(&InboxConfig{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(t.Context(), db))
	return &inboxBundle{database: database, db: db, store: store}
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
		require.Equal(t, "`omnibox_inbox`", s.table)
		require.Equal(t, "omnibox_inbox", s.tableName)
		up := s.Migrations()[0].Up
		require.Contains(t, up, "CREATE TABLE IF NOT EXISTS `omnibox_inbox` (")
		require.Contains(t, up, "KEY `omnibox_inbox_processed_at` (processed_at)")
		require.NotContains(t, up, "`.`", "names must be unqualified")
	})

	t.Run("InvalidNames", func(t *testing.T) {
		t.Parallel()
		bad := []string{
			" ", "Bad", "1x", "x;drop table y", "a-b", "x`y", "x`; DROP TABLE y; -- ", `x"y`, "x'y",
			strings.Repeat("a", 100), "omnibox inbox", "x.y", "naïve", "x\x00y", "x/*", "x#",
		}
		for _, name := range bad {
			for _, config := range []*InboxConfig{{Table: name}, {Database: name}} {
				require.ErrorIs(t, config.Validate(), omnibox.ErrInvalidIdentifier, "%+v", config)
				s, err := NewInbox(config)
				require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier, "%+v", config)
				require.Nil(t, s)
			}
		}
		require.ErrorContains(t, (&InboxConfig{Database: "Bad"}).Validate(), "InboxConfig.Database")
		require.ErrorContains(t, (&InboxConfig{Table: "Bad"}).Validate(), "InboxConfig.Table")
	})
}

func TestInboxMigrations(t *testing.T) {
	t.Parallel()

	t.Run("RenderedForNames", func(t *testing.T) {
		t.Parallel()
		s, err := NewInbox(&InboxConfig{Database: "app", Table: "seen"})
		require.NoError(t, err)
		migrations := s.Migrations()
		require.Len(t, migrations, 1)
		m := migrations[0]
		require.Equal(t, 1, m.Version)
		require.Equal(t, "create_inbox", m.Name)
		require.Contains(t, m.Up, "CREATE TABLE IF NOT EXISTS `app`.`seen` (")
		require.Contains(t, m.Up, "KEY `seen_processed_at` (processed_at)")
		require.NotContains(t, m.Up, "{{")
		require.Len(t, splitStatements(m.Up), 1)
		require.Equal(t, "DROP TABLE IF EXISTS `app`.`seen`;\n", m.Down)

		migrations[0].Up = "DROP TABLE x"
		require.Equal(t, m.Up, s.Migrations()[0].Up, "Migrations must return a copy")
	})

	t.Run("MigrationFS", func(t *testing.T) {
		t.Parallel()
		s, err := NewInbox(&InboxConfig{})
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

	t.Run("RecordsVersionsAndTheDownDrops", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t)
		ctx := t.Context()
		require.NoError(t, b.store.Migrate(ctx, b.db))
		var (
			version, count int
			name           string
		)
		require.NoError(t, b.db.QueryRowContext(ctx, "SELECT MAX(version), MAX(name), COUNT(*) FROM omnibox_inbox_migrations").Scan(&version, &name, &count))
		require.Equal(t, 1, version)
		require.Equal(t, "create_inbox", name)
		require.Equal(t, 1, count)

		for _, stmt := range splitStatements(b.store.Migrations()[0].Down) {
			_, err := b.db.ExecContext(ctx, stmt)
			require.NoError(t, err)
		}
		_, err := b.store.Processed(ctx, b.db, inbox.RecordParams{Consumer: "c", MessageID: "m"})
		require.ErrorContains(t, err, "doesn't exist")
	})

	t.Run("QualifiedAndUnqualified", func(t *testing.T) {
		t.Parallel()
		db, database := dbtest.MySQL(t)
		// The bare DSN names another database than the one configured.
		other := openVariant(t, database, func(_ *testing.T, cfg *mysql.Config) { cfg.DBName = "" })
		s, err := NewInbox(&InboxConfig{Database: database})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), other))
		p := inbox.RecordParams{Consumer: "c", MessageID: "m"}
		isNew, err := s.Record(t.Context(), other, p)
		require.NoError(t, err)
		require.True(t, isNew)

		unqualified, err := NewInbox(&InboxConfig{})
		require.NoError(t, err)
		require.ErrorContains(t, unqualified.Migrate(t.Context(), other), "no database selected")
		done, err := unqualified.Processed(t.Context(), db, p)
		require.NoError(t, err)
		require.True(t, done)
	})

	t.Run("AutocommitOffRefused", func(t *testing.T) {
		t.Parallel()
		_, database := dbtest.MySQL(t)
		db := openVariant(t, database, func(_ *testing.T, cfg *mysql.Config) {
			cfg.Params = map[string]string{"autocommit": "0"}
		})
		s, err := NewInbox(&InboxConfig{})
		require.NoError(t, err)
		require.ErrorContains(t, s.Migrate(t.Context(), db), "remove autocommit=0")
	})

	t.Run("OtherEngineRefused", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		_, err := db.ExecContext(t.Context(), "CREATE TABLE omnibox_inbox (consumer VARBINARY(255) NOT NULL, message_id VARBINARY(128) NOT NULL, "+
			"processed_at DATETIME(6) NOT NULL, PRIMARY KEY (consumer, message_id)) ENGINE = MyISAM")
		require.NoError(t, err)
		s, err := NewInbox(&InboxConfig{})
		require.NoError(t, err)
		err = s.Migrate(t.Context(), db)
		require.ErrorContains(t, err, `uses the "MyISAM" engine`)
		require.ErrorContains(t, err, "ENGINE = InnoDB")
	})

	t.Run("WithOutboxConcurrently", func(t *testing.T) {
		t.Parallel()
		db, _ := dbtest.MySQL(t)
		outbox, err := New(&Config{})
		require.NoError(t, err)
		in, err := NewInbox(&InboxConfig{})
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

// TestInboxDSN checks that the inbox does not depend on the DSN: with each
// setting, names and IDs still compare byte for byte, duplicates are told
// apart from new rows, and Purge deletes by the UTC database clock.
func TestInboxDSN(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	variants := map[string]func(*testing.T, *mysql.Config){
		"Bare":                  func(*testing.T, *mysql.Config) {},
		"ParseTimeLocBerlin":    func(_ *testing.T, cfg *mysql.Config) { cfg.ParseTime, cfg.Loc = true, berlin },
		"InterpolateParams":     func(_ *testing.T, cfg *mysql.Config) { cfg.InterpolateParams = true },
		"SessionTimeZone":       func(_ *testing.T, cfg *mysql.Config) { cfg.Params = map[string]string{"time_zone": "'+13:00'"} },
		"ClientFoundRows":       func(_ *testing.T, cfg *mysql.Config) { cfg.ClientFoundRows = true },
		"ClientFoundRowsInterp": func(_ *testing.T, cfg *mysql.Config) { cfg.ClientFoundRows, cfg.InterpolateParams = true, true },
		"CharsetLatin1":         func(t *testing.T, cfg *mysql.Config) { require.NoError(t, cfg.Apply(mysql.Charset("latin1", ""))) },
		"CharsetUTF8MB3":        func(t *testing.T, cfg *mysql.Config) { require.NoError(t, cfg.Apply(mysql.Charset("utf8mb3", ""))) },
		"CharsetLatin1Interp": func(t *testing.T, cfg *mysql.Config) {
			require.NoError(t, cfg.Apply(mysql.Charset("latin1", "")))
			cfg.InterpolateParams = true
		},
		"CollationUnicode": func(_ *testing.T, cfg *mysql.Config) { cfg.Collation = "utf8mb4_unicode_ci" },
		"NonStrictSQLMode": func(_ *testing.T, cfg *mysql.Config) { cfg.Params = map[string]string{"sql_mode": "''"} },
		"NonStrictSQLModeInterp": func(_ *testing.T, cfg *mysql.Config) {
			cfg.Params, cfg.InterpolateParams = map[string]string{"sql_mode": "''"}, true
		},
		"SQLModeANSIQuotesNoBackslashEscapes": func(_ *testing.T, cfg *mysql.Config) {
			cfg.Params = map[string]string{"sql_mode": "'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'"}
			cfg.InterpolateParams = true
		},
		"ReadCommittedSession": func(t *testing.T, cfg *mysql.Config) {
			cfg.Params = map[string]string{isolationVariable(t): "'READ-COMMITTED'"}
		},
	}
	for name, configure := range variants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, database := dbtest.MySQL(t)
			db := openVariant(t, database, configure)
			s, err := NewInbox(&InboxConfig{})
			require.NoError(t, err)
			require.NoError(t, s.Migrate(t.Context(), db))
			requireInboxBasics(t, db, s)
		})
	}
}

// requireInboxBasics records, checks and purges a few awkward names and IDs
// through db.
func requireInboxBasics(t *testing.T, db *sql.DB, s *InboxStore) {
	t.Helper()
	ctx := t.Context()
	all := []inbox.RecordParams{
		{Consumer: "потребитель 🚀", MessageID: "événement/\u00e9/'quote\"\\"},
		{Consumer: "потребитель 🚀", MessageID: "e\u0301ve\u0301nement/e\u0301/'quote\"\\"},
		{Consumer: "потребитель 🚀 ", MessageID: "événement/\u00e9/'quote\"\\"},
		{Consumer: "c", MessageID: "ID"},
		{Consumer: "c", MessageID: "id"},
		{Consumer: "c", MessageID: "id "},
		{Consumer: "c", MessageID: strings.Repeat("🚀", inbox.MaxMessageIDLen/4)},
		{Consumer: strings.Repeat("é", inbox.MaxConsumerLen/2) + "c", MessageID: "m"},
	}
	record := func(p inbox.RecordParams) bool {
		t.Helper()
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		isNew, err := s.Record(ctx, tx, p)
		require.NoError(t, err, "%+v", p)
		require.NoError(t, tx.Commit())
		return isNew
	}
	for _, p := range all {
		require.True(t, record(p), "%+v", p)
	}
	for _, p := range all {
		require.False(t, record(p), "%+v", p)
		done, err := s.Processed(ctx, db, p)
		require.NoError(t, err)
		require.True(t, done, "%+v", p)
	}
	// The bytes stored are the bytes sent.
	var n int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+s.table+" WHERE HEX(consumer) = ? AND HEX(message_id) = ?",
		fmt.Sprintf("%X", all[0].Consumer), fmt.Sprintf("%X", all[0].MessageID)).Scan(&n))
	require.Equal(t, 1, n)

	// Purge's cutoff is the database's UTC clock, whatever the session's
	// time zone or the DSN's loc: nothing is a minute old yet; once every
	// row is aged by two minutes (on the server), all are.
	deleted, err := s.Purge(ctx, db, inbox.PurgeParams{Limit: 100, OlderThan: time.Minute})
	require.NoError(t, err)
	require.Zero(t, deleted)
	_, err = db.ExecContext(ctx, "UPDATE "+s.table+" SET processed_at = processed_at - INTERVAL 2 MINUTE")
	require.NoError(t, err)
	deleted, err = s.Purge(ctx, db, inbox.PurgeParams{Limit: 3, OlderThan: time.Minute})
	require.NoError(t, err)
	require.Equal(t, 3, deleted)
	deleted, err = s.Purge(ctx, db, inbox.PurgeParams{Limit: 100, OlderThan: time.Minute})
	require.NoError(t, err)
	require.Equal(t, len(all)-3, deleted)
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

	t.Run("PurgeOlderThanExtremes", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t)
		ctx := t.Context()
		p := inbox.RecordParams{Consumer: "c", MessageID: "m"}
		isNew, err := b.store.Record(ctx, b.db, p)
		require.NoError(t, err)
		require.True(t, isNew)
		// The longest Duration (292 years) stays within DATETIME's range.
		n, err := b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: 10, OlderThan: math.MaxInt64})
		require.NoError(t, err)
		require.Zero(t, n)
		n, err = b.store.Purge(ctx, b.db, inbox.PurgeParams{Limit: 10})
		require.NoError(t, err)
		require.Equal(t, 1, n)
	})

	// Record waits for another transaction's uncommitted row: the server
	// shows it in LOCK WAIT.
	t.Run("SecondRecordWaitsOnTheFirstTransaction", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t)
		ctx := t.Context()
		p := inbox.RecordParams{Consumer: "c", MessageID: "wait"}
		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		isNew, err := b.store.Record(ctx, tx1, p)
		require.NoError(t, err)
		require.True(t, isNew)

		results, ids := recordConcurrently(t, b, p, 1)
		requireLockWaits(t, b.db, ids)
		require.NoError(t, tx1.Commit())
		r := <-results
		require.NoError(t, r.err)
		require.False(t, r.isNew)
	})

	// The InnoDB limit documented on Record: three deliveries wait on a
	// first that rolls back; one records the pair, the two others fail with
	// a deadlock that says to retry, and their retry sees the pair.
	t.Run("WaitersOfARollbackDeadlock", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t)
		ctx := t.Context()
		p := inbox.RecordParams{Consumer: "c", MessageID: "deadlock"}
		tx1, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx1.Rollback() }()
		isNew, err := b.store.Record(ctx, tx1, p)
		require.NoError(t, err)
		require.True(t, isNew)

		const waiters = 3
		results, ids := recordConcurrently(t, b, p, waiters)
		requireLockWaits(t, b.db, ids)
		require.NoError(t, tx1.Rollback())
		var news, deadlocks int
		for range waiters {
			r := <-results
			switch {
			case r.err != nil:
				require.ErrorContains(t, r.err, "Error 1213")
				require.ErrorContains(t, r.err, "retry it")
				deadlocks++
			case r.isNew:
				news++
			}
		}
		require.Equal(t, 1, news)
		require.Equal(t, waiters-1, deadlocks)
		isNew, err = b.store.Record(ctx, b.db, p)
		require.NoError(t, err)
		require.False(t, isNew)
	})

	// Purge reads the processed_at index in order, with no sort.
	t.Run("PurgeUsesTheIndex", func(t *testing.T) {
		t.Parallel()
		b := setupInbox(t)
		ctx := t.Context()
		const digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4" +
			" UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
		_, err := b.db.ExecContext(ctx, "INSERT INTO "+b.store.table+" (consumer, message_id, processed_at)"+
			" SELECT 'c', CONCAT('m-', n), '2001-01-01' + INTERVAL n SECOND FROM ("+
			"SELECT a.d + 10*b.d + 100*c.d + 1000*e.d AS n FROM "+
			digits+" a CROSS JOIN "+digits+" b CROSS JOIN "+digits+" c CROSS JOIN "+digits+" e) nums")
		require.NoError(t, err)
		_, err = b.db.ExecContext(ctx, "ANALYZE TABLE "+b.store.table)
		require.NoError(t, err)
		plan := explain(t, b.db, "EXPLAIN FORMAT=JSON "+strings.Replace(b.store.purgePrefix, "?", "'2002-01-01 00:00:00.000000'", 1)+"100")
		nodes := tableNodes(plan)
		require.Len(t, nodes, 1, "%v", plan)
		require.Equal(t, "omnibox_inbox_processed_at", nodes[0]["key"], "%v", plan)
		require.NotEqual(t, "ALL", nodes[0]["access_type"], "%v", plan)
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, child := range v {
					require.NotEqual(t, "filesort", k, "Purge sorts: %v", plan)
					if k == "using_filesort" {
						require.Equal(t, false, child, "Purge sorts: %v", plan)
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
	})
}

type recordResult struct {
	err   error
	isNew bool
}

// recordConcurrently starts n goroutines that each record p in a
// transaction of their own and commit it. It returns their results and the
// connection IDs of their transactions.
func recordConcurrently(t *testing.T, b *inboxBundle, p inbox.RecordParams, n int) (<-chan recordResult, []int64) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	results := make(chan recordResult, n)
	idc := make(chan int64, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r := func() recordResult {
				tx, err := b.db.BeginTx(ctx, nil)
				if err != nil {
					idc <- 0
					return recordResult{err: err}
				}
				defer func() { _ = tx.Rollback() }()
				var id int64
				if err := tx.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
					idc <- 0
					return recordResult{err: err}
				}
				idc <- id
				isNew, err := b.store.Record(ctx, tx, p)
				if err != nil {
					return recordResult{err: err}
				}
				return recordResult{err: tx.Commit(), isNew: isNew}
			}()
			results <- r
		})
	}
	t.Cleanup(wg.Wait)
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = <-idc
		require.NotZero(t, ids[i], "a goroutine could not start its transaction")
	}
	return results, ids
}

// requireLockWaits polls InnoDB until the transactions of the connections
// ids all wait for a lock. InnoDB refreshes what INNODB_TRX shows only when
// it was not read for 100ms, so it is polled more slowly than that.
func requireLockWaits(t *testing.T, db *sql.DB, ids []int64) {
	t.Helper()
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = fmt.Sprint(id)
	}
	query := "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_mysql_thread_id IN (" + strings.Join(list, ", ") + ")"
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRowContext(t.Context(), query).Scan(&n)
		return err == nil && n == len(ids)
	}, 20*time.Second, 250*time.Millisecond, "the transactions never waited for the lock")
}

// A table migrated by a newer omnibox (its migrations table records a
// version this release does not know) is refused, outbox and inbox alike,
// with an error naming the table, both versions and the fix.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := dbtest.MySQL(t)
	outbox, err := New(&Config{})
	require.NoError(t, err)
	in, err := NewInbox(&InboxConfig{})
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
	require.ErrorIs(t, outbox.Migrate(ctx, db), omnibox.ErrSchemaTooNew)
	require.ErrorIs(t, in.Migrate(ctx, db), omnibox.ErrSchemaTooNew)
}
