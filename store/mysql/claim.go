package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/omnibox-go/omnibox"
)

// Claim leases partitions and up to params.Limit of their oldest claimable
// events to params.Owner for params.Lease, following the contract of
// [omnibox.RelayStore]. MySQL has neither UPDATE ... RETURNING nor (in
// MariaDB) LATERAL joins, so the claim is seven statements in tx (one more
// when expired relays are deleted, one more with a deadline):
//
//  1. The claim lock: SELECT ... FOR UPDATE of the one row of
//     Table + "_lock". When another claim's transaction holds it, the claim
//     waits (claims take milliseconds; a relay returning empty-handed would
//     idle for a poll interval). Held until tx ends, it serializes claims. (A row lock, not
//     GET_LOCK: GET_LOCK is held by the session, and would outlive the
//     transaction on a pooled connection.)
//  2. Membership: params.Relay (Owner when empty) is recorded as live for
//     one Lease in Table + "_relays", with params.Nonce, by INSERT ... ON
//     DUPLICATE KEY UPDATE, unless its row is live with another non-empty
//     nonce and params.Restart is not set: the row is then left as it is,
//     step 3 reads its nonce back, and Claim claims nothing and returns an
//     error wrapping [omnibox.ErrRelayIDInUse] that names the relay ID.
//  3. Heads: for each free partition of Table + "_parts" (no lease, an
//     expired one, or one whose owner starts with params.OwnerPrefix), the
//     seq of its oldest claimable event, by a correlated subquery that walks
//     the partition's pending index in seq order and stops at the first
//     claimable event. The same statement counts the live relays other than
//     this one, and the expired ones: when there are any, a DELETE removes
//     them. The partitions whose head is oldest are kept, at most
//     ceil(64 / live relays).
//  4. Candidates: one UNION ALL of a query per kept partition, each taking
//     its oldest claimable events, up to ceil(Limit / partitions), through
//     the same index; of these the Limit smallest seqs are kept.
//  5. Lease: an UPDATE by primary key sets the claimed_by and
//     claimed_until of the partitions that gave candidates, then another
//     sets the candidates' claimed_by. Each checks again, on the latest
//     committed rows, that the partition is free and the event pending or
//     due, so that a transaction whose snapshot predates another claim, or
//     a completion, cannot lease an event twice (when a partition was
//     taken, a read finds which were leased, and only their events are).
//     The partitions are locked before the events, as [Store.Complete]
//     locks them: a claim taking an expired lease over waits for the old
//     owner's completion in progress rather than deadlock with it.
//  6. The events leased: a read by primary key of the candidates whose
//     claimed_by is now params.Owner, with every column, in seq order.
//
// An event is claimable when it is pending, or waiting for a retry that is
// due on the database's clock, and no earlier event of its key in its
// partition is waiting for a retry or (with params.BlockOnDead) dead. Steps
// 3 and 4 are plain (consistent, non-locking) reads: they neither see nor
// wait for events that uncommitted transactions inserted. Whatever the
// backlog, delivered events kept for [Config.Retention] included, a claim
// reads a few index entries per free partition (its head, and the probe for
// a failed event of the head's key) and a few per event claimed (the scan,
// the probe, the lease and the final read by primary key). Sub-second
// leases are kept to the microsecond.
//
// When ctx has a deadline, a statement before step 1 sets the session's
// lock wait, statement and idle timeouts to the time it leaves (see
// [guardSQL]), so that the server ends a transaction whose relay stopped
// answering instead of letting its claim lock stop every relay. They are
// session variables and stay on the connection (docs/mysql.md).
//
// tx must be a transaction (a *sql.Tx) that the caller commits right after;
// its isolation level should be the default REPEATABLE READ or READ
// COMMITTED. Claim also checks that the connection is utf8mb4 with
// autocommit on (see [Store.Migrate]) and returns an error saying how to fix
// the DSN when it is not.
func (s *Store) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	relay := cmp.Or(params.Relay, params.Owner)
	switch {
	case params.Limit <= 0:
		return nil, fmt.Errorf("mysql: claim: Limit must be positive, got %d", params.Limit)
	case params.Lease < time.Microsecond:
		return nil, fmt.Errorf("mysql: claim: Lease must be at least 1µs, got %s", params.Lease)
	case params.Owner == "":
		return nil, errors.New("mysql: claim: Owner is empty")
	case len(params.Owner) > maxOwnerLen:
		return nil, fmt.Errorf("mysql: claim: Owner is %d bytes long, the limit is %d", len(params.Owner), maxOwnerLen)
	case !utf8.ValidString(params.Owner):
		return nil, errors.New("mysql: claim: Owner is not valid UTF-8")
	case len(relay) > maxOwnerLen:
		return nil, fmt.Errorf("mysql: claim: Relay is %d bytes long, the limit is %d", len(relay), maxOwnerLen)
	case len(params.Nonce) > maxOwnerLen:
		return nil, fmt.Errorf("mysql: claim: Nonce is %d bytes long, the limit is %d", len(params.Nonce), maxOwnerLen)
	}
	if err := s.guard(ctx, tx); err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: %w", s.tableName, err)
	}
	if err := s.claimLock(ctx, tx); err != nil {
		return nil, err
	}
	lease := params.Lease.Microseconds()
	check := params.Nonce != "" && !params.Restart
	if _, err := tx.ExecContext(ctx, s.seenSQL, relay, lease, params.Nonce, check, params.Nonce, params.Nonce, check, params.Nonce, lease); err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: recording the relay in %s_relays: %w", s.tableName, s.tableName, err)
	}
	heads, err := s.heads(ctx, tx, params, relay)
	if err != nil {
		return nil, err
	}
	if len(heads) == 0 {
		return &omnibox.ClaimResult{}, nil
	}
	candidates, err := s.candidates(ctx, tx, heads, params)
	if err != nil {
		return nil, err
	}
	if len(candidates) == 0 {
		return &omnibox.ClaimResult{}, nil
	}
	events, err := s.lease(ctx, tx, candidates, params)
	if err != nil {
		return nil, err
	}
	return &omnibox.ClaimResult{Events: events}, nil
}

