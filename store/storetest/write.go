package storetest

import (
	"bytes"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// writeCases checks that an event round-trips exactly, that a duplicate
// event ID is refused, and that inserting nothing is a no-op.
func (s *suite) writeCases(t *testing.T) {
	t.Run("RoundTripIsExact", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		payload := make([]byte, omnibox.DefaultMaxPayloadBytes)
		for i := range payload {
			payload[i] = byte(i * 7) // every byte value, 0x00 and 0xff included
		}
		big := omnibox.Event{
			CreatedAt: time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.FixedZone("IST", 5*3600+1800)),
			ID:        "round-trip/événement/🚀",
			Key:       "ключ-🔑",
			Metadata:  map[string]string{"ключ": "值 🚀", "empty": "", "quotes": `"'\<>&`, "newline": "a\nb\tc"},
			Payload:   payload,
			Topic:     "topic.ümlaut",
		}
		write(t, b.db, b.outbox, big)
		// Through the store directly: nil payload and metadata, no key.
		bare := omnibox.Event{CreatedAt: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), ID: "bare", Topic: "t"}
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{bare}}))
		})

		got := claim(t, b.db, b.store, params("a/1", 10))
		require.Len(t, got, 2)

		g := got[0].Event
		require.Equal(t, big.ID, g.ID)
		require.Equal(t, big.Topic, g.Topic)
		require.Equal(t, big.Key, g.Key)
		require.Equal(t, big.Metadata, g.Metadata)
		require.Len(t, g.Payload, len(payload))
		require.True(t, bytes.Equal(payload, g.Payload), "payload changed on its way through the store")
		require.True(t, big.CreatedAt.Equal(g.CreatedAt), "CreatedAt: want %s, got %s", big.CreatedAt, g.CreatedAt)
		require.Equal(t, time.UTC, g.CreatedAt.Location(), "CreatedAt must come back in UTC")

		g = got[1].Event
		require.Equal(t, bare.ID, g.ID)
		require.Equal(t, bare.Topic, g.Topic)
		require.Empty(t, g.Key)
		require.Empty(t, g.Metadata)
		require.Empty(t, g.Payload)
		require.Equal(t, bare.CreatedAt, g.CreatedAt)
	})

	t.Run("DuplicateEventID", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		ctx := t.Context()

		existing := newEvent("dup", "")
		write(t, b.db, b.outbox, existing)

		failing := func(name string, fn func(tx *sql.Tx) error) {
			t.Helper()
			tx, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			err = fn(tx)
			require.ErrorIs(t, err, omnibox.ErrDuplicateEventID, name)
			require.NoError(t, tx.Rollback())
		}
		// Through the outbox, the duplicate in the middle of a batch.
		failing("batch", func(tx *sql.Tx) error {
			return b.outbox.WriteTx(ctx, tx, newEvent("dup", ""), omnibox.Event{ID: existing.ID, Topic: "dup"}, newEvent("dup", ""))
		})
		// Twice in one batch.
		twice := newEvent("dup", "")
		failing("twice in a batch", func(tx *sql.Tx) error {
			return b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{twice, twice}})
		})
		// A successful call, then a failing one in the same transaction.
		failing("second call", func(tx *sql.Tx) error {
			require.NoError(t, b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{newEvent("dup", "")}}))
			return b.store.Insert(ctx, tx, omnibox.InsertParams{Events: []omnibox.Event{existing}})
		})

		requirePending(t, b.db, b.store, 1)
		requireIDs(t, ids(existing), claim(t, b.db, b.store, params("a/1", 10)))
	})

	t.Run("InsertNothing", func(t *testing.T) {
		t.Parallel()
		b := s.setup(t)
		inTx(t, b.db, func(tx *sql.Tx) {
			require.NoError(t, b.store.Insert(t.Context(), tx, omnibox.InsertParams{}))
		})
		requirePending(t, b.db, b.store, 0)
	})
}
