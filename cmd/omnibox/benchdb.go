package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// The benchmark's own tables (MySQL, SQLite) and schema (PostgreSQL), which
// it drops and recreates for every measurement.
const (
	benchSchema      = "omnibox_bench"
	benchOutboxTable = "omnibox_bench_outbox"
	benchUsersTable  = "omnibox_bench_users"
	benchRawTable    = "omnibox_bench_raw"
)

// benchTarget is one database the benchmark runs on.
type benchTarget struct {
	name    string // "PostgreSQL", "MariaDB", "SQLite"
	version string
	dialect string // "postgres", "mysql", "sqlite"
	dsn     string // for postgres and mysql: the driver DSN
	db      *sql.DB
	// lock is the connection holding the session lock (see lockBench).
	lock *sql.Conn
}

// benchNotifyChannel is the LISTEN/NOTIFY channel of the benchmark's
// notifiers, listeners and NOTIFYs in writers' transactions.
const benchNotifyChannel = "omnibox_bench"

// benchPoolSize is the connection pool of each target: the writers, the
// relays, a notifier and the benchmark's own queries.
const benchPoolSize = 80

// freshOptions say what a measurement needs of its store.
type freshOptions struct {
	// notifyInTx makes every Insert of the outbox NOTIFY benchNotifyChannel
	// inside the writer's transaction (PostgreSQL only: the store's
	// Config.NotifyChannel).
	notifyInTx bool
}

// benchEnv is a measurement's fresh set of tables on a target.
type benchEnv struct {
	db         *sql.DB
	store      demoStore
	insertUser string // (id, email)
	rawTable   string
	rawInsert  func(rows int) string // multi-row insert of rows payloads
	// rawClaimDelete claims the oldest benchBatch rows of the raw table that
	// no other worker holds, reads and deletes them, and returns how many.
	rawClaimDelete func(ctx context.Context) (int, error)
	close          func() error
}

// openBenchTargets resolves -dsn: empty means PostgreSQL and MariaDB on
// their default local addresses.
func openBenchTargets(ctx context.Context, dsn string) ([]*benchTarget, error) {
	dsns := []string{dsn}
	if dsn == "" {
		dsns = []string{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "mysql://root@tcp(127.0.0.1:3306)/test"}
	}
	var targets []*benchTarget
	for _, d := range dsns {
		t, err := openBenchTarget(ctx, d)
		if err != nil {
			for _, t := range targets {
				_ = t.close()
			}
			return nil, err
		}
		targets = append(targets, t)
	}
	return targets, nil
}

func openBenchTarget(ctx context.Context, dsn string) (*benchTarget, error) {
	t := &benchTarget{}
	var err error
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		t.name, t.dialect = "SQLite", "sqlite"
		db, err := sql.Open("sqlite", ":memory:")
		if err != nil {
			return nil, err
		}
		err = db.QueryRowContext(ctx, `SELECT sqlite_version()`).Scan(&t.version)
		_ = db.Close()
		return t, err
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		t.name, t.dialect, t.dsn = "PostgreSQL", "postgres", dsn
		if t.db, err = sql.Open("postgres", dsn); err != nil {
			return nil, err
		}
	case strings.HasPrefix(dsn, "mysql://"):
		cfg, err := gomysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
		if err != nil {
			return nil, fmt.Errorf("bench: MySQL DSN: %w", err)
		}
		if cfg.DBName == "" {
			return nil, fmt.Errorf("bench: MySQL DSN %q names no database (…/DBNAME)", dsn)
		}
		t.name, t.dialect, t.dsn = "MySQL", "mysql", cfg.FormatDSN()
		if t.db, err = sql.Open("mysql", t.dsn); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("bench: -dsn %q: want postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH (empty: PostgreSQL and MariaDB on localhost)", dsn)
	}
	t.db.SetMaxOpenConns(benchPoolSize)
	t.db.SetMaxIdleConns(benchPoolSize)
	if err := t.db.QueryRowContext(ctx, `SELECT version()`).Scan(&t.version); err != nil {
		return nil, errors.Join(fmt.Errorf("bench: cannot reach %s at %s: %w", t.name, dsn, err), t.db.Close())
	}
	if strings.Contains(strings.ToLower(t.version), "mariadb") {
		t.name = "MariaDB"
	}
	if t.dialect == "postgres" {
		t.version = strings.Fields(t.version)[1]
	}
	if err := t.lockBench(ctx); err != nil {
		return nil, errors.Join(err, t.close())
	}
	return t, nil
}

