package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultTable is the default of [Config.Table].
const DefaultTable = "omnibox_outbox"

// Config configures a [Store]. The zero value takes every default.
type Config struct {
	// Database holds the outbox table, its migrations table and its lock
	// table. It must be a plain lower-case identifier (see
	// [Config.Validate]) and must exist: the store never creates databases.
	// Defaults to "": names are left unqualified and resolved in the
	// connection's current database (the one named in the DSN).
	Database string
	// Table is the name of the outbox table. Its migrations table is named
	// Table + "_migrations" and its claim lock table Table + "_lock". It
	// must be a plain lower-case identifier. Defaults to [DefaultTable].
	Table string
}

// Validate reports whether the names are plain lower-case SQL identifiers
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes); the error wraps [omnibox.ErrInvalidIdentifier] and names the
// setting. An empty Table is valid: it stands for [DefaultTable].
func (c *Config) Validate() error {
	if c.Database != "" {
		if err := sqlident.Validate("mysql: Config.Database", c.Database, omnibox.ErrInvalidIdentifier); err != nil {
			return err
		}
	}
	return sqlident.Validate("mysql: Config.Table", cmp.Or(c.Table, DefaultTable), omnibox.ErrInvalidIdentifier)
}

// Store is the MySQL and MariaDB outbox store: the [omnibox.Inserter] given
// to [omnibox.New] and the [omnibox.RelayStore] given to [omnibox.NewRelay].
// It holds no connection (every method takes the executor to run on) and is
// safe for concurrent use. It works with github.com/go-sql-driver/mysql and
// needs nothing of the DSN beyond a utf8mb4 connection (the driver's
// default) with autocommit on: parseTime, loc, time_zone and
// interpolateParams may be set either way.
type Store struct {
	deliverPrefix  string
	headPrefix     string
	insertPrefix   string
	lockCountSQL   string
	lockRowsPrefix string
	lockSQL        string
	lockTable      string // qualified and quoted
	migrator       *migrator
	pendingSQL     string
	releasePrefix  string
	table          string // qualified and quoted
	tableName      string // qualified, unquoted, for messages
	updatePrefix   string
}

var (
	_ omnibox.Inserter   = (*Store)(nil)
	_ omnibox.RelayStore = (*Store)(nil)
)

// New returns a store for the table named by config. A nil config returns
// [omnibox.ErrNilConfig]; &Config{} takes the defaults. Invalid names return
// an error wrapping [omnibox.ErrInvalidIdentifier]. New does not touch the
// database: create the tables with [Store.Migrate], or apply
// [Store.MigrationFS] with a migration tool.
func New(config *Config) (*Store, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	table := cmp.Or(config.Table, DefaultTable)
	s := &Store{tableName: table}
	qualify := quote
	if config.Database != "" {
		qualify = func(name string) string { return quote(config.Database) + "." + quote(name) }
		s.tableName = config.Database + "." + table
	}
	s.table = qualify(table)
	s.lockTable = qualify(table + "_lock")
	migrator, err := newMigrator("migration", templateData{
		EventIDKey:    quote(table + "_event_id_key"),
		LockTable:     s.lockTable,
		MetadataCheck: quote(table + "_metadata_check"),
		Table:         s.table,
	}, config.Database, table)
	if err != nil {
		return nil, err
	}
	migrator.after = s.restoreLockRow
	migrator.checkSession = session.check
	migrator.configName = "Config"
	migrator.owner = "outbox"
	migrator.tables = []string{table, table + "_lock", table + "_migrations"}
	s.migrator = migrator

	s.insertPrefix = "INSERT INTO " + s.table + " (event_id, topic, event_key, payload, metadata, created_at) VALUES "
	s.lockSQL = "SELECT id, @@character_set_client, @@character_set_connection, @@character_set_results, @@autocommit FROM " +
		s.lockTable + " WHERE id = 1 FOR UPDATE SKIP LOCKED"
	s.lockCountSQL = "SELECT COUNT(*) FROM " + s.lockTable
	s.headPrefix = "SELECT seq, claimed_by, " + lapsed + " FROM " + s.table + " ORDER BY seq LIMIT "
	s.lockRowsPrefix = "SELECT seq, event_id, topic, event_key, payload, metadata, DATE_FORMAT(created_at, '" + dateFormat + "'), attempts, claimed_by, " +
		lapsed + " FROM " + s.table + " WHERE seq IN ("
	s.updatePrefix = "UPDATE " + s.table + " SET claimed_by = ?, claimed_until = UTC_TIMESTAMP(6) + INTERVAL "
	s.deliverPrefix = "DELETE FROM " + s.table + " WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	s.releasePrefix = "UPDATE " + s.table + " SET claimed_by = NULL, claimed_until = NULL, last_error = ? WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	s.pendingSQL = "SELECT COUNT(*) FROM " + s.table
	return s, nil
}

