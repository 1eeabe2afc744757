package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// insertColumns is the number of parameters per inserted row.
const insertColumns = 7

// maxInsertRows is the most rows one INSERT statement carries, so that it
// stays within PostgreSQL's limit of 65535 parameters per statement.
const maxInsertRows = 65535 / insertColumns

// Insert writes the events through tx, in order: their seq values, hence the
// claim order, follow the order of params.Events. Each chunk of up to
// maxInsertRows events is written by one multi-row INSERT; several chunks
// are all or nothing only because they run in the caller's transaction, so
// tx must be one (a *sql.Tx, as [omnibox.Outbox] passes). The events become
// visible to [Store.Claim] when that transaction commits.
//
// An event ID already in the table returns an error wrapping
// [omnibox.ErrDuplicateEventID] (and the driver's error); the transaction is
// then aborted and must be rolled back.
func (s *Store) Insert(ctx context.Context, tx omnibox.DBTX, params omnibox.InsertParams) error {
	for events := range slices.Chunk(params.Events, maxInsertRows) {
		if err := s.insertChunk(ctx, tx, events); err != nil {
			return err
		}
	}
	if s.notifyChannel != "" && len(params.Events) > 0 {
		if _, err := tx.ExecContext(ctx, "SELECT pg_notify($1, '')", s.notifyChannel); err != nil {
			return fmt.Errorf("postgres: notifying channel %s: %w", s.notifyChannel, err)
		}
	}
	return nil
}

func (s *Store) insertChunk(ctx context.Context, tx omnibox.DBTX, events []omnibox.Event) error {
	var b strings.Builder
	b.Grow(len(s.insertPrefix) + len(events)*48)
	b.WriteString(s.insertPrefix)
	args := make([]any, 0, len(events)*insertColumns)
	for i, ev := range events {
		metadata, err := metadatajson.Encode(ev.Metadata)
		if err != nil {
			return fmt.Errorf("postgres: encoding metadata of event %q: %w", ev.ID, err)
		}
		payload := ev.Payload
		if payload == nil {
			payload = []byte{} // a nil []byte is sent as NULL
		}
		if i > 0 {
			b.WriteString(", ")
		}
		p := i * insertColumns
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d::jsonb, $%d, $%d)", p+1, p+2, p+3, p+4, p+5, p+6, p+7)
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt, omnibox.PartitionOf(&ev))
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("postgres: inserting into %s: %w: %w", s.tableName, omnibox.ErrDuplicateEventID, err)
		}
		return fmt.Errorf("postgres: inserting %d event(s) into %s: %w", len(events), s.tableName, err)
	}
	return nil
}

// isUniqueViolation reports whether err is PostgreSQL's unique_violation
// (SQLSTATE 23505). Both *pq.Error and *pgconn.PgError have a SQLState
// method, so neither driver needs to be imported.
func isUniqueViolation(err error) bool {
	var pgErr interface{ SQLState() string }
	return errors.As(err, &pgErr) && pgErr.SQLState() == "23505"
}
