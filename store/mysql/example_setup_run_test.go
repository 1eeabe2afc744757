package mysql_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
)

// exampleDatabase creates a database of its own for an example and returns
// the test server's DSN naming it, and a func that drops it.
func exampleDatabase() (string, func()) {
	admin, err := sql.Open("mysql", dbtest.MySQLDSN())
	if err != nil {
		log.Fatal(err)
	}
	database := "omnibox_example_" + strings.ToLower(rand.Text()[:10])
	if _, err := admin.Exec("CREATE DATABASE `" + database + "`"); err != nil {
		log.Fatal(err)
	}
	config, err := gomysql.ParseDSN(dbtest.MySQLDSN())
	if err != nil {
		log.Fatal(err)
	}
	config.DBName = database
	return config.FormatDSN(), func() {
		_, _ = admin.Exec("DROP DATABASE `" + database + "`")
		_ = admin.Close()
	}
}

// Open the database, create the outbox tables, write an event in a
// transaction and relay it (to GoChannel here; Kafka in production).
func Example_setup() {
	ctx := context.Background()
	dsn, drop := exampleDatabase()
	defer drop()
	pub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer pub.Close()

	// snippet-start: open
	db, err := sql.Open("mysql", dsn) // e.g. app:secret@tcp(db.internal:3306)/shop
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