// quote quotes an identifier that [sqlident.Validate] accepted: such a name
// holds no backtick, so wrapping it is enough. Quoting keeps reserved words
// ("order", "user") usable as names.
func quote(ident string) string { return "`" + ident + "`" }

// lapsed is true for a row without a live lease: none, or one that expired
// on the database's clock. UTC_TIMESTAMP, unlike NOW, does not depend on the
// session time zone, and the DATETIME columns hold UTC.
const lapsed = "(claimed_until IS NULL OR claimed_until < UTC_TIMESTAMP(6))"

// dateFormat renders a DATETIME(6) as text, which is how the store reads
// created_at: the driver's own parsing (parseTime) would depend on the DSN's
// loc, and even shift times that fall in a daylight saving gap of that zone.
const (
	dateFormat = "%Y-%m-%d %H:%i:%s.%f"
	timeLayout = "2006-01-02 15:04:05.000000"
)

// Limits of the statements the store builds.
const (
	// insertColumns is the number of parameters per inserted row.
	insertColumns = 6
	// maxInsertRows keeps an INSERT within the protocol's limit of 65535
	// parameters per prepared statement.
	maxInsertRows = 65535 / insertColumns
	// maxInsertBytes caps the data one INSERT carries (a single larger event
	// goes alone), so that a statement stays well under max_allowed_packet
	// (16 MiB by default on MariaDB, 64 MiB on MySQL) even when
	// interpolateParams=true inlines and escapes every value.
	maxInsertBytes = 4 << 20
	// maxSeqsPerStatement caps the seqs listed in one statement's IN (...).
	maxSeqsPerStatement = 10_000
	// maxOwnerLen is the longest claim owner, in bytes (claimed_by is
	// VARCHAR(255)).
	maxOwnerLen = 255
	// maxLastErrorLen is the most bytes of a release error kept (last_error
	// is TEXT).
	maxLastErrorLen = 65535
)

