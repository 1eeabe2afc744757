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
	"github.com/omnibox-go/omnibox/store/postgres"
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
		{MaxAttempts: -1}, {BreakerThreshold: -1}, {BreakerCooldown: -time.Second}, {RetryMinDelay: -1},
		{RetryMinDelay: time.Hour, RetryMaxDelay: time.Minute}, {OnDead: 7}, {PurgeInterval: -1}, {PurgeBatchSize: -1},
		{Concurrency: -1}, {Concurrency: omnibox.Partitions + 1}, {ID: "pod/7"}, {ID: "pod-\xff"}, {ID: "pod\x00"},
		{DatabaseTimeout: -1}, {PublishTimeout: -1}, {Lease: 6 * time.Second, PublishTimeout: 5 * time.Second},
		{DatabaseTimeout: 10 * time.Second},
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

	// Events of a key arrive in the order written; the keys' partitions
	// interleave.
	got := receive(t, b.messages, 250)
	next := map[string]int{}
	for _, m := range got {
		var i int
		_, err := fmt.Sscanf(string(m.Payload), "p%d", &i)
		require.NoError(t, err)
		k := m.Metadata.Get(omnibox.MetadataKey)
		require.Equal(t, fmt.Sprintf("k%d", i%3), k)
		require.Equal(t, fmt.Sprint(i), m.Metadata.Get("i"))
		require.NotEmpty(t, m.UUID)
		if prev, ok := next[k]; ok {
			require.Greater(t, i, prev, "key %s out of order", k)
		}
		next[k] = i
	}
	stats := relay.Stats()
	require.EqualValues(t, 250, stats.Published)
	require.GreaterOrEqual(t, stats.Batches, int64(7), "batches of at most 40")
}

func TestRelayPausesWhileBrokerIsDownWithoutBurningAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	pub := &flakyPublisher{next: b.pubsub}
	pub.failing.Store(true)

	b.write(t, omnibox.Event{Topic: "t", Key: "a", Payload: []byte("1")}, omnibox.Event{Topic: "t", Key: "b", Payload: []byte("2")})
	relay, err := omnibox.NewRelay(b.db, b.store, pub, &omnibox.RelayConfig{
		MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, BreakerCooldown: time.Millisecond,
		PollInterval: time.Millisecond, MaxAttempts: 2,
	})
	require.NoError(t, err)

	// Drain stops at the first error and leaves the events pending.
	_, err = relay.Drain(ctx)
	require.ErrorContains(t, err, "broker unavailable")
	require.EqualValues(t, 2, b.pending(t))

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()
	require.Eventually(t, func() bool { return relay.Stats().BreakerOpen && pub.calls.Load() >= 20 }, 10*time.Second, time.Millisecond)

	// Far more failures than MaxAttempts, yet the events were charged
	// nothing: both keys failed, so the broker is to blame. The error is
	// recorded.
	rows, err := b.db.QueryContext(ctx, `SELECT attempts, state, COALESCE(last_error, '') FROM `+b.table)
	require.NoError(t, err)
	n := 0
	for rows.Next() {
		var (
			attempts, state int
			lastErr         string
		)
		require.NoError(t, rows.Scan(&attempts, &state, &lastErr))
		require.Zero(t, attempts)
		require.Zero(t, state, "pending")
		require.Contains(t, lastErr, "broker unavailable")
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 2, n)

	pub.failing.Store(false)
	got := receive(t, b.messages, 2)
	require.ElementsMatch(t, []string{"1", "2"}, []string{string(got[0].Payload), string(got[1].Payload)})
	require.Eventually(t, func() bool { return b.pending(t) == 0 && !relay.Stats().BreakerOpen }, 10*time.Second, time.Millisecond)
	stats := relay.Stats()
	require.Positive(t, stats.Failures)
	require.Positive(t, stats.BreakerOpens)
	require.Zero(t, stats.Dead)

	cancel()
	require.NoError(t, <-done)
}

// rejectingPublisher fails the events whose payload is in reject.
type rejectingPublisher struct {
	next   message.Publisher
	mu     sync.Mutex
	reject map[string]bool
}

func (p *rejectingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		if p.reject[string(m.Payload)] {
			return fmt.Errorf("message %s rejected", m.Payload)
		}
	}
	return p.next.Publish(topic, msgs...)
}

func (p *rejectingPublisher) Close() error { return nil }

