package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
)

// claimSQL returns the claim statement for the qualified, quoted outbox and
// partition tables. Parameters: $1 the most partitions to take, $2 limit,
// $3 owner prefix (empty for none), $4 owner, $5 lease in microseconds, $6
// whether dead events block their key.
//
// Claims run concurrently; partition rows are the only thing they contend
// for. free lists, as the statement's snapshot sees them, the partitions with
// no lease (or an expired one, or one of the owner prefix) and a claimable
// event, with the oldest claimable event's seq (one probe of the pending
// index per partition) and the row's version (xmin). heads then locks, in
// that order, up to $1 of them with FOR UPDATE SKIP LOCKED: a partition
// another claim is taking is stepped over, not waited for, and one whose row
// changed since the snapshot (another claim leased it, or leased and freed it
// after publishing its events) fails the version check when PostgreSQL
// rechecks the locked row, so the events read from the snapshot are never
// stale for the partitions this claim takes. picked takes, from each, its
// oldest claimable events up to an equal share of the limit (an index range
// scan per partition, whatever the backlog, reading the events' columns
// once). An event is claimable when it is pending, or waiting for a retry
// that is due, and no earlier event of its key is waiting or (with $6) dead;
// free also notes whether the partition holds such a failed event at all, so
// that picked looks for one per event only where there is one (OFFSET 0
// keeps that a probe per partition: without it the planner may turn the
// EXISTS into a hashed subplan that reads every failed event of the table).
// The partitions that gave events are leased, each recording the seqs taken
// from it; the events themselves are only read (marking them would rewrite
// each row and its index entries).
//
// The first column of every row is the number of free partitions and the
// second the number locked: when the first is positive and the second zero,
// every free-looking partition was being taken by another claim, and the
// claim is worth running again. A claim that took nothing returns one row
// with NULL event columns.
func claimSQL(table, parts string) string {
	const now = "statement_timestamp()"
	due := `(o.state = 0 OR o.next_attempt_at <= ` + now + `)`
	// blocks is whether an event b holds back the later events of its key.
	const blocks = `b.state IN (1, 2) AND (b.state = 1 OR $6::boolean)`
	notHeldBack := `(o.event_key = '' OR NOT EXISTS (
              SELECT 1 FROM ` + table + ` b
              WHERE b.part = o.part AND b.event_key = o.event_key AND b.seq < o.seq AND ` + blocks + `))`
	return `WITH free AS (
    SELECT p.part, p.xmin AS version, h.seq, h.blocked
    FROM ` + parts + ` p
    CROSS JOIN LATERAL (
        SELECT o.seq, EXISTS (SELECT 1 FROM ` + table + ` b WHERE b.part = o.part AND ` + blocks + ` OFFSET 0) AS blocked
        FROM ` + table + ` o
        WHERE o.part = p.part AND o.state IN (0, 1)
          AND ` + due + ` AND ` + notHeldBack + `
        ORDER BY o.seq LIMIT 1
    ) h
    WHERE p.claimed_until IS NULL OR p.claimed_until < ` + now + `
       OR ($3::text <> '' AND starts_with(p.claimed_by, $3::text))
), heads AS (
    SELECT free.part, free.seq, free.blocked
    FROM free
    JOIN ` + parts + ` l ON l.part = free.part
    WHERE l.xmin = free.version
    ORDER BY free.seq
    LIMIT $1
    FOR UPDATE OF l SKIP LOCKED
), share AS (
    SELECT ceil($2::float8 / greatest(count(*), 1))::bigint AS n FROM heads
), picked AS (
    SELECT c.*
    FROM heads
    CROSS JOIN LATERAL (
        SELECT o.seq, o.part, o.event_id, o.topic, o.event_key, o.payload, o.metadata, o.created_at, o.attempts
        FROM ` + table + ` o
        WHERE o.part = heads.part AND o.state IN (0, 1)
          AND ` + due + ` AND (NOT heads.blocked OR ` + notHeldBack + `)
        ORDER BY o.seq LIMIT (SELECT n FROM share)
    ) c
    ORDER BY c.seq
    LIMIT $2
), leased AS (
    UPDATE ` + parts + ` p
    SET claimed_by = $4::text, claimed_until = ` + now + ` + $5::bigint * interval '1 microsecond', claimed_seqs = g.seqs
    FROM (SELECT part, array_agg(seq) AS seqs FROM picked GROUP BY part) g
    WHERE p.part = g.part
), counts AS (
    SELECT (SELECT count(*) FROM free) AS free, (SELECT count(*) FROM heads) AS locked
)
SELECT counts.free, counts.locked, e.seq, e.event_id, e.topic, e.event_key, e.payload, e.metadata::text, e.created_at, e.attempts
FROM counts
LEFT JOIN picked e ON true
ORDER BY e.seq`
}

