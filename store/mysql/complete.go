package mysql

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/omnibox-go/omnibox"
)

// Complete records the outcome of params.Owner's claim and frees its
// partitions, following [omnibox.RelayStore]: delivered events are deleted
// (or, with [Config.Retention], kept as delivered), retried ones wait for
// their delay, dead ones are kept as dead, released ones are claimable at
// once. Errors are recorded cut to 64 KiB, invalid UTF-8 replaced, so that
// the TEXT column takes them; an empty one records none. Failed events with
// the same error (and, for retries, the same delay) are updated by one
// statement.
//
// Only the events still claimed by params.Owner, in partitions still leased
// to it, are affected: once another claim has taken a partition over, the
// events of the old claim that it did not take (they still name the old
// owner) belong to the new lease too. Complete first finds the partitions
// leased to params.Owner by a consistent read of Table + "_parts", then
// locks those by primary key (SELECT ... FOR UPDATE, which reads their
// latest version) and keeps those still leased to it; a locking read
// filtering on claimed_by would scan the partition table and, under
// REPEATABLE READ, keep every row of it locked until the transaction ends,
// serializing the completions of all relays. tx should be a transaction,
// so that the outcome is recorded whole. When ctx has a deadline, Complete
// first sets the guards that Claim sets.
func (s *Store) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	if params.Owner == "" {
		return nil, errors.New("mysql: complete: Owner is empty")
	}
	if err := s.guard(ctx, tx); err != nil {
		return nil, fmt.Errorf("mysql: complete in %s: %w", s.tableName, err)
	}
	res := &omnibox.CompleteResult{}
	parts, err := s.ownedParts(ctx, tx, params.Owner)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return res, nil
	}
	owned := ") AND part IN (" + seqList(parts) + ")"
	for chunk := range chunks(params.Delivered) {
		r, err := tx.ExecContext(ctx, s.deliverPrefix+seqList(chunk)+owned, params.Owner)
		if err != nil {
			return nil, fmt.Errorf("mysql: marking %d event(s) delivered in %s: %w", len(params.Delivered), s.tableName, err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("mysql: marking events delivered in %s: %w", s.tableName, err)
		}
		res.Delivered += int(n)
	}
	for _, g := range groupFailed(params.Retry, true) {
		for chunk := range chunks(g.seqs) {
			if _, err := tx.ExecContext(ctx, s.retryPrefix+seqList(chunk)+owned, g.lastError, g.delay, params.Owner); err != nil {
				return nil, fmt.Errorf("mysql: scheduling a retry of %d event(s) in %s: %w", len(chunk), s.tableName, err)
			}
		}
	}
	for _, g := range groupFailed(params.Dead, false) {
		for chunk := range chunks(g.seqs) {
			if _, err := tx.ExecContext(ctx, s.deadPrefix+seqList(chunk)+owned, g.lastError, params.Owner); err != nil {
				return nil, fmt.Errorf("mysql: marking %d event(s) dead in %s: %w", len(chunk), s.tableName, err)
			}
		}
	}
	releaseError := lastError(params.ReleaseError)
	for chunk := range chunks(params.Released) {
		if _, err := tx.ExecContext(ctx, s.releasePrefix+seqList(chunk)+owned, releaseError, params.Owner); err != nil {
			return nil, fmt.Errorf("mysql: releasing %d event(s) in %s: %w", len(params.Released), s.tableName, err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.freePartsPrefix+seqList(parts)+")", params.Owner); err != nil {
		return nil, fmt.Errorf("mysql: freeing the partitions of %s: %w", s.tableName, err)
	}
	return res, nil
}

// ownedParts returns the partitions leased to owner, locked for the
// transaction: those that a consistent read finds leased to it and that are
// still, by their latest version, once locked by primary key.
func (s *Store) ownedParts(ctx context.Context, tx omnibox.DBTX, owner string) ([]int64, error) {
	parts, err := s.queryParts(ctx, tx, s.ownedPartsSQL, owner)
	if err != nil || len(parts) == 0 {
		return nil, err
	}
	return s.queryParts(ctx, tx, s.lockPartsPrefix+seqList(parts)+") FOR UPDATE", owner)
}

func (s *Store) queryParts(ctx context.Context, tx omnibox.DBTX, query, owner string) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, query, owner)
	if err != nil {
		return nil, fmt.Errorf("mysql: reading the partitions leased in %s_parts: %w", s.tableName, err)
	}
	defer rows.Close()
	var parts []int64
	for rows.Next() {
		var part int64
		if err := rows.Scan(&part); err != nil {
			return nil, fmt.Errorf("mysql: reading the partitions leased in %s_parts: %w", s.tableName, err)
		}
		parts = append(parts, part)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: reading the partitions leased in %s_parts: %w", s.tableName, err)
	}
	return parts, nil
}

// failedGroup is the failed events that one statement updates: those with
// the same error and delay.
type failedGroup struct {
	delay     int64 // microseconds
	lastError any   // nil or a string
	seqs      []int64
}

// groupFailed groups events by error and, when withDelay, delay, in the
// order of their first event.
func groupFailed(events []omnibox.FailedEvent, withDelay bool) []failedGroup {
	type key struct {
		delay int64
		err   string
	}
	var groups []failedGroup
	index := make(map[key]int, len(events))
	for _, ev := range events {
		k := key{err: ev.Error}
		if withDelay {
			k.delay = max(ev.Delay, 0).Microseconds()
		}
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, failedGroup{delay: k.delay, lastError: lastError(ev.Error)})
		}
		groups[i].seqs = append(groups[i].seqs, ev.Seq)
	}
	return groups
}

// lastError returns what to store as an event's last error: NULL when msg
// is empty, otherwise msg with invalid UTF-8 replaced, cut to
// maxLastErrorLen bytes.
func lastError(msg string) any {
	if msg == "" {
		return nil
	}
	return truncateUTF8(strings.ToValidUTF8(msg, "\uFFFD"), maxLastErrorLen)
}