func TestRelayPoisonEventDiesWhileOtherKeysFlow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, policy := range []omnibox.DeadPolicy{omnibox.DeadBlocksKey, omnibox.DeadSkipsKey} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			b := setupRelay(t, "t")
			pub := &rejectingPublisher{next: b.pubsub, reject: map[string]bool{"bad-1": true}}
			relay, err := omnibox.NewRelay(b.db, b.store, pub, &omnibox.RelayConfig{
				MaxAttempts: 3, RetryMinDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
				PollInterval: time.Millisecond, OnDead: policy,
			})
			require.NoError(t, err)
			var events []omnibox.Event
			for i := range 5 {
				events = append(events, omnibox.Event{Topic: "t", Key: "bad", Payload: fmt.Appendf(nil, "bad-%d", i)})
				for k := range 4 {
					events = append(events, omnibox.Event{Topic: "t", Key: fmt.Sprintf("good%d", k), Payload: fmt.Appendf(nil, "good%d-%d", k, i)})
				}
			}
			b.write(t, events...)

			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(runCtx) }()
			defer func() {
				cancel()
				require.NoError(t, <-done)
			}()

			// bad-0 passes; bad-1 dies after 3 attempts.
			var dead []omnibox.DeadEvent
			require.Eventually(t, func() bool {
				dead, err = b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
				require.NoError(t, err)
				return len(dead) == 1
			}, 10*time.Second, time.Millisecond)
			require.Equal(t, "bad-1", string(dead[0].Payload))
			require.Equal(t, "bad", dead[0].Key)
			require.Equal(t, 3, dead[0].Attempts)
			require.Contains(t, dead[0].LastError, "message bad-1 rejected")

			want := 21 // the good keys' 20 and bad-0
			if policy == omnibox.DeadSkipsKey {
				want += 3 // bad-2..4
			}
			got := receive(t, b.messages, want)
			byKey := map[string][]string{}
			for _, m := range got {
				k := m.Metadata.Get(omnibox.MetadataKey)
				byKey[k] = append(byKey[k], string(m.Payload))
			}
			for k := range 4 {
				key := fmt.Sprintf("good%d", k)
				require.Equal(t, []string{key + "-0", key + "-1", key + "-2", key + "-3", key + "-4"}, byKey[key])
			}
			if policy == omnibox.DeadBlocksKey {
				require.Equal(t, []string{"bad-0"}, byKey["bad"])
				require.Eventually(t, func() bool { return b.pending(t) == 3 }, 10*time.Second, time.Millisecond, "bad-2..4 wait behind the dead event")
			} else {
				require.Equal(t, []string{"bad-0", "bad-2", "bad-3", "bad-4"}, byKey["bad"])
				require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, time.Millisecond)
			}
			require.EqualValues(t, 1, relay.Stats().Dead)
			require.Zero(t, relay.Stats().BreakerOpens, "a poison event is not a broker outage")

			// Fixed: requeue it. It is published, and (blocking policy) its
			// key's later events after it.
			pub.mu.Lock()
			pub.reject = nil
			pub.mu.Unlock()
			n, err := b.store.Requeue(ctx, b.db, []int64{dead[0].Seq})
			require.NoError(t, err)
			require.Equal(t, 1, n)
			relay.Notify()
			if policy == omnibox.DeadBlocksKey {
				var rest []string
				for _, m := range receive(t, b.messages, 4) {
					rest = append(rest, string(m.Payload))
				}
				require.Equal(t, []string{"bad-1", "bad-2", "bad-3", "bad-4"}, rest)
			} else {
				require.Equal(t, "bad-1", string(receive(t, b.messages, 1)[0].Payload))
			}
			require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, time.Millisecond)
		})
	}
}

func TestRelayWakesOnCommit(t *testing.T) {
	t.Parallel()
	b := setupRelay(t, "t")
	// Polling once an hour: only the wake-up can deliver within the test.
	relay, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{PollInterval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, b.outbox.WakeOnCommit(relay))
	done := make(chan error, 1)
	go func() { done <- relay.Run(context.Background()) }()
	defer func() {
		require.NoError(t, relay.Close())
		require.NoError(t, <-done)
	}()
	// Let the relay reach its idle wait (its first claim finds nothing).
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)

	b.write(t, omnibox.Event{Topic: "t", Payload: []byte("in InTx")})
	require.Equal(t, "in InTx", string(receive(t, b.messages, 1)[0].Payload))

	// A transaction managed by the caller: Committed wakes the relay.
	tx, err := b.db.Begin()
	require.NoError(t, err)
	require.NoError(t, b.outbox.WriteTx(context.Background(), tx, omnibox.Event{Topic: "t", Payload: []byte("own tx")}))
	require.NoError(t, tx.Commit())
	b.outbox.Committed()
	require.Equal(t, "own tx", string(receive(t, b.messages, 1)[0].Payload))
}

func TestRelayPurgesDeliveredEventsAfterRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	store, err := postgres.New(&postgres.Config{Schema: b.schema, Table: "kept", Retention: 200 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx, b.db))
	ob, err := omnibox.New(store, &omnibox.Config{})
	require.NoError(t, err)
	events := make([]omnibox.Event, 30)
	for i := range events {
		events[i] = omnibox.Event{Topic: "t", Key: fmt.Sprint(i % 5), Payload: fmt.Appendf(nil, "%d", i)}
	}
	require.NoError(t, ob.InTx(ctx, b.db, nil, func(ctx context.Context, tx *sql.Tx) error { return ob.WriteTx(ctx, tx, events...) }))

	relay, err := omnibox.NewRelay(b.db, store, b.pubsub, &omnibox.RelayConfig{PollInterval: time.Millisecond, PurgeInterval: 10 * time.Millisecond, PurgeBatchSize: 7})
	require.NoError(t, err)
	count := func() (n int) {
		require.NoError(t, b.db.QueryRowContext(ctx, `SELECT count(*) FROM `+b.schema+`.kept`).Scan(&n))
		return n
	}
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	receive(t, b.messages, 30)
	// Delivered, kept for the retention period, then purged in batches of 7.
	require.Eventually(t, func() bool { return relay.Stats().Published == 30 }, 10*time.Second, time.Millisecond)
	pending, err := store.Pending(ctx, b.db)
	require.NoError(t, err)
	require.Zero(t, pending)
	require.Eventually(t, func() bool { return count() == 0 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return relay.Stats().Purged == 30 }, 10*time.Second, time.Millisecond)
	require.NoError(t, relay.Close())
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

	// So does Run, whose first batch takes over the claims of every lane of
	// its predecessor.
	b.write(t, omnibox.Event{Topic: "t", Key: "k", Payload: []byte("stranded again")})
	tx, err = b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	res, err = b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Hour, Limit: 10, Owner: "dead/1/7"})
	require.NoError(t, err)
	require.Len(t, res.Events, 1)
	require.NoError(t, tx.Commit())
	again, err := omnibox.NewRelay(b.db, b.store, b.pubsub, &omnibox.RelayConfig{ID: "dead", Concurrency: 2, PollInterval: time.Hour})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- again.Run(runCtx) }()
	require.Equal(t, "stranded again", string(receive(t, b.messages, 1)[0].Payload))
	cancel()
	require.NoError(t, <-done)
}

// requireOnceInKeyOrder checks that no message was published twice and that
// the messages of each key came in the order of their payloads (numbers in
// write order).
func requireOnceInKeyOrder(t *testing.T, got []*message.Message) {
	t.Helper()
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
}

// overlapPublisher records how many Publish calls are in flight at once.
// Each call waits (up to hold) for another one to be in flight, so that
// batches of concurrent lanes meet.
type overlapPublisher struct {
	next      message.Publisher
	hold      time.Duration
	mu        sync.Mutex
	cond      *sync.Cond
	inFlight  int
	maxFlight int
}

func (p *overlapPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	p.inFlight++
	p.maxFlight = max(p.maxFlight, p.inFlight)
	p.cond.Broadcast()
	deadline := time.Now().Add(p.hold)
	stop := time.AfterFunc(p.hold, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.cond.Broadcast()
	})
	for p.inFlight < 2 && time.Now().Before(deadline) {
		p.cond.Wait()
	}
	stop.Stop()
	p.mu.Unlock()
	err := p.next.Publish(topic, msgs...)
	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
	return err
}

func (p *overlapPublisher) Close() error { return nil }

// limitedStore is a store that asks for one batch in flight at a time.
type limitedStore struct{ *postgres.Store }

func (limitedStore) RelayConcurrencyLimit() int { return 1 }

func TestRelayConcurrencyKeepsKeyOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		concurrency int
		limited     bool
		want        int // most Publish calls in flight at once
	}{
		{"Concurrency 3", 3, false, 3},
		{"Concurrency 1", 1, false, 1},
		{"store limits to 1", 4, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := setupRelay(t, "t")
			// 200 keys fill every partition, so that each lane leases its
			// own.
			const total = 1200
			events := make([]omnibox.Event, total)
			for i := range events {
				events[i] = omnibox.Event{Topic: "t", Key: fmt.Sprintf("k%d", i%200), Payload: fmt.Appendf(nil, "%d", i)}
			}
			b.write(t, events...)
			pub := &overlapPublisher{next: b.pubsub, hold: 100 * time.Millisecond}
			pub.cond = sync.NewCond(&pub.mu)
			var store omnibox.RelayStore = b.store
			if tc.limited {
				store = limitedStore{b.store}
			}
			relay, err := omnibox.NewRelay(b.db, store, pub, &omnibox.RelayConfig{BatchSize: 100, Concurrency: tc.concurrency, PollInterval: 5 * time.Millisecond})
			require.NoError(t, err)
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(runCtx) }()
			got := receive(t, b.messages, total)
			require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, time.Millisecond)
			cancel()
			require.NoError(t, <-done)

			requireOnceInKeyOrder(t, got)
			pub.mu.Lock()
			defer pub.mu.Unlock()
			if tc.want == 1 {
				require.Equal(t, 1, pub.maxFlight, "batches overlapped")
			} else {
				require.GreaterOrEqual(t, pub.maxFlight, 2, "no two batches were ever in flight at once")
				require.LessOrEqual(t, pub.maxFlight, tc.want, "more batches in flight than Concurrency")
			}
			require.EqualValues(t, total, relay.Stats().Published)
		})
	}
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

	requireOnceInKeyOrder(t, got)
	select {
	case m := <-b.messages:
		t.Fatalf("unexpected extra message %s", m.UUID)
	case <-time.After(100 * time.Millisecond):
	}
}
