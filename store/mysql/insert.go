package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// Insert writes the events through tx, in order: their seq values, hence
// the claim order, follow the order of params.Events, and each goes to its
// partition, [omnibox.PartitionOf], in the part column. Events go in chunks
// of at most maxInsertRows rows and about maxInsertBytes bytes, each written
// by one multi-row INSERT. The events become visible to [Store.Claim] when
// the transaction commits.
//
// tx must be a transaction (a *sql.Tx, as [omnibox.Outbox] passes; a
// *sql.DB is refused when the events take several chunks). MySQL keeps a
// transaction going after a failed statement, so when the events take
// several chunks Insert sets a savepoint first and rolls back to it on
// error: an error leaves no event of the call written, and the transaction
// usable, whatever the caller then does with it.
//
// An event ID already in the table returns an error wrapping
// [omnibox.ErrDuplicateEventID] (and the driver's *mysql.MySQLError, number
// 1062). An event whose CreatedAt is outside the years 1000 to 9999 (the
// range of DATETIME) returns an *[omnibox.EventError] wrapping
// [omnibox.ErrInvalidEvent].
func (s *Store) Insert(ctx context.Context, tx omnibox.DBTX, params omnibox.InsertParams) error {
	events := params.Events
	for i, ev := range events {
		if y := ev.CreatedAt.UTC().Year(); y < 1000 || y > 9999 {
			return &omnibox.EventError{
				Index:  i,
				ID:     ev.ID,
				Reason: fmt.Sprintf("CreatedAt %s is outside the years 1000 to 9999 that MySQL's DATETIME holds", ev.CreatedAt.UTC().Format(time.RFC3339Nano)),
				Err:    omnibox.ErrInvalidEvent,
			}
		}
	}
	first := insertChunkLen(events)
	if first == len(events) {
		if first == 0 {
			return nil
		}
		return s.insertChunk(ctx, tx, events)
	}
	if _, ok := tx.(*sql.DB); ok {
		return fmt.Errorf("mysql: inserting %d events into %s takes several statements, which must run in a transaction: pass a *sql.Tx, not a *sql.DB", len(events), s.tableName)
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT omnibox_insert"); err != nil {
		return fmt.Errorf("mysql: inserting into %s: setting a savepoint: %w", s.tableName, err)
	}
	for len(events) > 0 {
		n := insertChunkLen(events)
		if err := s.insertChunk(ctx, tx, events[:n]); err != nil {
			if _, rbErr := tx.ExecContext(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT omnibox_insert"); rbErr != nil {
				err = errors.Join(err, fmt.Errorf("mysql: inserting into %s: rolling back to the savepoint: %w", s.tableName, rbErr))
			}
			return err
		}
		events = events[n:]
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT omnibox_insert"); err != nil {
		return fmt.Errorf("mysql: inserting into %s: releasing the savepoint: %w", s.tableName, err)
	}
	return nil
}

// insertChunkLen returns how many of events the next INSERT carries: at
// most maxInsertRows, and no more than maxInsertBytes of data unless the
// first event alone is larger.
func insertChunkLen(events []omnibox.Event) int {
	size := 0
	for i, ev := range events {
		if i == maxInsertRows {
			return i
		}
		size += eventSize(ev)
		if i > 0 && size > maxInsertBytes {
			return i
		}
	}
	return len(events)
}

// eventSize estimates the bytes an event takes in an INSERT.
func eventSize(ev omnibox.Event) int {
	n := len(ev.ID) + len(ev.Topic) + len(ev.Key) + len(ev.Payload) + len(timeLayout) + 64
	for k, v := range ev.Metadata {
		n += len(k) + len(v) + 6
	}
	return n
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
			return fmt.Errorf("mysql: encoding metadata of event %q: %w", ev.ID, err)
		}
		payload := ev.Payload
		if payload == nil {
			payload = []byte{} // a nil []byte is sent as NULL
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
		// created_at goes as text in UTC: a time.Time would be converted to
		// the DSN's loc by the driver.
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt.UTC().Format(timeLayout), omnibox.PartitionOf(&ev))
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		if isDuplicateKey(err) {
			return fmt.Errorf("mysql: inserting into %s: %w: %w", s.tableName, omnibox.ErrDuplicateEventID, err)
		}
		return fmt.Errorf("mysql: inserting %d event(s) into %s: %w", len(events), s.tableName, err)
	}
	return nil
}

// isDuplicateKey reports whether err is MySQL's ER_DUP_ENTRY (1062). The
// outbox table's only unique key besides the auto-increment primary key is
// the one on event_id.
func isDuplicateKey(err error) bool {
	var myErr *mysql.MySQLError
	return errors.As(err, &myErr) && myErr.Number == 1062
}