// Insert writes the events through tx, in order: their seq values, hence the
// claim order, follow the order of params.Events. Events go in chunks of at
// most maxInsertRows rows and about maxInsertBytes bytes, each written by
// one multi-row INSERT. The events become visible to [Store.Claim] when the
// transaction commits.
//
// tx must be a transaction (a *sql.Tx, as [omnibox.Outbox] passes; a
// *sql.DB is refused when the events take several chunks). MySQL keeps a
// transaction going after a failed statement, so when the events take
// several chunks Insert sets a savepoint first and rolls back to it on
// error: an error leaves no event of the call written, and the transaction
// usable, whatever the caller then does with it.
//
// An event ID already in the table returns an error wrapping
// [omnibox.ErrDuplicateEventID] (and the driver's *mysql.MySQLError, number
// 1062). An event whose CreatedAt is outside the years 1000 to 9999 (the
// range of DATETIME) returns an *[omnibox.EventError] wrapping
// [omnibox.ErrInvalidEvent].
func (s *Store) Insert(ctx context.Context, tx omnibox.DBTX, params omnibox.InsertParams) error {
	events := params.Events
	for i, ev := range events {
		if y := ev.CreatedAt.UTC().Year(); y < 1000 || y > 9999 {
			return &omnibox.EventError{
				Index:  i,
				ID:     ev.ID,
				Reason: fmt.Sprintf("CreatedAt %s is outside the years 1000 to 9999 that MySQL's DATETIME holds", ev.CreatedAt.UTC().Format(time.RFC3339Nano)),
				Err:    omnibox.ErrInvalidEvent,
			}
		}
	}
	first := insertChunkLen(events)
	if first == len(events) {
		if first == 0 {
			return nil
		}
		return s.insertChunk(ctx, tx, events)
	}
	if _, ok := tx.(*sql.DB); ok {
		return fmt.Errorf("mysql: inserting %d events into %s takes several statements, which must run in a transaction: pass a *sql.Tx, not a *sql.DB", len(events), s.tableName)
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT omnibox_insert"); err != nil {
		return fmt.Errorf("mysql: inserting into %s: setting a savepoint: %w", s.tableName, err)
	}
	for len(events) > 0 {
		n := insertChunkLen(events)
		if err := s.insertChunk(ctx, tx, events[:n]); err != nil {
			if _, rbErr := tx.ExecContext(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT omnibox_insert"); rbErr != nil {
				err = errors.Join(err, fmt.Errorf("mysql: inserting into %s: rolling back to the savepoint: %w", s.tableName, rbErr))
			}
			return err
		}
		events = events[n:]
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT omnibox_insert"); err != nil {
		return fmt.Errorf("mysql: inserting into %s: releasing the savepoint: %w", s.tableName, err)
	}
	return nil
}

// insertChunkLen returns how many of events the next INSERT carries: at
// most maxInsertRows, and no more than maxInsertBytes of data unless the
// first event alone is larger.
func insertChunkLen(events []omnibox.Event) int {
	size := 0
	for i, ev := range events {
		if i == maxInsertRows {
			return i
		}
		size += eventSize(ev)
		if i > 0 && size > maxInsertBytes {
			return i
		}
	}
	return len(events)
}

// eventSize estimates the bytes an event takes in an INSERT.
func eventSize(ev omnibox.Event) int {
	n := len(ev.ID) + len(ev.Topic) + len(ev.Key) + len(ev.Payload) + len(timeLayout) + 64
	for k, v := range ev.Metadata {
		n += len(k) + len(v) + 6
	}
	return n
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
			return fmt.Errorf("mysql: encoding metadata of event %q: %w", ev.ID, err)
		}
		payload := ev.Payload
		if payload == nil {
			payload = []byte{} // a nil []byte is sent as NULL
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
		// created_at goes as text in UTC: a time.Time would be converted to
		// the DSN's loc by the driver.
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt.UTC().Format(timeLayout))
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		if isDuplicateKey(err) {
			return fmt.Errorf("mysql: inserting into %s: %w: %w", s.tableName, omnibox.ErrDuplicateEventID, err)
		}
		return fmt.Errorf("mysql: inserting %d event(s) into %s: %w", len(events), s.tableName, err)
	}
	return nil
}

// isDuplicateKey reports whether err is MySQL's ER_DUP_ENTRY (1062). The
// outbox table's only unique key besides the auto-increment primary key is
// the one on event_id.
func isDuplicateKey(err error) bool {
	var myErr *mysql.MySQLError
	return errors.As(err, &myErr) && myErr.Number == 1062
}

