package omnibox_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// logBuffer collects a logger's records as text, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// sqliteOutbox returns a migrated SQLite outbox in a temporary file.
func sqliteOutbox(t *testing.T) (*sql.DB, *sqlite.Store) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "outbox.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(context.Background(), db))
	return db, store
}

func TestNewRelayWarnsOfUnsafeGoChannel(t *testing.T) {
	t.Parallel()
	db, store := sqliteOutbox(t)
	for name, tc := range map[string]struct {
		config gochannel.Config
		want   []string // in the warning; none: no warning
	}{
		"Default":   {want: []string{"BlockPublishUntilSubscriberAck=false", "Persistent=false", "out of order", "drops what is published before a subscriber exists", "omniboxtest.NewGoChannel"}},
		"BlockOnly": {config: gochannel.Config{BlockPublishUntilSubscriberAck: true}, want: []string{"BlockPublishUntilSubscriberAck=true", "Persistent=false"}},
		"Safe":      {config: gochannel.Config{BlockPublishUntilSubscriberAck: true, Persistent: true}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			gc := gochannel.NewGoChannel(tc.config, watermill.NopLogger{})
			t.Cleanup(func() { _ = gc.Close() })
			var logs logBuffer
			_, err := omnibox.NewRelay(db, store, gc, &omnibox.RelayConfig{Logger: logs.logger()})
			require.NoError(t, err)
			if len(tc.want) == 0 {
				require.Empty(t, logs.String())
				return
			}
			require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
			for _, w := range tc.want {
				require.Contains(t, logs.String(), w)
			}
		})
	}
}

// alwaysRejecting refuses every message for good.
type alwaysRejecting struct{}

func (alwaysRejecting) Publish(_ string, msgs ...*message.Message) error {
	return fmt.Errorf("%w: refused %s", omnibox.ErrRejected, msgs[0].UUID)
}
func (alwaysRejecting) Close() error { return nil }

func TestRelayDeadEventLogNamesTheCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, store := sqliteOutbox(t)
	outbox, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)
	require.NoError(t, outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "t", Key: "k"})
	}))
	var logs logBuffer
	relay, err := omnibox.NewRelay(db, store, alwaysRejecting{}, &omnibox.RelayConfig{
		Logger: logs.logger(), MaxAttempts: 1, PollInterval: time.Millisecond,
	})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()
	var dead []omnibox.DeadEvent
	require.Eventually(t, func() bool {
		dead, err = store.ListDead(ctx, db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		return len(dead) == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	seq := dead[0].Seq
	out := logs.String()
	require.Contains(t, out, fmt.Sprintf("omnibox dead -dsn DSN requeue %d", seq))
	require.Contains(t, out, fmt.Sprintf("omnibox dead -dsn DSN discard %d", seq))
	require.Contains(t, out, "omnibox dead -dsn DSN list")
	require.Contains(t, out, "ListDead, Requeue and Discard")
}
