package integration

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// errPoison is what the test publisher answers for the poison event.
var errPoison = errors.New("poison event rejected by the test publisher")

// TestPoisonEvent relays to Kafka through a publisher that always rejects
// one event, the poison, while other keys keep being written: the poison is
// retried with backoff until it is dead after MaxAttempts, while the other
// keys flow. With DeadBlocksKey the later events of its key are held back
// until it is requeued (the publisher now taking it), after which it and
// they are delivered in order; with DeadSkipsKey they flow past it, and the
// requeued poison comes last.
func TestPoisonEvent(t *testing.T) {
	t.Parallel()
	for _, policy := range []omnibox.DeadPolicy{omnibox.DeadBlocksKey, omnibox.DeadSkipsKey} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			forDialects(t, []string{"postgres", "mysql", "sqlite"}, func(t *testing.T, d dialect) {
				testPoisonEvent(t, d, policy)
			})
		})
	}
}

func testPoisonEvent(t *testing.T, d dialect, policy omnibox.DeadPolicy) {
	const (
		maxAttempts = 4
		otherKeys   = 9
		poisonKey   = "key-poison"
	)
	ctx := t.Context()
	e := setupEnv(t, d)
	consumer := startCollector(t, e.brokers, e.topic)
	written := newLedger()

	// The poison's key: two events before it and two after it in its
	// transaction.
	head := newEvents(e.topic, repeat(poisonKey, 5)...)
	poison := head[2]
	var (
		rejecting atomic.Bool
		rejected  atomic.Int64
	)
	rejecting.Store(true)
	pub := &hookedPublisher{Publisher: e.newKafkaPublisher(t), hook: func(_ string, msgs []*message.Message) error {
		if !rejecting.Load() {
			return nil
		}
		for _, m := range msgs {
			if m.UUID == poison.ID {
				rejected.Add(1)
				return errPoison
			}
		}
		return nil
	}}
	relay, err := omnibox.NewRelay(e.db, e.store, pub, &omnibox.RelayConfig{
		BatchSize:       50,
		BreakerCooldown: 50 * time.Millisecond,
		MaxAttempts:     maxAttempts,
		Logger:          testLogger(t, slog.LevelWarn),
		MaxBackoff:      200 * time.Millisecond,
		MinBackoff:      10 * time.Millisecond,
		OnDead:          policy,
		PollInterval:    10 * time.Millisecond,
		RetryMaxDelay:   50 * time.Millisecond,
		RetryMinDelay:   10 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, e.commit(ctx, written, head))
	stop := runRelay(t, relay)

	// Other keys keep flowing while the poison is retried, and more events
	// of its key are written behind it, until it is dead.
	writeOthers := func(round int) {
		key := fmt.Sprintf("key-%d", round%otherKeys)
		require.NoError(t, e.commit(ctx, written, newEvents(e.topic, repeat(key, 5)...)))
	}
	var dead []omnibox.DeadEvent
	deadline := time.Now().Add(30 * time.Second)
	for round := 0; ; round++ {
		writeOthers(round)
		if round%10 == 0 {
			require.NoError(t, e.commit(ctx, written, newEvents(e.topic, poisonKey)))
		}
		dead, err = e.store.ListDead(ctx, e.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		if len(dead) > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the poison event is not dead after 30s (rejected %d times; relay %+v)", rejected.Load(), relay.Stats())
		time.Sleep(5 * time.Millisecond)
	}
	deadAfter := written.count()
	// More of every key after it died.
	for round := range otherKeys {
		writeOthers(round)
	}
	require.NoError(t, e.commit(ctx, written, newEvents(e.topic, repeat(poisonKey, 3)...)))

	require.Len(t, dead, 1)
	require.Equal(t, poison.ID, dead[0].ID)
	require.Equal(t, poisonKey, dead[0].Key)
	require.Equal(t, e.topic, dead[0].Topic)
	require.Equal(t, poison.Payload, dead[0].Payload)
	require.Equal(t, maxAttempts, dead[0].Attempts)
	require.Contains(t, dead[0].LastError, errPoison.Error())
	require.False(t, dead[0].DiedAt.IsZero())

	// Everything but the poison (and, with DeadBlocksKey, the later events
	// of its key) is delivered; the held-back events stay pending.
	order := written.snapshot()
	i := slices.Index(order[poisonKey], poison.ID)
	behind := order[poisonKey][i+1:]
	held := 0
	if policy == omnibox.DeadBlocksKey {
		held = len(behind)
	}
	consumer.waitUnique(t, written.count()-1-held, time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == int64(held) }, 30*time.Second, 10*time.Millisecond)
	// Give the relay a chance to publish what it must not.
	time.Sleep(300 * time.Millisecond)
	seen := consumer.consumed()
	require.False(t, seen[poison.ID], "the dead event was published")
	for _, id := range behind {
		require.Equal(t, policy == omnibox.DeadSkipsKey, seen[id], "event %s behind the dead one, policy %s", id, policy)
	}
	require.EqualValues(t, held, e.pending(t))
	stats := relay.Stats()
	require.EqualValues(t, 1, stats.Dead)
	require.EqualValues(t, maxAttempts-1, stats.Retries)
	t.Logf("%s, %s: poison dead after %d events were written (%d rejected publishes); %d later events of its key held back",
		d.name, policy, deadAfter, rejected.Load(), held)

	// Requeued, with the publisher now taking it, the poison is delivered:
	// before the later events of its key with DeadBlocksKey, after them with
	// DeadSkipsKey.
	rejecting.Store(false)
	n, err := e.store.Requeue(ctx, e.db, []int64{dead[0].Seq})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	relay.Notify()
	consumer.waitUnique(t, written.count(), time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == 0 }, 30*time.Second, 10*time.Millisecond)
	dead, err = e.store.ListDead(ctx, e.db, omnibox.ListDeadParams{})
	require.NoError(t, err)
	require.Empty(t, dead)
	stop()
	time.Sleep(200 * time.Millisecond)

	if policy == omnibox.DeadSkipsKey {
		ids := slices.Delete(order[poisonKey], i, i+1)
		order[poisonKey] = append(ids, poison.ID)
	}
	dups := checkKeyOrder(t, consumer.snapshot(), order)
	require.Zero(t, dups, "a rejected Publish call publishes nothing, so nothing is published twice")
}

