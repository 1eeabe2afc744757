package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
	"github.com/omnibox-go/omnibox/internal/seqlist"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultTable is the default of [Config.Table].
const DefaultTable = "omnibox_outbox"

// Config configures a [Store]. The zero value takes every default.
type Config struct {
	// Schema holds the outbox table and its migrations table. It must be a
	// plain lower-case identifier (see [Config.Validate]). Defaults to "":
	// names are left unqualified and resolved by the connection's
	// search_path.
	Schema string
	// NotifyChannel, when not empty, makes Insert also run
	// pg_notify(NotifyChannel, '') in the writer's transaction, so that a
	// [Listener] on that channel wakes relays in other processes at commit.
	// It is the simplest cross-process wake-up but the costliest for
	// writers: PostgreSQL serializes the commits of notifying transactions
	// on a database-wide lock (docs/benchmarks.md measures the loss of commit
	// rate). Prefer a [Notifier], which notifies outside the transactions,
	// coalesced. A plain lower-case identifier. Defaults to "": no NOTIFY.
	NotifyChannel string
	// Retention is how long delivered events are kept (as state 3,
	// delivered) before [Store.Purge] deletes them, for audit and replay.
	// Defaults to 0: delivered events are deleted at once.
	Retention time.Duration
	// Table is the name of the outbox table. Its migrations table is named
	// Table + "_migrations", its partition and relay tables Table + "_parts"
	// and Table + "_relays". It must be a plain lower-case identifier.
	// Defaults to [DefaultTable].
	Table string
}

// Validate reports whether the names are plain lower-case SQL identifiers
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes); the error wraps [omnibox.ErrInvalidIdentifier] and names the
// setting. An empty Table is valid: it stands for [DefaultTable].
func (c *Config) Validate() error {
	if c.Retention < 0 {
		return fmt.Errorf("postgres: Config.Retention must not be negative, got %s", c.Retention)
	}
	if c.NotifyChannel != "" {
		if err := sqlident.Validate("postgres: Config.NotifyChannel", c.NotifyChannel, omnibox.ErrInvalidIdentifier); err != nil {
			return err
		}
	}
	if c.Schema != "" {
		if err := sqlident.Validate("postgres: Config.Schema", c.Schema, omnibox.ErrInvalidIdentifier); err != nil {
			return err
		}
	}
	return sqlident.Validate("postgres: Config.Table", cmp.Or(c.Table, DefaultTable), omnibox.ErrInvalidIdentifier)
}

// Store is the PostgreSQL outbox store: the [omnibox.Inserter] given to
// [omnibox.New] and the [omnibox.RelayStore] given to [omnibox.NewRelay]. It
// holds no connection (every method takes the executor to run on) and is safe
// for concurrent use. It works with the lib/pq and pgx (stdlib) drivers.
type Store struct {
	claimSQL         string
	completeGuardSQL string
	deadSQL          string
	deliverSQL       string
	deliverAllSQL    string
	discardSQL       string
	freePartsSQL     string
	guardSQL         string
	insertPrefix     string
	listDeadSQL      string
	membersSQL       string
	migrator         *migrator
	notifyChannel    string
	pendingSQL       string
	purgeSQL         string
	releaseSQL       string
	requeueSQL       string
	retention        time.Duration
	retrySQL         string
	schema           string // quoted, empty when unqualified
	table            string // qualified and quoted
	tableName        string // qualified, unquoted, for messages
}

var (
	_ omnibox.Inserter        = (*Store)(nil)
	_ omnibox.RelayStore      = (*Store)(nil)
	_ omnibox.RelayTxOptioner = (*Store)(nil)
	_ omnibox.DeadLetterStore = (*Store)(nil)
	_ omnibox.Purger          = (*Store)(nil)
)

// The state column: 0 pending, 1 waiting for a retry, 2 dead, 3 delivered
// (kept for the retention period). The SQL below uses the numbers.

