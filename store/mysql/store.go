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
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/metadatajson"
	"github.com/omnibox-go/omnibox/internal/seqlist"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultTable is the default of [Config.Table].
const DefaultTable = "omnibox_outbox"

// Config configures a [Store]. The zero value takes every default.
type Config struct {
	// Database holds the outbox table, its migrations table and its lock,
	// partition and relay tables. It must be a plain lower-case identifier
	// (see [Config.Validate]) and must exist: the store never creates
	// databases. Defaults to "": names are left unqualified and resolved in
	// the connection's current database (the one named in the DSN).
	Database string
	// Retention is how long delivered events are kept (as state 3,
	// delivered) before [Store.Purge] deletes them, for audit and replay.
	// It is kept to the microsecond and must not be negative. Defaults to
	// 0: delivered events are deleted at once.
	Retention time.Duration
	// Table is the name of the outbox table. Its migrations table is named
	// Table + "_migrations", its claim lock table Table + "_lock", its
	// partition and relay tables Table + "_parts" and Table + "_relays". It
	// must be a plain lower-case identifier. Defaults to [DefaultTable].
	Table string
}

// Validate reports whether the names are plain lower-case SQL identifiers
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes), the error then wrapping [omnibox.ErrInvalidIdentifier] and naming
// the setting, and whether Retention is not negative. An empty Table is
// valid: it stands for [DefaultTable].
func (c *Config) Validate() error {
	if c.Retention < 0 {
		return fmt.Errorf("mysql: Config.Retention must not be negative, got %s", c.Retention)
	}
	if c.Database != "" {
		if err := sqlident.Validate("mysql: Config.Database", c.Database, omnibox.ErrInvalidIdentifier); err != nil {
			return err
		}
	}
	return sqlident.Validate("mysql: Config.Table", cmp.Or(c.Table, DefaultTable), omnibox.ErrInvalidIdentifier)
}

// Store is the MySQL and MariaDB outbox store: the [omnibox.Inserter] given
// to [omnibox.New] and the [omnibox.RelayStore] given to [omnibox.NewRelay],
// also an [omnibox.DeadLetterStore] and an [omnibox.Purger]. It holds no
// connection (every method takes the executor to run on) and is safe for
// concurrent use. It works with github.com/go-sql-driver/mysql and needs
// nothing of the DSN beyond a utf8mb4 connection (the driver's default)
// with autocommit on: parseTime, loc, time_zone and interpolateParams may
// be set either way.
type Store struct {
	claimRowsPrefix   string
	deadPrefix        string
	deliverPrefix     string
	discardPrefix     string
	freePartsPrefix   string
	goneSQL           string
	flavor            atomic.Int32 // serverMySQL or serverMariaDB once known
	headsPrefix       string
	headsSuffix       string
	insertPrefix      string
	leaseEventsPrefix string
	leasePartsPrefix  string
	listDeadPrefix    string
	lockPartsPrefix   string
	lockSQL           string
	lockTable         string // qualified and quoted
	migrator          *migrator
	ownedPartsSQL     string
	partsTable        string // qualified and quoted
	pendingSQL        string
	purgePrefix       string
	releasePrefix     string
	requeuePrefix     string
	retention         time.Duration
	retryPrefix       string
	scanPrefix        string
	seenSQL           string
	table             string // qualified and quoted
	tableName         string // qualified, unquoted, for messages
}

var (
	_ omnibox.Inserter        = (*Store)(nil)
	_ omnibox.RelayStore      = (*Store)(nil)
	_ omnibox.DeadLetterStore = (*Store)(nil)
	_ omnibox.Purger          = (*Store)(nil)
)

// Names of the outbox table's indexes (index names are per table in MySQL).
const (
	// pendingIndex is on (part, pending, seq): a partition's pending events
	// (states 0 and 1) in seq order.
	pendingIndex = "pending_idx"
	// failedIndex is on (part, failed_key, state, seq): the waiting and
	// dead events of a key.
	failedIndex = "failed_idx"
)

