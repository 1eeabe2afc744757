package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/faultnet"
)

// countingWaker counts its wake-ups.
type countingWaker struct{ n atomic.Int64 }

func (w *countingWaker) Notify() { w.n.Add(1) }

// listen starts a listener on channel waking w, and waits for its first
// (connection) wake-up.
func listen(t *testing.T, channel string, w *countingWaker) {
	t.Helper()
	l, err := NewListener(dbtest.PostgresURL(), w, &ListenerConfig{Channel: channel})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, func() bool { return w.n.Load() >= 1 }, 10*time.Second, time.Millisecond)
}

// waitListening gives the LISTEN time to be registered: notifications sent
// before it are not delivered (polling covers that in a relay).
func waitListening(t *testing.T, db *sql.DB, channel string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' || $1 || '%'`, channel).Scan(&n))
		return n > 0
	}, 10*time.Second, 5*time.Millisecond)
}

func TestNotifierWakesListenerCoalesced(t *testing.T) {
	t.Parallel()
	db, _ := dbtest.Postgres(t, "postgres")
	channel := "omnibox_test_notifier"
	w := &countingWaker{}
	listen(t, channel, w)
	waitListening(t, db, channel)

	n, err := NewNotifier(db, &NotifierConfig{Channel: channel, MinInterval: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	before := w.n.Load()
	for range 100 {
		n.Notify()
	}
	require.Eventually(t, func() bool { return w.n.Load() > before }, 10*time.Second, time.Millisecond)
	// A hundred wake-ups within MinInterval were one NOTIFY (at most one
	// more, for a request that arrived while the first was being sent).
	time.Sleep(100 * time.Millisecond)
	require.LessOrEqual(t, w.n.Load()-before, int64(2))
}

func TestNotifyChannelNotifiesAtCommitOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, schema := dbtest.Postgres(t, "postgres")
	channel := "omnibox_test_in_tx"
	store, err := New(&Config{Schema: schema, NotifyChannel: channel})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx, db))
	ob, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)
	w := &countingWaker{}
	listen(t, channel, w)
	waitListening(t, db, channel)

	before := w.n.Load()
	errRollback := context.Canceled
	require.ErrorIs(t, ob.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		require.NoError(t, ob.WriteTx(ctx, tx, omnibox.Event{Topic: "t"}))
		return errRollback
	}), errRollback)
	require.NoError(t, ob.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return ob.WriteTx(ctx, tx, omnibox.Event{Topic: "t"})
	}))
	require.Eventually(t, func() bool { return w.n.Load() == before+1 }, 10*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, before+1, w.n.Load(), "the rolled-back transaction notified no one")
}

func TestNotifyConfigsValidate(t *testing.T) {
	t.Parallel()
	db, _ := dbtest.Postgres(t, "postgres")
	_, err := New(&Config{NotifyChannel: "bad channel"})
	require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier)
	_, err = NewNotifier(db, &NotifierConfig{Channel: "x;drop"})
	require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier)
	_, err = NewNotifier(db, &NotifierConfig{MinInterval: -1})
	require.ErrorContains(t, err, "MinInterval")
	_, err = NewNotifier(nil, &NotifierConfig{})
	require.ErrorIs(t, err, omnibox.ErrNilDB)
	_, err = NewNotifier(db, nil)
	require.ErrorIs(t, err, omnibox.ErrNilConfig)
	w := &countingWaker{}
	_, err = NewListener("", w, &ListenerConfig{})
	require.ErrorContains(t, err, "dsn is empty")
	_, err = NewListener(dbtest.PostgresURL(), nil, &ListenerConfig{})
	require.ErrorContains(t, err, "waker is nil")
	_, err = NewListener(dbtest.PostgresURL(), w, &ListenerConfig{Channel: "Upper"})
	require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier)
}

// logRecorder is a slog handler that keeps the records it receives.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// errorsLogged returns how many records of level carry an "error" attribute
// whose text contains msg.
func (r *logRecorder) errorsLogged(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		rec.Attrs(func(a slog.Attr) bool {
			if rec.Level == level && a.Key == "error" && strings.Contains(a.Value.String(), msg) {
				n++
			}
			return true
		})
	}
	return n
}

// count returns how many records of level have a message containing msg.
func (r *logRecorder) count(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			n++
		}
	}
	return n
}

