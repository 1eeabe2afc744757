package dbtest

import (
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMySQLDSN(t *testing.T) {
	// Not parallel: it sets an environment variable.
	t.Setenv(MySQLDSNEnv, "")
	require.Equal(t, DefaultMySQLDSN, MySQLDSN())
	t.Setenv(MySQLDSNEnv, "user@tcp(elsewhere:3306)/db")
	require.Equal(t, "user@tcp(elsewhere:3306)/db", MySQLDSN())
}

func TestMySQL(t *testing.T) {
	t.Parallel()

	databaseExists := func(t *testing.T, db *sql.DB, database string) bool {
		t.Helper()
		var n int
		require.NoError(t, db.QueryRowContext(t.Context(),
			"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", database).Scan(&n))
		return n == 1
	}

	// Another handle, to look at the server after the inner test dropped its
	// database.
	observer, _ := MySQL(t)

	var database string
	t.Run("Isolated", func(t *testing.T) {
		db, d := MySQL(t)
		database = d
		require.True(t, strings.HasPrefix(database, "omnibox_test_"), database)
		require.True(t, databaseExists(t, db, database))
		var current string
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT DATABASE()").Scan(&current))
		require.Equal(t, database, current, "the handle must use the test's database")
		_, err := db.ExecContext(t.Context(), "CREATE TABLE t (x int)")
		require.NoError(t, err)

		// MySQLConfig opens more handles on the same database.
		cfg := MySQLConfig(t, database)
		cfg.ParseTime = true
		other, err := sql.Open("mysql", cfg.FormatDSN())
		require.NoError(t, err)
		defer func() { require.NoError(t, other.Close()) }()
		var n int
		require.NoError(t, other.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM t").Scan(&n))
		require.Zero(t, n)
	})
	require.NotEmpty(t, database)
	require.False(t, databaseExists(t, observer, database), "the database outlived its test")
}

// An unreachable server fails the test with a message naming the DSN and
// its environment variable; it is never skipped.
func TestMySQLUnreachableFails(t *testing.T) {
	// Not parallel: it sets an environment variable.
	const dsn = "root@tcp(127.0.0.1:1)/test?timeout=2s"
	t.Setenv(MySQLDSNEnv, dsn)
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		MySQL(ft)
	}()
	<-done
	require.True(t, ft.failed, "MySQL did not fail the test")
	require.False(t, ft.skipped, "MySQL skipped the test")
	require.Contains(t, ft.msg, dsn)
	require.Contains(t, ft.msg, MySQLDSNEnv)
}

// fatalRecorder records Fatalf and Skip instead of ending the test, ending
// the calling goroutine as the real ones do.
type fatalRecorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Skip(...any) {
	r.skipped = true
	runtime.Goexit()
}

func (r *fatalRecorder) Skipf(string, ...any) {
	r.skipped = true
	runtime.Goexit()
}

func (r *fatalRecorder) SkipNow() {
	r.skipped = true
	runtime.Goexit()
}
