package omnibox_test

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// TestQuickStartIgnoredErrors is the README's old Quick start, whose errors
// were discarded: a constructor that failed hands back a nil pointer, which
// inside an interface is not nil. The relay took it and panicked on its first
// batch; now the constructors refuse it and say where it came from.
func TestQuickStartIgnoredErrors(t *testing.T) {
	t.Parallel()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "quickstart.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)

	t.Run("Publisher", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on port 1: NewKafka fails its start-up check.
		pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: []string{"127.0.0.1:1"}, PublishTimeout: 200 * time.Millisecond})
		require.Error(t, err)
		require.NotPanics(t, func() {
			_, err = omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{})
		})
		require.ErrorIs(t, err, omnibox.ErrNilPublisher)
		require.EqualError(t, err, "omnibox: NewRelay: publisher is a nil *publisher.Kafka (did publisher.NewKafka return an error?)")
	})

	t.Run("Store", func(t *testing.T) {
		t.Parallel()
		pgStore, err := postgres.New(&postgres.Config{Schema: "not an identifier"})
		require.Error(t, err)
		_, err = omnibox.New(pgStore, &omnibox.Config{})
		require.ErrorIs(t, err, omnibox.ErrNilStore)
		require.EqualError(t, err, "omnibox: New: store is a nil *postgres.Store (did postgres.New return an error?)")
		_, err = omnibox.NewRelay(db, pgStore, &discardPublisher{}, &omnibox.RelayConfig{})
		require.ErrorIs(t, err, omnibox.ErrNilStore)
		require.EqualError(t, err, "omnibox: NewRelay: store is a nil *postgres.Store (did postgres.New return an error?)")
	})

	t.Run("DB", func(t *testing.T) {
		t.Parallel()
		var nilDB *sql.DB // what a failed sql.Open returns
		_, err := omnibox.NewRelay(nilDB, store, &discardPublisher{}, &omnibox.RelayConfig{})
		require.ErrorIs(t, err, omnibox.ErrNilDB)
		require.EqualError(t, err, "omnibox: NewRelay: db is a nil *sql.DB (did sql.Open return an error?)")
	})

	t.Run("Waker", func(t *testing.T) {
		t.Parallel()
		outbox, err := omnibox.New(store, &omnibox.Config{})
		require.NoError(t, err)
		relay, err := omnibox.NewRelay(db, store, nil, &omnibox.RelayConfig{})
		require.ErrorIs(t, err, omnibox.ErrNilPublisher)
		err = outbox.WakeOnCommit(relay)
		require.ErrorIs(t, err, omnibox.ErrNilWaker)
		require.EqualError(t, err, "omnibox: WakeOnCommit: waker is a nil *omnibox.Relay (did omnibox.NewRelay return an error?)")
		require.ErrorIs(t, outbox.WakeOnCommit(nil), omnibox.ErrNilWaker)
		require.NotPanics(t, outbox.Committed, "nothing was registered")
	})
}

// discardPublisher accepts every message and keeps none.
type discardPublisher struct{}

func (*discardPublisher) Publish(string, ...*message.Message) error { return nil }
func (*discardPublisher) Close() error                              { return nil }
