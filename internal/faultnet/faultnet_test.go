package faultnet_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/omnibox-go/omnibox/internal/faultnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startEcho starts a line echo server and returns its address.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := conn.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

// echo sends line on conn and returns the answer, or the error of reading
// it within wait.
func echo(conn net.Conn, line string, wait time.Duration) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(wait)); err != nil {
		return "", err
	}
	if _, err := conn.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	return got, err
}

func TestProxyFreezeThawClose(t *testing.T) {
	t.Parallel()
	type testBundle struct {
		proxy *faultnet.Proxy
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		proxy, err := faultnet.Listen("127.0.0.1:0", startEcho(t))
		require.NoError(t, err)
		t.Cleanup(func() { _ = proxy.Close() })
		return &testBundle{proxy: proxy}
	}
	dial := func(t *testing.T, b *testBundle) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", b.proxy.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}

	t.Run("ForwardsBothWays", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		got, err := echo(dial(t, b), "hello", 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, "hello\n", got)
	})

	t.Run("FreezeSilencesWithoutClosing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		old := dial(t, b)
		_, err := echo(old, "before", 5*time.Second)
		require.NoError(t, err)

		b.proxy.Freeze()
		// No answer, no EOF, no reset: only the client's own deadline ends
		// the wait.
		_, err = echo(old, "during", 300*time.Millisecond)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		fresh := dial(t, b) // accepted, never answered
		_, err = echo(fresh, "new", 300*time.Millisecond)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Equal(t, 2, b.proxy.Frozen())

		b.proxy.Thaw()
		got, err := echo(dial(t, b), "after", 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, "after\n", got)
		// A half-open socket never comes back.
		_, err = echo(old, "still", 300*time.Millisecond)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.Equal(t, 2, b.proxy.Frozen())
	})

	t.Run("CloseEndsFrozenConnections", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		conn := dial(t, b)
		_, err := echo(conn, "before", 5*time.Second)
		require.NoError(t, err)
		b.proxy.Freeze()
		require.NoError(t, b.proxy.Close())
		require.NoError(t, b.proxy.Close(), "Close is idempotent")
		_, err = echo(conn, "after", 5*time.Second)
		require.Error(t, err)
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the closed proxy answers with EOF or a reset, got %v", err)
		_, err = net.DialTimeout("tcp", b.proxy.Addr(), time.Second)
		require.Error(t, err, "a closed proxy refuses connections")
	})
}
