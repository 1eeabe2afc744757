// Package dbtest gives tests a connection to the real test databases, each
// test in a fresh, isolated namespace that is dropped when the test ends.
//
// It is test support, not API: its files are ordinary (non-_test) Go files
// only so that the tests of several packages can share it.
//
// # PostgreSQL
//
// [Postgres] opens the server named by [PostgresURL] through either driver
// ("postgres" for github.com/lib/pq, "pgx" for
// github.com/jackc/pgx/v5/stdlib; importing this package registers both),
// creates a schema with a random name and drops it on cleanup. The URL comes
// from the OMNIBOX_TEST_POSTGRES_URL environment variable and defaults to the
// local server. An unreachable server fails the test: it is never skipped.
package dbtest