// Claim leases up to params.Limit of the oldest pending events to
// params.Owner for params.Lease, following the contract of
// [omnibox.RelayStore]. MySQL has no UPDATE ... RETURNING, so the claim is
// four statements in tx:
//
//  1. The claim lock: SELECT ... FOR UPDATE SKIP LOCKED of the one row of
//     Table + "_lock". When another claim's transaction holds it, no row
//     comes back and Claim returns an empty result without error, rather
//     than wait. Held until tx ends, the lock keeps two claims from reading
//     the same head of the table. (A row lock, not GET_LOCK: GET_LOCK is
//     held by the session, and would outlive the transaction on a pooled
//     connection.)
//  2. The head: a plain (consistent, non-locking) read of the first Limit
//     rows in seq order, through the primary key and stopped by the LIMIT,
//     so it reads about Limit rows whatever the backlog. Like PostgreSQL's
//     snapshot, it does not see, and does not wait for, events that
//     uncommitted transactions inserted. The candidates are the rows before
//     the first one that is not free: a row is free when it has no lease,
//     its lease expired on the database's clock, or its owner starts with
//     params.OwnerPrefix.
//  3. SELECT ... FOR UPDATE of the candidates by primary key, which locks
//     them and reads their latest committed version with every column; the
//     free prefix is computed again on it (a candidate deleted meanwhile,
//     being delivered, is skipped). A locking read of the head itself would
//     instead wait for every uncommitted insert there, and SKIP LOCKED
//     would skip rows being released, claiming events out of order.
//  4. UPDATE of those rows by primary key: claimed_by = Owner, claimed_until
//     = UTC_TIMESTAMP(6) + Lease, attempts + 1. It checks again that they
//     are free, so that even a misuse without a transaction cannot lease an
//     event twice, and fails when it did not update them all.
//
// The events come back in seq order from the rows read in step 3, with
// their attempts counting this claim. Sub-second leases are kept to the
// microsecond.
//
// tx must be a transaction (a *sql.Tx) that the caller commits right after;
// its isolation level should be the default REPEATABLE READ or READ
// COMMITTED. Claim also checks that the connection is utf8mb4 with
// autocommit on (see [Store.Migrate]) and returns an error saying how to fix
// the DSN when it is not.
func (s *Store) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
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
	}
	locked, err := s.claimLock(ctx, tx)
	if err != nil {
		return nil, err
	}
	if !locked {
		return &omnibox.ClaimResult{}, nil
	}
	candidates, err := s.head(ctx, tx, params)
	if err != nil {
		return nil, err
	}
	if len(candidates) == 0 {
		return &omnibox.ClaimResult{}, nil
	}
	events, err := s.lockFree(ctx, tx, candidates, params.OwnerPrefix)
	if err != nil {
		return nil, err
	}
	if len(events) > 0 {
		if err := s.lease(ctx, tx, events, params); err != nil {
			return nil, err
		}
	}
	return &omnibox.ClaimResult{Events: events}, nil
}

// claimLock takes the claim lock of the table for tx's transaction. It
// reports false when another claim holds it.
func (s *Store) claimLock(ctx context.Context, tx omnibox.DBTX) (bool, error) {
	var (
		id         int
		sess       session
		autocommit int64
	)
	err := tx.QueryRowContext(ctx, s.lockSQL).Scan(&id, &sess.charsetClient, &sess.charsetConnection, &sess.charsetResults, &autocommit)
	if errors.Is(err, sql.ErrNoRows) {
		// Locked by another claim, or the row is missing: a consistent read
		// (which does not wait for the lock) tells which.
		var n int
		if err := tx.QueryRowContext(ctx, s.lockCountSQL).Scan(&n); err != nil {
			return false, fmt.Errorf("mysql: claim from %s: reading the claim lock table: %w", s.tableName, err)
		}
		if n == 0 {
			return false, fmt.Errorf("mysql: claim from %s: the claim lock table %s has no row; run Store.Migrate to restore it", s.tableName, s.lockTable)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mysql: claim from %s: taking the claim lock: %w", s.tableName, err)
	}
	sess.autocommit = autocommit == 1
	if err := sess.check(); err != nil {
		return false, fmt.Errorf("mysql: claim from %s: %w", s.tableName, err)
	}
	return true, nil
}

// head returns the seqs of the free rows at the head of the table, in seq
// order, from a consistent read of the first params.Limit rows.
func (s *Store) head(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, s.headPrefix+strconv.Itoa(params.Limit))
	if err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading the head: %w", s.tableName, err)
	}
	defer rows.Close()
	seqs := make([]int64, 0, min(params.Limit, 1024))
	for rows.Next() {
		var (
			seq       int64
			claimedBy sql.NullString
			lapsed    bool
		)
		if err := rows.Scan(&seq, &claimedBy, &lapsed); err != nil {
			return nil, fmt.Errorf("mysql: claim from %s: reading the head: %w", s.tableName, err)
		}
		if !free(lapsed, claimedBy.String, params.OwnerPrefix) {
			break
		}
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: claim from %s: reading the head: %w", s.tableName, err)
	}
	return seqs, nil
}

