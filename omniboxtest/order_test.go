package omniboxtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/omniboxtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// TestGoChannel_KeepsKeyOrderThroughRelay writes 10,000 events over 100 keys
// through an outbox on PostgreSQL, from several writers at once, while a
// relay of the default configuration (two batches in flight) publishes them
// to the kit's GoChannel. The subscriber joins while the writers are busy,
// so events may reach it both from what the GoChannel kept before it joined
// and directly. Every event must arrive, and each key's first deliveries in
// the order the key's events were written.
func TestGoChannel_KeepsKeyOrderThroughRelay(t *testing.T) {
	t.Parallel()
	const (
		writers     = 4
		keysPer     = 25 // keys of each writer
		perKey      = 100
		total       = writers * keysPer * perKey
		eventsPerTx = 50
		subscribeAt = total / 4 // events committed before the subscriber joins
	)
	db, _ := omniboxtest.Postgres(t)
	store, err := postgres.New(&postgres.Config{})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(t.Context(), db))
	outbox, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)
	pubSub := newGoChannel(t)

	relay, err := omnibox.NewRelay(db, store, pubSub, &omnibox.RelayConfig{})
	require.NoError(t, err)
	outbox.WakeOnCommit(relay)
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	t.Cleanup(func() { // before the GoChannel closes
		stopRelay()
		require.NoError(t, <-relayDone)
	})

	// Each writer owns its keys and writes each key's events in order (the
	// event ID is key:seq), in transactions of eventsPerTx events.
	var committed atomic.Int64
	subscribe := make(chan struct{})
	var subscribeOnce sync.Once
	var writing sync.WaitGroup
	writeErrs := make(chan error, writers)
	for w := range writers {
		writing.Go(func() {
			var batch []omnibox.Event
			for seq := range perKey {
				for k := range keysPer {
					key := fmt.Sprintf("key-%d-%d", w, k)
					batch = append(batch, omnibox.Event{ID: key + ":" + strconv.Itoa(seq), Topic: "orders", Key: key})
					if len(batch) < eventsPerTx {
						continue
					}
					if err := outbox.InTx(context.Background(), db, nil, func(ctx context.Context, tx *sql.Tx) error {
						return outbox.WriteTx(ctx, tx, batch...)
					}); err != nil {
						writeErrs <- err
						return
					}
					if committed.Add(int64(len(batch))) >= subscribeAt {
						subscribeOnce.Do(func() { close(subscribe) })
					}
					batch = batch[:0]
				}
			}
		})
	}

	<-subscribe
	ch, err := pubSub.Subscribe(context.Background(), "orders") // ends when the GoChannel closes
	require.NoError(t, err)

	writing.Wait()
	close(writeErrs)
	for err := range writeErrs {
		require.NoError(t, err)
	}

	// Read until every event arrived; count duplicates (at-least-once
	// allows them), and check the first deliveries of each key are in order.
	seen := make(map[string]bool, total)
	lastSeq := map[string]int{}
	duplicates := 0
	timeout := time.After(3 * time.Minute)
	for len(seen) < total {
		select {
		case msg := <-ch:
			msg.Ack()
			if seen[msg.UUID] {
				duplicates++
				continue
			}
			seen[msg.UUID] = true
			key, seqText, ok := strings.Cut(msg.UUID, ":")
			require.True(t, ok, msg.UUID)
			require.Equal(t, key, msg.Metadata.Get(omnibox.MetadataKey))
			seq, err := strconv.Atoi(seqText)
			require.NoError(t, err)
			if last, ok := lastSeq[key]; ok {
				require.Equal(t, last+1, seq, "key %s: event %d was first delivered after %d", key, seq, last)
			} else {
				require.Zero(t, seq, "key %s: event %d was the key's first delivery", key, seq)
			}
			lastSeq[key] = seq
		case <-timeout:
			t.Fatalf("only %d of %d events arrived", len(seen), total)
		}
	}
	require.Len(t, lastSeq, writers*keysPer)
	t.Logf("%d events delivered in order per key; %d duplicates; relay stats %+v", total, duplicates, relay.Stats())

	// Ack whatever else comes, so that the relay's batch in flight ends
	// when the cleanup stops it.
	go func() {
		for msg := range ch {
			msg.Ack()
		}
	}()
}
