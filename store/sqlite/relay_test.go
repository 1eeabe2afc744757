package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// recordingPublisher keeps what it is given, in order.
type recordingPublisher struct {
	mu   sync.Mutex
	msgs []*message.Message
}

func (p *recordingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

func (p *recordingPublisher) byKey() map[string][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string][]string)
	for _, msg := range p.msgs {
		key := msg.Metadata.Get(omnibox.MetadataKey)
		m[key] = append(m[key], msg.UUID)
	}
	return m
}

// Two relays run on the database file while writers commit events in
// transactions that also write a business row: SQLite's single write lock
// makes them all take turns, and every event is relayed once, each key in
// the order its events were written.
func TestRelaysWithConcurrentWriters(t *testing.T) {
	t.Parallel()
	db, _ := dbtest.SQLite(t)
	// One process writing from several goroutines, as sqlite.Open advises:
	// one connection, so that database/sql queues the writers and the
	// relays instead of SQLite's unfair busy handler, which under load let a
	// writer lose the lock for longer than the busy timeout (SQLITE_BUSY).
	db.SetMaxOpenConns(1)
	ctx := t.Context()
	store, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx, db))
	_, err = db.ExecContext(ctx, "CREATE TABLE orders (id TEXT PRIMARY KEY)")
	require.NoError(t, err)
	outbox, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)

	publisher := &recordingPublisher{}
	runCtx, stop := context.WithCancel(ctx)
	var relays sync.WaitGroup
	for i := range 2 {
		relay, err := omnibox.NewRelay(db, store, publisher, &omnibox.RelayConfig{
			BatchSize:    20,
			ID:           fmt.Sprintf("relay-%d", i),
			PollInterval: 5 * time.Millisecond,
		})
		require.NoError(t, err)
		relays.Go(func() { require.NoError(t, relay.Run(runCtx)) })
	}

	const writers, perWriter = 4, 50
	want := make(map[string][]string)
	var writing sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		key := fmt.Sprintf("writer-%d", w)
		ids := make([]string, perWriter)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-%d", key, i)
		}
		want[key] = ids
		writing.Go(func() {
			for _, id := range ids {
				err := outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id) VALUES (?)", id); err != nil {
						return err
					}
					return outbox.WriteTx(ctx, tx, omnibox.Event{ID: id, Key: key, Topic: "orders"})
				})
				if err != nil {
					errs <- fmt.Errorf("writing %s: %w", id, err)
					return
				}
			}
		})
	}
	writing.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := store.Pending(ctx, db)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "%d events still pending", n)
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	relays.Wait()
	require.Equal(t, want, publisher.byKey())
}