// free reports whether a row may be claimed: its lease lapsed, or it
// belongs to an owner starting with the non-empty prefix.
func free(lapsed bool, claimedBy, ownerPrefix string) bool {
	return lapsed || (ownerPrefix != "" && strings.HasPrefix(claimedBy, ownerPrefix))
}

// lockFree locks the candidate rows, reads their latest version and returns
// the events of those still free, up to the first that is not.
func (s *Store) lockFree(ctx context.Context, tx omnibox.DBTX, candidates []int64, ownerPrefix string) ([]omnibox.ClaimedEvent, error) {
	events := make([]omnibox.ClaimedEvent, 0, len(candidates))
	for chunk := range chunks(candidates) {
		stopped, err := s.lockFreeChunk(ctx, tx, chunk, ownerPrefix, &events)
		if err != nil {
			return nil, err
		}
		if stopped {
			break
		}
	}
	return events, nil
}

func (s *Store) lockFreeChunk(ctx context.Context, tx omnibox.DBTX, seqs []int64, ownerPrefix string, events *[]omnibox.ClaimedEvent) (stopped bool, err error) {
	rows, err := tx.QueryContext(ctx, s.lockRowsPrefix+seqList(seqs)+") ORDER BY seq FOR UPDATE")
	if err != nil {
		return false, fmt.Errorf("mysql: claim from %s: locking events: %w", s.tableName, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ev        omnibox.ClaimedEvent
			metadata  string
			createdAt string
			claimedBy sql.NullString
			lapsed    bool
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts, &claimedBy, &lapsed); err != nil {
			return false, fmt.Errorf("mysql: claim from %s: scanning: %w", s.tableName, err)
		}
		if !free(lapsed, claimedBy.String, ownerPrefix) {
			return true, nil
		}
		if ev.Payload == nil {
			ev.Payload = []byte{}
		}
		if ev.CreatedAt, err = time.ParseInLocation(timeLayout, createdAt, time.UTC); err != nil {
			return false, fmt.Errorf("mysql: claim from %s: reading created_at of event %q: %w", s.tableName, ev.ID, err)
		}
		if ev.Metadata, err = metadatajson.Decode(metadata); err != nil {
			return false, fmt.Errorf("mysql: claim from %s: decoding metadata of event %q: %w", s.tableName, ev.ID, err)
		}
		ev.Attempts++ // this claim
		*events = append(*events, ev)
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("mysql: claim from %s: locking events: %w", s.tableName, err)
	}
	return false, nil
}