// New returns a store for the table named by config. A nil config returns
// [omnibox.ErrNilConfig]; &Config{} takes the defaults. Invalid names return
// an error wrapping [omnibox.ErrInvalidIdentifier], a negative Retention an
// error naming it. New does not touch the database: create the tables with
// [Store.Migrate], or apply [Store.MigrationFS] with a migration tool.
func New(config *Config) (*Store, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	table := cmp.Or(config.Table, DefaultTable)
	s := &Store{retention: config.Retention, tableName: table}
	qualify := quote
	databaseLiteral := "DATABASE()"
	if config.Database != "" {
		qualify = func(name string) string { return quote(config.Database) + "." + quote(name) }
		s.tableName = config.Database + "." + table
		databaseLiteral = "'" + config.Database + "'"
	}
	s.table = qualify(table)
	s.lockTable = qualify(table + "_lock")
	s.partsTable = qualify(table + "_parts")
	relaysTable := qualify(table + "_relays")
	migrator, err := newMigrator("migration", templateData{
		DatabaseLiteral:    databaseLiteral,
		EventIDKey:         quote(table + "_event_id_key"),
		LockTable:          s.lockTable,
		MetadataCheck:      quote(table + "_metadata_check"),
		PartsTable:         s.partsTable,
		RelaysTable:        relaysTable,
		RelaysTableLiteral: "'" + table + "_relays'",
		Table:              s.table,
		TableLiteral:       "'" + table + "'",
	}, config.Database, table)
	if err != nil {
		return nil, err
	}
	migrator.after = s.restoreRows
	migrator.checkSession = session.check
	migrator.configName = "Config"
	migrator.owner = "outbox"
	migrator.tables = []string{table, table + "_lock", table + "_migrations", table + "_parts", table + "_relays"}
	s.migrator = migrator

	t, parts := s.table, s.partsTable
	s.insertPrefix = "INSERT INTO " + t + " (event_id, topic, event_key, payload, metadata, created_at, part) VALUES "
	s.lockSQL = "SELECT id, @@character_set_client, @@character_set_connection, @@character_set_results, @@autocommit FROM " +
		s.lockTable + " WHERE id = 1 FOR UPDATE"
	// The relay is recorded with its nonce, unless the row holds another
	// live process's nonce (and the claim checks, the first parameter of
	// conflict): the row is then left as it is, which the heads statement
	// reads back. Both assignments test the row as it was (nonce, when it
	// changes, changes to the claim's), so that they agree whether the
	// server assigns left to right or, with MariaDB's
	// SIMULTANEOUS_ASSIGNMENT, all at once.
	conflict := "? AND seen_until >= UTC_TIMESTAMP(6) AND nonce <> '' AND nonce <> CAST(? AS BINARY)"
	s.seenSQL = "INSERT INTO " + relaysTable + " (relay_id, seen_until, nonce) VALUES (?, DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND), ?)" +
		" ON DUPLICATE KEY UPDATE nonce = IF(" + conflict + ", nonce, CAST(? AS BINARY))," +
		" seen_until = IF(" + conflict + ", seen_until, DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND))"
	s.goneSQL = "DELETE FROM " + relaysTable + " WHERE seen_until < UTC_TIMESTAMP(6) AND relay_id <> CAST(? AS BINARY)"
	s.headsPrefix = "SELECT p.part, (SELECT o.seq FROM " + t + " o FORCE INDEX (" + pendingIndex + ")" +
		" WHERE o.part = p.part AND o.pending = 1 AND %s ORDER BY o.seq LIMIT 1) AS head," +
		" NULL AS others, NULL AS expired, NULL AS nonce" +
		" FROM " + parts + " p WHERE p.claimed_until IS NULL OR p.claimed_until < UTC_TIMESTAMP(6)"
	s.headsSuffix = " UNION ALL SELECT -1, NULL," +
		" (SELECT COUNT(*) FROM " + relaysTable + " WHERE seen_until >= UTC_TIMESTAMP(6) AND relay_id <> CAST(? AS BINARY))," +
		" (SELECT COUNT(*) FROM " + relaysTable + " WHERE seen_until < UTC_TIMESTAMP(6))," +
		" (SELECT nonce FROM " + relaysTable + " WHERE relay_id = CAST(? AS BINARY))"
	s.scanPrefix = "(SELECT o.seq, o.part FROM " + t + " o FORCE INDEX (" + pendingIndex + ") WHERE o.part = "
	s.leasePartsPrefix = "UPDATE " + parts + " SET claimed_by = CAST(? AS BINARY), claimed_until = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND)" +
		" WHERE (claimed_until IS NULL OR claimed_until < UTC_TIMESTAMP(6)%s) AND part IN ("
	s.leaseEventsPrefix = "UPDATE " + t + " SET claimed_by = ?" +
		" WHERE (state = 0 OR (state = 1 AND next_attempt_at <= UTC_TIMESTAMP(6))) AND seq IN ("
	s.claimRowsPrefix = "SELECT seq, event_id, topic, event_key, payload, metadata, DATE_FORMAT(created_at, '" + dateFormat + "'), attempts FROM " + t +
		" WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	if s.retention > 0 {
		s.deliverPrefix = "UPDATE " + t + " SET state = 3, delivered_at = UTC_TIMESTAMP(6), claimed_by = NULL, next_attempt_at = NULL" +
			" WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	} else {
		s.deliverPrefix = "DELETE FROM " + t + " WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	}
	s.retryPrefix = "UPDATE " + t + " SET state = 1, attempts = attempts + 1, claimed_by = NULL, last_error = ?," +
		" next_attempt_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND)" +
		" WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	s.deadPrefix = "UPDATE " + t + " SET state = 2, attempts = attempts + 1, claimed_by = NULL, last_error = ?," +
		" next_attempt_at = NULL, dead_at = UTC_TIMESTAMP(6)" +
		" WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	s.releasePrefix = "UPDATE " + t + " SET claimed_by = NULL, last_error = COALESCE(?, last_error)" +
		" WHERE claimed_by = CAST(? AS BINARY) AND seq IN ("
	s.ownedPartsSQL = "SELECT part FROM " + parts + " WHERE claimed_by = CAST(? AS BINARY)"
	s.lockPartsPrefix = "SELECT part FROM " + parts + " WHERE claimed_by = CAST(? AS BINARY) AND part IN ("
	s.freePartsPrefix = "UPDATE " + parts + " SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = CAST(? AS BINARY) AND part IN ("
	s.pendingSQL = "SELECT COUNT(*) FROM " + t + " WHERE state IN (0, 1)"
	s.listDeadPrefix = "SELECT seq, event_id, topic, event_key, payload, metadata, DATE_FORMAT(created_at, '" + dateFormat + "'), attempts," +
		" COALESCE(last_error, ''), DATE_FORMAT(dead_at, '" + dateFormat + "') FROM " + t + " WHERE state = 2 AND seq > ?"
	s.requeuePrefix = "UPDATE " + t + " SET state = 0, attempts = 0, dead_at = NULL, next_attempt_at = NULL WHERE state = 2 AND seq IN ("
	s.discardPrefix = "DELETE FROM " + t + " WHERE state = 2 AND seq IN ("
	s.purgePrefix = "DELETE FROM " + t + " WHERE delivered_at < DATE_SUB(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND) AND state = 3" +
		" ORDER BY delivered_at, seq LIMIT "
	return s, nil
}

