package dbtest

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/omnibox-go/omnibox/store/sqlite"
)

// SQLite creates a fresh SQLite database file in the test's temporary
// directory and opens it with [sqlite.Open], so it has the settings the
// store needs (WAL, a busy timeout, immediate transactions). Nothing is shared
// between tests, so they may run in parallel. A cleanup closes db; the
// directory, and the file with it, is removed by the testing package.
//
// The test packages of store/sqlite may use it, since this package imports
// store/sqlite; store/sqlite's own code must not import this package.
func SQLite(t testing.TB) (db *sql.DB, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "outbox.db")
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("dbtest: opening SQLite database %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("dbtest: closing SQLite database %s: %v", path, err)
		}
	})
	return db, path
}