// lockBench takes a session lock on the database for as long as the
// benchmark runs, so that a second omnibox bench on the same database fails
// at once instead of dropping the tables under the first one's feet.
func (t *benchTarget) lockBench(ctx context.Context) error {
	conn, err := t.db.Conn(ctx)
	if err != nil {
		return err
	}
	var locked bool
	switch t.dialect {
	case "postgres":
		err = conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(hashtext('omnibox bench'))`).Scan(&locked)
	case "mysql":
		err = conn.QueryRowContext(ctx, `SELECT COALESCE(GET_LOCK('omnibox_bench', 0), 0) = 1`).Scan(&locked)
	}
	if err == nil && !locked {
		err = fmt.Errorf("bench: another omnibox bench is running on %s %s (it holds the session lock); wait for it to finish", t.name, t.dsn)
	}
	if err != nil {
		return errors.Join(err, conn.Close())
	}
	t.lock = conn
	return nil
}

func (t *benchTarget) close() error {
	if t.db == nil {
		return nil
	}
	var err error
	if t.lock != nil {
		err = t.lock.Close()
	}
	return errors.Join(err, t.db.Close())
}

// fresh drops what an earlier measurement left and creates the outbox, the
// users table and the raw table.
func (t *benchTarget) fresh(ctx context.Context, opts freshOptions) (*benchEnv, error) {
	var (
		env    *benchEnv
		create []string
	)
	switch t.dialect {
	case "postgres":
		if _, err := t.db.ExecContext(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %[1]s CASCADE; CREATE SCHEMA %[1]s`, benchSchema)); err != nil {
			return nil, fmt.Errorf("bench: recreating schema %s: %w", benchSchema, err)
		}
		config := &postgres.Config{Schema: benchSchema, Table: benchOutboxTable}
		if opts.notifyInTx {
			config.NotifyChannel = benchNotifyChannel
		}
		st, err := postgres.New(config)
		if err != nil {
			return nil, err
		}
		users, raw := benchSchema+"."+benchUsersTable, benchSchema+"."+benchRawTable
		env = &benchEnv{
			db: t.db, store: st, rawTable: raw,
			insertUser: `INSERT INTO ` + users + ` (id, email) VALUES ($1, $2)`,
			rawInsert:  func(n int) string { return rawInsertSQL(raw, n, func(i int) string { return fmt.Sprintf("$%d", i+1) }) },
			rawClaimDelete: func(ctx context.Context) (int, error) {
				return queryCount(ctx, t.db, `DELETE FROM `+raw+` WHERE seq IN (SELECT seq FROM `+raw+
					` ORDER BY seq LIMIT `+strconv.Itoa(benchBatch)+` FOR UPDATE SKIP LOCKED) RETURNING seq, payload`)
			},
			close: func() error { return nil },
		}
		create = []string{
			`CREATE TABLE ` + users + ` (id text PRIMARY KEY, email text NOT NULL UNIQUE)`,
			`CREATE TABLE ` + raw + ` (seq bigserial PRIMARY KEY, payload bytea NOT NULL)`,
		}
	case "mysql":
		for _, table := range []string{benchUsersTable, benchRawTable, benchFwdMessagesTable, benchFwdOffsetsTable, benchOutboxTable, benchOutboxTable + "_migrations", benchOutboxTable + "_lock", benchOutboxTable + "_parts", benchOutboxTable + "_relays"} {
			if _, err := t.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				return nil, fmt.Errorf("bench: dropping %s: %w", table, err)
			}
		}
		st, err := mysql.New(&mysql.Config{Table: benchOutboxTable})
		if err != nil {
			return nil, err
		}
		env = &benchEnv{
			db: t.db, store: st, rawTable: benchRawTable,
			insertUser: `INSERT INTO ` + benchUsersTable + ` (id, email) VALUES (?, ?)`,
			rawInsert:  func(n int) string { return rawInsertSQL(benchRawTable, n, func(int) string { return "?" }) },
			rawClaimDelete: func(ctx context.Context) (int, error) {
				return mysqlClaimDelete(ctx, t.db)
			},
			close: func() error { return nil },
		}
		create = []string{
			`CREATE TABLE ` + benchUsersTable + ` (id VARCHAR(64) PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE)`,
			`CREATE TABLE ` + benchRawTable + ` (seq BIGINT AUTO_INCREMENT PRIMARY KEY, payload LONGBLOB NOT NULL)`,
		}
	case "sqlite":
		f, err := os.CreateTemp("", "omnibox-bench-*.db")
		if err != nil {
			return nil, err
		}
		path := f.Name()
		_ = f.Close()
		_ = os.Remove(path)
		db, err := sqlite.Open(path)
		if err != nil {
			return nil, err
		}
		st, err := sqlite.New(&sqlite.Config{Table: benchOutboxTable})
		if err != nil {
			return nil, errors.Join(err, db.Close())
		}
		env = &benchEnv{
			db: db, store: st, rawTable: benchRawTable,
			insertUser: `INSERT INTO ` + benchUsersTable + ` (id, email) VALUES (?, ?)`,
			rawInsert:  func(n int) string { return rawInsertSQL(benchRawTable, n, func(int) string { return "?" }) },
			rawClaimDelete: func(ctx context.Context) (int, error) {
				// SQLite has one writer at a time and no SKIP LOCKED.
				return queryCount(ctx, db, `DELETE FROM `+benchRawTable+` WHERE seq IN (SELECT seq FROM `+benchRawTable+
					` ORDER BY seq LIMIT `+strconv.Itoa(benchBatch)+`) RETURNING seq, payload`)
			},
			close: func() error {
				err := db.Close()
				for _, suffix := range []string{"", "-wal", "-shm"} {
					_ = os.Remove(path + suffix)
				}
				return err
			},
		}
		create = []string{
			`CREATE TABLE ` + benchUsersTable + ` (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE)`,
			`CREATE TABLE ` + benchRawTable + ` (seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)`,
		}
	}
	if err := env.store.Migrate(ctx, env.db); err != nil {
		return nil, errors.Join(fmt.Errorf("bench: migrate: %w", err), env.close())
	}
	for _, stmt := range create {
		if _, err := env.db.ExecContext(ctx, stmt); err != nil {
			return nil, errors.Join(fmt.Errorf("bench: %s: %w", stmt, err), env.close())
		}
	}
	return env, nil
}

