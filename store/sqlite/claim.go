package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// claimable returns the condition under which the event o, pending or
// waiting (state IN (0, 1), which the caller checks), may be claimed: it is
// pending or its retry is due, and no earlier event of its key in its
// partition is waiting or, when the parameter blockOnDead is true, dead. The
// NOT EXISTS probes the failed index: one lookup per keyed event.
func claimable(table, blockOnDead string) string {
	return `(o.state = 0 OR o.next_attempt_at <= ` + nowMicros + `)
              AND (o.event_key = '' OR NOT EXISTS (
                  SELECT 1 FROM ` + table + ` b
                  WHERE b.part = o.part AND b.event_key = o.event_key AND b.seq < o.seq
                    AND b.state IN (1, 2) AND (b.state = 1 OR ` + blockOnDead + `)))`
}

// noSeq stands, in the claim's walk, for "no further claimable event in
// this partition": the largest seq, so that it sorts after every real one.
const noSeq = "9223372036854775807"

// claimSQL returns the claim statement for the quoted outbox and partition
// tables. Parameters: ?1 the most partitions to take, ?2 limit, ?3 owner
// prefix (empty for none), ?4 owner, ?5 whether dead events block their key.
//
// candidates are the free partitions (no lease, an expired one on the
// database's clock, or one whose owner starts with the prefix) with the seq
// of each one's oldest claimable event: a correlated subquery, one probe of
// the pending index (part, seq) per partition, walking past the events that
// are not claimable. heads keeps the ?1 partitions whose oldest claimable
// event is oldest; share is ceil(limit / heads). Both are materialized, so
// that each subquery runs once.
//
// SQLite has no LATERAL join, so walk, a recursive CTE, takes each head's
// next claimable events: its queue is ordered by seq (ORDER BY 2), so it
// yields events oldest first over all heads, and each row it yields queues
// the next claimable event of its partition (one probe of the pending index
// from the row's seq), up to share per partition; its LIMIT stops the walk
// after limit rows. That is the limit oldest among each head's share oldest
// claimable events, read with about limit index probes whatever the
// backlog. A partition with no further event queues noSeq, which sorts last
// and is dropped. SQLite computes the IN list before the UPDATE changes any
// row; RETURNING gives the rows in no defined order.
func claimSQL(table, parts string) string {
	return `WITH candidates AS MATERIALIZED (
    SELECT p.part, (
        SELECT o.seq FROM ` + table + ` o
        WHERE o.part = p.part AND o.state IN (0, 1)
          AND ` + claimable(table, "?5") + `
        ORDER BY o.seq LIMIT 1
    ) AS seq
    FROM ` + parts + ` p
    WHERE p.claimed_until IS NULL OR p.claimed_until < ` + nowMicros + `
       OR (?3 <> '' AND substr(p.claimed_by, 1, length(?3)) = ?3)
), heads AS MATERIALIZED (
    SELECT part, seq FROM candidates WHERE seq IS NOT NULL ORDER BY seq LIMIT ?1
), share AS MATERIALIZED (
    SELECT (?2 + count(*) - 1) / count(*) AS n FROM heads
), walk(part, seq, n) AS (
    SELECT part, seq, 1 FROM heads
    UNION ALL
    SELECT w.part, coalesce((
        SELECT o.seq FROM ` + table + ` o
        WHERE o.part = w.part AND o.seq > w.seq AND o.state IN (0, 1)
          AND ` + claimable(table, "?5") + `
        ORDER BY o.seq LIMIT 1
    ), ` + noSeq + `), w.n + 1
    FROM walk w
    WHERE w.seq < ` + noSeq + ` AND w.n < (SELECT n FROM share)
    ORDER BY 2
    LIMIT ?2
)
UPDATE ` + table + `
SET claimed_by = ?4
WHERE seq IN (SELECT seq FROM walk WHERE seq < ` + noSeq + `)
RETURNING seq, part, event_id, topic, event_key, payload, metadata, created_at, attempts`
}

