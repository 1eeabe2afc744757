package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"strings"

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
	// Table is the name of the inbox table. Its migrations table is named
	// Table + "_migrations" and its index on processed_at Table +
	// "_processed_at". It must be a plain lower-case identifier (see
	// [InboxConfig.Validate]) and may not start with "sqlite_", a prefix
	// SQLite reserves. Defaults to [DefaultInboxTable].
	Table string
}

// Validate reports whether Table is a plain lower-case SQL identifier
// (letters, digits and underscores, not starting with a digit, at most 48
// bytes) outside SQLite's reserved "sqlite_" prefix; the error wraps
// [omnibox.ErrInvalidIdentifier] and names the setting. An empty Table is
// valid: it stands for [DefaultInboxTable].
func (c *InboxConfig) Validate() error {
	table := cmp.Or(c.Table, DefaultInboxTable)
	if err := sqlident.Validate("sqlite: InboxConfig.Table", table, omnibox.ErrInvalidIdentifier); err != nil {
		return err
	}
	if strings.HasPrefix(table, "sqlite_") {
		return fmt.Errorf("%w: sqlite: InboxConfig.Table name %q starts with \"sqlite_\", which SQLite reserves for its own tables", omnibox.ErrInvalidIdentifier, table)
	}
	return nil
}

// InboxStore is the SQLite inbox store, the [inbox.Store] given to the
// inbox: a table with a row per (consumer, message ID) processed. It holds no
// connection (every method takes the executor to run on) and is safe for
// concurrent use. Open the database with [Open], as for the outbox [Store].
type InboxStore struct {
	migrator     *migrator
	processedSQL string
	purgeSQL     string
	recordSQL    string
	table        string // quoted
	tableName    string // unquoted, for messages
}

var _ inbox.Store = (*InboxStore)(nil)

// NewInbox returns an inbox store for the table named by config. A nil
// config returns [omnibox.ErrNilConfig]; &InboxConfig{} takes the defaults.
// An invalid name returns an error wrapping [omnibox.ErrInvalidIdentifier].
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
	s := &InboxStore{table: quote(table), tableName: table}
	migrator, err := newMigrator("inbox_migration", inboxTemplateData{
		ProcessedAtIndex: quote(table + "_processed_at"),
		Table:            s.table,
	}, table)
	if err != nil {
		return nil, err
	}
	s.migrator = migrator

	s.recordSQL = "INSERT INTO " + s.table + " (consumer, message_id, processed_at) VALUES (?1, ?2, " + nowMicros + ")" +
		" ON CONFLICT (consumer, message_id) DO NOTHING"
	s.processedSQL = "SELECT EXISTS (SELECT 1 FROM " + s.table + " WHERE consumer = ?1 AND message_id = ?2)"
	s.purgeSQL = "DELETE FROM " + s.table + " WHERE rowid IN (SELECT rowid FROM " + s.table +
		" WHERE processed_at < " + nowMicros + " - ?1 ORDER BY processed_at LIMIT ?2)"
	return s, nil
}

