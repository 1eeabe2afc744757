package dbtest

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPostgresURL(t *testing.T) {
	// Not parallel: it sets an environment variable.
	t.Setenv(PostgresURLEnv, "")
	require.Equal(t, DefaultPostgresURL, PostgresURL())
	t.Setenv(PostgresURLEnv, "postgres://elsewhere/db")
	require.Equal(t, "postgres://elsewhere/db", PostgresURL())
}

func TestPostgres(t *testing.T) {
	t.Parallel()

	schemaExists := func(t *testing.T, db *sql.DB, schema string) bool {
		t.Helper()
		var exists bool
		require.NoError(t, db.QueryRowContext(t.Context(),
			"SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists))
		return exists
	}

	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			// Another handle, to look at the schema after the inner test
			// dropped it.
			observer, _ := Postgres(t, driver)

			var schema string
			t.Run("Isolated", func(t *testing.T) {
				db, s := Postgres(t, driver)
				schema = s
				require.True(t, strings.HasPrefix(schema, "omnibox_test_"), schema)
				require.True(t, schemaExists(t, db, schema))
				_, err := db.ExecContext(t.Context(), `CREATE TABLE "`+schema+`".t (x int)`)
				require.NoError(t, err)
			})
			require.NotEmpty(t, schema)
			require.False(t, schemaExists(t, observer, schema), "the schema outlived its test")
		})
	}
}
