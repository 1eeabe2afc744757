package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
	_ "github.com/lib/pq"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// demoStore is what the demo needs of a dialect's store.
type demoStore interface {
	omnibox.Inserter
	omnibox.RelayStore
	Migrate(ctx context.Context, db *sql.DB) error
	Pending(ctx context.Context, db omnibox.DBTX) (int64, error)
}

// demoDB is the demo's database: fresh tables for users and the outbox.
type demoDB struct {
	db          *sql.DB
	description string
	insertUser  string // (id, email)
	store       demoStore
}

// The demo's own table names, so that it can drop them (and only them)
// before it starts.
const (
	demoUsersTable  = "omnibox_demo_users"
	demoOutboxTable = "omnibox_demo_outbox"
)

// openDemoDB picks the dialect from dsn, opens the database, drops what an
// earlier demo run left, and creates the tables.
//
//	""                      SQLite, a fresh file in the temporary directory
//	sqlite:PATH             SQLite at PATH (recreated)
//	postgres://…            PostgreSQL; tables in schema (recreated)
//	mysql://USER@tcp(…)/DB  MySQL or MariaDB (go-sql-driver DSN after the prefix)
func openDemoDB(ctx context.Context, dsn, schema string) (*demoDB, error) {
	switch {
	case dsn == "" || strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if path == "" {
			path = filepath.Join(os.TempDir(), "omnibox-demo.db")
		}
		return openDemoSQLite(ctx, path)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openDemoPostgres(ctx, dsn, schema)
	case strings.HasPrefix(dsn, "mysql://"):
		return openDemoMySQL(ctx, strings.TrimPrefix(dsn, "mysql://"))
	default:
		return nil, fmt.Errorf("demo: -dsn %q: want postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH (empty: SQLite in a temporary file)", dsn)
	}
}

func openDemoSQLite(ctx context.Context, path string) (*demoDB, error) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("demo: removing the previous demo database: %w", err)
		}
	}
	db, err := sqlite.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := sqlite.New(&sqlite.Config{Table: demoOutboxTable})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	d := &demoDB{
		db:          db,
		description: "SQLite " + path,
		insertUser:  `INSERT INTO ` + demoUsersTable + ` (id, email) VALUES (?, ?)`,
		store:       st,
	}
	return d, d.create(ctx, `CREATE TABLE `+demoUsersTable+` (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE)`)
}

func openDemoPostgres(ctx context.Context, dsn, schema string) (*demoDB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("demo: cannot reach PostgreSQL at %s: %w", dsn, err), db.Close())
	}
	// The schema is the demo's own: drop it whole.
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %[1]s CASCADE; CREATE SCHEMA %[1]s`, schema)); err != nil {
		return nil, errors.Join(fmt.Errorf("demo: recreating schema %s: %w", schema, err), db.Close())
	}
	st, err := postgres.New(&postgres.Config{Schema: schema, Table: demoOutboxTable})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	users := schema + "." + demoUsersTable
	d := &demoDB{
		db:          db,
		description: "PostgreSQL, schema " + schema,
		insertUser:  `INSERT INTO ` + users + ` (id, email) VALUES ($1, $2)`,
		store:       st,
	}
	return d, d.create(ctx, `CREATE TABLE `+users+` (id text PRIMARY KEY, email text NOT NULL UNIQUE)`)
}

func openDemoMySQL(ctx context.Context, dsn string) (*demoDB, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("demo: MySQL DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("demo: MySQL DSN %q names no database (…/DBNAME)", dsn)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("demo: cannot reach MySQL at %s: %w", dsn, err), db.Close())
	}
	// Drop only the demo's own tables.
	for _, table := range []string{demoUsersTable, demoOutboxTable, demoOutboxTable + "_migrations", demoOutboxTable + "_lock", demoOutboxTable + "_parts", demoOutboxTable + "_relays"} {
		if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
			return nil, errors.Join(fmt.Errorf("demo: dropping %s: %w", table, err), db.Close())
		}
	}
	st, err := mysql.New(&mysql.Config{Table: demoOutboxTable})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	d := &demoDB{
		db:          db,
		description: "MySQL, database " + cfg.DBName,
		insertUser:  `INSERT INTO ` + demoUsersTable + ` (id, email) VALUES (?, ?)`,
		store:       st,
	}
	return d, d.create(ctx, `CREATE TABLE `+demoUsersTable+` (id VARCHAR(64) PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE)`)
}

// create migrates the outbox and creates the users table.
func (d *demoDB) create(ctx context.Context, createUsers string) error {
	if err := d.store.Migrate(ctx, d.db); err != nil {
		return errors.Join(fmt.Errorf("demo: migrate: %w", err), d.db.Close())
	}
	if _, err := d.db.ExecContext(ctx, createUsers); err != nil {
		return errors.Join(fmt.Errorf("demo: create users table: %w", err), d.db.Close())
	}
	return nil
}