// Claim leases partitions and up to params.Limit of their oldest claimable
// events to params.Owner for params.Lease, following the contract of
// [omnibox.RelayStore].
//
// tx must be a transaction (a *sql.Tx) that the caller commits right after,
// at READ COMMITTED ([Store.RelayTxOptions]). Claim first records
// params.Relay as live and counts the other live relays; then one statement
// claims from at most ceil(64 / live relays) partitions, stepping over those
// that concurrent claims are taking (and running again, a few times, when
// that left it nothing). The claim reads about Limit rows of the pending
// index (plus one per partition) however large the backlog, except the
// events of a key that wait behind a failed event of it, which it reads and
// steps over. The claimed events themselves are only read: the partitions'
// rows record the seqs. Sub-second leases are kept to the microsecond.
//
// The first statement records params.Relay with params.Nonce; when the relay
// ID is recorded as live with another non-empty nonce (and params.Restart is
// not set) it records nothing, Claim claims nothing and returns an error
// wrapping [omnibox.ErrRelayIDInUse] that names the relay ID. When ctx has a
// deadline, the same statement sets statement_timeout, lock_timeout and
// idle_in_transaction_session_timeout for the rest of the transaction to
// the time it leaves, so that the server ends a transaction whose relay
// stopped answering (docs/postgres.md).
func (s *Store) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	switch {
	case params.Limit <= 0:
		return nil, fmt.Errorf("postgres: claim: Limit must be positive, got %d", params.Limit)
	case params.Lease < time.Microsecond:
		return nil, fmt.Errorf("postgres: claim: Lease must be at least 1µs, got %s", params.Lease)
	case params.Owner == "":
		return nil, errors.New("postgres: claim: Owner is empty")
	}
	// For this transaction only: JIT off, since the planner's estimate of the
	// claim statement (64 index scans it cannot bound) can be far above
	// jit_above_cost, and compiling it took about 25 ms, several times the
	// claim itself; and an asynchronous commit, so that the partitions' row
	// locks, held until commit, are not held through a WAL flush. A claim
	// lost in a database crash only lets its events be claimed again:
	// duplicates, never a loss (docs/design.md, decision 18).
	relay := cmp.Or(params.Relay, params.Owner)
	check := params.Nonce != "" && !params.Restart
	var recorded, others int64
	if err := tx.QueryRowContext(ctx, s.membersSQL, relay, params.Lease.Microseconds(), params.Nonce, check, guardMillis(ctx)).Scan(&recorded, &others); err != nil {
		return nil, fmt.Errorf("postgres: claim: recording the relay in %s_relays: %w", s.tableName, err)
	}
	if recorded == 0 {
		return nil, fmt.Errorf("postgres: claim from %s: relay ID %q is recorded as live by another process (another nonce): %w",
			s.tableName, relay, omnibox.ErrRelayIDInUse)
	}
	maxParts := (omnibox.Partitions + others) / (others + 1) // ceil(Partitions / live relays)
	for attempt := 1; ; attempt++ {
		res, contended, err := s.claimOnce(ctx, tx, maxParts, params)
		if err != nil || !contended || attempt == claimAttempts {
			return res, err
		}
		// Every free-looking partition was being taken by another claim:
		// by the time it commits, this claim's next snapshot sees its
		// leases and picks among the partitions still free.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("postgres: claim from %s: %w", s.tableName, ctx.Err())
		case <-time.After(time.Duration(attempt) * time.Millisecond):
		}
	}
}

// claimAttempts is how many times Claim runs the claim statement while other
// claims are taking every free partition it sees.
const claimAttempts = 4

// claimOnce runs the claim statement once. contended reports that it took
// nothing while free-looking partitions were being taken by other claims.
func (s *Store) claimOnce(ctx context.Context, tx omnibox.DBTX, maxParts int64, params omnibox.ClaimParams) (res *omnibox.ClaimResult, contended bool, err error) {
	rows, err := tx.QueryContext(ctx, s.claimSQL, maxParts, int64(params.Limit), params.OwnerPrefix, params.Owner, params.Lease.Microseconds(), params.BlockOnDead)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: claim from %s: %w", s.tableName, err)
	}
	defer rows.Close()
	res = &omnibox.ClaimResult{Events: make([]omnibox.ClaimedEvent, 0, min(params.Limit, 1024))}
	for rows.Next() {
		var (
			free, locked             int64
			seq, attempts            sql.NullInt64
			id, topic, key, metadata sql.NullString
			payload                  []byte
			createdAt                sql.NullTime
		)
		if err := rows.Scan(&free, &locked, &seq, &id, &topic, &key, &payload, &metadata, &createdAt, &attempts); err != nil {
			return nil, false, fmt.Errorf("postgres: claim from %s: scanning: %w", s.tableName, err)
		}
		if !seq.Valid {
			// Nothing taken: the one row of the counts.
			contended = free > 0 && locked == 0
			continue
		}
		ev := omnibox.ClaimedEvent{
			Seq:      seq.Int64,
			Attempts: int(attempts.Int64),
			Event: omnibox.Event{
				ID: id.String, Topic: topic.String, Key: key.String, Payload: payload, CreatedAt: createdAt.Time.UTC(),
			},
		}
		if ev.Payload == nil {
			ev.Payload = []byte{}
		}
		if ev.Metadata, err = metadatajson.Decode(metadata.String); err != nil {
			return nil, false, fmt.Errorf("postgres: claim from %s: decoding metadata of event %q: %w", s.tableName, ev.ID, err)
		}
		res.Events = append(res.Events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("postgres: claim from %s: %w", s.tableName, err)
	}
	return res, contended, nil
}

// RelayTxOptions asks the relay to claim and complete at READ COMMITTED,
// whatever the database's default_transaction_isolation: the claim relies on
// each statement reading the latest committed rows, and on PostgreSQL
// rechecking a row that changed before it could be locked (under REPEATABLE
// READ that is a serialization error instead). It implements
// [omnibox.RelayTxOptioner].
func (s *Store) RelayTxOptions() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}