// New returns a store for the table named by config. A nil config returns
// [omnibox.ErrNilConfig]; &Config{} takes the defaults. Invalid names return
// an error wrapping [omnibox.ErrInvalidIdentifier]. New does not touch the
// database: create the table with [Store.Migrate], or apply
// [Store.MigrationFS] with a migration tool.
func New(config *Config) (*Store, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	table := cmp.Or(config.Table, DefaultTable)
	s := &Store{notifyChannel: config.NotifyChannel, retention: config.Retention}
	qualify := func(name string) string { return quote(name) }
	s.tableName = table
	if config.Schema != "" {
		s.schema = quote(config.Schema)
		qualify = func(name string) string { return s.schema + "." + quote(name) }
		s.tableName = config.Schema + "." + table
	}
	names := templateData{
		DeliveredIndex: quote(table + "_delivered_idx"),
		EventIDKey:     quote(table + "_event_id_key"),
		FailedIndex:    quote(table + "_failed_idx"),
		PartCheck:      quote(table + "_part_check"),
		PartsTable:     qualify(table + "_parts"),
		PendingIndex:   quote(table + "_pending_idx"),
		RelaysTable:    qualify(table + "_relays"),
		Schema:         s.schema,
		StateCheck:     quote(table + "_state_check"),
		Table:          qualify(table),
	}
	s.table = names.Table
	migrator, err := newMigrator("migration", names, s.schema, table, s.tableName, "omnibox migrate "+s.tableName)
	if err != nil {
		return nil, err
	}
	s.migrator = migrator

	t, parts := s.table, names.PartsTable
	s.insertPrefix = "INSERT INTO " + t + " (event_id, topic, event_key, payload, metadata, created_at, part) VALUES "
	// Before the claim statement, in one round trip: for this transaction
	// only, JIT off, an asynchronous commit (see Claim) and the guards of
	// the call's deadline ($5, see guardSQL), set first (the INSERT reads
	// its row from guard), so that the lock_timeout covers the INSERT's wait
	// for the relay's row too; record the relay as live with its nonce,
	// unless another live process recorded the relay ID with another nonce
	// ($4: check; the recheck of the locked row in ON CONFLICT ... WHERE
	// makes twins racing one another see each other); drop relays gone for
	// longer than their lease (skipping rows another transaction holds, so
	// that claims never wait on each other here), unless the relay was not
	// recorded; count the other live relays.
	s.membersSQL = `WITH guard AS MATERIALIZED (
    SELECT set_config('jit', 'off', true) AS jit, set_config('synchronous_commit', 'off', true) AS sync, ` + guardSQL("$5") + `
), seen AS (
    INSERT INTO ` + names.RelaysTable + ` AS r (relay_id, seen_until, nonce)
    SELECT $1::text, statement_timestamp() + $2::bigint * interval '1 microsecond', $3::text FROM guard
    ON CONFLICT (relay_id) DO UPDATE SET seen_until = EXCLUDED.seen_until, nonce = EXCLUDED.nonce
    WHERE NOT ($4::boolean AND r.seen_until >= statement_timestamp() AND r.nonce <> '' AND r.nonce <> EXCLUDED.nonce)
    RETURNING 1
), gone AS (
    DELETE FROM ` + names.RelaysTable + ` WHERE relay_id IN (
        SELECT relay_id FROM ` + names.RelaysTable + `
        WHERE seen_until < statement_timestamp() AND relay_id <> $1::text
        FOR UPDATE SKIP LOCKED)
      AND EXISTS (SELECT FROM seen)
)
SELECT (SELECT count(*) FROM seen),
    (SELECT count(*) FROM ` + names.RelaysTable + ` WHERE seen_until >= statement_timestamp() AND relay_id <> $1::text)`
	s.claimSQL = claimSQL(t, parts)
	// Complete touches only the events its claim took ($1 ∩ the seqs the
	// claim recorded in the partitions still leased to it, $2): once another
	// claim has taken a partition over, the old claim's events in it belong
	// to the new lease. The intersection is a hash join; the events are then
	// found by primary key.
	owned := " WHERE seq = ANY (ARRAY(SELECT d.seq FROM unnest($1::bigint[]) d (seq) JOIN (SELECT unnest(p.claimed_seqs) AS seq FROM " +
		parts + " p WHERE p.claimed_by = $2) c ON c.seq = d.seq))"
	var deliver string
	if s.retention > 0 {
		deliver = "UPDATE " + t + " SET state = 3, delivered_at = statement_timestamp(), next_attempt_at = NULL" + owned + " RETURNING 1"
	} else {
		deliver = "DELETE FROM " + t + owned + " RETURNING 1"
	}
	// The common outcome, every event delivered, is one statement: the
	// asynchronous commit (decision 18) and the guards of the call's
	// deadline ($3), set first (the first column reads guard), then the
	// events, then the partitions freed (the CTEs all see the partitions as
	// the statement began).
	s.deliverAllSQL = "WITH guard AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS sync, " + guardSQL("$3") +
		"), delivered AS (" + deliver + "), freed AS (UPDATE " + parts +
		" SET claimed_by = NULL, claimed_until = NULL, claimed_seqs = NULL WHERE claimed_by = $2)" +
		" SELECT (SELECT count(*) FROM guard), (SELECT count(*) FROM delivered)"
	s.completeGuardSQL = "SELECT set_config('synchronous_commit', 'off', true), " + guardSQL("$1")
	s.guardSQL = "SELECT " + guardSQL("$1")
	s.deliverSQL = "WITH delivered AS (" + deliver + ") SELECT count(*) FROM delivered"
	s.retrySQL = "UPDATE " + t + " SET state = 1, attempts = attempts + 1, last_error = NULLIF($3, '')," +
		" next_attempt_at = statement_timestamp() + $4::bigint * interval '1 microsecond'" + owned
	s.deadSQL = "UPDATE " + t + " SET state = 2, attempts = attempts + 1, last_error = NULLIF($3, '')," +
		" next_attempt_at = NULL, dead_at = statement_timestamp()" + owned
	s.releaseSQL = "UPDATE " + t + " SET last_error = $3" + owned
	s.freePartsSQL = "UPDATE " + parts + " SET claimed_by = NULL, claimed_until = NULL, claimed_seqs = NULL WHERE claimed_by = $1"
	s.pendingSQL = "SELECT count(*) FROM " + t + " WHERE state IN (0, 1)"
	s.listDeadSQL = "SELECT seq, event_id, topic, event_key, payload, metadata::text, created_at, attempts, COALESCE(last_error, ''), dead_at" +
		" FROM " + t + " WHERE state = 2 AND seq > $1 AND ($3 = '' OR topic = $3) ORDER BY seq LIMIT $2"
	s.requeueSQL = "UPDATE " + t + " SET state = 0, attempts = 0, dead_at = NULL, next_attempt_at = NULL" +
		" WHERE seq = ANY ($1::bigint[]) AND state = 2"
	s.discardSQL = "DELETE FROM " + t + " WHERE seq = ANY ($1::bigint[]) AND state = 2"
	s.purgeSQL = "DELETE FROM " + t + " WHERE seq = ANY (ARRAY(SELECT seq FROM " + t +
		" WHERE state = 3 AND delivered_at < statement_timestamp() - $1::bigint * interval '1 microsecond'" +
		" ORDER BY delivered_at LIMIT $2))"
	return s, nil
}

