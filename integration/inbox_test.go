package integration

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
	"github.com/omnibox-go/omnibox/store/mysql"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// inboxDialect runs the inbox's end-to-end tests on one database.
type inboxDialect struct {
	name string
	// open gives the test a fresh database with the inbox and the outbox
	// migrated, and an applied table (message_id, router): the handlers'
	// side effect, without a unique key so that a double application shows.
	open func(t *testing.T) *inboxEnv
	// insertApplied inserts (message_id, router) into the applied table %s.
	insertApplied string
}

var inboxDialects = []inboxDialect{
	{
		name: "postgres",
		open: func(t *testing.T) *inboxEnv {
			db, schema := dbtest.Postgres(t, "postgres")
			in, err := postgres.NewInbox(&postgres.InboxConfig{Schema: schema})
			require.NoError(t, err)
			ob, err := postgres.New(&postgres.Config{Schema: schema})
			require.NoError(t, err)
			return newInboxEnv(t, db, in, ob, schema+".applied")
		},
		insertApplied: `INSERT INTO %s (message_id, router) VALUES ($1, $2)`,
	},
	{
		name: "mysql",
		open: func(t *testing.T) *inboxEnv {
			db, _ := dbtest.MySQL(t)
			in, err := mysql.NewInbox(&mysql.InboxConfig{})
			require.NoError(t, err)
			ob, err := mysql.New(&mysql.Config{})
			require.NoError(t, err)
			return newInboxEnv(t, db, in, ob, "applied")
		},
		insertApplied: `INSERT INTO %s (message_id, router) VALUES (?, ?)`,
	},
}

// inboxEnv is a database with an inbox, an outbox and an applied table, and
// a Kafka cluster.
type inboxEnv struct {
	applied     string
	brokers     []string
	db          *sql.DB
	inbox       *inbox.Inbox
	outbox      *omnibox.Outbox
	outboxStore store
}

func newInboxEnv(t *testing.T, db *sql.DB, in interface {
	inbox.Store
	Migrate(context.Context, *sql.DB) error
}, ob store, applied string) *inboxEnv {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, in.Migrate(ctx, db))
	require.NoError(t, ob.Migrate(ctx, db))
	_, err := db.ExecContext(ctx, `CREATE TABLE `+applied+` (message_id VARCHAR(128) NOT NULL, router VARCHAR(64) NOT NULL)`)
	require.NoError(t, err)
	i, err := inbox.New(in, &inbox.Config{})
	require.NoError(t, err)
	o, err := omnibox.New(ob, &omnibox.Config{})
	require.NoError(t, err)
	return &inboxEnv{applied: applied, brokers: kafkatest.Brokers(t), db: db, inbox: i, outbox: o, outboxStore: ob}
}

// appliedCounts returns how many times each message was applied.
func (e *inboxEnv) appliedCounts(t *testing.T) map[string]int {
	t.Helper()
	rows, err := e.db.Query(`SELECT message_id, COUNT(*) FROM ` + e.applied + ` GROUP BY message_id`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		require.NoError(t, rows.Scan(&id, &n))
		out[id] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// inboxRouter is a Watermill router consuming one Kafka topic with its own
// consumer group, its handler wrapped by the inbox middleware (after a
// PoisonQueue and a Retry, in the order docs/inbox.md gives).
type inboxRouter struct {
	done   chan error
	mw     *inbox.Middleware
	poison *inboxPoison
	router *message.Router
	seen   *inboxSeen
}

// startInboxRouter starts a router named name whose handler "apply" (so the
// inbox consumer is "apply" for every router) consumes topic in the consumer
// group group. outbox, when not nil, turns on consume → produce to outTopic.
func startInboxRouter(t *testing.T, e *inboxEnv, name, topic, group string, outbox *omnibox.Outbox, outTopic string, handler message.HandlerFunc) *inboxRouter {
	t.Helper()
	cfg := kafka.DefaultSaramaSubscriberConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               e.brokers,
		ConsumerGroup:         group,
		NackResendSleep:       10 * time.Millisecond,
		OverwriteSaramaConfig: cfg,
		Unmarshaler:           publisher.KafkaMarshaler{},
	}, watermill.NopLogger{})
	require.NoError(t, err)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)

	r := &inboxRouter{done: make(chan error, 1), poison: &inboxPoison{}, router: router, seen: &inboxSeen{ids: map[string]bool{}}}
	r.mw, err = inbox.NewMiddleware(&inbox.MiddlewareConfig{
		DB:     e.db,
		Hooks:  []inbox.Hook{r.seen},
		Inbox:  e.inbox,
		Outbox: outbox,
	})
	require.NoError(t, err)
	pq, err := middleware.PoisonQueue(r.poison, "poison")
	require.NoError(t, err)
	retry := middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond, Multiplier: 1}
	router.AddMiddleware(pq, retry.Middleware, r.mw.Middleware)
	router.AddHandler("apply", topic, sub, outTopic, inboxNeverPublisher{t: t}, handler)

	go func() { r.done <- router.Run(context.Background()) }()
	t.Cleanup(func() { r.close(t) })
	select {
	case <-router.Running():
	case err := <-r.done:
		t.Fatalf("router %s stopped: %v", name, err)
	}
	return r
}

