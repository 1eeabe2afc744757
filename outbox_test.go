package omnibox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

type outboxBundle struct {
	db     *sql.DB
	outbox *omnibox.Outbox
	schema string
	store  *postgres.Store
	table  string // qualified outbox table name
}

func setupOutbox(t *testing.T, config *omnibox.Config) *outboxBundle {
	t.Helper()
	ctx := context.Background()
	db, schema := dbtest.Postgres(t, "postgres")
	store, err := postgres.New(&postgres.Config{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx, db))
	_, err = db.ExecContext(ctx, `CREATE TABLE `+schema+`.orders (id text PRIMARY KEY)`)
	require.NoError(t, err)
	ob, err := omnibox.New(store, config)
	require.NoError(t, err)
	return &outboxBundle{db: db, outbox: ob, schema: schema, store: store, table: schema + ".omnibox_outbox"}
}

func (b *outboxBundle) pending(t *testing.T) int64 {
	t.Helper()
	n, err := b.store.Pending(context.Background(), b.db)
	require.NoError(t, err)
	return n
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	store, err := postgres.New(&postgres.Config{})
	require.NoError(t, err)

	_, err = omnibox.New(nil, &omnibox.Config{})
	require.ErrorIs(t, err, omnibox.ErrNilStore)
	_, err = omnibox.New(store, nil)
	require.ErrorIs(t, err, omnibox.ErrNilConfig)
	_, err = omnibox.New(store, &omnibox.Config{MaxPayloadBytes: -1})
	require.ErrorContains(t, err, "MaxPayloadBytes")
}

func TestWriteTxCommitAndRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOutbox(t, &omnibox.Config{})

	// Rolled back: nothing remains.
	tx, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, b.outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "t", Payload: []byte("x")}))
	require.NoError(t, tx.Rollback())
	require.Zero(t, b.pending(t))

	// Committed: both events stay, in one batch.
	tx, err = b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	events := []omnibox.Event{{Topic: "t", Key: "k"}, {Topic: "t", Key: "k"}}
	require.NoError(t, b.outbox.WriteTx(ctx, tx, events...))
	require.NoError(t, tx.Commit())
	require.EqualValues(t, 2, b.pending(t))
	require.Empty(t, events[0].ID, "the caller's events are not modified")
}

func TestWriteTxRejectsBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOutbox(t, &omnibox.Config{MaxPayloadBytes: 16})

	good := omnibox.Event{Topic: "orders", Payload: []byte("ok")}
	cases := []struct {
		name    string
		event   omnibox.Event
		wantErr error
		wantMsg string
	}{
		{"empty topic", omnibox.Event{}, omnibox.ErrInvalidEvent, "topic is empty"},
		{"blank topic", omnibox.Event{Topic: "  "}, omnibox.ErrInvalidEvent, "topic is empty"},
		{"payload over max", omnibox.Event{Topic: "t", Payload: make([]byte, 17)}, omnibox.ErrPayloadTooLarge, "payload is 17 bytes, the limit (Config.MaxPayloadBytes) is 16"},
		{"long ID", omnibox.Event{Topic: "t", ID: strings.Repeat("x", omnibox.MaxIDLen+1)}, omnibox.ErrInvalidEvent, "ID is 129 bytes long"},
		{"invalid UTF-8 key", omnibox.Event{Topic: "t", Key: "\xff"}, omnibox.ErrInvalidEvent, "key is not valid UTF-8"},
		{"NUL in metadata", omnibox.Event{Topic: "t", Metadata: map[string]string{"a": "b\x00"}}, omnibox.ErrInvalidEvent, `metadata value of "a"`},
		{"CreatedAt out of range", omnibox.Event{Topic: "t", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, omnibox.ErrInvalidEvent, "outside the years 1000 to 9999"},
		{"reserved metadata", omnibox.Event{Topic: "t", Metadata: map[string]string{omnibox.MetadataKey: "k"}}, omnibox.ErrInvalidEvent, "reserved"},
		{"metadata over max", omnibox.Event{Topic: "t", Metadata: map[string]string{"big": strings.Repeat("x", omnibox.DefaultMaxMetadataBytes)}}, omnibox.ErrMetadataTooLarge,
			fmt.Sprintf("metadata is %d bytes (keys and values), the limit (Config.MaxMetadataBytes) is %d", omnibox.DefaultMaxMetadataBytes+3, omnibox.DefaultMaxMetadataBytes)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := b.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback() }()
			// The bad event comes second: the good one before it must not be
			// written either.
			err = b.outbox.WriteTx(ctx, tx, good, tc.event)
			require.ErrorIs(t, err, tc.wantErr)
			require.ErrorIs(t, err, omnibox.ErrInvalidEvent)
			require.ErrorContains(t, err, tc.wantMsg)
			var evErr *omnibox.EventError
			require.ErrorAs(t, err, &evErr)
			require.Equal(t, 1, evErr.Index)
			n, err := b.store.Pending(ctx, tx)
			require.NoError(t, err)
			require.Zero(t, n, "nothing of the batch may be written")
		})
	}

	t.Run("nil tx", func(t *testing.T) {
		require.ErrorIs(t, b.outbox.WriteTx(ctx, nil, good), omnibox.ErrNilTx)
		require.ErrorIs(t, b.outbox.WriteMessagesTx(ctx, nil, "t", message.NewMessage("", nil)), omnibox.ErrNilTx)
	})

	t.Run("closed tx", func(t *testing.T) {
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		err = b.outbox.WriteTx(ctx, tx, good)
		require.ErrorIs(t, err, sql.ErrTxDone)
		require.Zero(t, b.pending(t))
	})

	t.Run("duplicate ID", func(t *testing.T) {
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		err = b.outbox.WriteTx(ctx, tx, omnibox.Event{ID: "same", Topic: "t"}, omnibox.Event{ID: "same", Topic: "t"})
		require.ErrorIs(t, err, omnibox.ErrDuplicateEventID)
	})
}

func TestWriteMessagesTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOutbox(t, &omnibox.Config{})

	withID := message.NewMessage("01J0ULID0000000000000000AA", []byte("a"))
	withID.Metadata.Set("trace", "t-1")
	withID.Metadata.Set(omnibox.MetadataKey, "user-7")
	noID := message.NewMessage("", []byte("b"))

	err := b.outbox.InTx(ctx, b.db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return b.outbox.Publisher(tx).Publish("users", withID, noID)
	})
	require.NoError(t, err)
	require.NotEmpty(t, noID.UUID, "a generated ID is assigned to the message")

	claimed := claimAll(t, b)
	require.Len(t, claimed, 2)
	require.Equal(t, "01J0ULID0000000000000000AA", claimed[0].ID)
	require.Equal(t, "user-7", claimed[0].Key)
	require.Equal(t, map[string]string{"trace": "t-1"}, claimed[0].Metadata, "the key is stored as the key, not as metadata")
	require.Equal(t, []byte("a"), claimed[0].Payload)
	require.Equal(t, noID.UUID, claimed[1].ID)
	require.Empty(t, claimed[1].Key)

	t.Run("MessageKeyFunc", func(t *testing.T) {
		ob, err := omnibox.New(b.store, &omnibox.Config{MessageKeyFunc: func(topic string, msg *message.Message) (string, error) {
			if msg.Metadata.Get("tenant") == "" {
				return "", errors.New("no tenant")
			}
			return topic + "/" + msg.Metadata.Get("tenant"), nil
		}})
		require.NoError(t, err)
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		err = ob.WriteMessagesTx(ctx, tx, "t", message.NewMessage("", nil))
		require.ErrorIs(t, err, omnibox.ErrInvalidEvent)
		require.ErrorContains(t, err, "no tenant")
		m := message.NewMessage("", nil)
		m.Metadata.Set("tenant", "acme")
		require.NoError(t, ob.WriteMessagesTx(ctx, tx, "t", m))
	})

	t.Run("nil message", func(t *testing.T) {
		tx, err := b.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		err = b.outbox.WriteMessagesTx(ctx, tx, "t", message.NewMessage("", nil), nil)
		require.ErrorIs(t, err, omnibox.ErrInvalidEvent)
		require.ErrorContains(t, err, "index 1")
	})
}

