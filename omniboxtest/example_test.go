package omniboxtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/omniboxtest"
	"github.com/omnibox-go/omnibox/publisher"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// ExampleNewKafka starts an in-process Kafka cluster with a topic, as a demo
// program would (tests use StartKafka), and publishes to it with the omnibox
// publisher.
func ExampleNewKafka() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// snippet-start: new-kafka
	kafka, err := omniboxtest.NewKafka(ctx, &omniboxtest.KafkaConfig{Topics: []string{"orders"}})
	if err != nil {
		panic(err)
	}
	defer kafka.Close()

	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: kafka.Brokers()})
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	// snippet-end: new-kafka
	err = pub.Publish("orders", omnibox.ToMessage(omnibox.Event{ID: "evt-1", Key: "order-42", Payload: []byte("{}")}))
	fmt.Println(err)
	// Output: <nil>
}

// TestExample_ServiceOnSQLite is a user's test of a service's write path,
// with no server: the service writes an event in its transaction, the test
// drains the outbox to the kit's GoChannel and reads the event back.
func TestExample_ServiceOnSQLite(t *testing.T) {
	// snippet-start: drain-sqlite
	db, store := omniboxtest.SQLite(t)
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pubSub := omniboxtest.NewGoChannel(nil)
	t.Cleanup(func() { _ = pubSub.Close() })

	// The code under test writes its rows and an event in one transaction.
	err = outbox.InTx(t.Context(), db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "orders", Key: "order-42", Payload: []byte(`{"id":42}`)})
	})
	if err != nil {
		t.Fatal(err)
	}

	if n := omniboxtest.Drain(t, db, store, pubSub); n != 1 {
		t.Fatalf("drained %d events, want 1", n)
	}
	messages, err := pubSub.Subscribe(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	msg := <-messages // kept for the first subscriber
	msg.Ack()
	if got := string(msg.Payload); got != `{"id":42}` {
		t.Fatalf("payload %s", got)
	}
	// snippet-end: drain-sqlite
}

// TestExample_KafkaAndPostgres is a user's test of a service that relays to
// Kafka from PostgreSQL: the test gets a fresh schema, whose DSN the service
// would be configured with, and an in-process Kafka with the topics.
func TestExample_KafkaAndPostgres(t *testing.T) {
	// snippet-start: kafka-postgres
	brokers := omniboxtest.StartKafka(t, "orders")
	omniboxtest.CreateTopics(t, brokers, 1, "orders.poison") // more topics, other partition counts
	db, dsn := omniboxtest.Postgres(t)                       // dsn opens the same schema
	t.Logf("the service under test would open %s", dsn)

	store, err := postgres.New(&postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	// snippet-end: kafka-postgres

	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = outbox.InTx(t.Context(), db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "orders", Key: "order-42", Payload: []byte(`{}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := omniboxtest.Drain(t, db, store, pub); n != 1 {
		t.Fatalf("drained %d events, want 1", n)
	}
}

// ExampleNewGoChannel publishes before anyone subscribes: the GoChannel keeps
// the messages and hands them, in order, to the first subscriber.
func ExampleNewGoChannel() {
	// snippet-start: gochannel
	pubSub := omniboxtest.NewGoChannel(nil)
	defer pubSub.Close()

	for _, id := range []string{"evt-1", "evt-2", "evt-3"} {
		if err := pubSub.Publish("orders", message.NewMessage(id, nil)); err != nil {
			panic(err)
		}
	}
	messages, err := pubSub.Subscribe(context.Background(), "orders")
	if err != nil {
		panic(err)
	}
	for range 3 {
		msg := <-messages
		fmt.Println(msg.UUID)
		msg.Ack() // the next message comes after the ack
	}
	// snippet-end: gochannel
	// Output:
	// evt-1
	// evt-2
	// evt-3
}

// TestExample_RelayToGoChannel runs a relay in the background, as the
// service would, publishing to the kit's GoChannel, and a subscriber
// receives a key's events in the order they were written.
func TestExample_RelayToGoChannel(t *testing.T) {
	db, store := omniboxtest.SQLite(t)
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// snippet-start: relay-gochannel
	pubSub := omniboxtest.NewGoChannel(nil)
	t.Cleanup(func() { _ = pubSub.Close() })
	relay, err := omnibox.NewRelay(db, store, pubSub, &omnibox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() { // runs before the GoChannel's Close
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	messages, err := pubSub.Subscribe(t.Context(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	// snippet-end: relay-gochannel

	err = outbox.InTx(t.Context(), db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx,
			omnibox.Event{ID: "created", Topic: "orders", Key: "order-42"},
			omnibox.Event{ID: "paid", Topic: "orders", Key: "order-42"})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"created", "paid"} {
		select {
		case msg := <-messages:
			msg.Ack()
			if msg.UUID != want {
				t.Fatalf("got %s, want %s", msg.UUID, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("timed out waiting for %s", want)
		}
	}
}
