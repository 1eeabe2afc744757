// Package migration holds the migration machinery that the dialect stores
// (store/postgres, store/mysql, store/sqlite) share: rendering an embedded
// folder of NNNN_name.up.sql and NNNN_name.down.sql templates, laying the
// rendered migrations out as files for migration tools, and applying the
// pending ones while recording them in a tracking table.
//
// It is not API: each dialect exports its own Migration type, converts to and
// from [Migration], and keeps its SQL and its way of locking and checking
// the database.
package migration

import (
	"context"
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

// Migration is one rendered step of a table's schema. Its fields are those
// (and in the order) of the dialects' exported Migration types, so that
// either converts to the other.
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

// Export returns a copy of migrations as a dialect's exported Migration
// type, which has the fields of [Migration].
func Export[M ~struct {
	Down    string
	Name    string
	Up      string
	Version int
}](migrations []Migration) []M {
	out := make([]M, len(migrations))
	for i, m := range migrations {
		out[i] = M(m)
	}
	return out
}

// Render renders every migration in the folder dir of fsys, in version order.
// The folder holds, for each version, NNNN_name.up.sql and NNNN_name.down.sql,
// text/templates executed with data (a missing key is an error). Errors start
// with dialect ("postgres: ...").
func Render(dialect string, fsys fs.FS, dir string, data any) ([]Migration, error) {
	tmpl, err := template.New("").Option("missingkey=error").ParseFS(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, fmt.Errorf("%s: parsing migrations: %w", dialect, err)
	}
	files, err := fs.Glob(fsys, path.Join(dir, "*.up.sql"))
	if err != nil {
		return nil, fmt.Errorf("%s: listing migrations: %w", dialect, err)
	}
	slices.Sort(files)
	render := func(file string) (string, error) {
		var b strings.Builder
		if err := tmpl.ExecuteTemplate(&b, file, data); err != nil {
			return "", fmt.Errorf("%s: rendering migration %s: %w", dialect, path.Join(dir, file), err)
		}
		return b.String(), nil
	}
	migrations := make([]Migration, 0, len(files))
	for _, file := range files {
		base := strings.TrimSuffix(path.Base(file), ".up.sql")
		v, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(v)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("%s: bad migration file name %q", dialect, file)
		}
		m := Migration{Name: name, Version: version}
		if m.Up, err = render(base + ".up.sql"); err != nil {
			return nil, err
		}
		if m.Down, err = render(base + ".down.sql"); err != nil {
			return nil, err
		}
		migrations = append(migrations, m)
	}
	return migrations, nil
}

// FS returns migrations as files in the layout of golang-migrate (and goose
// and most other tools): for each version, NNNN_name.up.sql and
// NNNN_name.down.sql at the root. Each call returns a new file system.
func FS(migrations []Migration) fs.FS {
	fsys := make(fstest.MapFS, 2*len(migrations))
	for _, m := range migrations {
		base := fmt.Sprintf("%04d_%s", m.Version, m.Name)
		fsys[base+".up.sql"] = &fstest.MapFile{Data: []byte(m.Up), Mode: 0o444}
		fsys[base+".down.sql"] = &fstest.MapFile{Data: []byte(m.Down), Mode: 0o444}
	}
	return fsys
}

// Tracking holds the statements on the table that records the applied
// migrations, in the dialect's SQL.
type Tracking struct {
	// Create creates the table when it is missing.
	Create string
	// Insert records a migration; its parameters are the version and the
	// name.
	Insert string
	// List selects the versions recorded.
	List string
}

// Newest returns the highest version of migrations, 0 when there are none.
func Newest(migrations []Migration) int {
	newest := 0
	for _, m := range migrations {
		newest = max(newest, m.Version)
	}
	return newest
}

// Apply creates the tracking table when it is missing, then applies, in
// version order, each migration that it does not record, and records it.
// When the table records a version newer than the newest of migrations,
// Apply changes nothing and returns an error wrapping
// [omnibox.ErrSchemaTooNew] that names both versions and the fix; the
// dialects prefix it with the table.
// split, when not nil, splits a migration's Up into statements run one at a
// time; otherwise Up runs as one Exec. Apply takes no lock and begins no
// transaction: the caller does what its dialect needs around it.
func Apply(ctx context.Context, db omnibox.DBTX, tracking Tracking, migrations []Migration, split func(string) []string) error {
	if _, err := db.ExecContext(ctx, tracking.Create); err != nil {
		return fmt.Errorf("creating the migrations table: %w", err)
	}
	applied, err := appliedVersions(ctx, db, tracking.List)
	if err != nil {
		return fmt.Errorf("reading applied migrations: %w", err)
	}
	if err := checkNotNewer(applied, migrations); err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		stmts := []string{m.Up}
		if split != nil {
			stmts = split(m.Up)
		}
		for _, stmt := range stmts {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		if _, err := db.ExecContext(ctx, tracking.Insert, m.Version, m.Name); err != nil {
			return fmt.Errorf("recording migration %d (%s): %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// checkNotNewer returns an error wrapping [omnibox.ErrSchemaTooNew] when
// applied holds a version newer than the newest of migrations.
func checkNotNewer(applied map[int]bool, migrations []Migration) error {
	recorded := 0
	for v := range applied {
		recorded = max(recorded, v)
	}
	if newest := Newest(migrations); recorded > newest {
		return fmt.Errorf("%w: its migrations table records version %d, and this release knows versions up to %d only; "+
			"upgrade github.com/omnibox-go/omnibox in this program to the release that migrated it (or a later one) "+
			"instead of running against a schema it does not know", omnibox.ErrSchemaTooNew, recorded, newest)
	}
	return nil
}

// appliedVersions returns the versions that list selects.
func appliedVersions(ctx context.Context, db omnibox.DBTX, list string) (applied map[int]bool, err error) {
	rows, err := db.QueryContext(ctx, list)
	if err != nil {
		return nil, err
	}
	defer func() {
		if closeErr := rows.Close(); err == nil {
			err = closeErr
		}
	}()
	applied = make(map[int]bool)
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}
