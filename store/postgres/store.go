package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
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
	// Table is the name of the outbox table. Its migrations table is named
	// Table + "_migrations". It must be a plain lower-case identifier.
	// Defaults to [DefaultTable].
	Table string
}

// Validate reports whether the names are plain lower-case SQL identifiers
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes); the error wraps [omnibox.ErrInvalidIdentifier] and names the
// setting. An empty Table is valid: it stands for [DefaultTable].
func (c *Config) Validate() error {
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
	claimLockKey int64
	claimSQL     string
	deliverSQL   string
	insertPrefix string
	migrator     *migrator
	pendingSQL   string
	releaseSQL   string
	schema       string // quoted, empty when unqualified
	table        string // qualified and quoted
	tableName    string // qualified, unquoted, for messages
}

var (
	_ omnibox.Inserter   = (*Store)(nil)
	_ omnibox.RelayStore = (*Store)(nil)
)

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
	s := &Store{}
	names := templateData{
		EventIDKey: quote(table + "_event_id_key"),
		Table:      quote(table),
	}
	s.tableName = table
	if config.Schema != "" {
		s.schema = quote(config.Schema)
		names.Schema = s.schema
		names.Table = s.schema + "." + quote(table)
		s.tableName = config.Schema + "." + table
	}
	s.table = names.Table
	s.claimLockKey = lockKey("omnibox claim " + s.tableName)
	migrator, err := newMigrator("migration", names, s.schema, table, s.tableName, "omnibox migrate "+s.tableName)
	if err != nil {
		return nil, err
	}
	s.migrator = migrator

	s.insertPrefix = "INSERT INTO " + s.table + " (event_id, topic, event_key, payload, metadata, created_at) VALUES "
	s.claimSQL = claimSQL(s.table)
	s.deliverSQL = "DELETE FROM " + s.table + " WHERE seq = ANY ($1::bigint[]) AND claimed_by = $2"
	s.releaseSQL = "UPDATE " + s.table + " SET claimed_by = NULL, claimed_until = NULL, last_error = NULLIF($3, '')" +
		" WHERE seq = ANY ($1::bigint[]) AND claimed_by = $2"
	s.pendingSQL = "SELECT count(*) FROM " + s.table
	return s, nil
}

// quote quotes an identifier that [sqlident.Validate] accepted: such a name
// holds no quote, so wrapping it is enough. Quoting keeps reserved words
// ("user", "order") usable as names.
func quote(ident string) string { return `"` + ident + `"` }

// lockKey derives an advisory lock key from s (FNV-1a, 64 bits).
func lockKey(s string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return int64(h.Sum64())
}

// insertColumns is the number of parameters per inserted row.
const insertColumns = 6

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
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d::jsonb, $%d)", p+1, p+2, p+3, p+4, p+5, p+6)
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt)
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

// claimSQL returns the claim statement for the qualified, quoted table.
// Parameters: $1 limit, $2 owner prefix (empty for none), $3 owner, $4 lease
// in microseconds.
//
// head reads the first $1 rows in seq order (all rows are pending): an index
// scan of the primary key stopped by the LIMIT, whatever the backlog. A row
// is free when it has no lease, its lease expired (on the database's clock),
// or its lease belongs to an owner starting with the prefix. bool_and over
// the window keeps only the free rows before the first row that is not, so a
// live lease at the head blocks the claim. The UPDATE then fetches those
// rows by primary key and checks again that they are free, so that even a
// misuse without the claim lock cannot lease an event twice.
func claimSQL(table string) string {
	const free = `(claimed_until IS NULL OR claimed_until < statement_timestamp() OR ($2::text <> '' AND starts_with(claimed_by, $2::text)))`
	return `WITH head AS (
    SELECT seq, claimed_by, claimed_until
    FROM ` + table + `
    ORDER BY seq
    LIMIT $1
), prefix AS (
    SELECT seq, bool_and` + free + ` OVER (ORDER BY seq) AS claimable
    FROM head
), claimed AS (
    UPDATE ` + table + `
    SET claimed_by = $3::text,
        claimed_until = statement_timestamp() + $4::bigint * interval '1 microsecond',
        attempts = attempts + 1
    WHERE seq = ANY (ARRAY(SELECT seq FROM prefix WHERE claimable))
      AND ` + free + `
    RETURNING seq, event_id, topic, event_key, payload, metadata::text AS metadata, created_at, attempts
)
SELECT seq, event_id, topic, event_key, payload, metadata, created_at, attempts
FROM claimed
ORDER BY seq`
}

