package omnibox

import (
	"os"
	"strings"
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

func TestDefaultRelayID(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	host = strings.ReplaceAll(host, "/", "-")

	t.Setenv("OMNIBOX_RELAY_ID", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	a, b := defaultRelayID(), defaultRelayID()
	require.True(t, strings.HasPrefix(a, host+"-"), a)
	require.NotEqual(t, a, b, "unique outside a pod")

	// In a pod: the pod's name, stable across restarts; a second relay of
	// the process gets a suffix.
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	defaultRelays.Store(0)
	require.Equal(t, host, defaultRelayID())
	require.Equal(t, host+"-2", defaultRelayID())

	defaultRelays.Store(0)
	t.Setenv("OMNIBOX_RELAY_ID", "orders/relay\xff")
	id := defaultRelayID()
	require.Equal(t, "orders-relay", id)
	require.NoError(t, (&RelayConfig{ID: id}).Validate())
}
