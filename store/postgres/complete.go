package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/omnibox-go/omnibox"
)

// Complete records the outcome of params.Owner's claim and frees its
// partitions, following [omnibox.RelayStore]: delivered events are deleted
// (or, with [Config.Retention], kept as delivered), retried ones wait for
// their delay, dead ones are kept as dead, released ones are claimable at
// once. Events and partitions no longer leased to params.Owner are left
// alone. tx should be a transaction, so that the outcome is recorded whole.
// When ctx has a deadline, its first statement sets the guards that Claim
// sets, for the rest of the transaction.
func (s *Store) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	if params.Owner == "" {
		return nil, errors.New("postgres: complete: Owner is empty")
	}
	if len(params.Retry) == 0 && len(params.Dead) == 0 && (len(params.Released) == 0 || params.ReleaseError == "") {
		// The common outcome: one statement.
		var n, ignored int64
		if err := tx.QueryRowContext(ctx, s.deliverAllSQL, int64Array(params.Delivered), params.Owner, guardMillis(ctx)).Scan(&ignored, &n); err != nil {
			return nil, fmt.Errorf("postgres: marking %d event(s) delivered in %s: %w", len(params.Delivered), s.tableName, err)
		}
		return &omnibox.CompleteResult{Delivered: int(n)}, nil
	}
	// An asynchronous commit for this transaction (an outcome lost in a
	// database crash only gets its events published again, decision 18),
	// and the guards of ctx's deadline.
	if _, err := tx.ExecContext(ctx, s.completeGuardSQL, guardMillis(ctx)); err != nil {
		return nil, fmt.Errorf("postgres: complete in %s: %w", s.tableName, err)
	}
	res := &omnibox.CompleteResult{}
	if len(params.Delivered) > 0 {
		var n int64
		if err := tx.QueryRowContext(ctx, s.deliverSQL, int64Array(params.Delivered), params.Owner).Scan(&n); err != nil {
			return nil, fmt.Errorf("postgres: marking %d event(s) delivered in %s: %w", len(params.Delivered), s.tableName, err)
		}
		res.Delivered = int(n)
	}
	for _, f := range params.Retry {
		if _, err := tx.ExecContext(ctx, s.retrySQL, int64Array([]int64{f.Seq}), params.Owner, f.Error, max(f.Delay, 0).Microseconds()); err != nil {
			return nil, fmt.Errorf("postgres: scheduling a retry of event %d in %s: %w", f.Seq, s.tableName, err)
		}
	}
	for _, f := range params.Dead {
		if _, err := tx.ExecContext(ctx, s.deadSQL, int64Array([]int64{f.Seq}), params.Owner, f.Error); err != nil {
			return nil, fmt.Errorf("postgres: marking event %d dead in %s: %w", f.Seq, s.tableName, err)
		}
	}
	// Released events need no write of their own (freeing the partition
	// frees them), unless they carry an error to record.
	if len(params.Released) > 0 && params.ReleaseError != "" {
		if _, err := tx.ExecContext(ctx, s.releaseSQL, int64Array(params.Released), params.Owner, params.ReleaseError); err != nil {
			return nil, fmt.Errorf("postgres: releasing %d event(s) in %s: %w", len(params.Released), s.tableName, err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.freePartsSQL, params.Owner); err != nil {
		return nil, fmt.Errorf("postgres: freeing the partitions of %s: %w", s.tableName, err)
	}
	return res, nil
}
