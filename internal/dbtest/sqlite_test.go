package dbtest

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSQLite(t *testing.T) {
	t.Parallel()

	var first string
	t.Run("Fresh", func(t *testing.T) {
		db, path := SQLite(t)
		first = path
		_, err := os.Stat(path)
		require.NoError(t, err, "the database file was not created")

		var journalMode string
		require.NoError(t, db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&journalMode))
		require.Equal(t, "wal", journalMode)
		var tables int
		require.NoError(t, db.QueryRowContext(t.Context(), "SELECT count(*) FROM sqlite_schema").Scan(&tables))
		require.Zero(t, tables, "a fresh database must be empty")
		_, err = db.ExecContext(t.Context(), "CREATE TABLE t (x INTEGER)")
		require.NoError(t, err)
	})
	require.NotEmpty(t, first)
	_, err := os.Stat(first)
	require.ErrorIs(t, err, os.ErrNotExist, "the database file outlived its test")

	_, second := SQLite(t)
	require.NotEqual(t, first, second)
}
