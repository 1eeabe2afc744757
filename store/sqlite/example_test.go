package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// An embedded outbox: open the file with sqlite.Open, write an event in the
// same transaction as a business row, then relay it to a Watermill
// publisher (GoChannel here; Kafka in production).
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "omnibox-sqlite-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	store, err := sqlite.New(&sqlite.Config{})
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email) VALUES ('u-1', 'ada@example.com')`); err != nil {
			return err
		}
		return outbox.WriteTx(ctx, tx, omnibox.Event{
			ID:      "evt-1",
			Topic:   "users.created",
			Key:     "u-1",
			Payload: []byte(`{"id":"u-1","email":"ada@example.com"}`),
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
	fmt.Println(msg.UUID, msg.Metadata.Get(omnibox.MetadataKey), string(msg.Payload))
	// Output:
	// relayed: 1
	// evt-1 u-1 {"id":"u-1","email":"ada@example.com"}
}