// quote quotes an identifier that [sqlident.Validate] accepted: such a name
// holds no backtick, so wrapping it is enough. Quoting keeps reserved words
// ("order", "user") usable as names.
func quote(ident string) string { return "`" + ident + "`" }

// dateFormat renders a DATETIME(6) as text, which is how the store reads
// times: the driver's own parsing (parseTime) would depend on the DSN's
// loc, and even shift times that fall in a daylight saving gap of that zone.
const (
	dateFormat = "%Y-%m-%d %H:%i:%s.%f"
	timeLayout = "2006-01-02 15:04:05.000000"
)

// Limits of the statements the store builds.
const (
	// insertColumns is the number of parameters per inserted row.
	insertColumns = 7
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
	// maxOwnerLen is the longest claim owner or relay ID, in bytes
	// (claimed_by and relay_id hold 255).
	maxOwnerLen = 255
	// maxLastErrorLen is the most bytes of an error kept (last_error is
	// TEXT).
	maxLastErrorLen = 65535
)

// Insert writes the events through tx, in order: their seq values, hence
// the claim order, follow the order of params.Events, and each goes to its
// partition, [omnibox.PartitionOf], in the part column. Events go in chunks
// of at most maxInsertRows rows and about maxInsertBytes bytes, each written
// by one multi-row INSERT. The events become visible to [Store.Claim] when
// the transaction commits.
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
	const row = "(?, ?, ?, ?, ?, ?, ?)"
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
		args = append(args, ev.ID, ev.Topic, ev.Key, payload, metadata, ev.CreatedAt.UTC().Format(timeLayout), omnibox.PartitionOf(&ev))
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

// Server flavors, as [Store.guard] caches them.
const (
	serverUnknown int32 = iota
	serverMySQL
	serverMariaDB
)

