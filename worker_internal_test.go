package omnibox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	minWait, maxWait := 100*time.Millisecond, 2*time.Second
	for n := 1; n <= 20; n++ {
		base := min(minWait<<min(n-1, 30), maxWait)
		for range 100 {
			d := backoff(minWait, maxWait, n)
			require.GreaterOrEqual(t, d, base/2, "n=%d", n)
			require.LessOrEqual(t, d, maxWait, "n=%d", n)
			require.LessOrEqual(t, d, base*3/2, "n=%d", n)
		}
	}
}

func TestCleanError(t *testing.T) {
	t.Parallel()
	require.Equal(t, "ab", cleanError(errString("a\x00b\xff"), 100))
	require.Equal(t, "é", cleanError(errString("éé"), 3), "a cut rune is dropped")
}

type errString string

func (e errString) Error() string { return string(e) }
