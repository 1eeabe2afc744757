package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing/fstest"
	"text/template"

	"github.com/omnibox-go/omnibox"
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

//go:embed migration/*.sql
var migrationFiles embed.FS

// templateData are the names a migration template may use, each already
// validated and quoted.
type templateData struct {
	// EventIDKey names the unique constraint on event_id.
	EventIDKey string
	// Schema is the quoted schema, empty when names are unqualified.
	Schema string
	// Table is the quoted, qualified outbox table.
	Table string
}

// migrationTemplates are the parsed files of migrationFiles, by file name.
var migrationTemplates = template.Must(template.New("").Option("missingkey=error").ParseFS(migrationFiles, "migration/*.sql"))

// renderMigrations renders every migration file for names, in version order.
func renderMigrations(names templateData) ([]Migration, error) {
	files, err := fs.Glob(migrationFiles, "migration/*.up.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	migrations := make([]Migration, 0, len(files))
	for _, file := range files {
		base := strings.TrimSuffix(path.Base(file), ".up.sql")
		v, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(v)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("postgres: bad migration file name %q", file)
		}
		m := Migration{Name: name, Version: version}
		if m.Up, err = render(base+".up.sql", names); err != nil {
			return nil, err
		}
		if m.Down, err = render(base+".down.sql", names); err != nil {
			return nil, err
		}
		migrations = append(migrations, m)
	}
	return migrations, nil
}

func render(file string, names templateData) (string, error) {
	var b strings.Builder
	if err := migrationTemplates.ExecuteTemplate(&b, file, names); err != nil {
		return "", fmt.Errorf("postgres: rendering migration %s: %w", file, err)
	}
	return b.String(), nil
}

// Migrations returns the migrations of the outbox table, rendered for the
// configured schema and table, in version order. Apply them with
// [Store.Migrate] or with any migration tool.
func (s *Store) Migrations() []Migration {
	return slices.Clone(s.migrations)
}

// MigrationFS returns the migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured schema and table. Each call returns a new file system.
func (s *Store) MigrationFS() fs.FS {
	fsys := make(fstest.MapFS, 2*len(s.migrations))
	for _, m := range s.migrations {
		base := fmt.Sprintf("%04d_%s", m.Version, m.Name)
		fsys[base+".up.sql"] = &fstest.MapFile{Data: []byte(m.Up), Mode: 0o444}
		fsys[base+".down.sql"] = &fstest.MapFile{Data: []byte(m.Down), Mode: 0o444}
	}
	return fsys
}

// migrationsSQL are the statements on the table that records the applied
// migrations (Table + "_migrations", in the same schema).
type migrationsSQL struct {
	create string
	insert string
	list   string
}

func newMigrationsSQL(table string) migrationsSQL {
	return migrationsSQL{
		create: "CREATE TABLE IF NOT EXISTS " + table + ` (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`,
		insert: "INSERT INTO " + table + " (version, name) VALUES ($1, $2)",
		list:   "SELECT version FROM " + table,
	}
}

// Migrate brings the outbox table up to date: in one transaction it takes a
// transaction-level advisory lock for the table, creates the schema when
// [Config.Schema] is set and the migrations table when missing, applies the
// migrations not yet recorded there, in order, records them and commits.
// PostgreSQL's DDL is transactional, so a failure leaves nothing half done.
// Migrate is idempotent, and processes that run it at once wait for each
// other. A nil db returns [omnibox.ErrNilDB].
func (s *Store) Migrate(ctx context.Context, db *sql.DB) (err error) {
	if db == nil {
		return omnibox.ErrNilDB
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("postgres: migrate %s: begin: %w", s.tableName, err)
	}
	defer func() {
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("postgres: migrate %s: rollback: %w", s.tableName, rbErr))
			}
		}
	}()
	if err := s.migrateTx(ctx, tx); err != nil {
		return fmt.Errorf("postgres: migrate %s: %w", s.tableName, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("postgres: migrate %s: commit: %w", s.tableName, err)
	}
	return nil
}

func (s *Store) migrateTx(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", s.migrateLockKey); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	if s.schema != "" {
		// Outboxes of other tables in the schema have other migration locks;
		// concurrent CREATE SCHEMA IF NOT EXISTS can still collide on the
		// catalog, so serialize it by schema too.
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey("omnibox schema "+s.schema)); err != nil {
			return fmt.Errorf("taking the schema lock: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+s.schema); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.migrationsSQL.create); err != nil {
		return fmt.Errorf("creating the migrations table: %w", err)
	}
	applied, err := s.appliedVersions(ctx, tx)
	if err != nil {
		return err
	}
	for _, m := range s.migrations {
		if applied[m.Version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.Up); err != nil {
			return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, s.migrationsSQL.insert, m.Version, m.Name); err != nil {
			return fmt.Errorf("recording migration %d (%s): %w", m.Version, m.Name, err)
		}
	}
	return nil
}

func (s *Store) appliedVersions(ctx context.Context, tx *sql.Tx) (map[int]bool, error) {
	rows, err := tx.QueryContext(ctx, s.migrationsSQL.list)
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	defer rows.Close()
	applied := make(map[int]bool)
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("reading applied migrations: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	return applied, nil
}