// close stops the router (and its subscriber) and waits until it stopped.
func (r *inboxRouter) close(t *testing.T) {
	t.Helper()
	if r.router.IsClosed() {
		return
	}
	require.NoError(t, r.router.Close())
	require.NoError(t, <-r.done)
}

// inboxSeen records the messages a router finished with, applied or
// skipped as duplicates.
type inboxSeen struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (s *inboxSeen) OnProcessed(_ context.Context, _, id string) { s.add(id) }
func (s *inboxSeen) OnDuplicate(_ context.Context, _, id string) { s.add(id) }

func (s *inboxSeen) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id] = true
}

func (s *inboxSeen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// waitSeen waits until every router has finished with n distinct messages.
func waitSeen(t *testing.T, n int, routers ...*inboxRouter) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for _, r := range routers {
		for r.seen.count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("a router finished %d of %d messages in time (stats %+v)", r.seen.count(), n, r.mw.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// inboxPoison is the poison queue's publisher: it keeps the UUIDs.
type inboxPoison struct {
	mu    sync.Mutex
	uuids []string
}

func (p *inboxPoison) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.uuids = append(p.uuids, m.UUID)
	}
	return nil
}

func (p *inboxPoison) Close() error { return nil }

func (p *inboxPoison) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.uuids...)
}

// inboxNeverPublisher is the routers' publisher: with the inbox middleware
// in front, the router never publishes (without an outbox the handlers
// return nothing; with one, the messages go to the outbox).
type inboxNeverPublisher struct{ t *testing.T }

func (p inboxNeverPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.t.Errorf("router published %d message(s) to %q directly", len(msgs), topic)
	return fmt.Errorf("inboxNeverPublisher")
}

func (p inboxNeverPublisher) Close() error { return nil }

// TestInboxExactlyOnceFromKafka delivers every message of a Kafka topic
// three times, twice concurrently (two routers in separate goroutines, each
// its own consumer group) and once more afterwards (a third group), all
// through the same inbox consumer; the handler's side effect must show each
// message applied exactly once.
func TestInboxExactlyOnceFromKafka(t *testing.T) {
	t.Parallel()
	for _, d := range inboxDialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			testInboxExactlyOnce(t, d)
		})
	}
}

func testInboxExactlyOnce(t *testing.T, d inboxDialect) {
	const messages = 300
	e := d.open(t)
	topic := kafkatest.NewTopic(t, e.brokers, 4)

	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: e.brokers})
	require.NoError(t, err)
	defer func() { require.NoError(t, pub.Close()) }()
	var msgs []*message.Message
	for i := range messages {
		m := message.NewMessage(fmt.Sprintf("msg-%03d", i), []byte(fmt.Sprintf("payload %d", i)))
		m.Metadata.Set(omnibox.MetadataKey, fmt.Sprintf("key-%d", i%16)) // spread over the partitions
		msgs = append(msgs, m)
	}
	require.NoError(t, pub.Publish(topic, msgs...))

	apply := func(router string) message.HandlerFunc {
		insert := fmt.Sprintf(d.insertApplied, e.applied)
		return func(msg *message.Message) ([]*message.Message, error) {
			tx, err := inbox.TxFromMessage(msg)
			if err != nil {
				return nil, err
			}
			_, err = tx.ExecContext(msg.Context(), insert, msg.UUID, router)
			return nil, err
		}
	}

	// Two concurrent deliveries of every message: each router runs in a
	// goroutine of its own, in a consumer group of its own, and both are
	// started before either has joined its group.
	groupPrefix := "inbox-it-" + topic
	first := startInboxRouter(t, e, "first", topic, groupPrefix+"-1", nil, "", apply("first"))
	second := startInboxRouter(t, e, "second", topic, groupPrefix+"-2", nil, "", apply("second"))
	waitSeen(t, messages, first, second)
	first.close(t)
	second.close(t)

	// A third delivery, afterwards: nothing is new.
	third := startInboxRouter(t, e, "third", topic, groupPrefix+"-3", nil, "", apply("third"))
	waitSeen(t, messages, third)
	third.close(t)

	applied := e.appliedCounts(t)
	require.Len(t, applied, messages)
	for id, n := range applied {
		require.Equal(t, 1, n, "message %s applied %d times", id, n)
	}
	s1, s2, s3 := first.mw.Stats(), second.mw.Stats(), third.mw.Stats()
	require.Equal(t, int64(messages), s1.Processed+s2.Processed, "each message processed by one of the concurrent routers")
	require.Zero(t, s3.Processed)
	require.Equal(t, int64(messages), s3.Duplicates)
	for _, r := range []*inboxRouter{first, second, third} {
		require.Empty(t, r.poison.get())
	}
	t.Logf("%s: first router %+v, second %+v, third %+v", d.name, s1, s2, s3)
}