func rawInsertSQL(table string, rows int, placeholder func(i int) string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + table + " (payload) VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(" + placeholder(i) + ")")
	}
	return b.String()
}

// queryCount runs a query returning (seq, payload) rows, reads them all and
// returns how many there were.
func queryCount(ctx context.Context, db omnibox.DBTX, query string, args ...any) (int, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			seq     int64
			payload []byte
		)
		if err := rows.Scan(&seq, &payload); err != nil {
			return 0, err
		}
		n++
	}
	return n, rows.Err()
}

// mysqlClaimDelete is the raw claim-and-delete of MySQL, which cannot
// delete from a table a subquery of the same statement reads: one READ
// COMMITTED transaction (no gap locks) selecting the oldest rows FOR UPDATE
// SKIP LOCKED, then deleting them. A deadlock is retried.
func mysqlClaimDelete(ctx context.Context, db *sql.DB) (int, error) {
	for {
		n, err := mysqlClaimDeleteOnce(ctx, db)
		var myErr *gomysql.MySQLError
		if errors.As(err, &myErr) && myErr.Number == 1213 {
			continue
		}
		return n, err
	}
}

func mysqlClaimDeleteOnce(ctx context.Context, db *sql.DB) (n int, err error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreTxDone(tx.Rollback()))
		}
	}()
	rows, err := tx.QueryContext(ctx, `SELECT seq, payload FROM `+benchRawTable+` ORDER BY seq LIMIT `+strconv.Itoa(benchBatch)+` FOR UPDATE SKIP LOCKED`)
	if err != nil {
		return 0, err
	}
	var seqs []any
	for rows.Next() {
		var (
			seq     int64
			payload []byte
		)
		if err := rows.Scan(&seq, &payload); err != nil {
			_ = rows.Close()
			return 0, err
		}
		seqs = append(seqs, seq)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, err
	}
	if len(seqs) > 0 {
		in := strings.Repeat("?,", len(seqs))
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+benchRawTable+` WHERE seq IN (`+in[:len(in)-1]+`)`, seqs...); err != nil {
			return 0, err
		}
	}
	return len(seqs), tx.Commit()
}
