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
//
// # MySQL
//
// [MySQL] creates a database with a random name on the server named by
// [MySQLDSN] (OMNIBOX_TEST_MYSQL_DSN, default the local MariaDB as root) and
// drops it on cleanup; [MySQLConfig] gives the DSN of such a database, for
// opening it again with other options or from another process.
//
// # SQLite
//
// [SQLite] opens a fresh database file in the test's temporary directory with
// the store's own settings (store/sqlite's Open). No server is involved.
package dbtest