// quote quotes an identifier that [sqlident.Validate] accepted: such a name
// holds no quote, so wrapping it is enough. Quoting keeps reserved words
// ("user", "order") usable as names.
func quote(ident string) string { return `"` + ident + `"` }

// guardSQL returns the select-list items that set, for the rest of the
// transaction (set_config with is_local), the server-side guards of a
// call's deadline: statement_timeout, lock_timeout and
// idle_in_transaction_session_timeout, all to param, the milliseconds the
// deadline leaves (see [guardMillis]). A statement running longer, a lock
// wait longer, or the session sitting idle inside the transaction longer
// (the relay cut off between two statements, or before COMMIT) makes the
// server cancel the statement or end the session, so that a relay whose
// link stopped answering does not keep its locks. param 0 (no deadline)
// leaves the session's settings alone.
func guardSQL(param string) string {
	ms := param + "::bigint"
	set := func(name string) string {
		return "CASE WHEN " + ms + " > 0 THEN set_config('" + name + "', " + ms + "::text, true) END AS " + name
	}
	return set("statement_timeout") + ", " + set("lock_timeout") + ", " + set("idle_in_transaction_session_timeout")
}

// guardMillis returns the milliseconds that ctx's deadline leaves, rounded
// up and at least 1, or 0 when ctx has no deadline.
func guardMillis(ctx context.Context) int64 {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(deadline).Milliseconds()+1, 1)
}

// guard sets the guards of ctx's deadline for the rest of tx's transaction,
// in a statement of its own; it does nothing when ctx has no deadline.
func (s *Store) guard(ctx context.Context, tx omnibox.DBTX) error {
	ms := guardMillis(ctx)
	if ms == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, s.guardSQL, ms); err != nil {
		return fmt.Errorf("setting the statement, lock and idle timeouts: %w", err)
	}
	return nil
}

// lockKey derives an advisory lock key from s (FNV-1a, 64 bits).
func lockKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return int64(h.Sum64())
}

// insertColumns is the number of parameters per inserted row.
const insertColumns = 7

// maxInsertRows is the most rows one INSERT statement carries, so that it
// stays within PostgreSQL's limit of 65535 parameters per statement.
const maxInsertRows = 65535 / insertColumns

// Insert writes the events through tx, in order: their seq values, hence the
// claim order, follow the order of params.Events. Each chunk of up to
// maxInsertRows events is written by one multi-row INSERT; several chunks
// are all or nothing only because they run in the caller's transaction, so
// tx must be one (a *sql.Tx, as [omnibox.Outbox] passes). The events become
// visible to [Store.Claim] when that transaction commits.
//
// An event ID already in the table returns an error wrapping
// [omnibox.ErrDuplicateEventID] (and the driver's error); the transaction is
// then aborted and must be rolled back.
func (s *Store) Insert(ctx context.Context, tx omnibox.DBTX, params omnibox.InsertParams) error {
	for events := range slices.Chunk(params.Events, maxInsertRows) {
		if err := s.insertChunk(ctx, tx, events); err != nil {
			return err
		}
	}
	if s.notifyChannel != "" && len(params.Events) > 0 {
		if _, err := tx.ExecContext(ctx, "SELECT pg_notify($1, '')", s.notifyChannel); err != nil {
			return fmt.Errorf("postgres: notifying channel %s: %w", s.notifyChannel, err)
		}
	}
	return nil
}

