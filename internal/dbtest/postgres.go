package dbtest

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/lib/pq"              // registers the "postgres" driver
)

// PostgresURLEnv is the environment variable that overrides [PostgresURL].
const PostgresURLEnv = "OMNIBOX_TEST_POSTGRES_URL"

// DefaultPostgresURL is the test server used when [PostgresURLEnv] is unset.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresURL returns the URL of the PostgreSQL test server: the value of
// [PostgresURLEnv], or [DefaultPostgresURL] when that is unset or empty.
func PostgresURL() string {
	return cmp.Or(os.Getenv(PostgresURLEnv), DefaultPostgresURL)
}

// Postgres opens the PostgreSQL test server with driver ("postgres" for
// lib/pq, "pgx" for pgx's database/sql driver) and creates a schema with a
// random name (omnibox_test_<hex>) for the test alone. It fails the test when
// the server cannot be reached. A cleanup drops the schema with everything in
// it and closes db.
//
// The schema is not put on the connections' search_path: give it to the code
// under test (a store's Config.Schema) or qualify names with it.
func Postgres(t testing.TB, driver string) (db *sql.DB, schema string) {
	t.Helper()
	if driver != "postgres" && driver != "pgx" {
		t.Fatalf("dbtest: unknown PostgreSQL driver %q (want \"postgres\" or \"pgx\")", driver)
	}
	url := PostgresURL()
	db, err := sql.Open(driver, url)
	if err != nil {
		t.Fatalf("dbtest: opening PostgreSQL at %s with driver %q: %v (set %s to point the tests at another server)", url, driver, err, PostgresURLEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		t.Fatalf("dbtest: PostgreSQL is not reachable at %s with driver %q: %v (start the server or set %s)", url, driver, err, PostgresURLEnv)
	}

	schema = "omnibox_test_" + randomHex(8)
	// schema is [a-z0-9_] only, so quoting it is enough.
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA "`+schema+`"`); err != nil {
		_ = db.Close()
		t.Fatalf("dbtest: creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			t.Errorf("dbtest: dropping schema %s: %v", schema, err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("dbtest: closing database: %v", err)
		}
	})
	return db, schema
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}
