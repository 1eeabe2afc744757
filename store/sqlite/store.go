package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
	"github.com/omnibox-go/omnibox/internal/seqlist"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultTable is the default of [Config.Table].
const DefaultTable = "omnibox_outbox"

// Config configures a [Store]. The zero value takes every default.
type Config struct {
	// Retention is how long delivered events are kept (as state 3,
	// delivered) before [Store.Purge] deletes them, for audit and replay.
	// It must not be negative. Defaults to 0: delivered events are deleted
	// at once.
	Retention time.Duration
	// Table is the name of the outbox table. Its migrations table is named
	// Table + "_migrations", its partition and relay tables Table + "_parts"
	// and Table + "_relays", and its indexes start with Table + "_". It must
	// be a plain lower-case identifier (see [Config.Validate]) and may not
	// start with "sqlite_", a prefix SQLite reserves. Defaults to
	// [DefaultTable].
	Table string
}

// Validate reports whether Retention is not negative and Table is a plain
// lower-case SQL identifier (letters, digits and underscores, not starting
// with a digit, at most 48 bytes) outside SQLite's reserved "sqlite_"
// prefix; the error names the setting, and for a bad name wraps
// [omnibox.ErrInvalidIdentifier]. An empty Table is valid: it stands for
// [DefaultTable].
func (c *Config) Validate() error {
	if c.Retention < 0 {
		return fmt.Errorf("sqlite: Config.Retention must not be negative, got %s", c.Retention)
	}
	table := cmp.Or(c.Table, DefaultTable)
	if err := sqlident.Validate("sqlite: Config.Table", table, omnibox.ErrInvalidIdentifier); err != nil {
		return err
	}
	if strings.HasPrefix(table, "sqlite_") {
		return fmt.Errorf("%w: sqlite: Config.Table name %q starts with \"sqlite_\", which SQLite reserves for its own tables", omnibox.ErrInvalidIdentifier, table)
	}
	return nil
}

// Store is the SQLite outbox store: the [omnibox.Inserter] given to
// [omnibox.New], the [omnibox.RelayStore] given to [omnibox.NewRelay], and
// the [omnibox.DeadLetterStore] and [omnibox.Purger] the relay and operators
// use. It holds no connection (every method takes the executor to run on)
// and is safe for concurrent use. Open the database with [Open], which sets
// what the store relies on (see the package documentation).
type Store struct {
	claimSQL     string
	countSQL     string
	deadSQL      string
	deliverSQL   string
	discardSQL   string
	expireSQL    string
	freePartsSQL string
	insertPrefix string
	leaseSQL     string
	listDeadSQL  string
	migrator     *migrator
	pendingSQL   string
	purgeSQL     string
	releaseSQL   string
	requeueSQL   string
	retention    time.Duration
	retrySQL     string
	seenSQL      string
	table        string // quoted
	tableName    string // unquoted, for messages
}

var (
	_ omnibox.Inserter        = (*Store)(nil)
	_ omnibox.RelayStore      = (*Store)(nil)
	_ omnibox.DeadLetterStore = (*Store)(nil)
	_ omnibox.Purger          = (*Store)(nil)

	_ omnibox.RelayConcurrencyLimiter = (*Store)(nil)
)