func (s *Store) insertChunk(ctx context.Context, tx omnibox.DBTX, events []omnibox.Event) error {
	var b strings.Builder
	b.Grow(len(s.insertPrefix) + len(events)*48)
	b.WriteString(s.insertPrefix)
	args := make([]any, 0, len(events)*insertColumns)
	for i, ev := range events {
		metadata, err := metadatajson.Encode(ev.Metadata)
		if err != nil {
			return fmt.Errorf("postgres: encoding metadata of event %q: %w", ev.ID, err)
		}
		payload := ev.Payload
		if payload == nil {
			payload = []byte{} // a nil []byte is sent as NULL
		}
		if i > 0 {
			b.WriteString(", ")
		}
		p := i * insertColumns
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d::jsonb, $%d, $%d)", p+1, p+2, p+3, p+4, p+5, p+6, p+7)
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt, omnibox.PartitionOf(&ev))
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("postgres: inserting into %s: %w: %w", s.tableName, omnibox.ErrDuplicateEventID, err)
		}
		return fmt.Errorf("postgres: inserting %d event(s) into %s: %w", len(events), s.tableName, err)
	}
	return nil
}

// isUniqueViolation reports whether err is PostgreSQL's unique_violation
// (SQLSTATE 23505). Both *pq.Error and *pgconn.PgError have a SQLState
// method, so neither driver needs to be imported.
func isUniqueViolation(err error) bool {
	var pgErr interface{ SQLState() string }
	return errors.As(err, &pgErr) && pgErr.SQLState() == "23505"
}

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

// Purge deletes up to limit delivered events older than [Config.Retention],
// oldest first, and reports how many it deleted. Without a retention period
// delivered events are never kept, and Purge deletes nothing. When ctx has a
// deadline Purge sets the guards that Claim sets first: given a *sql.DB, in
// a transaction of its own; given a *sql.Tx (or *sql.Conn), in a statement
// of its own, for the rest of the transaction.
func (s *Store) Purge(ctx context.Context, db omnibox.DBTX, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("postgres: purge: limit must be positive, got %d", limit)
	}
	if s.retention <= 0 {
		return 0, nil
	}
	if guardMillis(ctx) == 0 {
		return s.execCount(ctx, db, s.purgeSQL, "purging delivered events", s.retention.Microseconds(), limit)
	}
	pool, ok := db.(*sql.DB)
	if !ok {
		if err := s.guard(ctx, db); err != nil {
			return 0, fmt.Errorf("postgres: purging delivered events in %s: %w", s.tableName, err)
		}
		return s.execCount(ctx, db, s.purgeSQL, "purging delivered events", s.retention.Microseconds(), limit)
	}
	// The guards hold for a transaction: on a pool, Purge runs in one of
	// its own.
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("postgres: purging delivered events in %s: begin: %w", s.tableName, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := s.guard(ctx, tx); err != nil {
		return 0, fmt.Errorf("postgres: purging delivered events in %s: %w", s.tableName, err)
	}
	n, err := s.execCount(ctx, tx, s.purgeSQL, "purging delivered events", s.retention.Microseconds(), limit)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("postgres: purging delivered events in %s: commit: %w", s.tableName, err)
	}
	return n, nil
}

func (s *Store) execCount(ctx context.Context, db omnibox.DBTX, query, what string, args ...any) (int, error) {
	r, err := db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("postgres: %s in %s: %w", what, s.tableName, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("postgres: %s in %s: %w", what, s.tableName, err)
	}
	return int(n), nil
}

// Pending returns the number of events not yet delivered, leased or not,
// dead events excluded. It counts them, so its cost grows with the backlog:
// use it for statistics and tests, not on a hot path.
func (s *Store) Pending(ctx context.Context, db omnibox.DBTX) (int64, error) {
	var n int64
	if err := db.QueryRowContext(ctx, s.pendingSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: counting pending events in %s: %w", s.tableName, err)
	}
	return n, nil
}

// int64Array renders seqs as a PostgreSQL array literal ('{1,2,3}'), passed
// as text and cast with ::bigint[]: built from integers only, and accepted
// alike by lib/pq and pgx.
func int64Array(seqs []int64) string { return seqlist.Join("{", seqs, "}") }
