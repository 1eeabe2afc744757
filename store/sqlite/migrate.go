package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/migration"
)

// Migration is one step of the outbox table's schema, its SQL rendered for
// the store's table name.
type Migration struct {
	// Down reverts the step.
	Down string
	// Name describes the step, as in its file name ("create_outbox").
	Name string
	// Up applies the step. It may hold several statements, separated by
	// semicolons.
	Up string
	// Version orders the steps, from 1.
	Version int
}

// migrationFiles are the templates of the outbox (migration/) and inbox
// (inbox_migration/) migrations.
//
//go:embed migration/*.sql inbox_migration/*.sql
var migrationFiles embed.FS

// templateData are the names a migration template may use, each already
// validated and quoted.
type templateData struct {
	// DeliveredIndex names the index of delivered events, for purging.
	DeliveredIndex string
	// EventIDKey names the unique index on event_id.
	EventIDKey string
	// FailedIndex names the index of waiting and dead events, which block
	// the later events of their key.
	FailedIndex string
	// PartsTable is the quoted partition table.
	PartsTable string
	// PendingIndex names the index of pending and waiting events, in seq
	// order within each partition.
	PendingIndex string
	// RelaysTable is the quoted table of live relays.
	RelaysTable string
	// Table is the quoted outbox table.
	Table string
}

// Migrations returns the migrations of the outbox table, rendered for the
// configured table, in version order. Apply them with [Store.Migrate] or
// with any migration tool.
func (s *Store) Migrations() []Migration {
	return migration.Export[Migration](s.migrator.migrations)
}

// MigrationFS returns the migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured table. Each call returns a new file system.
//
// A migration tool skips the check of the database's settings that
// [Store.Migrate] makes; open the database with [Open] all the same.
func (s *Store) MigrationFS() fs.FS {
	return migration.FS(s.migrator.migrations)
}

// ErrDatabaseSettings is wrapped by the error of [Store.Migrate] when the
// database was opened without a setting the store relies on: WAL journal
// mode, or a busy timeout. The message names the setting and how to fix it;
// [Open] sets both.
var ErrDatabaseSettings = errors.New("sqlite: the database is not opened with the settings the outbox needs")

// minVersion is the oldest SQLite the store works with: STRICT tables came in
// 3.37, the JSON functions (json_valid, json_each) are built in by default
// from 3.38, RETURNING came in 3.35.
var minVersion = [3]int{3, 38, 0}

// checkDatabase returns an error when the SQLite library is older than
// minVersion, or when the connection lacks a setting the store relies on.
func checkDatabase(ctx context.Context, db omnibox.DBTX) error {
	var version string
	if err := db.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&version); err != nil {
		return fmt.Errorf("reading the SQLite version: %w", err)
	}
	if !versionAtLeast(version, minVersion) {
		return fmt.Errorf("SQLite %s is too old: the outbox needs %d.%d.%d or later (STRICT tables, RETURNING, built-in JSON functions)",
			version, minVersion[0], minVersion[1], minVersion[2])
	}
	var journalMode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journalMode); err != nil {
		return fmt.Errorf("reading journal_mode: %w", err)
	}
	if !strings.EqualFold(journalMode, "wal") {
		return fmt.Errorf("%w: journal_mode is %q, not WAL, so readers and the writer block each other "+
			"(open the database with sqlite.Open, or add _pragma=journal_mode(WAL) to its DSN; an in-memory database cannot use WAL)",
			ErrDatabaseSettings, journalMode)
	}
	var busyTimeout int
	if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busyTimeout); err != nil {
		return fmt.Errorf("reading busy_timeout: %w", err)
	}
	if busyTimeout <= 0 {
		return fmt.Errorf("%w: busy_timeout is 0, so a write fails with SQLITE_BUSY at once while another connection writes "+
			"(open the database with sqlite.Open, or add _pragma=busy_timeout(5000) to its DSN; setting it with Exec changes one pooled connection only)",
			ErrDatabaseSettings)
	}
	return nil
}

// versionAtLeast reports whether version ("3.45.1") is at least want.
func versionAtLeast(version string, want [3]int) bool {
	var got [3]int
	for i, part := range strings.SplitN(version, ".", 3) {
		n, err := strconv.Atoi(part)
		if err != nil {
			return false
		}
		got[i] = n
	}
	return slices.Compare(got[:], want[:]) >= 0
}

// Migrate brings the outbox table up to date. It first checks the database:
// SQLite 3.38 or later, WAL journal mode and a busy timeout (an error wraps
// [ErrDatabaseSettings] and says how to fix it; [Open] sets both). Then, on
// one connection, it begins an immediate transaction (BEGIN IMMEDIATE, which
// takes the write lock at once, whatever the DSN's _txlock), creates the
// migrations table when missing, applies the migrations not yet recorded
// there, in order, records them and commits. SQLite's DDL is transactional,
// so a failure leaves nothing half done. Migrate is idempotent, and
// processes that run it at once wait for each other (up to the busy
// timeout). A nil db returns [omnibox.ErrNilDB].
func (s *Store) Migrate(ctx context.Context, db *sql.DB) error {
	return s.migrator.migrate(ctx, db)
}

// migrator applies the migrations of one table (the outbox's or the
// inbox's), recording them in the table's migrations table.
type migrator struct {
	migrations []migration.Migration
	tableName  string // unquoted, for messages
	tracking   migration.Tracking
}

// newMigrator renders the migrations in dir for data, for the table named
// table (unquoted).
func newMigrator(dir string, data any, table string) (*migrator, error) {
	migrations, err := migration.Render("sqlite", migrationFiles, dir, data)
	if err != nil {
		return nil, err
	}
	migrationsTable := quote(table + "_migrations")
	return &migrator{
		migrations: migrations,
		tableName:  table,
		tracking: migration.Tracking{
			Create: "CREATE TABLE IF NOT EXISTS " + migrationsTable + ` (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT`,
			Insert: "INSERT INTO " + migrationsTable + " (version, name) VALUES (?1, ?2)",
			List:   "SELECT version FROM " + migrationsTable,
		},
	}, nil
}

// migrate checks the database, then applies the pending migrations in a
// BEGIN IMMEDIATE transaction on one connection; see [Store.Migrate].
func (m *migrator) migrate(ctx context.Context, db *sql.DB) (err error) {
	if db == nil {
		return omnibox.ErrNilDB
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", m.tableName, err)
	}
	defer func() {
		if err != nil {
			// The transaction may still be open, or SQLite may have rolled
			// it back already. Discarding the connection closes it, which
			// rolls back whatever is left: no pooled connection stays in a
			// transaction.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}()
	if err := checkDatabase(ctx, conn); err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", m.tableName, err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlite: migrate %s: begin: %w%s", m.tableName, err, busyHint(err))
	}
	if err := migration.Apply(ctx, conn, m.tracking, m.migrations, nil); err != nil {
		return fmt.Errorf("sqlite: migrate %s: %w", m.tableName, err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("sqlite: migrate %s: commit: %w%s", m.tableName, err, busyHint(err))
	}
	return nil
}
