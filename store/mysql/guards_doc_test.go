package mysql

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The guard statements docs/mysql.md shows are the ones guardSQL builds.
func TestGuardSQLAsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/mysql.md")
	require.NoError(t, err)
	require.Contains(t, string(doc), guardSQL(serverMariaDB, 4999871*time.Microsecond))
	require.Contains(t, string(doc), guardSQL(serverMySQL, 4999*time.Millisecond))
}
