package sqlite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultTable is the default of [Config.Table].
const DefaultTable = "omnibox_outbox"

// Config configures a [Store]. The zero value takes every default.
type Config struct {
	// Table is the name of the outbox table. Its migrations table is named
	// Table + "_migrations" and its unique index on event_id Table +
	// "_event_id_key". It must be a plain lower-case identifier (see
	// [Config.Validate]) and may not start with "sqlite_", a prefix SQLite
	// reserves. Defaults to [DefaultTable].
	Table string
}

// Validate reports whether Table is a plain lower-case SQL identifier
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes) outside SQLite's reserved "sqlite_" prefix; the error wraps
// [omnibox.ErrInvalidIdentifier] and names the setting. An empty Table is
// valid: it stands for [DefaultTable].
func (c *Config) Validate() error {
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
// [omnibox.New] and the [omnibox.RelayStore] given to [omnibox.NewRelay]. It
// holds no connection (every method takes the executor to run on) and is safe
// for concurrent use. Open the database with [Open], which sets what the
// store relies on (see the package documentation).
type Store struct {
	claimSQL     string
	deliverSQL   string
	insertPrefix string
	migrator     *migrator
	pendingSQL   string
	releaseSQL   string
	table        string // quoted
	tableName    string // unquoted, for messages
}

var (
	_ omnibox.Inserter   = (*Store)(nil)
	_ omnibox.RelayStore = (*Store)(nil)
)

// New returns a store for the table named by config. A nil config returns
// [omnibox.ErrNilConfig]; &Config{} takes the defaults. An invalid name
// returns an error wrapping [omnibox.ErrInvalidIdentifier]. New does not
// touch the database: create the table with [Store.Migrate], or apply
// [Store.MigrationFS] with a migration tool.
func New(config *Config) (*Store, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	table := cmp.Or(config.Table, DefaultTable)
	s := &Store{
		table:     quote(table),
		tableName: table,
	}
	migrator, err := newMigrator("migration", templateData{
		EventIDKey: quote(table + "_event_id_key"),
		Table:      s.table,
	}, table)
	if err != nil {
		return nil, err
	}
	s.migrator = migrator

	s.insertPrefix = "INSERT INTO " + s.table + " (event_id, topic, event_key, payload, metadata, created_at) VALUES "
	s.claimSQL = claimSQL(s.table)
	s.deliverSQL = "DELETE FROM " + s.table + " WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2"
	s.releaseSQL = "UPDATE " + s.table + " SET claimed_by = NULL, claimed_until = NULL, last_error = NULLIF(?3, '')" +
		" WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2"
	s.pendingSQL = "SELECT count(*) FROM " + s.table
	return s, nil
}

// quote quotes an identifier that [sqlident.Validate] accepted: such a name
// holds no quote, so wrapping it is enough. Quoting keeps keywords ("order",
// "group") usable as names.
func quote(ident string) string { return `"` + ident + `"` }

// insertColumns is the number of parameters per inserted row.
const insertColumns = 6

// maxInsertRows is the most rows one INSERT statement carries, so that it
// stays within SQLite's default limit of 32766 parameters per statement
// (SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32).
const maxInsertRows = 32766 / insertColumns

// Insert writes the events through tx, in order: their seq values, hence the
// claim order, follow the order of params.Events. Each chunk of up to
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
	const row = "(?, ?, ?, ?, ?, ?)"
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
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt.UnixMicro())
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

// claimSQL returns the claim statement for the quoted table. Parameters: ?1
// limit, ?2 owner prefix (empty for none), ?3 owner, ?4 lease in
// microseconds.
//
// head reads the first ?1 rows in seq order (all rows are pending): a walk of
// the rowid B-tree stopped by the LIMIT, whatever the backlog. A row is free
// when it has no lease, its lease expired (on the database's clock), or its
// lease belongs to an owner starting with the prefix; free is never NULL, as
// min() over the window would skip a NULL. The running min over the window
// keeps only the free rows before the first row that is not, so a live lease
// at the head blocks the claim. The UPDATE then fetches those rows by rowid;
// SQLite computes the IN list before it changes any row.
//
// SQLite runs a writing statement under the database's single write lock,
// which it takes before reading, so no other claim can run between this
// statement's read of the head and its update: unlike PostgreSQL, no
// second check of the lease in the UPDATE is needed. RETURNING gives the
// rows in no defined order: Claim sorts them.
func claimSQL(table string) string {
	const free = `(claimed_until IS NULL OR claimed_until < ` + nowMicros + ` OR (?2 <> '' AND substr(claimed_by, 1, length(?2)) IS ?2))`
	return `WITH head AS (
    SELECT seq, ` + free + ` AS free
    FROM ` + table + `
    ORDER BY seq
    LIMIT ?1
), prefix AS (
    SELECT seq, min(free) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS claimable
    FROM head
)
UPDATE ` + table + `
SET claimed_by = ?3,
    claimed_until = ` + nowMicros + ` + ?4,
    attempts = attempts + 1
WHERE seq IN (SELECT seq FROM prefix WHERE claimable)
RETURNING seq, event_id, topic, event_key, payload, metadata, created_at, attempts`
}