// claimLock takes the claim lock of the table for tx's transaction, waiting
// while another claim holds it.
func (s *Store) claimLock(ctx context.Context, tx omnibox.DBTX) error {
	var (
		id         int
		sess       session
		autocommit int64
	)
	err := tx.QueryRowContext(ctx, s.lockSQL).Scan(&id, &sess.charsetClient, &sess.charsetConnection, &sess.charsetResults, &autocommit)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("mysql: claim from %s: the claim lock table %s has no row; run Store.Migrate to restore it", s.tableName, s.lockTable)
	}
	if err != nil {
		return fmt.Errorf("mysql: claim from %s: taking the claim lock: %w", s.tableName, err)
	}
	sess.autocommit = autocommit == 1
	if err := sess.check(); err != nil {
		return fmt.Errorf("mysql: claim from %s: %w", s.tableName, err)
	}
	return nil
}

// RelayTxOptions asks the relay to claim and complete at READ COMMITTED:
// under REPEATABLE READ, InnoDB's next-key and gap locks on the outbox's
// indexes made relays completing batches, relays claiming and writers
// inserting deadlock (error 1213). The claim lock row still serializes the
// claims, and every statement reads the latest committed rows. It implements
// [omnibox.RelayTxOptioner].
func (s *Store) RelayTxOptions() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// head is a partition and the seq of its oldest claimable event.
type head struct {
	part int
	seq  int64
}

// claimable returns the condition on the outbox row o that it may be
// claimed, given that it is pending (o.pending = 1): it is pending, or its
// retry is due, and no earlier event of its key in its partition is waiting
// for a retry or, with blockOnDead, dead.
//
// The check reads the failed index, whose failed_key is NULL but for
// waiting and dead events with a key: for each blocking state, the first
// failed event of the key in seq order, one index entry however many there
// are, must not come before o (it may be o itself, a retry now due). A NOT
// EXISTS with b.seq < o.seq would instead read every failed event of the
// key, since a correlated range bound does not limit an index lookup.
// event_key and failed_key are binary, so keys compare byte for byte.
func (s *Store) claimable(blockOnDead bool) string {
	firstFailed := func(state string) string {
		return "COALESCE((SELECT b.seq FROM " + s.table + " b FORCE INDEX (" + failedIndex + ")" +
			" WHERE b.part = o.part AND b.failed_key = o.event_key AND b.state = " + state +
			" ORDER BY b.seq LIMIT 1), o.seq) >= o.seq"
	}
	notBlocked := firstFailed("1")
	if blockOnDead {
		notBlocked += " AND " + firstFailed("2")
	}
	return "(o.state = 0 OR o.next_attempt_at <= UTC_TIMESTAMP(6))" +
		" AND (LENGTH(o.event_key) = 0 OR (" + notBlocked + "))"
}

