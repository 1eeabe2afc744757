package postgres

import (
	"cmp"
	"context"
	"fmt"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// ListDead returns dead events in seq order, following
// [omnibox.DeadLetterStore].
func (s *Store) ListDead(ctx context.Context, db omnibox.DBTX, params omnibox.ListDeadParams) ([]omnibox.DeadEvent, error) {
	if params.Limit < 0 {
		return nil, fmt.Errorf("postgres: list dead events: Limit must not be negative, got %d", params.Limit)
	}
	rows, err := db.QueryContext(ctx, s.listDeadSQL, params.AfterSeq, cmp.Or(params.Limit, 100), params.Topic)
	if err != nil {
		return nil, fmt.Errorf("postgres: listing dead events of %s: %w", s.tableName, err)
	}
	defer rows.Close()
	var out []omnibox.DeadEvent
	for rows.Next() {
		var (
			ev       omnibox.DeadEvent
			metadata string
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &ev.CreatedAt, &ev.Attempts, &ev.LastError, &ev.DiedAt); err != nil {
			return nil, fmt.Errorf("postgres: listing dead events of %s: scanning: %w", s.tableName, err)
		}
		if ev.Payload == nil {
			ev.Payload = []byte{}
		}
		ev.CreatedAt, ev.DiedAt = ev.CreatedAt.UTC(), ev.DiedAt.UTC()
		if ev.Metadata, err = metadatajson.Decode(metadata); err != nil {
			return nil, fmt.Errorf("postgres: listing dead events of %s: decoding metadata of event %q: %w", s.tableName, ev.ID, err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: listing dead events of %s: %w", s.tableName, err)
	}
	return out, nil
}

// Requeue makes the dead events among seqs pending again with no attempts,
// and reports how many it requeued.
func (s *Store) Requeue(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execCount(ctx, db, s.requeueSQL, "requeueing dead events", int64Array(seqs))
}

// Discard deletes the dead events among seqs and reports how many it
// deleted.
func (s *Store) Discard(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execCount(ctx, db, s.discardSQL, "discarding dead events", int64Array(seqs))
}