// Claim leases up to params.Limit of the oldest pending events to
// params.Owner for params.Lease, following the contract of
// [omnibox.RelayStore].
//
// The claim is one UPDATE statement, and SQLite lets one connection write at
// a time: a concurrent claim waits for the write lock (up to the
// connection's busy_timeout) and then finds the head leased, so two claims
// never return the same event and no extra lock is needed. tx should be a
// transaction that the caller commits right after, as [omnibox.Relay] does;
// Claim does not rely on how it was begun, since its statement takes the
// write lock before it reads, provided it is the transaction's first. The
// claim reads only about Limit rows however large the backlog: it walks the
// primary key in seq order and stops at the first event under another
// owner's live lease. Leases are kept to the microsecond and measured on the
// database's clock, which SQLite reads to the millisecond.
func (s *Store) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	switch {
	case params.Limit <= 0:
		return nil, fmt.Errorf("sqlite: claim: Limit must be positive, got %d", params.Limit)
	case params.Lease < time.Microsecond:
		return nil, fmt.Errorf("sqlite: claim: Lease must be at least 1µs, got %s", params.Lease)
	case params.Owner == "":
		return nil, errors.New("sqlite: claim: Owner is empty")
	}
	rows, err := tx.QueryContext(ctx, s.claimSQL, int64(params.Limit), params.OwnerPrefix, params.Owner, params.Lease.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: %w%s", s.tableName, err, busyHint(err))
	}
	defer rows.Close()
	res := &omnibox.ClaimResult{Events: make([]omnibox.ClaimedEvent, 0, min(params.Limit, 1024))}
	for rows.Next() {
		var (
			ev        omnibox.ClaimedEvent
			metadata  string
			createdAt int64
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts); err != nil {
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
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: claim from %s: %w%s", s.tableName, err, busyHint(err))
	}
	slices.SortFunc(res.Events, func(a, b omnibox.ClaimedEvent) int { return cmp.Compare(a.Seq, b.Seq) })
	return res, nil
}

// MarkDelivered deletes the events of params.Seqs that are still leased to
// params.Owner and reports how many it deleted. Events whose lease another
// owner has taken over are left alone.
func (s *Store) MarkDelivered(ctx context.Context, db omnibox.DBTX, params omnibox.MarkDeliveredParams) (int, error) {
	if len(params.Seqs) == 0 {
		return 0, nil
	}
	res, err := db.ExecContext(ctx, s.deliverSQL, jsonArray(params.Seqs), params.Owner)
	if err != nil {
		return 0, fmt.Errorf("sqlite: marking %d event(s) delivered in %s: %w%s", len(params.Seqs), s.tableName, err, busyHint(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: marking events delivered in %s: %w", s.tableName, err)
	}
	return int(n), nil
}

// Release ends params.Owner's lease on the events of params.Seqs, so that
// the next claim takes them at once, and records params.Error as their last
// error (NULL when empty). Events not leased to params.Owner are left alone.
func (s *Store) Release(ctx context.Context, db omnibox.DBTX, params omnibox.ReleaseParams) error {
	if len(params.Seqs) == 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, s.releaseSQL, jsonArray(params.Seqs), params.Owner, params.Error); err != nil {
		return fmt.Errorf("sqlite: releasing %d event(s) in %s: %w%s", len(params.Seqs), s.tableName, err, busyHint(err))
	}
	return nil
}

// Pending returns the number of events not yet delivered, leased or not.
// It counts the table, so it reads every row: use it for statistics and
// tests, not on a hot path.
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
func jsonArray(seqs []int64) string {
	b := make([]byte, 0, 2+len(seqs)*8)
	b = append(b, '[')
	for i, seq := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, seq, 10)
	}
	return string(append(b, ']'))
}