// Claim leases partitions and up to params.Limit of their oldest claimable
// events to params.Owner for params.Lease, following the contract of
// [omnibox.RelayStore].
//
// tx should be a transaction (a *sql.Tx) that the caller commits right
// after, as [omnibox.Relay] does; given a *sql.DB, Claim runs in a
// transaction of its own. Claims are serialized by SQLite's single write
// lock: the claim's first statement writes (it records params.Relay as
// live), so it takes the write lock before the claim reads anything, even
// in a deferred transaction (a DSN without _txlock=immediate), provided it
// is the transaction's first statement. A concurrent claim waits for the
// lock, up to the connection's busy_timeout, and then sees this claim's
// leases. Then Claim counts the live relays, picks at most ceil(64 / live
// relays) free partitions, those whose oldest claimable event is oldest,
// takes up to an equal share of the limit from each, keeps the params.Limit
// oldest, and leases the partitions that gave events. It reads about Limit
// rows of the pending index however large the backlog (plus one probe per
// free partition). Leases are kept to the microsecond and measured on the
// database's clock, which SQLite reads to the millisecond.
//
// The first statement records params.Relay with params.Nonce; when the relay
// ID is recorded as live with another non-empty nonce (and params.Restart is
// not set) it changes nothing, and Claim claims nothing and returns an error
// wrapping [omnibox.ErrRelayIDInUse] that names the relay ID. There is no
// server-side guard to set: a wait for the write lock ends when ctx does
// (modernc.org/sqlite's busy handler watches the call's context).
func (s *Store) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	switch {
	case params.Limit <= 0:
		return nil, fmt.Errorf("sqlite: claim: Limit must be positive, got %d", params.Limit)
	case params.Lease < time.Microsecond:
		return nil, fmt.Errorf("sqlite: claim: Lease must be at least 1µs, got %s", params.Lease)
	case params.Owner == "":
		return nil, errors.New("sqlite: claim: Owner is empty")
	}
	db, ok := tx.(*sql.DB)
	if !ok {
		return s.claim(ctx, tx, params)
	}
	own, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: begin: %w%s", s.tableName, err, busyHint(err))
	}
	defer func() { _ = own.Rollback() }()
	res, err := s.claim(ctx, own, params)
	if err != nil {
		return nil, err
	}
	if err := own.Commit(); err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: commit: %w%s", s.tableName, err, busyHint(err))
	}
	return res, nil
}

// claim is [Store.Claim] on tx, a transaction.
func (s *Store) claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	lease := params.Lease.Microseconds()
	relay := cmp.Or(params.Relay, params.Owner)
	check := params.Nonce != "" && !params.Restart
	r, err := tx.ExecContext(ctx, s.seenSQL, relay, lease, params.Nonce, check)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim: recording the relay in %s_relays: %w%s", s.tableName, err, busyHint(err))
	}
	if recorded, err := r.RowsAffected(); err != nil {
		return nil, fmt.Errorf("sqlite: claim: recording the relay in %s_relays: %w", s.tableName, err)
	} else if recorded == 0 {
		return nil, fmt.Errorf("sqlite: claim from %s: relay ID %q is recorded as live by another process (another nonce): %w",
			s.tableName, relay, omnibox.ErrRelayIDInUse)
	}
	if _, err := tx.ExecContext(ctx, s.expireSQL, relay); err != nil {
		return nil, fmt.Errorf("sqlite: claim: deleting expired relays from %s_relays: %w%s", s.tableName, err, busyHint(err))
	}
	var others int64
	if err := tx.QueryRowContext(ctx, s.countSQL, relay).Scan(&others); err != nil {
		return nil, fmt.Errorf("sqlite: claim: counting the live relays in %s_relays: %w%s", s.tableName, err, busyHint(err))
	}
	maxParts := (omnibox.Partitions + others) / (others + 1) // ceil(Partitions / live relays)

	rows, err := tx.QueryContext(ctx, s.claimSQL, maxParts, int64(params.Limit), params.OwnerPrefix, params.Owner, params.BlockOnDead)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: %w%s", s.tableName, err, busyHint(err))
	}
	defer rows.Close()
	res := &omnibox.ClaimResult{Events: make([]omnibox.ClaimedEvent, 0, min(params.Limit, 1024))}
	var parts []int64
	for rows.Next() {
		var (
			ev        omnibox.ClaimedEvent
			part      int64
			metadata  string
			createdAt int64
		)
		if err := rows.Scan(&ev.Seq, &part, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts); err != nil {
			return nil, fmt.Errorf("sqlite: claim from %s: scanning: %w", s.tableName, err)
		}
		if ev.Payload == nil {
			ev.Payload = []byte{}
		}
		ev.CreatedAt = time.UnixMicro(createdAt).UTC()
		if ev.Metadata, err = metadatajson.Decode(metadata); err != nil {
			return nil, fmt.Errorf("sqlite: claim from %s: decoding metadata of event %q: %w", s.tableName, ev.ID, err)
		}
		res.Events = append(res.Events, ev)
		if !slices.Contains(parts, part) {
			parts = append(parts, part)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: %w%s", s.tableName, err, busyHint(err))
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: %w%s", s.tableName, err, busyHint(err))
	}
	if len(parts) > 0 {
		if _, err := tx.ExecContext(ctx, s.leaseSQL, params.Owner, lease, jsonArray(parts)); err != nil {
			return nil, fmt.Errorf("sqlite: claim: leasing partitions in %s_parts: %w%s", s.tableName, err, busyHint(err))
		}
	}
	slices.SortFunc(res.Events, func(a, b omnibox.ClaimedEvent) int { return cmp.Compare(a.Seq, b.Seq) })
	return res, nil
}

// RelayConcurrencyLimit returns 1: a relay on SQLite has one batch in
// flight at a time. SQLite has one writer; a second batch loop would take
// turns with the first and starve the application's writers of the write
// lock.
func (s *Store) RelayConcurrencyLimit() int { return 1 }
