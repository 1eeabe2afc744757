package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log"
	"net/url"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
)

// exampleSchema creates a schema of its own for an example and returns the
// test server's URL with that schema as its search_path, and a func that
// drops it.
func exampleSchema() (string, func()) {
	admin, err := sql.Open("postgres", dbtest.PostgresURL())
	if err != nil {
		log.Fatal(err)
	}
	schema := "omnibox_example_" + strings.ToLower(rand.Text()[:10])
	if _, err := admin.Exec(`CREATE SCHEMA "` + schema + `"`); err != nil {
		log.Fatal(err)
	}
	u, err := url.Parse(dbtest.PostgresURL())
	if err != nil {
		log.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), func() {
		_, _ = admin.Exec(`DROP SCHEMA "` + schema + `" CASCADE`)
		_ = admin.Close()
	}
}

// Open the database, create the outbox tables, write an event in a
// transaction and relay it (to GoChannel here; Kafka in production).
func Example_setup() {
	ctx := context.Background()
	url, drop := exampleSchema()
	defer drop()
	pub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer pub.Close()

	// snippet-start: open
	db, err := sql.Open("postgres", url) // e.g. postgres://app@db:5432/shop?sslmode=require
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