// guard sets the server-side guards of ctx's deadline on db's session, in
// one statement; it does nothing when ctx has no deadline. It reads the
// server's version once per store, the first time, to know which variables
// the server has (see [guardSQL]).
func (s *Store) guard(ctx context.Context, db omnibox.DBTX) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		return nil
	}
	flavor := s.flavor.Load()
	if flavor == serverUnknown {
		var version string
		if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
			return fmt.Errorf("reading the server's version: %w", err)
		}
		flavor = serverMySQL
		if strings.Contains(strings.ToLower(version), "mariadb") {
			flavor = serverMariaDB
		}
		s.flavor.Store(flavor)
	}
	if _, err := db.ExecContext(ctx, guardSQL(flavor, time.Until(deadline))); err != nil {
		return fmt.Errorf("setting the lock wait, statement and idle timeouts: %w", err)
	}
	return nil
}

// guardSQL returns the statement that sets the guards of a deadline left
// away, for the rest of the session (they are session variables: see
// docs/mysql.md): innodb_lock_wait_timeout, in whole seconds rounded up;
// on MariaDB max_statement_time (seconds, to the microsecond) and
// idle_transaction_timeout (whole seconds), which ends the session of a
// transaction left idle that long; on MySQL, which has no idle timeout for
// transactions, max_execution_time (milliseconds, SELECT only) and
// wait_timeout (whole seconds), which ends any session idle that long. It
// holds numbers only and takes no parameter, so the driver sends it as it
// is, in one round trip.
func guardSQL(flavor int32, left time.Duration) string {
	left = max(left, time.Millisecond)
	secs := strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10)
	if flavor == serverMariaDB {
		return "SET SESSION innodb_lock_wait_timeout = " + secs +
			", max_statement_time = " + strconv.FormatFloat(left.Seconds(), 'f', 6, 64) +
			", idle_transaction_timeout = " + secs
	}
	return "SET SESSION innodb_lock_wait_timeout = " + secs +
		", max_execution_time = " + strconv.FormatInt(left.Milliseconds()+1, 10) +
		", wait_timeout = " + secs
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

// decodeEvent completes an event read from the table: an empty payload
// rather than nil, created_at parsed as UTC, metadata decoded.
func decodeEvent(ev *omnibox.Event, metadata, createdAt string) error {
	if ev.Payload == nil {
		ev.Payload = []byte{}
	}
	var err error
	if ev.CreatedAt, err = time.ParseInLocation(timeLayout, createdAt, time.UTC); err != nil {
		return fmt.Errorf("reading created_at of event %q: %w", ev.ID, err)
	}
	if ev.Metadata, err = metadatajson.Decode(metadata); err != nil {
		return fmt.Errorf("decoding metadata of event %q: %w", ev.ID, err)
	}
	return nil
}

