package omnibox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// flakyPublisher fails while failing is set, then publishes to next.
type flakyPublisher struct {
	next    message.Publisher
	failing atomic.Bool
	calls   atomic.Int64
}

func (p *flakyPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.calls.Add(1)
	if p.failing.Load() {
		return errors.New("broker unavailable")
	}
	return p.next.Publish(topic, msgs...)
}

func (p *flakyPublisher) Close() error { return nil }

type relayBundle struct {
	*outboxBundle
	messages <-chan *message.Message
	pubsub   *gochannel.GoChannel
}

func setupRelay(t *testing.T, topic string) *relayBundle {
	t.Helper()
	b := setupOutbox(t, &omnibox.Config{})
	// GoChannel keeps the order of messages only when Publish waits for the
	// subscriber's ack; a goroutine acks and buffers them for the test.
	ps := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	sub, err := ps.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	msgs := make(chan *message.Message, 100_000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range sub {
			m.Ack()
			msgs <- m
		}
	}()
	t.Cleanup(func() {
		_ = ps.Close()
		<-done
	})
	return &relayBundle{outboxBundle: b, messages: msgs, pubsub: ps}
}

func (b *relayBundle) write(t *testing.T, events ...omnibox.Event) {
	t.Helper()
	require.NoError(t, b.outbox.InTx(context.Background(), b.db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return b.outbox.WriteTx(ctx, tx, events...)
	}))
}

func receive(t *testing.T, msgs <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	out := make([]*message.Message, 0, n)
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case m := <-msgs:
			out = append(out, m)
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(out), n)
		}
	}
	return out
}

func TestNewRelayValidates(t *testing.T) {
	t.Parallel()
	b := setupRelay(t, "t")
	_, err := omnibox.NewRelay(nil, b.store, b.pubsub, &omnibox.RelayConfig{})
	require.ErrorIs(t, err, omnibox.ErrNilDB)
	_, err = omnibox.NewRelay(b.db, nil, b.pubsub, &omnibox.RelayConfig{})
	require.ErrorIs(t, err, omnibox.ErrNilStore)
	_, err = omnibox.NewRelay(b.db, b.store, nil, &omnibox.RelayConfig{})
	require.ErrorIs(t, err, omnibox.ErrNilPublisher)
	_, err = omnibox.NewRelay(b.db, b.store, b.pubsub, nil)
	require.ErrorIs(t, err, omnibox.ErrNilConfig)
	for _, c := range []omnibox.RelayConfig{
		{BatchSize: -1}, {Lease: time.Millisecond}, {MinBackoff: time.Minute, MaxBackoff: time.Second}, {PollInterval: -1},
	} {
		_, err = omnibox.NewRelay(b.db, b.store, b.pubsub, &c)
		require.ErrorContains(t, err, "RelayConfig.", "%+v", c)
	}
}

func TestRelayDrainPublishesInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "orders")

	var events []omnibox.Event
	for i := range 250 {
		events = append(events, omnibox.Event{
			Topic:    "orders",
			Key:      fmt.Sprintf("k%d", i%3),
			Payload:  fmt.Appendf(nil, "p%d", i),
			Metadata: map[string]string{"i": fmt.Sprint(i)},
		})
	}
	b.write(t, events[:100]...)
	b.write(t, events[100:]...)

	relay, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{BatchSize: 40})
	require.NoError(t, err)
	n, err := relay.Drain(ctx)
	require.NoError(t, err)
	require.Equal(t, 250, n)
	require.Zero(t, b.pending(t))

	got := receive(t, b.messages, 250)
	for i, m := range got {
		require.Equal(t, fmt.Sprintf("p%d", i), string(m.Payload))
		require.Equal(t, fmt.Sprint(i), m.Metadata.Get("i"))
		require.Equal(t, fmt.Sprintf("k%d", i%3), m.Metadata.Get(omnibox.MetadataKey))
		require.NotEmpty(t, m.UUID)
	}
	stats := relay.Stats()
	require.EqualValues(t, 250, stats.Published)
	require.EqualValues(t, 7, stats.Batches)
}

func TestRelayRetriesUntilPublisherRecovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	pub := &flakyPublisher{next: b.pubsub}
	pub.failing.Store(true)

	b.write(t, omnibox.Event{Topic: "t", Payload: []byte("1")}, omnibox.Event{Topic: "t", Payload: []byte("2")})
	relay, err := omnibox.NewRelay(b.db, b.store, pub, &omnibox.RelayConfig{
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, PollInterval: time.Millisecond,
	})
	require.NoError(t, err)

	// Drain stops at the first error and leaves the events pending.
	_, err = relay.Drain(ctx)
	require.ErrorContains(t, err, "broker unavailable")
	require.EqualValues(t, 2, b.pending(t))

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()
	require.Eventually(t, func() bool { return pub.calls.Load() >= 5 }, 10*time.Second, time.Millisecond)

	// The failures are recorded on the events, which are not lost.
	var attempts int
	var lastErr sql.NullString
	require.NoError(t, b.db.QueryRowContext(ctx, `SELECT attempts, last_error FROM `+b.table+` ORDER BY seq LIMIT 1`).Scan(&attempts, &lastErr))
	require.GreaterOrEqual(t, attempts, 2)
	require.Contains(t, lastErr.String, "broker unavailable")

	pub.failing.Store(false)
	got := receive(t, b.messages, 2)
	require.Equal(t, "1", string(got[0].Payload))
	require.Equal(t, "2", string(got[1].Payload))
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, time.Millisecond)
	require.Positive(t, relay.Stats().Failures)

	cancel()
	require.NoError(t, <-done)
}

func TestRelayRunStopsAndRejectsSecondRun(t *testing.T) {
	t.Parallel()
	b := setupRelay(t, "t")
	relay, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{PollInterval: time.Millisecond})
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- relay.Run(context.Background()) }()

	// Events written while it runs are relayed; Notify wakes it early. That
	// the event arrives also shows Run is running.
	b.write(t, omnibox.Event{Topic: "t", Payload: []byte("live")})
	relay.Notify()
	require.Equal(t, "live", string(receive(t, b.messages, 1)[0].Payload))

	require.ErrorIs(t, relay.Run(context.Background()), omnibox.ErrRelayRunning)
	_, err = relay.Drain(context.Background())
	require.ErrorIs(t, err, omnibox.ErrRelayRunning)

	require.NoError(t, relay.Close())
	require.NoError(t, relay.Close(), "Close is idempotent")
	require.NoError(t, <-done)
}

func TestRelayTakesOverExpiredAndOwnClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	b.write(t, omnibox.Event{Topic: "t", Payload: []byte("stranded")})

	// A relay with ID "dead" claimed the event and died before publishing.
	tx, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	res, err := b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "dead/1"})
	require.NoError(t, err)
	require.Len(t, res.Events, 1)
	require.NoError(t, tx.Commit())

	// Another relay leaves a live lease alone...
	other, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{ID: "other"})
	require.NoError(t, err)
	n, err := other.Drain(ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// ...but the dead relay's restart, with the same stable ID, takes it over.
	restarted, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{ID: "dead"})
	require.NoError(t, err)
	n, err = restarted.Drain(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, "stranded", string(receive(t, b.messages, 1)[0].Payload))
}

func TestRelayConcurrentRelaysPublishEachEventOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	const total = 1000
	for i := 0; i < total; i += 100 {
		batch := make([]omnibox.Event, 100)
		for j := range batch {
			batch[j] = omnibox.Event{Topic: "t", Key: fmt.Sprintf("k%d", (i+j)%7), Payload: fmt.Appendf(nil, "%d", i+j)}
		}
		b.write(t, batch...)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		relay, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{ID: fmt.Sprintf("r%d", i), BatchSize: 50, PollInterval: time.Millisecond})
		require.NoError(t, err)
		wg.Go(func() { _ = relay.Run(runCtx) })
	}
	got := receive(t, b.messages, total)
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, time.Millisecond)
	cancel()
	wg.Wait()

	seen := map[string]bool{}
	last := map[string]int{}
	for _, m := range got {
		require.False(t, seen[m.UUID], "event %s published twice", m.UUID)
		seen[m.UUID] = true
		var i int
		_, err := fmt.Sscan(string(m.Payload), &i)
		require.NoError(t, err)
		k := m.Metadata.Get(omnibox.MetadataKey)
		if prev, ok := last[k]; ok {
			require.Greater(t, i, prev, "key %s out of order", k)
		}
		last[k] = i
	}
	select {
	case m := <-b.messages:
		t.Fatalf("unexpected extra message %s", m.UUID)
	case <-time.After(100 * time.Millisecond):
	}
}
