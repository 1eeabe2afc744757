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

// Open the database file, create the outbox tables, write an event in a
// transaction and relay it (to GoChannel here; Kafka in production).
func Example_setup() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "omnibox-sqlite-setup")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "shop.db")
	pub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer pub.Close()

	// snippet-start: open
	db, err := sqlite.Open(path) // e.g. /var/lib/shop/shop.db; creates the file if missing, with the settings below
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	outbox, relay, err := newOutbox(ctx, db, pub)
	if err != nil {
		log.Fatal(err)
	}
	// snippet-end: open

	err = outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "users.created", Key: "u-1", Payload: []byte("u-1")})
	})
	if err != nil {
		log.Fatal(err)
	}
	n, err := relay.Drain(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("relayed:", n)
	// Output: relayed: 1
}