// Complete records the outcome of params.Owner's claim and frees its
// partitions, following [omnibox.RelayStore]: delivered events are deleted
// (or, with [Config.Retention], kept as delivered), retried ones wait for
// their delay, dead ones are kept as dead, released ones are claimable at
// once. Errors are recorded cut to 64 KiB, invalid UTF-8 replaced, so that
// the TEXT column takes them; an empty one records none. Failed events with
// the same error (and, for retries, the same delay) are updated by one
// statement.
//
// Only the events still claimed by params.Owner, in partitions still leased
// to it, are affected: once another claim has taken a partition over, the
// events of the old claim that it did not take (they still name the old
// owner) belong to the new lease too. Complete first finds the partitions
// leased to params.Owner by a consistent read of Table + "_parts", then
// locks those by primary key (SELECT ... FOR UPDATE, which reads their
// latest version) and keeps those still leased to it; a locking read
// filtering on claimed_by would scan the partition table and, under
// REPEATABLE READ, keep every row of it locked until the transaction ends,
// serializing the completions of all relays. tx should be a transaction,
// so that the outcome is recorded whole. When ctx has a deadline, Complete
// first sets the guards that Claim sets.
func (s *Store) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	if params.Owner == "" {
		return nil, errors.New("mysql: complete: Owner is empty")
	}
	if err := s.guard(ctx, tx); err != nil {
		return nil, fmt.Errorf("mysql: complete in %s: %w", s.tableName, err)
	}
	res := &omnibox.CompleteResult{}
	parts, err := s.ownedParts(ctx, tx, params.Owner)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return res, nil
	}
	owned := ") AND part IN (" + seqList(parts) + ")"
	for chunk := range chunks(params.Delivered) {
		r, err := tx.ExecContext(ctx, s.deliverPrefix+seqList(chunk)+owned, params.Owner)
		if err != nil {
			return nil, fmt.Errorf("mysql: marking %d event(s) delivered in %s: %w", len(params.Delivered), s.tableName, err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("mysql: marking events delivered in %s: %w", s.tableName, err)
		}
		res.Delivered += int(n)
	}
	for _, g := range groupFailed(params.Retry, true) {
		for chunk := range chunks(g.seqs) {
			if _, err := tx.ExecContext(ctx, s.retryPrefix+seqList(chunk)+owned, g.lastError, g.delay, params.Owner); err != nil {
				return nil, fmt.Errorf("mysql: scheduling a retry of %d event(s) in %s: %w", len(chunk), s.tableName, err)
			}
		}
	}
	for _, g := range groupFailed(params.Dead, false) {
		for chunk := range chunks(g.seqs) {
			if _, err := tx.ExecContext(ctx, s.deadPrefix+seqList(chunk)+owned, g.lastError, params.Owner); err != nil {
				return nil, fmt.Errorf("mysql: marking %d event(s) dead in %s: %w", len(chunk), s.tableName, err)
			}
		}
	}
	releaseError := lastError(params.ReleaseError)
	for chunk := range chunks(params.Released) {
		if _, err := tx.ExecContext(ctx, s.releasePrefix+seqList(chunk)+owned, releaseError, params.Owner); err != nil {
			return nil, fmt.Errorf("mysql: releasing %d event(s) in %s: %w", len(params.Released), s.tableName, err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.freePartsPrefix+seqList(parts)+")", params.Owner); err != nil {
		return nil, fmt.Errorf("mysql: freeing the partitions of %s: %w", s.tableName, err)
	}
	return res, nil
}

// ownedParts returns the partitions leased to owner, locked for the
// transaction: those that a consistent read finds leased to it and that are
// still, by their latest version, once locked by primary key.
func (s *Store) ownedParts(ctx context.Context, tx omnibox.DBTX, owner string) ([]int64, error) {
	parts, err := s.queryParts(ctx, tx, s.ownedPartsSQL, owner)
	if err != nil || len(parts) == 0 {
		return nil, err
	}
	return s.queryParts(ctx, tx, s.lockPartsPrefix+seqList(parts)+") FOR UPDATE", owner)
}

func (s *Store) queryParts(ctx context.Context, tx omnibox.DBTX, query, owner string) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, query, owner)
	if err != nil {
		return nil, fmt.Errorf("mysql: reading the partitions leased in %s_parts: %w", s.tableName, err)
	}
	defer rows.Close()
	var parts []int64
	for rows.Next() {
		var part int64
		if err := rows.Scan(&part); err != nil {
			return nil, fmt.Errorf("mysql: reading the partitions leased in %s_parts: %w", s.tableName, err)
		}
		parts = append(parts, part)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: reading the partitions leased in %s_parts: %w", s.tableName, err)
	}
	return parts, nil
}

// failedGroup is the failed events that one statement updates: those with
// the same error and delay.
type failedGroup struct {
	delay     int64 // microseconds
	lastError any   // nil or a string
	seqs      []int64
}

// groupFailed groups events by error and, when withDelay, delay, in the
// order of their first event.
func groupFailed(events []omnibox.FailedEvent, withDelay bool) []failedGroup {
	type key struct {
		delay int64
		err   string
	}
	var groups []failedGroup
	index := make(map[key]int, len(events))
	for _, ev := range events {
		k := key{err: ev.Error}
		if withDelay {
			k.delay = max(ev.Delay, 0).Microseconds()
		}
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, failedGroup{delay: k.delay, lastError: lastError(ev.Error)})
		}
		groups[i].seqs = append(groups[i].seqs, ev.Seq)
	}
	return groups
}

// lastError returns what to store as an event's last error: NULL when msg
// is empty, otherwise msg with invalid UTF-8 replaced, cut to
// maxLastErrorLen bytes.
func lastError(msg string) any {
	if msg == "" {
		return nil
	}
	return truncateUTF8(strings.ToValidUTF8(msg, "\uFFFD"), maxLastErrorLen)
}