// newProxy starts a faultnet proxy to target, closed by t.Cleanup: Freeze
// turns the links it holds half-open (open, but carrying nothing either
// way, like a link that stopped answering) and Thaw forwards the
// connections accepted from then on.
func newProxy(t *testing.T, target string) *faultnet.Proxy {
	t.Helper()
	p, err := faultnet.Listen("127.0.0.1:0", target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// dsnVia returns the test server's URL with its host and port replaced by
// addr.
func dsnVia(t *testing.T, addr string) string {
	t.Helper()
	u, err := url.Parse(dbtest.PostgresURL())
	require.NoError(t, err)
	u.Host = addr
	return u.String()
}

// upstreamAddr returns the host:port of the test server.
func upstreamAddr(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(dbtest.PostgresURL())
	require.NoError(t, err)
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// labeledGoroutines counts the goroutines carrying the profiler label
// omnibox_test=value: those started under pprof.Do with it, and every
// goroutine they started, transitively.
func labeledGoroutines(t *testing.T, value string) int {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, pprof.Lookup("goroutine").WriteTo(&buf, 1))
	want := `"omnibox_test":"` + value + `"`
	n := 0
	var count int
	for line := range strings.Lines(buf.String()) {
		if c, _, ok := strings.Cut(line, " @ "); ok {
			count, _ = strconv.Atoi(c)
			continue
		}
		if strings.HasPrefix(line, "# labels:") && strings.Contains(line, want) {
			n += count
		}
	}
	return n
}

// runLabeled runs l.Run(ctx) in a goroutine labeled omnibox_test=label and
// returns the channel of its result.
func runLabeled(ctx context.Context, l *Listener, label string) <-chan error {
	done := make(chan error, 1)
	go pprof.Do(ctx, pprof.Labels("omnibox_test", label), func(ctx context.Context) {
		done <- l.Run(ctx)
	})
	return done
}

// requireReturns waits for done, failing the test if Run takes longer than
// within to return after its context ended.
func requireReturns(t *testing.T, done <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(within):
		t.Fatalf("Listener.Run did not return within %s of its context ending", within)
	}
}

func TestListenerDeadLink(t *testing.T) {
	t.Parallel()
	const period = 20 * time.Millisecond
	proxy := newProxy(t, upstreamAddr(t))
	w := &countingWaker{}
	logs := &logRecorder{}
	l, err := NewListener(dsnVia(t, proxy.Addr()), w, &ListenerConfig{Channel: "omnibox_test_dead_link", Logger: slog.New(logs)})
	require.NoError(t, err)
	l.pingPeriod = period
	l.callTimeout = 250 * time.Millisecond // short, yet long enough for a loaded -race run
	l.minBackoff = time.Millisecond
	l.maxBackoff = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runLabeled(ctx, l, t.Name())
	require.Eventually(t, func() bool { return w.n.Load() >= 1 }, 10*time.Second, time.Millisecond)

	// The link stops answering: no ping, no reconnection gets through. Over
	// twenty ping periods the listener keeps a constant number of goroutines
	// (one pinger, not one more per period).
	proxy.Freeze()
	baseline := labeledGoroutines(t, t.Name())
	most := baseline
	for range 20 {
		time.Sleep(period)
		most = max(most, labeledGoroutines(t, t.Name()))
	}
	require.LessOrEqual(t, most, baseline+2, "goroutines of the listener over 20 ping periods on a dead link (from %d)", baseline)
	// The ping found the dead link within its deadline, and the
	// reconnections time out too.
	require.Eventually(t, func() bool {
		return logs.errorsLogged(slog.LevelWarn, "ping") > 0 && logs.errorsLogged(slog.LevelWarn, "connecting") > 0
	}, 10*time.Second, time.Millisecond)

	// The link comes back: the listener reconnects and wakes its waker.
	before := w.n.Load()
	proxy.Thaw()
	require.Eventually(t, func() bool { return w.n.Load() > before }, 10*time.Second, time.Millisecond)

	// The link dies again; Run still returns at once when its context ends.
	proxy.Freeze()
	time.Sleep(3 * period)
	cancel()
	requireReturns(t, done, 2*time.Second)
}

func TestListenerRunReturnsPromptlyOnDeadLink(t *testing.T) {
	t.Parallel()
	proxy := newProxy(t, upstreamAddr(t))
	proxy.Freeze() // not even the connection's startup is answered
	l, err := NewListener(dsnVia(t, proxy.Addr()), &countingWaker{}, &ListenerConfig{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := runLabeled(ctx, l, t.Name())
	time.Sleep(100 * time.Millisecond)
	cancel()
	requireReturns(t, done, 2*time.Second)
}

func TestListenerFailedListen(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	w := &countingWaker{}
	l, err := NewListener(dbtest.PostgresURL(), w, &ListenerConfig{Logger: slog.New(logs)})
	require.NoError(t, err)
	// A channel the server refuses (zero-length delimited identifier);
	// Validate keeps such names out of a real ListenerConfig.
	l.channel = ""
	l.minBackoff = time.Millisecond
	l.maxBackoff = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := runLabeled(ctx, l, t.Name())

	// The refusal is logged at error level, and the LISTEN is retried.
	require.Eventually(t, func() bool { return logs.count(slog.LevelError, "LISTEN") >= 3 }, 10*time.Second, time.Millisecond)
	cancel()
	requireReturns(t, done, 2*time.Second)
}

func TestListenerReconnectsAfterTermination(t *testing.T) {
	t.Parallel()
	db, _ := dbtest.Postgres(t, "postgres")
	channel := "omnibox_test_terminated"
	w := &countingWaker{}
	listen(t, channel, w)
	waitListening(t, db, channel)

	// The server ends the listener's session: it reconnects, listens again
	// and wakes its waker (events may have been missed meanwhile).
	before := w.n.Load()
	_, err := db.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' || $1 || '%'`, channel)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.n.Load() > before }, 10*time.Second, time.Millisecond)
	waitListening(t, db, channel)
	before = w.n.Load()
	_, err = db.Exec(`SELECT pg_notify($1, '')`, channel)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.n.Load() > before }, 10*time.Second, time.Millisecond)
}

func TestListenerBadDSN(t *testing.T) {
	t.Parallel()
	l, err := NewListener("postgres://%zz", &countingWaker{}, &ListenerConfig{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = l.Run(ctx)
	require.Error(t, err)
	require.False(t, errors.Is(err, context.DeadlineExceeded))
}
