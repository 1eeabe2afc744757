package omniboxtest

import (
	"context"
	"database/sql"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// PostgresURLEnv is the environment variable that names the PostgreSQL
// server [Postgres] creates its schemas on, as a URL or a key=value
// connection string. It defaults to [DefaultPostgresURL].
const PostgresURLEnv = dbtest.PostgresURLEnv

// DefaultPostgresURL is the server [Postgres] uses when [PostgresURLEnv] is
// unset: database test on the local server, as user postgres.
const DefaultPostgresURL = dbtest.DefaultPostgresURL

// MySQLDSNEnv is the environment variable that names the MySQL or MariaDB
// server [MySQL] creates its databases on, as a go-sql-driver/mysql DSN. It
// defaults to [DefaultMySQLDSN].
const MySQLDSNEnv = dbtest.MySQLDSNEnv

// DefaultMySQLDSN is the server [MySQL] uses when [MySQLDSNEnv] is unset:
// the local server, as root without a password.
const DefaultMySQLDSN = dbtest.DefaultMySQLDSN

// SQLite creates a SQLite database in a file of the test's temporary
// directory, opened with store/sqlite's Open (WAL, a busy timeout, immediate
// transactions), and a store with the default configuration, migrated. No
// server is needed; tests may run in parallel, each with its own database.
// The test's cleanup closes db and removes the file. It fails the test on any
// error.
func SQLite(t testing.TB) (*sql.DB, *sqlite.Store) {
	t.Helper()
	db, path := dbtest.SQLite(t)
	store, err := sqlite.New(&sqlite.Config{})
	if err != nil {
		t.Fatalf("omniboxtest: creating the SQLite store: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatalf("omniboxtest: migrating the SQLite database %s: %v", path, err)
	}
	return db, store
}

// Postgres creates a schema with a random name (omnibox_test_<hex>) on the
// PostgreSQL server named by [PostgresURLEnv] and returns a handle whose
// connections use it, and the connection string of that handle: the
// server's with the schema as search_path, for a program under test or
// another driver to open the same schema. Unqualified names, such as those
// of a store whose Config.Schema is empty, resolve to the schema. The schema
// is empty: migrate your store on it.
//
// db uses the pgx driver (github.com/jackc/pgx/v5/stdlib); importing this
// package registers it and github.com/lib/pq's "postgres" driver, and dsn
// works with either. The test's cleanup closes db and drops the schema with
// everything in it. An unreachable server fails the test (it is never
// skipped), saying which variable to set.
func Postgres(t testing.TB) (db *sql.DB, dsn string) {
	t.Helper()
	// admin creates and drops the schema; its cleanup runs after db's.
	_, schema := dbtest.Postgres(t, "pgx")
	dsn = postgresDSNWithSearchPath(dbtest.PostgresURL(), schema)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("omniboxtest: opening PostgreSQL schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("omniboxtest: closing PostgreSQL: %v", err)
		}
	})
	return db, dsn
}

// postgresDSNWithSearchPath returns base with schema as its search_path,
// base being a postgres:// URL or a key=value connection string.
func postgresDSNWithSearchPath(base, schema string) string {
	if u, err := url.Parse(base); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	// schema is [a-z0-9_] only: no quoting needed.
	return strings.TrimSpace(base) + " search_path=" + schema
}

// MySQL creates a database with a random name (omnibox_test_<hex>) on the
// MySQL or MariaDB server named by [MySQLDSNEnv] and returns a handle on it
// and its DSN (the server's, with the database in it), for a program under
// test to open the same database. The database is empty: migrate your store
// on it. The test's cleanup drops the database and closes db. An unreachable
// server fails the test (it is never skipped), saying which variable to set.
func MySQL(t testing.TB) (db *sql.DB, dsn string) {
	t.Helper()
	db, database := dbtest.MySQL(t)
	return db, dbtest.MySQLConfig(t, database).FormatDSN()
}