// ListDead returns dead events in seq order, following
// [omnibox.DeadLetterStore]. It walks the primary key from
// params.AfterSeq, so its cost grows with the events kept (pending and
// delivered) after that point: it is meant for operators, not for a hot
// path.
func (s *Store) ListDead(ctx context.Context, db omnibox.DBTX, params omnibox.ListDeadParams) ([]omnibox.DeadEvent, error) {
	if params.Limit < 0 {
		return nil, fmt.Errorf("mysql: list dead events: Limit must not be negative, got %d", params.Limit)
	}
	query := s.listDeadPrefix
	args := []any{params.AfterSeq}
	if params.Topic != "" {
		query += " AND topic = CAST(? AS BINARY)"
		args = append(args, params.Topic)
	}
	query += " ORDER BY seq LIMIT " + strconv.Itoa(cmp.Or(params.Limit, 100))
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("mysql: listing dead events of %s: %w", s.tableName, err)
	}
	defer rows.Close()
	var out []omnibox.DeadEvent
	for rows.Next() {
		var (
			ev        omnibox.DeadEvent
			metadata  string
			createdAt string
			diedAt    sql.NullString
		)
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Topic, &ev.Key, &ev.Payload, &metadata, &createdAt, &ev.Attempts, &ev.LastError, &diedAt); err != nil {
			return nil, fmt.Errorf("mysql: listing dead events of %s: scanning: %w", s.tableName, err)
		}
		if err := decodeEvent(&ev.Event, metadata, createdAt); err != nil {
			return nil, fmt.Errorf("mysql: listing dead events of %s: %w", s.tableName, err)
		}
		if diedAt.Valid {
			if ev.DiedAt, err = time.ParseInLocation(timeLayout, diedAt.String, time.UTC); err != nil {
				return nil, fmt.Errorf("mysql: listing dead events of %s: reading dead_at of event %q: %w", s.tableName, ev.ID, err)
			}
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: listing dead events of %s: %w", s.tableName, err)
	}
	return out, nil
}

// Requeue makes the dead events among seqs pending again with no attempts,
// and reports how many it requeued. They keep their seq, so each is
// claimed before the later events of its key.
func (s *Store) Requeue(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execChunks(ctx, db, s.requeuePrefix, "requeueing dead events", seqs)
}

// Discard deletes the dead events among seqs and reports how many it
// deleted.
func (s *Store) Discard(ctx context.Context, db omnibox.DBTX, seqs []int64) (int, error) {
	return s.execChunks(ctx, db, s.discardPrefix, "discarding dead events", seqs)
}

// execChunks runs prefix + seqs + ")" for each chunk of seqs and adds up
// the rows affected.
func (s *Store) execChunks(ctx context.Context, db omnibox.DBTX, prefix, what string, seqs []int64) (int, error) {
	total := 0
	for chunk := range chunks(seqs) {
		r, err := db.ExecContext(ctx, prefix+seqList(chunk)+")")
		if err != nil {
			return total, fmt.Errorf("mysql: %s in %s: %w", what, s.tableName, err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("mysql: %s in %s: %w", what, s.tableName, err)
		}
		total += int(n)
	}
	return total, nil
}

// Purge deletes up to limit delivered events older than [Config.Retention]
// (by their delivered_at, on the database's clock), oldest first, and
// reports how many it deleted. Without a retention period delivered events
// are never kept, and Purge deletes nothing. It reads the index on
// delivered_at, so it costs about limit rows. When ctx has a deadline, Purge
// first sets the guards that Claim sets, on one connection of db when db is
// a *sql.DB.
func (s *Store) Purge(ctx context.Context, db omnibox.DBTX, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("mysql: purge: limit must be positive, got %d", limit)
	}
	if s.retention <= 0 {
		return 0, nil
	}
	if _, ok := ctx.Deadline(); ok {
		// The guards are session variables: on a pool, the statement must
		// run on the connection that set them.
		if pool, ok := db.(*sql.DB); ok {
			conn, err := pool.Conn(ctx)
			if err != nil {
				return 0, fmt.Errorf("mysql: purging delivered events in %s: %w", s.tableName, err)
			}
			defer func() { _ = conn.Close() }()
			db = conn
		}
		if err := s.guard(ctx, db); err != nil {
			return 0, fmt.Errorf("mysql: purging delivered events in %s: %w", s.tableName, err)
		}
	}
	r, err := db.ExecContext(ctx, s.purgePrefix+strconv.Itoa(limit), s.retention.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("mysql: purging delivered events in %s: %w", s.tableName, err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("mysql: purging delivered events in %s: %w", s.tableName, err)
	}
	return int(n), nil
}

// Pending returns the number of events not yet delivered, leased or not,
// waiting for a retry or not; dead events are not counted. It counts the
// table, so it reads every row: use it for statistics and tests, not on a
// hot path.
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
func seqList(seqs []int64) string { return seqlist.Join("", seqs, "") }

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
