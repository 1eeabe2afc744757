package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

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