func claimAll(t *testing.T, b *outboxBundle) []omnibox.ClaimedEvent {
	t.Helper()
	ctx := context.Background()
	tx, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	res, err := b.store.Claim(ctx, tx, omnibox.ClaimParams{Lease: time.Minute, Limit: 1000, Owner: "test/1"})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	return res.Events
}

func TestInTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOutbox(t, &omnibox.Config{})
	ev := omnibox.Event{Topic: "t"}

	boom := errors.New("boom")
	err := b.outbox.InTx(ctx, b.db, nil, func(ctx context.Context, tx *sql.Tx) error {
		require.NoError(t, b.outbox.WriteTx(ctx, tx, ev))
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Zero(t, b.pending(t))

	require.PanicsWithValue(t, "kaboom", func() {
		_ = b.outbox.InTx(ctx, b.db, nil, func(ctx context.Context, tx *sql.Tx) error {
			require.NoError(t, b.outbox.WriteTx(ctx, tx, ev))
			panic("kaboom")
		})
	})
	require.Zero(t, b.pending(t))

	require.NoError(t, b.outbox.InTx(ctx, b.db, nil, func(ctx context.Context, tx *sql.Tx) error {
		return b.outbox.WriteTx(ctx, tx, ev)
	}))
	require.EqualValues(t, 1, b.pending(t))

	require.ErrorIs(t, b.outbox.InTx(ctx, nil, nil, nil), omnibox.ErrNilDB)
}

func TestInTxOnConn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOutbox(t, &omnibox.Config{})
	conn, err := b.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()

	// Committed on the caller's connection.
	require.NoError(t, b.outbox.InTx(ctx, conn, nil, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+b.schema+`.orders (id) VALUES ('o1')`); err != nil {
			return err
		}
		return b.outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "t", Key: "o1"})
	}))
	require.EqualValues(t, 1, b.pending(t))

	// Rolled back on it: nothing of it remains.
	boom := errors.New("boom")
	require.ErrorIs(t, b.outbox.InTx(ctx, conn, nil, func(ctx context.Context, tx *sql.Tx) error {
		require.NoError(t, b.outbox.WriteTx(ctx, tx, omnibox.Event{Topic: "t", Key: "o2"}))
		return boom
	}), boom)
	require.EqualValues(t, 1, b.pending(t))

	var nilConn *sql.Conn
	err = b.outbox.InTx(ctx, nilConn, nil, nil)
	require.ErrorIs(t, err, omnibox.ErrNilDB)
	require.EqualError(t, err, "omnibox: InTx: db is a nil *sql.Conn (did sql.DB.Conn return an error?)")
}

func TestWriteTxIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupOutbox(t, &omnibox.Config{})
	var ids []string
	require.NoError(t, b.outbox.InTx(ctx, b.db, nil, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		ids, err = b.outbox.WriteTxIDs(ctx, tx,
			omnibox.Event{Topic: "t"}, omnibox.Event{Topic: "t", ID: "given"}, omnibox.Event{Topic: "t"})
		return err
	}))
	require.Len(t, ids, 3)
	require.Equal(t, "given", ids[1])
	require.NotEmpty(t, ids[0])
	require.NotEqual(t, ids[0], ids[2])

	// The IDs are those stored, in order.
	rows, err := b.db.QueryContext(ctx, `SELECT event_id FROM `+b.table+` ORDER BY seq`)
	require.NoError(t, err)
	defer rows.Close()
	var stored []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		stored = append(stored, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, ids, stored)

	// An invalid event: an error, no IDs, nothing written.
	tx, err := b.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck // the test's own cleanup
	got, err := b.outbox.WriteTxIDs(ctx, tx, omnibox.Event{Topic: "t"}, omnibox.Event{})
	require.ErrorIs(t, err, omnibox.ErrInvalidEvent)
	require.Nil(t, got)
	got, err = b.outbox.WriteTxIDs(ctx, nil, omnibox.Event{Topic: "t"})
	require.ErrorIs(t, err, omnibox.ErrNilTx)
	require.Nil(t, got)
}
