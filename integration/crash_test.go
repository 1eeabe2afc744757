package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// TestRelayProcessKilled runs the relay as a separate process and kills it
// with SIGKILL twice in the middle of a run while writers keep writing:
// after each kill a relay is started again, once with another ID (it
// relays the other partitions at once but must wait for the leases of the
// dead relay's partitions to expire) and once with the dead relay's own ID
// (it takes its partitions over at once). Nothing may be lost and each
// key's first deliveries must stay in order; the test reports how many
// duplicates the kills caused.
func TestRelayProcessKilled(t *testing.T) {
	t.Parallel()
	forEachDialect(t, testRelayProcessKilled)
}

func testRelayProcessKilled(t *testing.T, d dialect) {
	const (
		keys    = 20
		backlog = 6_000
		live    = 4_000
		lease   = 2 * time.Second
	)
	ctx := t.Context()
	e := setupEnv(t, d)
	consumer := startCollector(t, e.brokers, e.topic)

	var (
		mu    sync.Mutex
		order = map[string][]string{}
	)
	write := func(n int, perTx int) error {
		for written := 0; written < n; written += perTx {
			key := fmt.Sprintf("account-%02d", (written/perTx)%keys)
			events := make([]omnibox.Event, perTx)
			for i := range events {
				id, err := omnibox.NewEventID()
				if err != nil {
					return err
				}
				events[i] = omnibox.Event{ID: id, Topic: e.topic, Key: key, Payload: []byte(id)}
			}
			if err := e.writeOrder(ctx, key, events, false); err != nil {
				return err
			}
			mu.Lock()
			for _, ev := range events {
				order[key] = append(order[key], ev.ID)
			}
			mu.Unlock()
		}
		return nil
	}
	require.NoError(t, write(backlog, 100))

	// A writer goes on writing while the relay processes are killed.
	writerDone := make(chan error, 1)
	go func() { writerDone <- write(live, 10) }()

	startRelay := func(id string) *exec.Cmd {
		exe, err := os.Executable()
		require.NoError(t, err)
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(append(os.Environ(), e.childEnv...),
			childEnv+"=1",
			"OMNIBOX_CHILD_BROKERS="+strings.Join(e.brokers, ","),
			"OMNIBOX_CHILD_RELAY_ID="+id,
			"OMNIBOX_CHILD_LEASE="+lease.String(),
		)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(stdout).ReadString('\n')
		require.NoError(t, err, "child relay did not start")
		require.Equal(t, "relay running\n", line)
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	kill := func(cmd *exec.Cmd, id string, afterUnique int) {
		consumer.waitUnique(t, afterUnique, time.Minute)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		err := cmd.Wait()
		require.Error(t, err)
		require.Contains(t, err.Error(), "killed")
		t.Logf("relay %s killed with SIGKILL after %d distinct events were consumed", id, consumer.uniqueCount())
	}

	first := startRelay("relay-a")
	kill(first, "relay-a", 2_500)
	second := startRelay("relay-b") // waits for relay-a's partition leases to expire
	kill(second, "relay-b", 6_000)
	third := startRelay("relay-b") // takes its own partitions over at once

	require.NoError(t, <-writerDone)
	total := backlog + live
	consumer.waitUnique(t, total, 2*time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == 0 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, third.Process.Signal(syscall.SIGTERM))
	require.NoError(t, third.Wait(), "relay stops cleanly on SIGTERM")
	time.Sleep(200 * time.Millisecond)

	got := consumer.snapshot()
	dups := checkKeyOrder(t, got, order)
	require.Len(t, got, total+dups)
	t.Logf("SIGKILL test: %d events committed, %d deliveries, %d duplicates caused by 2 kills (relay batch size 100)", total, len(got), dups)
}
