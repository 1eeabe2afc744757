package omniboxtest_test

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/omniboxtest"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// writeEvents writes events in one transaction through an outbox on store.
func writeEvents(t *testing.T, db *sql.DB, store omnibox.Inserter, events ...omnibox.Event) {
	t.Helper()
	outbox, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)
	require.NoError(t, outbox.InTx(t.Context(), db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx, events...)
	}))
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	var path string
	t.Run("Migrated", func(t *testing.T) {
		db, store := omniboxtest.SQLite(t)
		writeEvents(t, db, store, omnibox.Event{Topic: "orders", Key: "k", Payload: []byte("x")})
		var n int
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT count(*) FROM omnibox_outbox").Scan(&n))
		require.Equal(t, 1, n)
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&path))
	})
	require.NotEmpty(t, path)
	_, err := os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "the database file outlived its test")
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	observer, _ := omniboxtest.Postgres(t)
	schemaExists := func(schema string) bool {
		var exists bool
		require.NoError(t, observer.QueryRowContext(t.Context(),
			"SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists))
		return exists
	}

	var schema string
	t.Run("Isolated", func(t *testing.T) {
		db, dsn := omniboxtest.Postgres(t)
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT current_schema()").Scan(&schema))
		require.True(t, strings.HasPrefix(schema, "omnibox_test_"), schema)
		require.Contains(t, dsn, "search_path="+schema)

		// A store without a schema of its own works in the test's schema.
		store, err := postgres.New(&postgres.Config{})
		require.NoError(t, err)
		require.NoError(t, store.Migrate(t.Context(), db))
		writeEvents(t, db, store, omnibox.Event{Topic: "orders", Key: "k", Payload: []byte("x")})

		// The DSN opens the same schema, with either driver.
		for _, driver := range []string{"postgres", "pgx"} {
			other, err := sql.Open(driver, dsn)
			require.NoError(t, err)
			var n int
			require.NoError(t, other.QueryRowContext(t.Context(), "SELECT count(*) FROM omnibox_outbox").Scan(&n), driver)
			require.Equal(t, 1, n, driver)
			require.NoError(t, other.Close())
		}
	})
	require.False(t, schemaExists(schema), "the schema outlived its test")
}

func TestPostgres_KeyValueDSN(t *testing.T) {
	t.Setenv(omniboxtest.PostgresURLEnv, "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable")
	db, dsn := omniboxtest.Postgres(t)
	var schema string
	require.NoError(t, db.QueryRowContext(t.Context(), "SELECT current_schema()").Scan(&schema))
	require.True(t, strings.HasPrefix(schema, "omnibox_test_"), schema)
	require.True(t, strings.HasSuffix(dsn, " search_path="+schema), dsn)
}

func TestMySQL(t *testing.T) {
	t.Parallel()
	observer, _ := omniboxtest.MySQL(t)
	var database string
	t.Run("Isolated", func(t *testing.T) {
		db, dsn := omniboxtest.MySQL(t)
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT DATABASE()").Scan(&database))
		require.True(t, strings.HasPrefix(database, "omnibox_test_"), database)

		store, err := mysql.New(&mysql.Config{})
		require.NoError(t, err)
		require.NoError(t, store.Migrate(t.Context(), db))
		writeEvents(t, db, store, omnibox.Event{Topic: "orders", Key: "k", Payload: []byte("x")})

		other, err := sql.Open("mysql", dsn)
		require.NoError(t, err)
		defer func() { require.NoError(t, other.Close()) }()
		var n int
		require.NoError(t, other.QueryRowContext(t.Context(), "SELECT count(*) FROM omnibox_outbox").Scan(&n))
		require.Equal(t, 1, n)
	})
	var n int
	require.NoError(t, observer.QueryRowContext(t.Context(),
		"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", database).Scan(&n))
	require.Zero(t, n, "the database outlived its test")
}

// An unreachable server fails the test, naming the variable to set; it is
// never skipped.
func TestUnreachableServerFails(t *testing.T) {
	t.Run("Postgres", func(t *testing.T) {
		t.Setenv(omniboxtest.PostgresURLEnv, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
		rec := runRecorded(t, func(tb testing.TB) { omniboxtest.Postgres(tb) })
		require.True(t, rec.failed)
		require.False(t, rec.skipped)
		require.Contains(t, rec.msg, omniboxtest.PostgresURLEnv)
	})
	t.Run("MySQL", func(t *testing.T) {
		t.Setenv(omniboxtest.MySQLDSNEnv, "root@tcp(127.0.0.1:1)/test?timeout=2s")
		rec := runRecorded(t, func(tb testing.TB) { omniboxtest.MySQL(tb) })
		require.True(t, rec.failed)
		require.False(t, rec.skipped)
		require.Contains(t, rec.msg, omniboxtest.MySQLDSNEnv)
	})
}
