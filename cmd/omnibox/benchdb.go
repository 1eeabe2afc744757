package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"

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
}

// benchEnv is a measurement's fresh set of tables on a target.
type benchEnv struct {
	db         *sql.DB
	store      demoStore
	insertUser string // (id, email)
	rawTable   string
	rawInsert  func(rows int) string // multi-row insert of rows payloads
	rawDelete  string                // deletes the oldest 500 rows
	close      func() error
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
	t.db.SetMaxOpenConns(16)
	t.db.SetMaxIdleConns(16)
	if err := t.db.QueryRowContext(ctx, `SELECT version()`).Scan(&t.version); err != nil {
		return nil, errors.Join(fmt.Errorf("bench: cannot reach %s at %s: %w", t.name, dsn, err), t.db.Close())
	}
	if strings.Contains(strings.ToLower(t.version), "mariadb") {
		t.name = "MariaDB"
	}
	if t.dialect == "postgres" {
		t.version = strings.Fields(t.version)[1]
	}
	return t, nil
}

func (t *benchTarget) close() error {
	if t.db == nil {
		return nil
	}
	return t.db.Close()
}

// fresh drops what an earlier measurement left and creates the outbox, the
// users table and the raw table.
func (t *benchTarget) fresh(ctx context.Context) (*benchEnv, error) {
	var (
		env    *benchEnv
		create []string
	)
	switch t.dialect {
	case "postgres":
		if _, err := t.db.ExecContext(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %[1]s CASCADE; CREATE SCHEMA %[1]s`, benchSchema)); err != nil {
			return nil, fmt.Errorf("bench: recreating schema %s: %w", benchSchema, err)
		}
		st, err := postgres.New(&postgres.Config{Schema: benchSchema, Table: benchOutboxTable})
		if err != nil {
			return nil, err
		}
		users, raw := benchSchema+"."+benchUsersTable, benchSchema+"."+benchRawTable
		env = &benchEnv{
			db: t.db, store: st, rawTable: raw,
			insertUser: `INSERT INTO ` + users + ` (id, email) VALUES ($1, $2)`,
			rawInsert:  func(n int) string { return rawInsertSQL(raw, n, func(i int) string { return fmt.Sprintf("$%d", i+1) }) },
			rawDelete:  `DELETE FROM ` + raw + ` WHERE seq IN (SELECT seq FROM ` + raw + ` ORDER BY seq LIMIT 500)`,
			close:      func() error { return nil },
		}
		create = []string{
			`CREATE TABLE ` + users + ` (id text PRIMARY KEY, email text NOT NULL UNIQUE)`,
			`CREATE TABLE ` + raw + ` (seq bigserial PRIMARY KEY, payload bytea NOT NULL)`,
		}
	case "mysql":
		for _, table := range []string{benchUsersTable, benchRawTable, benchFwdMessagesTable, benchFwdOffsetsTable, benchOutboxTable, benchOutboxTable + "_migrations", benchOutboxTable + "_lock"} {
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
			rawDelete:  `DELETE FROM ` + benchRawTable + ` ORDER BY seq LIMIT 500`,
			close:      func() error { return nil },
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
			rawDelete:  `DELETE FROM ` + benchRawTable + ` WHERE seq IN (SELECT seq FROM ` + benchRawTable + ` ORDER BY seq LIMIT 500)`,
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
