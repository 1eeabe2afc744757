package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/omnibox-go/omnibox"
)

// Complete records the outcome of params.Owner's claim and frees its
// partitions, following [omnibox.RelayStore]: delivered events are deleted
// (or, with [Config.Retention], kept as delivered), retried ones wait for
// their delay on the database's clock, dead ones are kept as dead, released
// ones are claimable at once. Events and partitions no longer leased to
// params.Owner are left alone. tx should be a transaction, so that the
// outcome is recorded whole; its first statement writes, so a deferred
// transaction takes the write lock before it reads.
func (s *Store) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	if params.Owner == "" {
		return nil, errors.New("sqlite: complete: Owner is empty")
	}
	res := &omnibox.CompleteResult{}
	if len(params.Delivered) > 0 {
		r, err := tx.ExecContext(ctx, s.deliverSQL, jsonArray(params.Delivered), params.Owner)
		if err != nil {
			return nil, fmt.Errorf("sqlite: marking %d event(s) delivered in %s: %w%s", len(params.Delivered), s.tableName, err, busyHint(err))
		}
		n, err := r.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("sqlite: marking events delivered in %s: %w", s.tableName, err)
		}
		res.Delivered = int(n)
	}
	for _, f := range params.Retry {
		if _, err := tx.ExecContext(ctx, s.retrySQL, f.Seq, params.Owner, f.Error, max(f.Delay, 0).Microseconds()); err != nil {
			return nil, fmt.Errorf("sqlite: scheduling a retry of event %d in %s: %w%s", f.Seq, s.tableName, err, busyHint(err))
		}
	}
	for _, f := range params.Dead {
		if _, err := tx.ExecContext(ctx, s.deadSQL, f.Seq, params.Owner, f.Error); err != nil {
			return nil, fmt.Errorf("sqlite: marking event %d dead in %s: %w%s", f.Seq, s.tableName, err, busyHint(err))
		}
	}
	if len(params.Released) > 0 {
		if _, err := tx.ExecContext(ctx, s.releaseSQL, jsonArray(params.Released), params.Owner, params.ReleaseError); err != nil {
			return nil, fmt.Errorf("sqlite: releasing %d event(s) in %s: %w%s", len(params.Released), s.tableName, err, busyHint(err))
		}
	}
	if _, err := tx.ExecContext(ctx, s.freePartsSQL, params.Owner); err != nil {
		return nil, fmt.Errorf("sqlite: freeing the partitions of %s_parts: %w%s", s.tableName, err, busyHint(err))
	}
	return res, nil
}