// lease leases the events to params.Owner.
func (s *Store) lease(ctx context.Context, tx omnibox.DBTX, events []omnibox.ClaimedEvent, params omnibox.ClaimParams) error {
	// Free again, in SQL: claimed_by is compared as bytes, over the prefix's
	// length in characters.
	recheck := " AND (" + lapsed
	args := []any{params.Owner}
	if params.OwnerPrefix != "" {
		recheck += " OR LEFT(claimed_by, " + strconv.Itoa(utf8.RuneCountInString(params.OwnerPrefix)) + ") = CAST(? AS BINARY)"
		args = append(args, params.OwnerPrefix)
	}
	recheck += ")"
	update := s.updatePrefix + strconv.FormatInt(params.Lease.Microseconds(), 10) + " MICROSECOND, attempts = attempts + 1 WHERE seq IN ("
	seqs := make([]int64, len(events))
	for i, ev := range events {
		seqs[i] = ev.Seq
	}
	var updated int64
	for chunk := range chunks(seqs) {
		res, err := tx.ExecContext(ctx, update+seqList(chunk)+")"+recheck, args...)
		if err != nil {
			return fmt.Errorf("mysql: claim from %s: leasing %d event(s): %w", s.tableName, len(chunk), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("mysql: claim from %s: leasing events: %w", s.tableName, err)
		}
		updated += n
	}
	if updated != int64(len(events)) {
		return fmt.Errorf("mysql: claim from %s: leased %d of the %d events locked; they changed during the claim (is tx a transaction?)", s.tableName, updated, len(events))
	}
	return nil
}

// MarkDelivered deletes the events of params.Seqs that are still leased to
// params.Owner and reports how many it deleted. Events whose lease another
// owner has taken over are left alone.
func (s *Store) MarkDelivered(ctx context.Context, db omnibox.DBTX, params omnibox.MarkDeliveredParams) (int, error) {
	total := 0
	for chunk := range chunks(params.Seqs) {
		res, err := db.ExecContext(ctx, s.deliverPrefix+seqList(chunk)+")", params.Owner)
		if err != nil {
			return total, fmt.Errorf("mysql: marking %d event(s) delivered in %s: %w", len(params.Seqs), s.tableName, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("mysql: marking events delivered in %s: %w", s.tableName, err)
		}
		total += int(n)
	}
	return total, nil
}

// Release ends params.Owner's lease on the events of params.Seqs, so that
// the next claim takes them at once, and records params.Error as their last
// error (NULL when empty; cut to 64 KiB, and invalid UTF-8 replaced, so that
// the TEXT column takes it). Events not leased to params.Owner are left
// alone.
func (s *Store) Release(ctx context.Context, db omnibox.DBTX, params omnibox.ReleaseParams) error {
	var lastError any
	if params.Error != "" {
		lastError = truncateUTF8(strings.ToValidUTF8(params.Error, "\uFFFD"), maxLastErrorLen)
	}
	for chunk := range chunks(params.Seqs) {
		if _, err := db.ExecContext(ctx, s.releasePrefix+seqList(chunk)+")", lastError, params.Owner); err != nil {
			return fmt.Errorf("mysql: releasing %d event(s) in %s: %w", len(params.Seqs), s.tableName, err)
		}
	}
	return nil
}

// Pending returns the number of events not yet delivered, leased or not.
// It counts the table, so it reads every row: use it for statistics and
// tests, not on a hot path.
func (s *Store) Pending(ctx context.Context, db omnibox.DBTX) (int64, error) {
	var n int64
	if err := db.QueryRowContext(ctx, s.pendingSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("mysql: counting pending events in %s: %w", s.tableName, err)
	}
	return n, nil
}

// chunks yields seqs in pieces of at most maxSeqsPerStatement.
func chunks(seqs []int64) func(yield func([]int64) bool) {
	return func(yield func([]int64) bool) {
		for len(seqs) > 0 {
			n := min(len(seqs), maxSeqsPerStatement)
			if !yield(seqs[:n]) {
				return
			}
			seqs = seqs[n:]
		}
	}
}

// seqList renders seqs as a comma-separated list for IN (...). It is built
// from integers only, so it is safe to put in SQL, and it spares a
// parameter per seq.
func seqList(seqs []int64) string {
	b := make([]byte, 0, len(seqs)*8)
	for i, seq := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, seq, 10)
	}
	return string(b)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
