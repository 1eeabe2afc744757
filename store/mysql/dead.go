package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/omnibox-go/omnibox"
)

// ListDead returns dead events in seq order, following
// [omnibox.DeadLetterStore]. It walks the primary key from
// params.AfterSeq, so its cost grows with the events kept (pending and
// delivered) after that point: it is meant for operators, not for a hot
// path.
func (s *Store) ListDead(ctx context.Context, db omnibox.DBTX, params omnibox.ListDeadParams) ([]omnibox.DeadEvent, error) {
	if params.Limit < 0 {
		return nil, fmt.Errorf("mysql: list dead events: Limit must not be negative, got %d", params.Limit)
	}
	query := s.listDeadPrefix
	args := []any{params.AfterSeq}
	if params.Topic != "" {
		query += " AND topic = CAST(? AS BINARY)"
		args = append(args, params.Topic)
	}
	query += " ORDER BY seq LIMIT " + strconv.Itoa(cmp.Or(params.Limit, 100))
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("mysql: listing dead events of %s: %w", s.tableName, err)
	}
	defer rows.Close()
	var out []omnibox.DeadEvent
	for rows.Next() {
		var (
			ev        omnibox.DeadEvent
			metadata  string
			createdAt string
			diedAt    sql.NullString
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts, &ev.LastError, &diedAt); err != nil {
			return nil, fmt.Errorf("mysql: listing dead events of %s: scanning: %w", s.tableName, err)
		}
		if err := decodeEvent(&ev.Event, metadata, createdAt); err != nil {
			return nil, fmt.Errorf("mysql: listing dead events of %s: %w", s.tableName, err)
		}
		if diedAt.Valid {
			if ev.DiedAt, err = time.ParseInLocation(timeLayout, diedAt.String, time.UTC); err != nil {
				return nil, fmt.Errorf("mysql: listing dead events of %s: reading dead_at of event %q: %w", s.tableName, ev.ID, err)
			}
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: listing dead events of %s: %w", s.tableName, err)
	}
	return out, nil
}

// Requeue makes the dead events among seqs pending again with no attempts,
// and reports how many it requeued. They keep their seq, so each is
// claimed before the later events of its key.
func (s *Store) Requeue(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execChunks(ctx, db, s.requeuePrefix, "requeueing dead events", seqs)
}

// Discard deletes the dead events among seqs and reports how many it
// deleted.
func (s *Store) Discard(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execChunks(ctx, db, s.discardPrefix, "discarding dead events", seqs)
}

// execChunks runs prefix + seqs + ")" for each chunk of seqs and adds up
// the rows affected.
func (s *Store) execChunks(ctx context.Context, db omnibox.DBTX, prefix, what string, seqs []int64) (int, error) {
	total := 0
	for chunk := range chunks(seqs) {
		r, err := db.ExecContext(ctx, prefix+seqList(chunk)+")")
		if err != nil {
			return total, fmt.Errorf("mysql: %s in %s: %w", what, s.tableName, err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("mysql: %s in %s: %w", what, s.tableName, err)
		}
		total += int(n)
	}
	return total, nil
}