// Record inserts (params.Consumer, params.MessageID) through tx, with the
// database's clock as its processed_at, and reports whether the row is new,
// following the contract of [inbox.Store]. It is one INSERT ... ON CONFLICT
// DO NOTHING: a pair already recorded inserts nothing and returns false,
// without an error and without aborting tx. The row is part of tx: it
// disappears if tx rolls back.
//
// SQLite lets one transaction write at a time, so a second delivery of the
// message cannot even start writing while the first one's transaction is
// open: with [Open]'s immediate transactions it waits in BeginTx (with
// deferred ones, in this INSERT), up to the busy timeout, and then sees the
// outcome: false if the first committed, true if it rolled back. Keep the
// transactions that record messages short. With deferred transactions,
// Record should be the transaction's first statement (or follow a write):
// after a read, SQLite fails the INSERT with SQLITE_BUSY_SNAPSHOT when
// another connection wrote in between.
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
		return false, fmt.Errorf("sqlite: recording in %s: %w", s.tableName, err)
	}
	res, err := tx.ExecContext(ctx, s.recordSQL, params.Consumer, params.MessageID)
	if err != nil {
		return false, fmt.Errorf("sqlite: recording message %q of consumer %q in %s: %w%s", params.MessageID, params.Consumer, s.tableName, err, busyHint(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: recording in %s: %w", s.tableName, err)
	}
	return n == 1, nil
}

// Processed reports whether (params.Consumer, params.MessageID) is
// recorded, as seen by db: through a transaction that recorded it, or once
// that transaction committed. Arguments are validated as for
// [InboxStore.Record]; a nil db returns [omnibox.ErrNilDB].
func (s *InboxStore) Processed(ctx context.Context, db omnibox.DBTX, params inbox.RecordParams) (bool, error) {
	if db == nil {
		return false, omnibox.ErrNilDB
	}
	if err := params.Validate(); err != nil {
		return false, fmt.Errorf("sqlite: checking %s: %w", s.tableName, err)
	}
	var found bool
	if err := db.QueryRowContext(ctx, s.processedSQL, params.Consumer, params.MessageID).Scan(&found); err != nil {
		return false, fmt.Errorf("sqlite: checking message %q of consumer %q in %s: %w%s", params.MessageID, params.Consumer, s.tableName, err, busyHint(err))
	}
	return found, nil
}

// Purge deletes at most params.Limit rows processed more than
// params.OlderThan ago, oldest first, and reports how many it deleted. The
// cutoff is computed by SQLite, its 'now' (the clock that stamped the rows)
// minus OlderThan, rather than from a time the application passes. It is one
// DELETE of the rowids that a walk of the processed_at index, stopped by the
// LIMIT, picks, so each call does bounded work whatever the size of the
// table (and holds the write lock that long). Call it again until it returns
// fewer than params.Limit. A Limit of zero or less or a negative OlderThan
// returns an error; a nil db returns [omnibox.ErrNilDB].
func (s *InboxStore) Purge(ctx context.Context, db omnibox.DBTX, params inbox.PurgeParams) (int, error) {
	if db == nil {
		return 0, omnibox.ErrNilDB
	}
	if err := params.Validate(); err != nil {
		return 0, fmt.Errorf("sqlite: purging %s: %w", s.tableName, err)
	}
	res, err := db.ExecContext(ctx, s.purgeSQL, params.OlderThan.Microseconds(), int64(params.Limit))
	if err != nil {
		return 0, fmt.Errorf("sqlite: purging %s: %w%s", s.tableName, err, busyHint(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: purging %s: %w", s.tableName, err)
	}
	return int(n), nil
}

// inboxTemplateData are the names an inbox migration template may use, each
// already validated and quoted.
type inboxTemplateData struct {
	// ProcessedAtIndex names the index on processed_at.
	ProcessedAtIndex string
	// Table is the quoted inbox table.
	Table string
}

// Migrations returns the migrations of the inbox table, rendered for the
// configured table, in version order. Apply them with [InboxStore.Migrate]
// or with any migration tool.
func (s *InboxStore) Migrations() []Migration {
	return migration.Export[Migration](s.migrator.migrations)
}

// MigrationFS returns the inbox migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured table. Each call returns a new file system. Keep it apart from
// the outbox's [Store.MigrationFS]: both start at version 1.
func (s *InboxStore) MigrationFS() fs.FS {
	return migration.FS(s.migrator.migrations)
}

// Migrate brings the inbox table up to date, the way [Store.Migrate] does
// for the outbox: it checks the database (SQLite 3.38 or later, WAL journal
// mode and a busy timeout; an error wraps [ErrDatabaseSettings]), then, on
// one connection, in a BEGIN IMMEDIATE transaction, creates the migrations
// table (Table + "_migrations") when missing, applies the migrations not yet
// recorded there, in order, records them and commits. A failure leaves
// nothing half done. Migrate is idempotent, and processes that run it at
// once wait for each other (up to the busy timeout). A nil db returns
// [omnibox.ErrNilDB].
func (s *InboxStore) Migrate(ctx context.Context, db *sql.DB) error {
	return s.migrator.migrate(ctx, db)
}
