package omnibox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jmoiron/sqlx"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// exampleDB opens the test PostgreSQL and gives the example a fresh schema;
// the returned func drops it.
func exampleDB(schema string) (*sql.DB, func()) {
	db, err := sql.Open("postgres", dbtest.PostgresURL())
	if err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE; CREATE SCHEMA ` + schema + `;
		CREATE TABLE ` + schema + `.users (id text PRIMARY KEY, email text NOT NULL)`); err != nil {
		log.Fatal(err)
	}
	return db, func() {
		_, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		_ = db.Close()
	}
}

// Write an event in the same transaction as a business row, then relay it to
// a Watermill publisher (GoChannel here; Kafka in production).
func ExampleOutbox_WriteTx() {
	ctx := context.Background()
	db, cleanup := exampleDB("omnibox_example_write")
	defer cleanup()

	store, err := postgres.New(&postgres.Config{Schema: "omnibox_example_write"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		log.Fatal(err)
	}

	err = outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO omnibox_example_write.users (id, email) VALUES ('u-1', 'ada@example.com')`); err != nil {
			return err
		}
		return outbox.WriteTx(ctx, tx, omnibox.Event{
			ID:       "evt-1",
			Topic:    "users.created",
			Key:      "u-1",
			Payload:  []byte(`{"id":"u-1","email":"ada@example.com"}`),
			Metadata: map[string]string{"event_type": "UserCreated"},
		})
	})
	if err != nil {
		log.Fatal(err)
	}

	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer pubsub.Close()
	msgs, err := pubsub.Subscribe(ctx, "users.created")
	if err != nil {
		log.Fatal(err)
	}
	relay, err := omnibox.NewRelay(db, store, pubsub, &omnibox.RelayConfig{})
	if err != nil {
		log.Fatal(err)
	}
	n, err := relay.Drain(ctx)
	if err != nil {
		log.Fatal(err)
	}
	msg := <-msgs
	msg.Ack()
	fmt.Println("relayed:", n)
	fmt.Println(msg.UUID, msg.Metadata.Get(omnibox.MetadataKey), msg.Metadata.Get("event_type"), string(msg.Payload))
	// Output:
	// relayed: 1
	// evt-1 u-1 UserCreated {"id":"u-1","email":"ada@example.com"}
}

// Code written against Watermill's message.Publisher publishes into the
// outbox, inside the transaction, without change.
func ExampleOutbox_Publisher() {
	ctx := context.Background()
	db, cleanup := exampleDB("omnibox_example_publisher")
	defer cleanup()
	store, err := postgres.New(&postgres.Config{Schema: "omnibox_example_publisher"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		log.Fatal(err)
	}

	// A function that only knows Watermill.
	announce := func(pub message.Publisher, userID string) error {
		msg := message.NewMessage(watermill.NewUUID(), []byte(userID))
		msg.Metadata.Set(omnibox.MetadataKey, userID) // the event key
		return pub.Publish("users.created", msg)
	}

	err = outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return announce(outbox.Publisher(tx), "u-2")
	})
	if err != nil {
		log.Fatal(err)
	}
	pending, err := store.Pending(ctx, db)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending events:", pending)
	// Output:
	// pending events: 1
}

// sqlx users pass the *sql.Tx embedded in their *sqlx.Tx.
func ExampleOutbox_WriteTx_sqlx() {
	ctx := context.Background()
	plain, cleanup := exampleDB("omnibox_example_sqlx")
	defer cleanup()
	db := sqlx.NewDb(plain, "postgres")
	store, err := postgres.New(&postgres.Config{Schema: "omnibox_example_sqlx"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx, db.DB); err != nil {
		log.Fatal(err)
	}
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		log.Fatal(err)
	}

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	tx.MustExecContext(ctx, `INSERT INTO omnibox_example_sqlx.users (id, email) VALUES ($1, $2)`, "u-3", "grace@example.com")
	if err := outbox.WriteTx(ctx, tx.Tx, omnibox.Event{Topic: "users.created", Key: "u-3", Payload: []byte("u-3")}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	pending, err := store.Pending(ctx, db)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending events:", pending)
	// Output:
	// pending events: 1
}
