package storetest

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// Insert writes events through store in one committed transaction on db,
// failing the test on error. For a dialect's own tests.
func Insert(t *testing.T, db *sql.DB, store omnibox.Inserter, events ...omnibox.Event) {
	t.Helper()
	inTx(t, db, func(tx *sql.Tx) {
		require.NoError(t, store.Insert(t.Context(), tx, omnibox.InsertParams{Events: events}))
	})
}

// NumberedEvents returns n complete events (ready for [omnibox.Inserter])
// with IDs event-<from> to event-<from+n-1>, topic "topic" and a one-byte
// payload, all created now.
func NumberedEvents(from, n int) []omnibox.Event {
	now := time.Now().Truncate(time.Microsecond).UTC()
	events := make([]omnibox.Event, n)
	for i := range events {
		events[i] = omnibox.Event{CreatedAt: now, ID: fmt.Sprintf("event-%d", from+i), Payload: []byte{byte(i)}, Topic: "topic"}
	}
	return events
}

// EventIDs returns the IDs of events, in order.
func EventIDs(events []omnibox.Event) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.ID
	}
	return out
}