// New returns a store for the table named by config. A nil config returns
// [omnibox.ErrNilConfig]; &Config{} takes the defaults. An invalid name
// returns an error wrapping [omnibox.ErrInvalidIdentifier], a negative
// Retention an error naming it. New does not touch the database: create the
// tables with [Store.Migrate], or apply [Store.MigrationFS] with a migration
// tool.
func New(config *Config) (*Store, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	table := cmp.Or(config.Table, DefaultTable)
	s := &Store{
		retention: config.Retention,
		table:     quote(table),
		tableName: table,
	}
	names := templateData{
		DeliveredIndex: quote(table + "_delivered_idx"),
		EventIDKey:     quote(table + "_event_id_key"),
		FailedIndex:    quote(table + "_failed_idx"),
		PartsTable:     quote(table + "_parts"),
		PendingIndex:   quote(table + "_pending_idx"),
		RelaysTable:    quote(table + "_relays"),
		Table:          s.table,
	}
	migrator, err := newMigrator("migration", names, table)
	if err != nil {
		return nil, err
	}
	s.migrator = migrator

	t, parts, relays := s.table, names.PartsTable, names.RelaysTable
	s.insertPrefix = "INSERT INTO " + t + " (event_id, topic, event_key, payload, metadata, created_at, part) VALUES "
	// The relay is recorded with its nonce, unless its row holds another
	// live process's nonce and the claim checks (?4): no row changes then.
	s.seenSQL = "INSERT INTO " + relays + " AS r (relay_id, seen_until, nonce) VALUES (?1, " + nowMicros + " + ?2, ?3)" +
		" ON CONFLICT (relay_id) DO UPDATE SET seen_until = excluded.seen_until, nonce = excluded.nonce" +
		" WHERE NOT (?4 AND r.seen_until >= " + nowMicros + " AND r.nonce <> '' AND r.nonce <> excluded.nonce)"
	s.expireSQL = "DELETE FROM " + relays + " WHERE seen_until < " + nowMicros + " AND relay_id <> ?1"
	s.countSQL = "SELECT count(*) FROM " + relays + " WHERE seen_until >= " + nowMicros + " AND relay_id <> ?1"
	s.claimSQL = claimSQL(t, parts)
	s.leaseSQL = "UPDATE " + parts + " SET claimed_by = ?1, claimed_until = " + nowMicros + " + ?2" +
		" WHERE part IN (SELECT value FROM json_each(?3))"
	// Complete touches only the events still claimed by the owner, in
	// partitions still leased to it: once another claim has taken a
	// partition over, the events of the old claim that it did not take (they
	// still name the old owner) belong to the new lease too.
	owned := func(seq string) string {
		return " WHERE " + seq + " AND claimed_by = ?2 AND part IN (SELECT part FROM " + parts + " WHERE claimed_by = ?2)"
	}
	const seqs = "seq IN (SELECT value FROM json_each(?1))"
	if s.retention > 0 {
		s.deliverSQL = "UPDATE " + t + " SET state = 3, delivered_at = " + nowMicros + ", claimed_by = NULL, next_attempt_at = NULL" + owned(seqs)
	} else {
		s.deliverSQL = "DELETE FROM " + t + owned(seqs)
	}
	s.retrySQL = "UPDATE " + t + " SET state = 1, attempts = attempts + 1, claimed_by = NULL, last_error = NULLIF(?3, '')," +
		" next_attempt_at = " + nowMicros + " + ?4" + owned("seq = ?1")
	s.deadSQL = "UPDATE " + t + " SET state = 2, attempts = attempts + 1, claimed_by = NULL, last_error = NULLIF(?3, '')," +
		" next_attempt_at = NULL, dead_at = " + nowMicros + owned("seq = ?1")
	s.releaseSQL = "UPDATE " + t + " SET claimed_by = NULL, last_error = coalesce(NULLIF(?3, ''), last_error)" + owned(seqs)
	s.freePartsSQL = "UPDATE " + parts + " SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?1"
	s.pendingSQL = "SELECT count(*) FROM " + t + " WHERE state IN (0, 1)"
	s.listDeadSQL = "SELECT seq, event_id, topic, event_key, payload, metadata, created_at, attempts, coalesce(last_error, ''), dead_at" +
		" FROM " + t + " WHERE state = 2 AND seq > ?1 AND (?3 = '' OR topic = ?3) ORDER BY seq LIMIT ?2"
	s.requeueSQL = "UPDATE " + t + " SET state = 0, attempts = 0, dead_at = NULL, next_attempt_at = NULL" +
		" WHERE " + seqs + " AND state = 2"
	s.discardSQL = "DELETE FROM " + t + " WHERE " + seqs + " AND state = 2"
	s.purgeSQL = "DELETE FROM " + t + " WHERE seq IN (SELECT seq FROM " + t +
		" WHERE state = 3 AND delivered_at < " + nowMicros + " - ?1 ORDER BY delivered_at LIMIT ?2)"
	return s, nil
}

// quote quotes an identifier that [sqlident.Validate] accepted: such a name
// holds no quote, so wrapping it is enough. Quoting keeps keywords ("order",
// "group") usable as names.
func quote(ident string) string { return `"` + ident + `"` }

// insertColumns is the number of parameters per inserted row.
const insertColumns = 7

// maxInsertRows is the most rows one INSERT statement carries, so that it
// stays within SQLite's default limit of 32766 parameters per statement
// (SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32).
const maxInsertRows = 32766 / insertColumns