// TestInboxConsumeProduceKafka consumes from Kafka, writes a row and emits
// an event per message in one transaction (the inbox middleware with an
// outbox), and relays the events to Kafka. A message whose handler fails
// leaves neither its row nor its event; the others have both, and their
// events reach a Kafka consumer.
func TestInboxConsumeProduceKafka(t *testing.T) {
	t.Parallel()
	for _, d := range inboxDialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			testInboxConsumeProduce(t, d)
		})
	}
}

func testInboxConsumeProduce(t *testing.T, d inboxDialect) {
	const succeeding = 50
	ctx := context.Background()
	e := d.open(t)
	in := kafkatest.NewTopic(t, e.brokers, 4)
	out := kafkatest.NewTopic(t, e.brokers, 4)
	consumer := startCollector(t, e.brokers, out)

	// The relay publishes the outbox to Kafka.
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: e.brokers})
	require.NoError(t, err)
	defer func() { require.NoError(t, pub.Close()) }()
	relay, err := omnibox.NewRelay(e.db, e.outboxStore, pub, &omnibox.RelayConfig{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	defer func() {
		stopRelay()
		require.NoError(t, <-relayDone)
	}()

	// The input: a failing message first, then the others, all with one
	// key, so one partition, handled in this order. Had the failing
	// message's event been written, it would be relayed before the others.
	var msgs []*message.Message
	failing := message.NewMessage("msg-fail", []byte("fail"))
	msgs = append(msgs, failing)
	for i := range succeeding {
		msgs = append(msgs, message.NewMessage(fmt.Sprintf("msg-%03d", i), []byte(fmt.Sprintf("order %d", i))))
	}
	for _, m := range msgs {
		m.Metadata.Set(omnibox.MetadataKey, "customer-1")
	}
	require.NoError(t, pub.Publish(in, msgs...))

	insert := fmt.Sprintf(d.insertApplied, e.applied)
	router := startInboxRouter(t, e, "orders", in, "inbox-it-"+in, e.outbox, out, func(msg *message.Message) ([]*message.Message, error) {
		tx, err := inbox.TxFromMessage(msg)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(msg.Context(), insert, msg.UUID, "orders"); err != nil {
			return nil, err
		}
		event := message.NewMessage("event-of-"+msg.UUID, []byte("placed: "+string(msg.Payload)))
		event.Metadata.Set(omnibox.MetadataKey, "customer-1")
		if string(msg.Payload) == "fail" {
			return []*message.Message{event}, fmt.Errorf("handler failed on %s", msg.UUID)
		}
		return []*message.Message{event}, nil
	})

	consumer.waitUnique(t, succeeding, 2*time.Minute)
	waitSeen(t, succeeding, router)
	router.close(t)

	// The failing message went to the poison queue after its retries, with
	// no inbox record, no row and no event.
	require.Equal(t, []string{"msg-fail"}, router.poison.get())
	done, err := e.inbox.AlreadyProcessed(ctx, e.db, "apply", "msg-fail")
	require.NoError(t, err)
	require.False(t, done)
	applied := e.appliedCounts(t)
	require.Len(t, applied, succeeding)
	require.NotContains(t, applied, "msg-fail")
	for id, n := range applied {
		require.Equal(t, 1, n, "message %s applied %d times", id, n)
	}
	n, err := e.outboxStore.Pending(ctx, e.db)
	require.NoError(t, err)
	require.Zero(t, n, "every event was relayed, and there is no other")

	// The succeeding messages' events reached Kafka, in order, and nothing
	// else did.
	var want []string
	for _, m := range msgs[1:] {
		want = append(want, "event-of-"+m.UUID)
	}
	var got []string
	seen := map[string]bool{}
	for _, m := range consumer.snapshot() {
		if !seen[m.UUID] {
			seen[m.UUID] = true
			got = append(got, m.UUID)
			require.Equal(t, "customer-1", m.Key)
		}
	}
	require.Equal(t, want, got)
	stats := router.mw.Stats()
	require.Equal(t, int64(succeeding), stats.Processed)
	require.Equal(t, int64(3), stats.Failed, "the failing message's first attempt and two retries")
}
