package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// TestConcurrentWritersToKafka writes 10,000 events over 50 keys from 8
// goroutines, rolling back about 10 % of the transactions, while a relay
// publishes them to Kafka; a Kafka consumer must receive exactly the
// committed events, intact, each key in its written order.
func TestConcurrentWritersToKafka(t *testing.T) {
	t.Parallel()
	forEachDialect(t, testConcurrentWritersToKafka)
}

func testConcurrentWritersToKafka(t *testing.T, d dialect) {
	const (
		totalEvents = 10_000
		keys        = 50
		writers     = 8
	)
	ctx := t.Context()
	e := setupEnv(t, d)
	consumer := startCollector(t, e.brokers, e.topic)

	relay, err := omnibox.NewRelay(e.db, e.store, e.newKafkaPublisher(t), &omnibox.RelayConfig{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()

	// Each writer owns the keys k with k % writers == w and writes their
	// events one transaction after another, so each key's order is defined.
	var (
		mu         sync.Mutex
		committed  = map[string]omnibox.Event{}
		order      = map[string][]string{}
		rolledBack = map[string]bool{}
		wg         sync.WaitGroup
	)
	perWriter := totalEvents / writers
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			var mine []string
			for k := w; k < keys; k += writers {
				mine = append(mine, fmt.Sprintf("customer-%02d", k))
			}
			seq := map[string]int{}
			for written := 0; written < perWriter; {
				key := mine[rng.IntN(len(mine))]
				n := min(1+rng.IntN(3), perWriter-written)
				events := make([]omnibox.Event, n)
				for i := range events {
					seq[key]++
					payload, _ := json.Marshal(map[string]any{"customer": key, "n": seq[key], "writer": w})
					id, _ := omnibox.NewEventID()
					events[i] = omnibox.Event{
						ID:       id,
						Topic:    e.topic,
						Key:      key,
						Payload:  payload,
						Metadata: map[string]string{"writer": fmt.Sprint(w), "n": fmt.Sprint(seq[key]), "note": "ünïcødé ✓"},
					}
				}
				rollback := rng.IntN(10) == 0
				if err := e.writeOrder(ctx, key, events, rollback); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				written += n
				mu.Lock()
				for _, ev := range events {
					if rollback {
						rolledBack[ev.ID] = true
					} else {
						committed[ev.ID] = ev
						order[key] = append(order[key], ev.ID)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	require.Equal(t, totalEvents, len(committed)+len(rolledBack))
	t.Logf("%d events committed, %d rolled back", len(committed), len(rolledBack))
	require.NotEmpty(t, rolledBack)

	consumer.waitUnique(t, len(committed), 2*time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == 0 }, 30*time.Second, 10*time.Millisecond)
	stopRelay()
	require.NoError(t, <-relayDone)
	// Give a stray duplicate a moment to show up before counting.
	time.Sleep(200 * time.Millisecond)

	got := consumer.snapshot()
	partitionOfKey := map[string]int32{}
	for _, m := range got {
		require.False(t, rolledBack[m.UUID], "event %s of a rolled-back transaction was published", m.UUID)
		want, ok := committed[m.UUID]
		require.True(t, ok, "unknown event %s", m.UUID)
		require.Equal(t, want.Key, m.Key)
		require.Equal(t, want.Payload, m.Payload)
		require.Equal(t, want.Metadata, m.Metadata)
		if p, ok := partitionOfKey[m.Key]; ok {
			require.Equal(t, p, m.Partition, "key %s spread over partitions", m.Key)
		}
		partitionOfKey[m.Key] = m.Partition
	}
	dups := checkKeyOrder(t, got, order)
	require.Zero(t, dups, "no relay crashed, so no event may be published twice")
	require.EqualValues(t, len(committed), relay.Stats().Published)
}