// Insert writes the events through tx, in order: their seq values, hence the
// claim order, follow the order of params.Events. Each event goes to the
// partition [omnibox.PartitionOf] gives it. Each chunk of up to
// maxInsertRows events is written by one multi-row INSERT; several chunks
// are all or nothing only because they run in the caller's transaction, so
// tx must be one (a *sql.Tx, as [omnibox.Outbox] passes). The events become
// visible to [Store.Claim] when that transaction commits. SQLite has one
// writer at a time and assigns seq values under its write lock, so seq order
// is also commit order.
//
// An event ID already in the table returns an error wrapping
// [omnibox.ErrDuplicateEventID] (and the driver's error); SQLite undoes the
// failed statement only, but the caller should roll the transaction back.
func (s *Store) Insert(ctx context.Context, tx omnibox.DBTX, params omnibox.InsertParams) error {
	for events := range slices.Chunk(params.Events, maxInsertRows) {
		if err := s.insertChunk(ctx, tx, events); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) insertChunk(ctx context.Context, tx omnibox.DBTX, events []omnibox.Event) error {
	const row = "(?, ?, ?, ?, ?, ?, ?)"
	var b strings.Builder
	b.Grow(len(s.insertPrefix) + len(events)*(len(row)+2))
	b.WriteString(s.insertPrefix)
	args := make([]any, 0, len(events)*insertColumns)
	for i, ev := range events {
		metadata, err := metadatajson.Encode(ev.Metadata)
		if err != nil {
			return fmt.Errorf("sqlite: encoding metadata of event %q: %w", ev.ID, err)
		}
		payload := ev.Payload
		if payload == nil {
			payload = []byte{} // a nil []byte is bound as NULL
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt.UnixMicro(), omnibox.PartitionOf(&ev))
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		if s.isDuplicateEventID(err) {
			return fmt.Errorf("sqlite: inserting into %s: %w: %w", s.tableName, omnibox.ErrDuplicateEventID, err)
		}
		return fmt.Errorf("sqlite: inserting %d event(s) into %s: %w%s", len(events), s.tableName, err, busyHint(err))
	}
	return nil
}

// SQLite extended result codes the store tells apart
// (https://sqlite.org/rescode.html).
const (
	codeBusy             = 5    // SQLITE_BUSY, primary code
	codeBusySnapshot     = 517  // SQLITE_BUSY_SNAPSHOT
	codeConstraintUnique = 2067 // SQLITE_CONSTRAINT_UNIQUE
)

// isDuplicateEventID reports whether err is SQLite's unique constraint
// failure on the table's event_id. With modernc.org/sqlite the result code
// is checked too; with another driver the message, which SQLite composes
// as "UNIQUE constraint failed: <table>.<column>", is enough.
func (s *Store) isDuplicateEventID(err error) bool {
	if !strings.Contains(err.Error(), "UNIQUE constraint failed: "+s.tableName+".event_id") {
		return false
	}
	var sqliteErr *msqlite.Error
	return !errors.As(err, &sqliteErr) || sqliteErr.Code() == codeConstraintUnique
}

// busyHint returns, when err is SQLite reporting the database locked
// (SQLITE_BUSY), an explanation to append to the error message, saying
// which setting avoids it; otherwise "".
func busyHint(err error) string {
	var sqliteErr *msqlite.Error
	if !errors.As(err, &sqliteErr) || sqliteErr.Code()&0xff != codeBusy {
		return ""
	}
	if sqliteErr.Code() == codeBusySnapshot {
		return " (SQLITE_BUSY_SNAPSHOT: a transaction read the database, then tried to write after another connection had written: " +
			"begin transactions that write with BEGIN IMMEDIATE: open the database with sqlite.Open, or add _txlock=immediate to its DSN)"
	}
	return " (another connection held the write lock for longer than this connection's busy_timeout: " +
		"keep write transactions short; a connection without a busy_timeout does not wait at all: " +
		"open the database with sqlite.Open, or add _pragma=busy_timeout(5000) to its DSN)"
}

// nowMicros is the database's clock in microseconds since the Unix epoch.
// SQLite's 'now' has millisecond precision and is the same for every use
// within one statement. julianday (a double, about 40µs resolution at
// present dates) is rounded to the millisecond, which makes the conversion
// exact; unixepoch('subsec') would need SQLite 3.42.
const nowMicros = `(CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000)`

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

// Purge deletes up to limit delivered events older than [Config.Retention]
// (their delivery time on the database's clock), oldest first, and reports
// how many it deleted. Without a retention period delivered events are never
// kept, and Purge deletes nothing. A limit that is not positive is an error.
func (s *Store) Purge(ctx context.Context, db omnibox.DBTX, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("sqlite: purge: limit must be positive, got %d", limit)
	}
	if s.retention <= 0 {
		return 0, nil
	}
	return s.execCount(ctx, db, s.purgeSQL, "purging delivered events", s.retention.Microseconds(), limit)
}

func (s *Store) execCount(ctx context.Context, db omnibox.DBTX, query, what string, args ...any) (int, error) {
	r, err := db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("sqlite: %s in %s: %w%s", what, s.tableName, err, busyHint(err))
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: %s in %s: %w", what, s.tableName, err)
	}
	return int(n), nil
}

// RelayConcurrencyLimit returns 1: a relay on SQLite has one batch in
// flight at a time. SQLite has one writer; a second batch loop would take
// turns with the first and starve the application's writers of the write
// lock.
func (s *Store) RelayConcurrencyLimit() int { return 1 }

// Pending returns the number of events not yet delivered, leased or not:
// pending or waiting for a retry, dead events excluded. It counts them
// through the pending index, so its cost grows with the backlog: use it for
// statistics and tests, not on a hot path.
func (s *Store) Pending(ctx context.Context, db omnibox.DBTX) (int64, error) {
	var n int64
	if err := db.QueryRowContext(ctx, s.pendingSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: counting pending events in %s: %w", s.tableName, err)
	}
	return n, nil
}

// jsonArray renders seqs as a JSON array ("[1,2,3]"), which the statements
// expand with json_each: one parameter however many seqs, built from
// integers only.
func jsonArray(seqs []int64) string { return seqlist.Join("[", seqs, "]") }