// heads returns the free partitions that have a claimable event, those
// whose oldest claimable event is oldest first, as many as the live relays
// leave to this one. It deletes the relays whose lease expired.
func (s *Store) heads(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams, relay string) ([]head, error) {
	query := fmt.Sprintf(s.headsPrefix, s.claimable(params.BlockOnDead))
	var args []any
	if params.OwnerPrefix != "" {
		// claimed_by is binary: LEFT counts bytes.
		query += " OR LEFT(p.claimed_by, " + strconv.Itoa(len(params.OwnerPrefix)) + ") = CAST(? AS BINARY)"
		args = append(args, params.OwnerPrefix)
	}
	query += s.headsSuffix
	args = append(args, relay, relay)
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading the partitions' heads: %w", s.tableName, err)
	}
	defer rows.Close()
	var (
		heads           = make([]head, 0, omnibox.Partitions)
		others, expired sql.NullInt64
		nonce           sql.NullString
	)
	for rows.Next() {
		var (
			h                  head
			seq, rOthers, rExp sql.NullInt64
			rNonce             sql.NullString
		)
		if err := rows.Scan(&h.part, &seq, &rOthers, &rExp, &rNonce); err != nil {
			return nil, fmt.Errorf("mysql: claim from %s: reading the partitions' heads: %w", s.tableName, err)
		}
		switch {
		case h.part < 0:
			// The one row of the relays' counts and the relay's nonce.
			others, expired, nonce = rOthers, rExp, rNonce
		case seq.Valid:
			h.seq = seq.Int64
			heads = append(heads, h)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading the partitions' heads: %w", s.tableName, err)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading the partitions' heads: %w", s.tableName, err)
	}
	if params.Nonce != "" && nonce.Valid && nonce.String != params.Nonce {
		// The relay's row kept another live process's nonce.
		return nil, fmt.Errorf("mysql: claim from %s: relay ID %q is recorded as live by another process (another nonce): %w",
			s.tableName, relay, omnibox.ErrRelayIDInUse)
	}
	if expired.Int64 > 0 {
		if _, err := tx.ExecContext(ctx, s.goneSQL, relay); err != nil {
			return nil, fmt.Errorf("mysql: claim from %s: deleting expired relays from %s_relays: %w", s.tableName, s.tableName, err)
		}
	}
	slices.SortFunc(heads, func(a, b head) int { return cmp.Compare(a.seq, b.seq) })
	maxParts := int((omnibox.Partitions + others.Int64) / (others.Int64 + 1)) // ceil(Partitions / live relays)
	return heads[:min(len(heads), maxParts)], nil
}

// candidate is a claimable event found by [Store.candidates].
type candidate struct {
	part int
	seq  int64
}

// candidates returns the seqs and partitions of the oldest claimable events
// of the head partitions, up to an equal share of params.Limit from each,
// then the params.Limit smallest seqs of them, in seq order.
func (s *Store) candidates(ctx context.Context, tx omnibox.DBTX, heads []head, params omnibox.ClaimParams) ([]candidate, error) {
	share := strconv.Itoa((params.Limit + len(heads) - 1) / len(heads))
	claimable := s.claimable(params.BlockOnDead)
	var b strings.Builder
	for i, h := range heads {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString(s.scanPrefix)
		b.WriteString(strconv.Itoa(h.part))
		b.WriteString(" AND o.pending = 1 AND ")
		b.WriteString(claimable)
		b.WriteString(" ORDER BY o.seq LIMIT ")
		b.WriteString(share)
		b.WriteString(")")
	}
	rows, err := tx.QueryContext(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading claimable events: %w", s.tableName, err)
	}
	defer rows.Close()
	out := make([]candidate, 0, min(params.Limit+len(heads), 1024))
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.seq, &c.part); err != nil {
			return nil, fmt.Errorf("mysql: claim from %s: reading claimable events: %w", s.tableName, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading claimable events: %w", s.tableName, err)
	}
	slices.SortFunc(out, func(a, b candidate) int { return cmp.Compare(a.seq, b.seq) })
	return out[:min(len(out), params.Limit)], nil
}

