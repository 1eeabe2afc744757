package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// A relay in another process is woken by a Notifier in the writing process
// and a Listener beside the relay. (Both run in one process here; the relay
// polls only once an hour, so the event arrives because of the NOTIFY.)
func ExampleNotifier() {
	ctx, cancel := context.WithCancel(context.Background())
	dsn, drop := exampleSchema()
	defer drop()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := postgres.New(&postgres.Config{})
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
	pub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
	defer pub.Close()
	msgs, err := pub.Subscribe(ctx, "users.created")
	if err != nil {
		log.Fatal(err)
	}
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{PollInterval: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		if err := relay.Run(ctx); err != nil {
			log.Fatal(err)
		}
	})

	// snippet-start: notifier
	// In the writing service:
	notifier, err := postgres.NewNotifier(db, &postgres.NotifierConfig{}) // channel omnibox_outbox
	if err != nil {
		log.Fatal(err)
	}
	outbox.WakeOnCommit(notifier)
	wg.Go(func() { _ = notifier.Run(ctx) }) // at most one NOTIFY per 5 ms, outside your transactions; nil when ctx ends

	// In the relay process:
	listener, err := postgres.NewListener(dsn, relay, &postgres.ListenerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	wg.Go(func() { // one dedicated connection (pgx's pgconn); reconnects by itself
		if err := listener.Run(ctx); err != nil {
			slog.Error("omnibox listener stopped; the relay polls only", slog.Any("error", err)) // a dsn it cannot parse
		}
	})
	// snippet-end: notifier

	time.Sleep(200 * time.Millisecond) // the relay's first claim found nothing; it waits now
	err = outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "users.created", Key: "u-1", Payload: []byte("u-1")})
	})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case msg := <-msgs:
		msg.Ack()
		fmt.Println("published:", string(msg.Payload))
	case <-time.After(30 * time.Second):
		fmt.Println("not woken")
	}
	// Output: published: u-1
}
