package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/omnibox-go/omnibox"
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
	if guardMillis(ctx) > 0 {
		if pool, ok := db.(*sql.DB); ok {
			// The guards hold for a transaction: on a pool, Purge runs in
			// one of its own.
			return s.purgeInTx(ctx, pool, limit)
		}
		if err := s.guard(ctx, db); err != nil {
			return 0, fmt.Errorf("postgres: purging delivered events in %s: %w", s.tableName, err)
		}
	}
	return s.execCount(ctx, db, s.purgeSQL, "purging delivered events", s.retention.Microseconds(), limit)
}

// purgeInTx runs [Store.Purge] in a transaction of its own on pool.
func (s *Store) purgeInTx(ctx context.Context, pool *sql.DB, limit int) (int, error) {
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("postgres: purging delivered events in %s: begin: %w", s.tableName, err)
	}
	defer func() { _ = tx.Rollback() }()
	n, err := s.Purge(ctx, tx, limit)
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