// TestBrokerDown relays to Kafka through a publisher that fails every call
// for 1.5 s in the middle of the run while a writer goes on writing, each
// transaction for three keys: the relay's circuit breaker opens and closes
// again, no event is charged an attempt for the outage (MaxAttempts is
// BreakerThreshold + 1, and no event ends dead), and every event is
// delivered afterwards, each key in order.
func TestBrokerDown(t *testing.T) {
	t.Parallel()
	forDialects(t, []string{"postgres", "mysql", "sqlite"}, testBrokerDown)
}

func testBrokerDown(t *testing.T, d dialect) {
	const (
		keys      = 20
		perTx     = 3
		threshold = 3
	)
	ctx := t.Context()
	e := setupEnv(t, d)
	consumer := startCollector(t, e.brokers, e.topic)

	var (
		down        atomic.Bool
		failedCalls atomic.Int64
	)
	pub := &hookedPublisher{Publisher: e.newKafkaPublisher(t), hook: func(string, []*message.Message) error {
		if down.Load() {
			failedCalls.Add(1)
			return errors.New("broker down (test publisher)")
		}
		return nil
	}}
	relay, err := omnibox.NewRelay(e.db, e.store, pub, &omnibox.RelayConfig{
		BatchSize:        100,
		BreakerCooldown:  100 * time.Millisecond,
		BreakerThreshold: threshold,
		MaxAttempts:      threshold + 1,
		Logger:           testLogger(t, slog.LevelInfo),
		MaxBackoff:       400 * time.Millisecond,
		MinBackoff:       10 * time.Millisecond,
		PollInterval:     10 * time.Millisecond,
		RetryMaxDelay:    50 * time.Millisecond,
		RetryMinDelay:    10 * time.Millisecond,
	})
	require.NoError(t, err)
	stop := runRelay(t, relay)

	// One writer; each transaction writes one event for each of perTx
	// consecutive keys, so that every batch holds several keys.
	written := newLedger()
	stopWriting := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				writerDone <- nil
				return
			default:
			}
			ks := make([]string, perTx)
			for j := range ks {
				ks[j] = fmt.Sprintf("key-%02d", (i*perTx+j)%keys)
			}
			if err := e.commit(ctx, written, newEvents(e.topic, ks...)); err != nil {
				writerDone <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	consumer.waitUnique(t, 300, time.Minute)
	down.Store(true)
	before := written.count()
	time.Sleep(1500 * time.Millisecond)
	during := written.count() - before
	down.Store(false)
	time.Sleep(300 * time.Millisecond)
	close(stopWriting)
	require.NoError(t, <-writerDone)
	require.Positive(t, during, "the writer wrote while the broker was down")

	consumer.waitUnique(t, written.count(), time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == 0 }, 30*time.Second, 10*time.Millisecond)
	dead, err := e.store.ListDead(ctx, e.db, omnibox.ListDeadParams{})
	require.NoError(t, err)
	require.Empty(t, dead, "an event was charged more than BreakerThreshold attempts for the outage")
	stats := relay.Stats()
	require.GreaterOrEqual(t, stats.BreakerOpens, int64(1))
	require.False(t, stats.BreakerOpen, "the breaker is closed again")
	require.Zero(t, stats.Dead)
	stop()
	time.Sleep(200 * time.Millisecond)

	dups := checkKeyOrder(t, consumer.snapshot(), written.snapshot())
	require.Zero(t, dups, "a failed Publish call publishes nothing, so nothing is published twice")
	t.Logf("%s: %d events, %d written during the 1.5 s outage; %d Publish calls failed; breaker opened %d time(s); %d event(s) charged an attempt",
		d.name, written.count(), during, failedCalls.Load(), stats.BreakerOpens, stats.Retries)
}
