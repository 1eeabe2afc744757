package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	msqlite "modernc.org/sqlite"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// insertColumns is the number of parameters per inserted row.
const insertColumns = 7

// maxInsertRows is the most rows one INSERT statement carries, so that it
// stays within SQLite's default limit of 32766 parameters per statement
// (SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32).
const maxInsertRows = 32766 / insertColumns

// Insert writes the events through tx, in order: their seq values, hence the
// claim order, follow the order of params.Events. Each event goes to the
// partition [omnibox.PartitionOf] gives it. Each chunk of up to
// maxInsertRows events is written by one multi-row INSERT; several chunks
// are all or nothing only because they run in the caller's transaction, so
// tx must be one (a *sql.Tx, as [omnibox.Outbox] passes). The events become
// visible to [Store.Claim] when that transaction commits. SQLite has one
// writer at a time and assigns seq values under its write lock, so seq order
// is also commit order.
//
// An event ID already in the table returns an error wrapping
// [omnibox.ErrDuplicateEventID] (and the driver's error); SQLite undoes the
// failed statement only, but the caller should roll the transaction back.
func (s *Store) Insert(ctx context.Context, tx omnibox.DBTX, params omnibox.InsertParams) error {
	for events := range slices.Chunk(params.Events, maxInsertRows) {
		if err := s.insertChunk(ctx, tx, events); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) insertChunk(ctx context.Context, tx omnibox.DBTX, events []omnibox.Event) error {
	const row = "(?, ?, ?, ?, ?, ?, ?)"
	var b strings.Builder
	b.Grow(len(s.insertPrefix) + len(events)*(len(row)+2))
	b.WriteString(s.insertPrefix)
	args := make([]any, 0, len(events)*insertColumns)
	for i, ev := range events {
		metadata, err := metadatajson.Encode(ev.Metadata)
		if err != nil {
			return fmt.Errorf("sqlite: encoding metadata of event %q: %w", ev.ID, err)
		}
		payload := ev.Payload
		if payload == nil {
			payload = []byte{} // a nil []byte is bound as NULL
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt.UnixMicro(), omnibox.PartitionOf(&ev))
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		if s.isDuplicateEventID(err) {
			return fmt.Errorf("sqlite: inserting into %s: %w: %w", s.tableName, omnibox.ErrDuplicateEventID, err)
		}
		return fmt.Errorf("sqlite: inserting %d event(s) into %s: %w%s", len(events), s.tableName, err, busyHint(err))
	}
	return nil
}

// isDuplicateEventID reports whether err is SQLite's unique constraint
// failure on the table's event_id. With modernc.org/sqlite the result code
// is checked too; with another driver the message, which SQLite composes
// as "UNIQUE constraint failed: <table>.<column>", is enough.
func (s *Store) isDuplicateEventID(err error) bool {
	if !strings.Contains(err.Error(), "UNIQUE constraint failed: "+s.tableName+".event_id") {
		return false
	}
	var sqliteErr *msqlite.Error
	return !errors.As(err, &sqliteErr) || sqliteErr.Code() == codeConstraintUnique
}
