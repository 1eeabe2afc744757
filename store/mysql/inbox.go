package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"

	"github.com/go-sql-driver/mysql"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/migration"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultInboxTable is the default of [InboxConfig.Table].
const DefaultInboxTable = "omnibox_inbox"

// InboxConfig configures an [InboxStore]. The zero value takes every
// default.
type InboxConfig struct {
	// Database holds the inbox table and its migrations table. It must be a
	// plain lower-case identifier (see [InboxConfig.Validate]) and must
	// exist: the store never creates databases. Defaults to "": names are
	// left unqualified and resolved in the connection's current database
	// (the one named in the DSN).
	Database string
	// Table is the name of the inbox table. Its migrations table is named
	// Table + "_migrations". It must be a plain lower-case identifier.
	// Defaults to [DefaultInboxTable].
	Table string
}

// Validate reports whether the names are plain lower-case SQL identifiers
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes); the error wraps [omnibox.ErrInvalidIdentifier] and names the
// setting. An empty Table is valid: it stands for [DefaultInboxTable].
func (c *InboxConfig) Validate() error {
	if c.Database != "" {
		if err := sqlident.Validate("mysql: InboxConfig.Database", c.Database, omnibox.ErrInvalidIdentifier); err != nil {
			return err
		}
	}
	return sqlident.Validate("mysql: InboxConfig.Table", cmp.Or(c.Table, DefaultInboxTable), omnibox.ErrInvalidIdentifier)
}

// InboxStore is the MySQL and MariaDB inbox store, the [inbox.Store] given
// to the inbox: an InnoDB table with a row per (consumer, message ID)
// processed. It holds no connection (every method takes the executor to run
// on) and is safe for concurrent use. It works with
// github.com/go-sql-driver/mysql whatever the DSN's parseTime, loc,
// time_zone, interpolateParams, clientFoundRows, sql_mode or charset: names
// and IDs are stored as bytes, and times are written and compared as UTC on
// the server. Autocommit must be on ([InboxStore.Migrate] checks it).
type InboxStore struct {
	migrator     *migrator
	processedSQL string
	purgePrefix  string
	recordSQL    string
	table        string // qualified and quoted
	tableName    string // qualified, unquoted, for messages
}

var _ inbox.Store = (*InboxStore)(nil)

// NewInbox returns an inbox store for the table named by config. A nil
// config returns [omnibox.ErrNilConfig]; &InboxConfig{} takes the defaults.
// Invalid names return an error wrapping [omnibox.ErrInvalidIdentifier].
// NewInbox does not touch the database: create the table with
// [InboxStore.Migrate], or apply [InboxStore.MigrationFS] with a migration
// tool.
func NewInbox(config *InboxConfig) (*InboxStore, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	table := cmp.Or(config.Table, DefaultInboxTable)
	s := &InboxStore{tableName: table}
	qualify := quote
	if config.Database != "" {
		qualify = func(name string) string { return quote(config.Database) + "." + quote(name) }
		s.tableName = config.Database + "." + table
	}
	s.table = qualify(table)
	migrator, err := newMigrator("inbox_migration", inboxTemplateData{
		ProcessedAtIndex: quote(table + "_processed_at"),
		Table:            s.table,
	}, config.Database, table)
	if err != nil {
		return nil, err
	}
	migrator.checkSession = session.checkInbox
	migrator.configName = "InboxConfig"
	migrator.owner = "inbox"
	migrator.tables = []string{table, table + "_migrations"}
	s.migrator = migrator

	s.recordSQL = "INSERT IGNORE INTO " + s.table + " (consumer, message_id, processed_at) VALUES (?, ?, UTC_TIMESTAMP(6))"
	s.processedSQL = "SELECT EXISTS (SELECT 1 FROM " + s.table + " WHERE consumer = CAST(? AS BINARY) AND message_id = CAST(? AS BINARY))"
	s.purgePrefix = "DELETE FROM " + s.table + " WHERE processed_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND ORDER BY processed_at, consumer, message_id LIMIT "
	return s, nil
}

// Record inserts (params.Consumer, params.MessageID) through tx, with the
// database's clock (UTC_TIMESTAMP(6)) as its processed_at, and reports
// whether the row is new, following the contract of [inbox.Store].
//
// It is one INSERT IGNORE, which inserts nothing and reports no affected row
// when the primary key already holds the pair: no error, and tx goes on.
// When another transaction has inserted the pair and not yet ended, InnoDB
// makes the INSERT wait for it (up to innodb_lock_wait_timeout, 50 s by
// default), then it returns false if that transaction committed, or inserts
// and returns true if it rolled back. The row is part of tx: it disappears if
// tx rolls back.
//
// Why INSERT IGNORE rather than INSERT ... ON DUPLICATE KEY UPDATE: the
// latter reports a duplicate left unchanged as 1 affected row, the same as
// an insert, when the DSN sets clientFoundRows=true. IGNORE also turns other
// errors into warnings (a value too long would be truncated, say), which is
// why Record validates its arguments first, and why the table has no column
// that could fail otherwise (no CHECK, no foreign key, binary columns that
// take any bytes): only the duplicate key can be ignored.
//
// One limit comes from InnoDB: when several transactions wait on the same
// pair and the transaction that inserted it rolls back, all but one of the
// waiters fail with a deadlock (error 1213, which rolls their transaction
// back); the remaining one records the pair. The failed deliveries are
// retried as for any error, and then find the pair recorded. Two waiters
// never both see true.
//
// An empty message ID returns [inbox.ErrEmptyMessageID]; an empty consumer,
// or a name longer than [inbox.MaxConsumerLen] or an ID longer than
// [inbox.MaxMessageIDLen] bytes, or one that is not valid UTF-8 or holds a
// NUL byte, an error wrapping [inbox.ErrInvalid], before any statement runs.
// A nil tx returns [omnibox.ErrNilTx].
func (s *InboxStore) Record(ctx context.Context, tx omnibox.DBTX, params inbox.RecordParams) (bool, error) {
	if tx == nil {
		return false, omnibox.ErrNilTx
	}
	if err := params.Validate(); err != nil {
		return false, fmt.Errorf("mysql: recording in %s: %w", s.tableName, err)
	}
	res, err := tx.ExecContext(ctx, s.recordSQL, params.Consumer, params.MessageID)
	if err != nil {
		hint := ""
		var myErr *mysql.MySQLError
		if errors.As(err, &myErr) && myErr.Number == 1213 {
			hint = " (another delivery of this message recorded it and rolled back while several waited; " +
				"InnoDB rolled this transaction back: retry it)"
		}
		return false, fmt.Errorf("mysql: recording message %q of consumer %q in %s: %w%s", params.MessageID, params.Consumer, s.tableName, err, hint)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("mysql: recording in %s: %w", s.tableName, err)
	}
	return n == 1, nil
}

