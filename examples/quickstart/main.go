// Command quickstart is the README's Quick start as a complete program: it
// writes a user and a UserCreated event in one PostgreSQL transaction, and a
// relay publishes the event to Kafka; SIGINT or SIGTERM stops it cleanly.
//
//	DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	KAFKA_BROKERS=127.0.0.1:9092 go run ./examples/quickstart
//
// The topic users.created must exist: the publisher does not create topics.
package main

// snippet-start: quickstart
import (
	"context"
	"database/sql"
	"encoding/json"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/uuid"
	_ "github.com/lib/pq" // the "postgres" database/sql driver

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
	"github.com/omnibox-go/omnibox/store/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := sql.Open("postgres", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	const usersDDL = `CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, email text NOT NULL)`
	if _, err := db.ExecContext(ctx, usersDDL); err != nil {
		log.Fatal(err)
	}
	store, err := postgres.New(&postgres.Config{}) // table omnibox_outbox
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil { // idempotent, concurrency-safe
		log.Fatal(err)
	}
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		log.Fatal(err)
	}

	// The relay, as a goroutine here or a separate process; one or more per service.
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers})
	if err != nil {
		log.Fatal(err)
	}
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{
		ID: os.Getenv("POD_NAME"), // unique among the running relays, stable across restarts
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := outbox.WakeOnCommit(relay); err != nil { // publish right after InTx commits
		log.Fatal(err)
	}
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(ctx) }()

	// The business transaction: the user and its event commit or roll back together.
	userID, eventID := uuid.NewString(), uuid.NewString()
	payload, err := json.Marshal(map[string]string{"id": userID, "email": "ada@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	err = outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
		const insert = `INSERT INTO users (id, email) VALUES ($1, $2)`
		if _, err := tx.ExecContext(ctx, insert, userID, "ada@example.com"); err != nil {
			return err
		}
		return outbox.WriteTx(ctx, tx, omnibox.Event{
			ID: eventID, Topic: "users.created", Key: userID, Payload: payload,
			Metadata: map[string]string{"event_type": "UserCreated"},
		})
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("created user %s with event %s; press Ctrl-C to stop", userID, eventID)

	// Shut down in order: Run returns once SIGINT or SIGTERM ended ctx and its
	// batch is finished; only then close the publisher and the database.
	if err := <-relayDone; err != nil {
		log.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		log.Fatal(err)
	}
	if err := db.Close(); err != nil {
		log.Fatal(err)
	}
}

// snippet-end: quickstart