// Claim leases up to params.Limit of the oldest pending events to
// params.Owner for params.Lease, following the contract of
// [omnibox.RelayStore].
//
// tx must be a transaction (a *sql.Tx) that the caller commits right after:
// Claim first takes a transaction-level advisory lock for the table with
// pg_try_advisory_xact_lock, and returns an empty result without error when
// another claim holds it. That lock, held until commit, is what keeps two
// claims from reading the same head of the table. The claim then reads only
// about Limit rows however large the backlog: it walks the primary key in
// seq order and stops at the first event under another owner's live lease.
// Sub-second leases are kept to the microsecond.
func (s *Store) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	switch {
	case params.Limit <= 0:
		return nil, fmt.Errorf("postgres: claim: Limit must be positive, got %d", params.Limit)
	case params.Lease < time.Microsecond:
		return nil, fmt.Errorf("postgres: claim: Lease must be at least 1µs, got %s", params.Lease)
	case params.Owner == "":
		return nil, errors.New("postgres: claim: Owner is empty")
	}
	var locked bool
	if err := tx.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock($1)", s.claimLockKey).Scan(&locked); err != nil {
		return nil, fmt.Errorf("postgres: claim: taking the claim lock of %s: %w", s.tableName, err)
	}
	if !locked {
		return &omnibox.ClaimResult{}, nil
	}
	rows, err := tx.QueryContext(ctx, s.claimSQL, int64(params.Limit), params.OwnerPrefix, params.Owner, params.Lease.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: claim from %s: %w", s.tableName, err)
	}
	defer rows.Close()
	res := &omnibox.ClaimResult{Events: make([]omnibox.ClaimedEvent, 0, min(params.Limit, 1024))}
	for rows.Next() {
		var (
			ev       omnibox.ClaimedEvent
			metadata string
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &ev.CreatedAt, &ev.Attempts); err != nil {
			return nil, fmt.Errorf("postgres: claim from %s: scanning: %w", s.tableName, err)
		}
		if ev.Payload == nil {
			ev.Payload = []byte{}
		}
		ev.CreatedAt = ev.CreatedAt.UTC()
		if ev.Metadata, err = metadatajson.Decode(metadata); err != nil {
			return nil, fmt.Errorf("postgres: claim from %s: decoding metadata of event %q: %w", s.tableName, ev.ID, err)
		}
		res.Events = append(res.Events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: claim from %s: %w", s.tableName, err)
	}
	return res, nil
}

// MarkDelivered deletes the events of params.Seqs that are still leased to
// params.Owner and reports how many it deleted. Events whose lease another
// owner has taken over are left alone.
func (s *Store) MarkDelivered(ctx context.Context, db omnibox.DBTX, params omnibox.MarkDeliveredParams) (int, error) {
	if len(params.Seqs) == 0 {
		return 0, nil
	}
	res, err := db.ExecContext(ctx, s.deliverSQL, int64Array(params.Seqs), params.Owner)
	if err != nil {
		return 0, fmt.Errorf("postgres: marking %d event(s) delivered in %s: %w", len(params.Seqs), s.tableName, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("postgres: marking events delivered in %s: %w", s.tableName, err)
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
	if _, err := db.ExecContext(ctx, s.releaseSQL, int64Array(params.Seqs), params.Owner, params.Error); err != nil {
		return fmt.Errorf("postgres: releasing %d event(s) in %s: %w", len(params.Seqs), s.tableName, err)
	}
	return nil
}

// Pending returns the number of events not yet delivered, leased or not.
// It counts the table, so it reads every row: use it for statistics and
// tests, not on a hot path.
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
func int64Array(seqs []int64) string {
	b := make([]byte, 0, 2+len(seqs)*8)
	b = append(b, '{')
	for i, seq := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, seq, 10)
	}
	return string(append(b, '}'))
}