// Processed reports whether (params.Consumer, params.MessageID) is
// recorded, as seen by db: through a transaction that recorded it, or once
// that transaction committed (inside a REPEATABLE READ transaction, as of
// its snapshot). Arguments are validated as for [InboxStore.Record]; a nil
// db returns [omnibox.ErrNilDB].
func (s *InboxStore) Processed(ctx context.Context, db omnibox.DBTX, params inbox.RecordParams) (bool, error) {
	if db == nil {
		return false, omnibox.ErrNilDB
	}
	if err := params.Validate(); err != nil {
		return false, fmt.Errorf("mysql: checking %s: %w", s.tableName, err)
	}
	var found bool
	if err := db.QueryRowContext(ctx, s.processedSQL, params.Consumer, params.MessageID).Scan(&found); err != nil {
		return false, fmt.Errorf("mysql: checking message %q of consumer %q in %s: %w", params.MessageID, params.Consumer, s.tableName, err)
	}
	return found, nil
}

// Purge deletes at most params.Limit rows processed more than
// params.OlderThan ago, oldest first, and reports how many it deleted. The
// cutoff is computed by the server, UTC_TIMESTAMP(6) minus OlderThan: the
// clock that stamped the rows, whatever the application's clock, the DSN's
// loc or the session's time zone. It is one DELETE ... WHERE processed_at <
// UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND ORDER BY processed_at, consumer,
// message_id LIMIT n: a range scan of the processed_at index stopped by the
// LIMIT, in an order that is total (so statement-based replicas delete the
// same rows). Call it again until it returns fewer than params.Limit; run it
// outside long transactions, since it holds its row locks until commit. A
// Limit of zero or less or a negative OlderThan returns an error; a nil db
// returns [omnibox.ErrNilDB].
func (s *InboxStore) Purge(ctx context.Context, db omnibox.DBTX, params inbox.PurgeParams) (int, error) {
	if db == nil {
		return 0, omnibox.ErrNilDB
	}
	if err := params.Validate(); err != nil {
		return 0, fmt.Errorf("mysql: purging %s: %w", s.tableName, err)
	}
	res, err := db.ExecContext(ctx, s.purgePrefix+strconv.Itoa(params.Limit), params.OlderThan.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("mysql: purging %s: %w", s.tableName, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("mysql: purging %s: %w", s.tableName, err)
	}
	return int(n), nil
}

// inboxTemplateData are the names an inbox migration template may use, each
// already validated and quoted.
type inboxTemplateData struct {
	// ProcessedAtIndex names the index on processed_at.
	ProcessedAtIndex string
	// Table is the quoted, qualified inbox table.
	Table string
}

// Migrations returns the migrations of the inbox table, rendered for the
// configured database and table, in version order. Apply them with
// [InboxStore.Migrate] or with any migration tool.
func (s *InboxStore) Migrations() []Migration {
	return migration.Export[Migration](s.migrator.migrations)
}

// MigrationFS returns the inbox migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured database and table. Each call returns a new file system. Keep
// it apart from the outbox's [Store.MigrationFS]: both start at version 1.
func (s *InboxStore) MigrationFS() fs.FS {
	return migration.FS(s.migrator.migrations)
}

// Migrate brings the inbox table up to date, the way [Store.Migrate] does
// for the outbox: on one connection taken from db's pool, it checks the
// server (MySQL 8.0.16 or later, MariaDB 10.6 or later) and the session (a
// current database when [InboxConfig.Database] is empty, autocommit on),
// takes the named lock GET_LOCK("omnibox_migrate_<hash of database and
// table>") for as long as ctx allows, creates the migrations table (Table +
// "_migrations") when missing, runs the statements of each migration not
// recorded there, one at a time, records it, checks that the tables use
// InnoDB (Record relies on its row locks) and releases the lock. Every
// statement is idempotent, so a migration interrupted half way is completed
// by the next Migrate. Migrate is idempotent. The database must exist. A nil
// db returns [omnibox.ErrNilDB].
func (s *InboxStore) Migrate(ctx context.Context, db *sql.DB) error {
	return s.migrator.migrate(ctx, db)
}

// checkInbox reports a setting of the session that the inbox store cannot
// work with: autocommit off (Purge may run outside a transaction). Unlike
// the outbox, the inbox does not need a utf8mb4 connection: its columns are
// binary, so the bytes sent are the bytes stored.
func (s session) checkInbox() error {
	if !s.autocommit {
		return errors.New("autocommit is off on the connection, so statements outside transactions (Purge) would never commit: " +
			"remove autocommit=0 (or false) from the DSN and from the server's init_connect")
	}
	return nil
}
