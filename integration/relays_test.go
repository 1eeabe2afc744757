package integration

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// TestRelaysShareKafka runs four relays (distinct IDs, each with its own
// Kafka producer) on one outbox while eight writers commit 20,000 events
// over 200 keys: a Kafka consumer must receive every event exactly once, each
// key in its written order, and every relay must have published a share.
func TestRelaysShareKafka(t *testing.T) {
	t.Parallel()
	forDialects(t, []string{"postgres", "mysql"}, testRelaysShareKafka)
}

func testRelaysShareKafka(t *testing.T, d dialect) {
	const (
		totalEvents = 20_000
		keys        = 200
		writers     = 8
		perTx       = 50
		relays      = 4
	)
	ctx := t.Context()
	e := setupEnv(t, d)
	consumer := startCollector(t, e.brokers, e.topic)

	var running []*omnibox.Relay
	for i := range relays {
		relay, err := omnibox.NewRelay(e.db, e.store, e.newKafkaPublisher(t), &omnibox.RelayConfig{
			ID:           fmt.Sprintf("relay-%d", i+1),
			Logger:       testLogger(t, slog.LevelWarn),
			PollInterval: 10 * time.Millisecond,
		})
		require.NoError(t, err)
		running = append(running, relay)
	}
	var stops []func()
	for _, relay := range running {
		stops = append(stops, runRelay(t, relay))
	}

	// Writer w owns the keys k with k % writers == w and writes them in
	// turn, perTx events of one key per transaction.
	written := newLedger()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var mine []string
			for k := w; k < keys; k += writers {
				mine = append(mine, fmt.Sprintf("key-%03d", k))
			}
			for i := range totalEvents / writers / perTx {
				events := newEvents(e.topic, repeat(mine[i%len(mine)], perTx)...)
				if err := e.commit(ctx, written, events); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	require.Equal(t, totalEvents, written.count())

	consumer.waitUnique(t, totalEvents, 2*time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == 0 }, 30*time.Second, 10*time.Millisecond)
	for _, stop := range stops {
		stop()
	}
	// Give a stray duplicate a moment to show up before counting.
	time.Sleep(200 * time.Millisecond)

	var (
		published int64
		shares    []string
	)
	for _, relay := range running {
		s := relay.Stats()
		published += s.Published
		shares = append(shares, fmt.Sprintf("%s %d (%d batches)", relay.ID(), s.Published, s.Batches))
	}
	t.Logf("%s: %d events over %d keys relayed by %d relays: %v", d.name, totalEvents, keys, relays, shares)
	for _, relay := range running {
		s := relay.Stats()
		require.Zero(t, s.Failures, "relay %s had failures (see its log above)", relay.ID())
		require.Zero(t, s.LostLeases, "relay %s", relay.ID())
		require.Zero(t, s.Dead+s.Retries, "relay %s", relay.ID())
		require.Positive(t, s.Published, "relay %s published nothing: the partitions were not shared", relay.ID())
	}
	dups := checkKeyOrder(t, consumer.snapshot(), written.snapshot())
	require.Zero(t, dups, "no relay crashed, so no event may be published twice")
	require.EqualValues(t, totalEvents, published)
}
