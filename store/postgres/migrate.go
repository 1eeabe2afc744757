package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/migration"
)

// Migration is one step of the outbox table's schema, its SQL rendered for
// the store's schema and table names.
type Migration struct {
	// Down reverts the step.
	Down string
	// Name describes the step, as in its file name ("create_outbox").
	Name string
	// Up applies the step.
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
	// DeliveredIndex, FailedIndex and PendingIndex name the partial indexes
	// on delivered, failed (waiting or dead) and pending events.
	DeliveredIndex string
	// EventIDKey names the unique constraint on event_id.
	EventIDKey  string
	FailedIndex string
	// PartCheck and StateCheck name the check constraints on part and state.
	PartCheck string
	// PartsTable is the quoted, qualified table of partition leases.
	PartsTable   string
	PendingIndex string
	// RelaysTable is the quoted, qualified table of live relays.
	RelaysTable string
	// Schema is the quoted schema, empty when names are unqualified.
	Schema     string
	StateCheck string
	// Table is the quoted, qualified outbox table.
	Table string
}

// Migrations returns the migrations of the outbox table, rendered for the
// configured schema and table, in version order. Apply them with
// [Store.Migrate] or with any migration tool.
func (s *Store) Migrations() []Migration {
	return migration.Export[Migration](s.migrator.migrations)
}

// MigrationFS returns the migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured schema and table. Each call returns a new file system.
func (s *Store) MigrationFS() fs.FS {
	return migration.FS(s.migrator.migrations)
}

// Migrate brings the outbox table up to date: in one transaction it takes a
// transaction-level advisory lock for the table, creates the schema when
// [Config.Schema] is set and the migrations table when missing, applies the
// migrations not yet recorded there, in order, records them and commits.
// PostgreSQL's DDL is transactional, so a failure leaves nothing half done.
// Migrate is idempotent, and processes that run it at once wait for each
// other. A nil db returns [omnibox.ErrNilDB].
func (s *Store) Migrate(ctx context.Context, db *sql.DB) error {
	return s.migrator.migrate(ctx, db)
}

// migrator applies the migrations of one table (the outbox's or the
// inbox's), recording them in the table's migrations table.
type migrator struct {
	lockKey    int64 // advisory lock key of the table's migrations
	migrations []migration.Migration
	schema     string // quoted, empty when unqualified
	tableName  string // qualified, unquoted, for messages
	tracking   migration.Tracking
}

// newMigrator renders the migrations in dir for data, for the table named
// table in schema (both quoted, schema empty when unqualified); tableName is
// the qualified table for messages and lockName the text of its advisory
// lock key.
func newMigrator(dir string, data any, schema, table, tableName, lockName string) (*migrator, error) {
	migrations, err := migration.Render("postgres", migrationFiles, dir, data)
	if err != nil {
		return nil, err
	}
	migrationsTable := quote(table + "_migrations")
	if schema != "" {
		migrationsTable = schema + "." + migrationsTable
	}
	return &migrator{
		lockKey:    lockKey(lockName),
		migrations: migrations,
		schema:     schema,
		tableName:  tableName,
		tracking: migration.Tracking{
			Create: "CREATE TABLE IF NOT EXISTS " + migrationsTable + ` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`,
			Insert: "INSERT INTO " + migrationsTable + " (version, name) VALUES ($1, $2)",
			List:   "SELECT version FROM " + migrationsTable,
		},
	}, nil
}

// migrate applies the pending migrations in one transaction, under the
// table's advisory lock; see [Store.Migrate].
func (m *migrator) migrate(ctx context.Context, db *sql.DB) (err error) {
	if db == nil {
		return omnibox.ErrNilDB
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: begin: %w", m.tableName, err)
	}
	defer func() {
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("postgres: migrate %s: rollback: %w", m.tableName, rbErr))
			}
		}
	}()
	if err := m.migrateTx(ctx, tx); err != nil {
		return fmt.Errorf("postgres: migrate %s: %w", m.tableName, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("postgres: migrate %s: commit: %w", m.tableName, err)
	}
	return nil
}

func (m *migrator) migrateTx(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", m.lockKey); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	if m.schema != "" {
		// Other tables in the schema (other outboxes, the inbox) have other
		// migration locks; concurrent CREATE SCHEMA IF NOT EXISTS can still
		// collide on the catalog, so serialize it by schema too, with the
		// same lock for every table.
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("omnibox schema "+m.schema)); err != nil {
			return fmt.Errorf("taking the schema lock: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+m.schema); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
	}
	return migration.Apply(ctx, tx, m.tracking, m.migrations, nil)
}

// lockKey derives an advisory lock key from s (FNV-1a, 64 bits).
func lockKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return int64(h.Sum64())
}
