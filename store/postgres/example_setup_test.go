package postgres_test

// snippet-start: setup
import (
	"context"
	"database/sql"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/lib/pq" // or: _ "github.com/jackc/pgx/v5/stdlib" and sql.Open("pgx", url)

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// newOutbox creates the outbox tables if they are missing and returns the
// outbox, which writes events in your transactions, and a relay, which
// publishes the committed ones to pub.
func newOutbox(ctx context.Context, db *sql.DB, pub message.Publisher) (*omnibox.Outbox, *omnibox.Relay, error) {
	store, err := postgres.New(&postgres.Config{Schema: "", Table: "omnibox_outbox"}) // the defaults
	if err != nil {
		return nil, nil, err
	}
	if err := store.Migrate(ctx, db); err != nil { // idempotent, safe from several processes
		return nil, nil, err
	}
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		return nil, nil, err
	}
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{})
	if err != nil {
		return nil, nil, err
	}
	return outbox, relay, nil
}

// snippet-end: setup