// lease leases the candidates' partitions to params.Owner, then their
// events, checking again on the latest rows that the partitions are free
// and the events pending or due, and returns the events it leased, in seq
// order. The partitions are locked first, as [Store.Complete] locks them
// first: a claim taking an expired lease over waits for a completion of
// the old owner in progress, instead of deadlocking with it.
func (s *Store) lease(ctx context.Context, tx omnibox.DBTX, candidates []candidate, params omnibox.ClaimParams) ([]omnibox.ClaimedEvent, error) {
	parts := make([]int64, 0, omnibox.Partitions)
	for _, c := range candidates {
		if !slices.Contains(parts, int64(c.part)) {
			parts = append(parts, int64(c.part))
		}
	}
	prefix := ""
	args := []any{params.Owner, params.Lease.Microseconds()}
	if params.OwnerPrefix != "" {
		// claimed_by is binary: LEFT counts bytes.
		prefix = " OR LEFT(claimed_by, " + strconv.Itoa(len(params.OwnerPrefix)) + ") = CAST(? AS BINARY)"
		args = append(args, params.OwnerPrefix)
	}
	r, err := tx.ExecContext(ctx, fmt.Sprintf(s.leasePartsPrefix, prefix)+seqList(parts)+")", args...)
	if err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: leasing %d partition(s): %w", s.tableName, len(parts), err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: leasing partitions: %w", s.tableName, err)
	}
	if int(n) < len(parts) {
		// Some were taken meanwhile (tx's snapshot predates another
		// claim): keep the candidates of those leased.
		leased, err := s.queryParts(ctx, tx, s.lockPartsPrefix+seqList(parts)+")", params.Owner)
		if err != nil {
			return nil, err
		}
		candidates = slices.DeleteFunc(candidates, func(c candidate) bool { return !slices.Contains(leased, int64(c.part)) })
	}
	seqs := make([]int64, len(candidates))
	for i, c := range candidates {
		seqs[i] = c.seq
	}
	for chunk := range chunks(seqs) {
		if _, err := tx.ExecContext(ctx, s.leaseEventsPrefix+seqList(chunk)+")", params.Owner); err != nil {
			return nil, fmt.Errorf("mysql: claim from %s: leasing %d event(s): %w", s.tableName, len(chunk), err)
		}
	}
	events := make([]omnibox.ClaimedEvent, 0, len(seqs))
	for chunk := range chunks(seqs) {
		if err := s.readClaimed(ctx, tx, chunk, params.Owner, &events); err != nil {
			return nil, err
		}
	}
	return events, nil
}

// readClaimed appends the events among seqs that are leased to owner, in
// seq order.
func (s *Store) readClaimed(ctx context.Context, tx omnibox.DBTX, seqs []int64, owner string, events *[]omnibox.ClaimedEvent) error {
	rows, err := tx.QueryContext(ctx, s.claimRowsPrefix+seqList(seqs)+") ORDER BY seq", owner)
	if err != nil {
		return fmt.Errorf("mysql: claim from %s: reading the events leased: %w", s.tableName, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ev        omnibox.ClaimedEvent
			metadata  string
			createdAt string
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts); err != nil {
			return fmt.Errorf("mysql: claim from %s: scanning: %w", s.tableName, err)
		}
		if err := decodeEvent(&ev.Event, metadata, createdAt); err != nil {
			return fmt.Errorf("mysql: claim from %s: %w", s.tableName, err)
		}
		*events = append(*events, ev)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("mysql: claim from %s: reading the events leased: %w", s.tableName, err)
	}
	return nil
}
