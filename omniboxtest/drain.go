package omniboxtest

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
)

// DrainTimeout bounds a [Drain].
const DrainTimeout = 30 * time.Second

// DrainRelayID is the relay ID of [Drain]'s relays. One ID for all of them
// lets each take over at once what an earlier Drain on the same outbox left
// behind, and keeps the outbox's table of live relays short.
const DrainRelayID = "omniboxtest-drain"

// Drain publishes every event pending now in the outbox on db to pub, with
// a relay of the default configuration, and returns how many it published.
// It fails the test when the relay fails (a database error, a batch the
// publisher refused) or takes longer than [DrainTimeout]. Use it where a
// test wants the events of what it just did delivered, without running a
// relay in the background.
//
// Events waiting for a retry, dead events and events leased by another live
// relay are not drained. Do not drain concurrently on one outbox: the second
// Drain fails with omnibox.ErrRelayIDInUse.
func Drain(t testing.TB, db *sql.DB, store omnibox.RelayStore, pub message.Publisher) int {
	t.Helper()
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{ID: DrainRelayID})
	if err != nil {
		t.Fatalf("omniboxtest: Drain: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	n, err := relay.Drain(ctx)
	if err != nil {
		t.Fatalf("omniboxtest: Drain: %d events published, then: %v", n, err)
	}
	return n
}
