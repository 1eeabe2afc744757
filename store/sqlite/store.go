package sqlite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"

	"github.com/omnibox-go/omnibox"
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

// SQLite extended result codes the store tells apart
// (https://sqlite.org/rescode.html).
const (
	codeBusy             = 5    // SQLITE_BUSY, primary code
	codeBusySnapshot     = 517  // SQLITE_BUSY_SNAPSHOT
	codeConstraintUnique = 2067 // SQLITE_CONSTRAINT_UNIQUE
)

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
