package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// exampleDB opens the test PostgreSQL and gives the example a fresh schema
// with a payments table; the returned func drops it.
func exampleDB(schema string) (*sql.DB, func()) {
	db, err := sql.Open("postgres", dbtest.PostgresURL())
	if err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE; CREATE SCHEMA ` + schema + `;
		CREATE TABLE ` + schema + `.payments (order_id text NOT NULL, amount int NOT NULL)`); err != nil {
		log.Fatal(err)
	}
	return db, func() {
		_, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		_ = db.Close()
	}
}

// A router handler wrapped by the inbox middleware: the message is recorded
// in the same transaction as the handler's row, so a redelivered message is
// acknowledged without running the handler again.
func ExampleMiddleware() {
	ctx := context.Background()
	db, cleanup := exampleDB("inbox_example_middleware")
	defer cleanup()

	store, err := postgres.NewInbox(&postgres.InboxConfig{Schema: "inbox_example_middleware"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	in, err := inbox.New(store, &inbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	dedup, err := inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: db, Inbox: in})
	if err != nil {
		log.Fatal(err)
	}

	// Publish blocks until the handler acknowledged: the output is in order.
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubsub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	router.AddMiddleware(dedup.Middleware)
	router.AddConsumerHandler("charge-payment", "orders.placed", pubsub, func(msg *message.Message) error {
		tx, err := inbox.TxFromMessage(msg)
		if err != nil {
			return err
		}
		fmt.Printf("charging for %s\n", msg.Payload)
		_, err = tx.ExecContext(msg.Context(), `INSERT INTO inbox_example_middleware.payments (order_id, amount) VALUES ($1, 42)`, string(msg.Payload))
		return err
	})
	go func() {
		if err := router.Run(ctx); err != nil {
			log.Fatal(err)
		}
	}()
	<-router.Running()
	defer router.Close()

	msg := message.NewMessage("event-1", []byte("order-1"))
	for range 3 { // Kafka redelivers
		if err := pubsub.Publish("orders.placed", msg); err != nil {
			log.Fatal(err)
		}
	}

	var payments int
	if err := db.QueryRow(`SELECT count(*) FROM inbox_example_middleware.payments`).Scan(&payments); err != nil {
		log.Fatal(err)
	}
	stats := dedup.Stats()
	fmt.Printf("payments: %d, processed: %d, duplicates: %d\n", payments, stats.Processed, stats.Duplicates)
	// Output:
	// charging for order-1
	// payments: 1, processed: 1, duplicates: 2
}

// Consume → produce in one transaction: with an outbox configured, the
// messages the handler returns are written to the outbox in the handler's
// transaction, and a relay publishes them after the commit.
func ExampleMiddleware_outbox() {
	ctx := context.Background()
	const schema = "inbox_example_outbox"
	db, cleanup := exampleDB(schema)
	defer cleanup()

	inboxStore, err := postgres.NewInbox(&postgres.InboxConfig{Schema: schema})
	if err != nil {
		log.Fatal(err)
	}
	outboxStore, err := postgres.New(&postgres.Config{Schema: schema})
	if err != nil {
		log.Fatal(err)
	}
	if err := inboxStore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	if err := outboxStore.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	in, err := inbox.New(inboxStore, &inbox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	outbox, err := omnibox.New(outboxStore, &omnibox.Config{})
	if err != nil {
		log.Fatal(err)
	}
	dedup, err := inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: db, Inbox: in, Outbox: outbox})
	if err != nil {
		log.Fatal(err)
	}

	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubsub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	router.AddMiddleware(dedup.Middleware)
	// The publish topic names the outbox topic; the router's publisher is
	// never called, since the middleware returns no messages to it.
	router.AddHandler("charge-payment", "orders.placed", pubsub, "payments.charged", pubsub,
		func(msg *message.Message) ([]*message.Message, error) {
			tx, err := inbox.TxFromMessage(msg)
			if err != nil {
				return nil, err
			}
			if _, err := tx.ExecContext(msg.Context(), `INSERT INTO `+schema+`.payments (order_id, amount) VALUES ($1, 42)`, string(msg.Payload)); err != nil {
				return nil, err
			}
			return []*message.Message{message.NewMessage("payment-of-"+msg.UUID, msg.Payload)}, nil
		})
	go func() {
		if err := router.Run(ctx); err != nil {
			log.Fatal(err)
		}
	}()
	<-router.Running()
	defer router.Close()

	msg := message.NewMessage("event-1", []byte("order-1"))
	for range 2 {
		if err := pubsub.Publish("orders.placed", msg); err != nil {
			log.Fatal(err)
		}
	}

	// The relay publishes the committed event (to GoChannel here; Kafka in
	// production).
	charged, err := pubsub.Subscribe(ctx, "payments.charged")
	if err != nil {
		log.Fatal(err)
	}
	relay, err := omnibox.NewRelay(db, outboxStore, pubsub, &omnibox.RelayConfig{})
	if err != nil {
		log.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		_, err := relay.Drain(ctx)
		drained <- err
	}()
	out := <-charged
	out.Ack()
	if err := <-drained; err != nil {
		log.Fatal(err)
	}
	fmt.Printf("relayed %s: %s\n", out.UUID, out.Payload)
	// Output:
	// relayed payment-of-event-1: order-1
}
