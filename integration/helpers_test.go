package integration

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

// received is one message as the Kafka consumer saw it.
type received struct {
	Key       string
	Metadata  map[string]string
	Partition int32
	Payload   []byte
	UUID      string
}

// collector consumes a topic with a watermill-kafka subscriber (a consumer
// group reading from the oldest offset) and keeps every message.
type collector struct {
	mu   sync.Mutex
	msgs []received
}

func startCollector(t *testing.T, brokers []string, topic string) *collector {
	t.Helper()
	cfg := kafka.DefaultSaramaSubscriberConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               brokers,
		ConsumerGroup:         "omnibox-it-" + topic,
		OverwriteSaramaConfig: cfg,
		Unmarshaler:           publisher.KafkaMarshaler{},
	}, watermill.NopLogger{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)
	c := &collector{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range msgs {
			key, _ := kafka.MessageKeyFromCtx(m.Context())
			part, _ := kafka.MessagePartitionFromCtx(m.Context())
			md := maps.Clone(map[string]string(m.Metadata))
			delete(md, omnibox.MetadataKey)
			c.mu.Lock()
			c.msgs = append(c.msgs, received{Key: string(key), Metadata: md, Partition: part, Payload: m.Payload, UUID: m.UUID})
			c.mu.Unlock()
			m.Ack()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = sub.Close()
		<-done
	})
	return c
}

func (c *collector) snapshot() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.msgs...)
}

func (c *collector) uniqueCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]struct{}, len(c.msgs))
	for _, m := range c.msgs {
		seen[m.UUID] = struct{}{}
	}
	return len(seen)
}

// waitUnique waits until the collector has seen n distinct message IDs.
func (c *collector) waitUnique(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for c.uniqueCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("consumer saw %d distinct messages of %d within %s", c.uniqueCount(), n, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// env is a fresh database with the outbox migrated and an orders table for
// the business rows, and a Kafka cluster with a fresh topic.
type env struct {
	brokers  []string
	childEnv []string // how a child relay process opens the same database
	db       *sql.DB
	dialect  dialect
	orders   string // the orders table's name
	outbox   *omnibox.Outbox
	store    store
	topic    string
}

func setupEnv(t *testing.T, d dialect) *env {
	t.Helper()
	ctx := context.Background()
	db, st, orders, childEnv := d.open(t)
	require.NoError(t, st.Migrate(ctx, db))
	_, err := db.ExecContext(ctx, fmt.Sprintf(d.createOrders, orders))
	require.NoError(t, err)
	ob, err := omnibox.New(st, &omnibox.Config{})
	require.NoError(t, err)
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, brokers, 4)
	return &env{brokers: brokers, childEnv: childEnv, db: db, dialect: d, orders: orders, outbox: ob, store: st, topic: topic}
}

func (e *env) newKafkaPublisher(t *testing.T) *publisher.Kafka {
	t.Helper()
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: e.brokers})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// writeOrder inserts an order row and its events in one transaction, then
// commits it or, when rollback is set, rolls it back.
func (e *env) writeOrder(ctx context.Context, customer string, events []omnibox.Event, rollback bool) error {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(e.dialect.insertOrder, e.orders), customer, len(events)); err != nil {
		return err
	}
	if err := e.outbox.WriteTx(ctx, tx, events...); err != nil {
		return err
	}
	if rollback {
		return tx.Rollback()
	}
	return tx.Commit()
}

func (e *env) pending(t *testing.T) int64 {
	t.Helper()
	n, err := e.store.Pending(context.Background(), e.db)
	require.NoError(t, err)
	return n
}

// checkKeyOrder checks that, for every key, the first deliveries of its
// events come in the order of want (the committed order), and returns how
// many deliveries were duplicates.
func checkKeyOrder(t *testing.T, got []received, want map[string][]string) (duplicates int) {
	t.Helper()
	firsts, _, duplicates := firstDeliveries(got)
	for key, ids := range want {
		require.Equal(t, ids, firsts[key], "events of key %q out of order or missing", key)
	}
	require.Len(t, firsts, len(want), "messages with unexpected keys")
	return duplicates
}

// firstDeliveries returns, for each key, the IDs of got's messages in the
// order of their first delivery, the set of IDs delivered, and how many
// deliveries were duplicates.
func firstDeliveries(got []received) (firsts map[string][]string, seen map[string]bool, duplicates int) {
	firsts, seen = map[string][]string{}, map[string]bool{}
	for _, m := range got {
		if seen[m.UUID] {
			duplicates++
			continue
		}
		seen[m.UUID] = true
		firsts[m.Key] = append(firsts[m.Key], m.UUID)
	}
	return firsts, seen, duplicates
}

var _ message.Publisher = (*publisher.Kafka)(nil)

// runRelay runs relay in a goroutine until the returned stop is called (or
// the test ends), and checks that Run returned nil. stop waits for Run to
// return; calling it again does nothing.
func runRelay(t *testing.T, relay *omnibox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay %s: Run: %v", relay.ID(), err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// testLogger returns a logger writing records of level and above to t.Log,
// for relays whose warnings and errors should show in a failing test's
// output. Stop the relays before the test ends (runRelay does).
func testLogger(t *testing.T, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// hookedPublisher wraps a publisher with a hook called before each Publish
// call: when the hook returns an error, the call fails with it and none of
// its messages is published.
type hookedPublisher struct {
	message.Publisher
	hook func(topic string, msgs []*message.Message) error
}

func (p *hookedPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.hook(topic, msgs); err != nil {
		return err
	}
	return p.Publisher.Publish(topic, msgs...)
}

// ledger records committed events: the IDs of each key in commit order.
// Each key must be written by one goroutine at a time for its order to be
// defined.
type ledger struct {
	mu    sync.Mutex
	order map[string][]string
	total int
}

func newLedger() *ledger { return &ledger{order: map[string][]string{}} }

func (l *ledger) add(events []omnibox.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range events {
		l.order[ev.Key] = append(l.order[ev.Key], ev.ID)
	}
	l.total += len(events)
}

// count returns the number of events recorded.
func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// snapshot returns a copy of the IDs per key.
func (l *ledger) snapshot() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.order))
	for k, ids := range l.order {
		out[k] = append([]string(nil), ids...)
	}
	return out
}

// newEvents returns one event per entry of keys, in order, on topic, each
// with a fresh ID as its payload. Safe to call from any goroutine.
func newEvents(topic string, keys ...string) []omnibox.Event {
	events := make([]omnibox.Event, len(keys))
	for i, key := range keys {
		id, err := omnibox.NewEventID()
		if err != nil {
			panic(err) // crypto/rand failed, which it does not
		}
		events[i] = omnibox.Event{ID: id, Topic: topic, Key: key, Payload: []byte(id)}
	}
	return events
}

// commit writes events in one order transaction and records them in l.
func (e *env) commit(ctx context.Context, l *ledger, events []omnibox.Event) error {
	if err := e.writeOrder(ctx, events[0].Key, events, false); err != nil {
		return err
	}
	l.add(events)
	return nil
}

// repeat returns n copies of key.
func repeat(key string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = key
	}
	return out
}

// consumed returns the set of distinct message IDs the collector has seen.
func (c *collector) consumed() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool, len(c.msgs))
	for _, m := range c.msgs {
		seen[m.UUID] = true
	}
	return seen
}
