package sqlite

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// ListDead returns dead events in seq order, following
// [omnibox.DeadLetterStore]. It walks the table in seq order from
// params.AfterSeq, so when few events are dead it reads the rest of the
// table: it is for operators, not for a hot path.
func (s *Store) ListDead(ctx context.Context, db omnibox.DBTX, params omnibox.ListDeadParams) ([]omnibox.DeadEvent, error) {
	if params.Limit < 0 {
		return nil, fmt.Errorf("sqlite: list dead events: Limit must not be negative, got %d", params.Limit)
	}
	rows, err := db.QueryContext(ctx, s.listDeadSQL, params.AfterSeq, cmp.Or(params.Limit, 100), params.Topic)
	if err != nil {
		return nil, fmt.Errorf("sqlite: listing dead events of %s: %w%s", s.tableName, err, busyHint(err))
	}
	defer rows.Close()
	var out []omnibox.DeadEvent
	for rows.Next() {
		var (
			ev                omnibox.DeadEvent
			metadata          string
			createdAt, diedAt int64
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts, &ev.LastError, &diedAt); err != nil {
			return nil, fmt.Errorf("sqlite: listing dead events of %s: scanning: %w", s.tableName, err)
		}
		if ev.Payload == nil {
			ev.Payload = []byte{}
		}
		ev.CreatedAt, ev.DiedAt = time.UnixMicro(createdAt).UTC(), time.UnixMicro(diedAt).UTC()
		if ev.Metadata, err = metadatajson.Decode(metadata); err != nil {
			return nil, fmt.Errorf("sqlite: listing dead events of %s: decoding metadata of event %q: %w", s.tableName, ev.ID, err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: listing dead events of %s: %w%s", s.tableName, err, busyHint(err))
	}
	return out, nil
}

// Requeue makes the dead events among seqs pending again with no attempts,
// and reports how many it requeued. They keep their seq, so each is claimed
// before the later events of its key.
func (s *Store) Requeue(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execCount(ctx, db, s.requeueSQL, "requeueing dead events", jsonArray(seqs))
}

// Discard deletes the dead events among seqs and reports how many it
// deleted.
func (s *Store) Discard(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execCount(ctx, db, s.discardSQL, "discarding dead events", jsonArray(seqs))
}
