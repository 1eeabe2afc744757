package postgres_test

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// countingWaker counts its wake-ups.
type countingWaker struct{ n atomic.Int64 }

func (w *countingWaker) Notify() { w.n.Add(1) }

// listen starts a listener on channel waking w, and waits for its first
// (connection) wake-up.
func listen(t *testing.T, channel string, w *countingWaker) {
	t.Helper()
	l, err := postgres.NewListener(dbtest.PostgresURL(), w, &postgres.ListenerConfig{Channel: channel})
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

	n, err := postgres.NewNotifier(db, &postgres.NotifierConfig{Channel: channel, MinInterval: time.Hour})
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
	store, err := postgres.New(&postgres.Config{Schema: schema, NotifyChannel: channel})
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
	_, err := postgres.New(&postgres.Config{NotifyChannel: "bad channel"})
	require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier)
	_, err = postgres.NewNotifier(db, &postgres.NotifierConfig{Channel: "x;drop"})
	require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier)
	_, err = postgres.NewNotifier(db, &postgres.NotifierConfig{MinInterval: -1})
	require.ErrorContains(t, err, "MinInterval")
	_, err = postgres.NewNotifier(nil, &postgres.NotifierConfig{})
	require.ErrorIs(t, err, omnibox.ErrNilDB)
	_, err = postgres.NewNotifier(db, nil)
	require.ErrorIs(t, err, omnibox.ErrNilConfig)
	w := &countingWaker{}
	_, err = postgres.NewListener("", w, &postgres.ListenerConfig{})
	require.ErrorContains(t, err, "dsn is empty")
	_, err = postgres.NewListener(dbtest.PostgresURL(), nil, &postgres.ListenerConfig{})
	require.ErrorContains(t, err, "waker is nil")
	_, err = postgres.NewListener(dbtest.PostgresURL(), w, &postgres.ListenerConfig{Channel: "Upper"})
	require.ErrorIs(t, err, omnibox.ErrInvalidIdentifier)
}
