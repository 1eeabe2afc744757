package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"io/fs"

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
	// Schema holds the inbox table and its migrations table. It must be a
	// plain lower-case identifier (see [InboxConfig.Validate]). Defaults to
	// "": names are left unqualified and resolved by the connection's
	// search_path.
	Schema string
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
	if c.Schema != "" {
		if err := sqlident.Validate("postgres: InboxConfig.Schema", c.Schema, omnibox.ErrInvalidIdentifier); err != nil {
			return err
		}
	}
	return sqlident.Validate("postgres: InboxConfig.Table", cmp.Or(c.Table, DefaultInboxTable), omnibox.ErrInvalidIdentifier)
}

// InboxStore is the PostgreSQL inbox store, the [inbox.Store] given to the
// inbox: a table with a row per (consumer, message ID) processed. It holds
// no connection (every method takes the executor to run on) and is safe for
// concurrent use. It works with the lib/pq and pgx (stdlib) drivers.
type InboxStore struct {
	migrator     *migrator
	processedSQL string
	purgeSQL     string
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
	s := &InboxStore{table: quote(table), tableName: table}
	schema := "" // quoted, empty when unqualified
	if config.Schema != "" {
		schema = quote(config.Schema)
		s.table = schema + "." + s.table
		s.tableName = config.Schema + "." + table
	}
	migrator, err := newMigrator("inbox_migration", inboxTemplateData{
		PrimaryKey:       quote(table + "_pkey"),
		ProcessedAtIndex: quote(table + "_processed_at"),
		Schema:           schema,
		Table:            s.table,
	}, schema, table, s.tableName, "omnibox inbox migrate "+s.tableName)
	if err != nil {
		return nil, err
	}
	s.migrator = migrator

	s.recordSQL = "INSERT INTO " + s.table + " (consumer, message_id, processed_at) VALUES ($1::text, $2::text, statement_timestamp())" +
		" ON CONFLICT (consumer, message_id) DO NOTHING"
	s.processedSQL = "SELECT EXISTS (SELECT FROM " + s.table + " WHERE consumer = $1::text AND message_id = $2::text)"
	s.purgeSQL = "DELETE FROM " + s.table + " WHERE ctid = ANY (ARRAY(SELECT ctid FROM " + s.table +
		" WHERE processed_at < statement_timestamp() - $1::bigint * interval '1 microsecond'" +
		" ORDER BY processed_at LIMIT $2::bigint))"
	return s, nil
}

// Record inserts (params.Consumer, params.MessageID) through tx, with the
// database's clock as its processed_at, and reports whether the row is new,
// following the contract of [inbox.Store]. It is one INSERT ... ON CONFLICT
// DO NOTHING: a pair already recorded and committed inserts nothing and
// returns false, without an error and without aborting tx. When another
// transaction has inserted the pair and not yet ended, the INSERT waits for
// it (on the primary key), then returns false if it committed, or inserts
// and returns true if it rolled back. The row is part of tx: it disappears if
// tx rolls back.
//
// tx is normally the *sql.Tx that holds the message's effects. At the
// default READ COMMITTED isolation Record never fails on a duplicate; under
// REPEATABLE READ or SERIALIZABLE, a pair committed by a transaction that
// tx's snapshot does not see makes PostgreSQL fail the statement with a
// serialization failure (SQLSTATE 40001), which tx must then roll back and
// retry, as for any serialization failure.
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
		return false, fmt.Errorf("postgres: recording in %s: %w", s.tableName, err)
	}
	res, err := tx.ExecContext(ctx, s.recordSQL, params.Consumer, params.MessageID)
	if err != nil {
		return false, fmt.Errorf("postgres: recording message %q of consumer %q in %s: %w", params.MessageID, params.Consumer, s.tableName, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("postgres: recording in %s: %w", s.tableName, err)
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
		return false, fmt.Errorf("postgres: checking %s: %w", s.tableName, err)
	}
	var found bool
	if err := db.QueryRowContext(ctx, s.processedSQL, params.Consumer, params.MessageID).Scan(&found); err != nil {
		return false, fmt.Errorf("postgres: checking message %q of consumer %q in %s: %w", params.MessageID, params.Consumer, s.tableName, err)
	}
	return found, nil
}

// Purge deletes at most params.Limit rows processed more than
// params.OlderThan ago, oldest first, and reports how many it deleted. The
// cutoff is computed by the server, statement_timestamp() minus OlderThan:
// the clock that stamped the rows, whatever the application's clock says. It
// is one statement: a scan of the processed_at index stopped by the LIMIT
// picks the rows, which are then deleted by their physical address (ctid),
// so each call does bounded work whatever the size of the table. Call it
// again until it returns fewer than params.Limit. A Limit of zero or less or
// a negative OlderThan returns an error; a nil db returns
// [omnibox.ErrNilDB].
func (s *InboxStore) Purge(ctx context.Context, db omnibox.DBTX, params inbox.PurgeParams) (int, error) {
	if db == nil {
		return 0, omnibox.ErrNilDB
	}
	if err := params.Validate(); err != nil {
		return 0, fmt.Errorf("postgres: purging %s: %w", s.tableName, err)
	}
	res, err := db.ExecContext(ctx, s.purgeSQL, params.OlderThan.Microseconds(), int64(params.Limit))
	if err != nil {
		return 0, fmt.Errorf("postgres: purging %s: %w", s.tableName, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("postgres: purging %s: %w", s.tableName, err)
	}
	return int(n), nil
}

// inboxTemplateData are the names an inbox migration template may use, each
// already validated and quoted.
type inboxTemplateData struct {
	// PrimaryKey names the primary key constraint.
	PrimaryKey string
	// ProcessedAtIndex names the index on processed_at.
	ProcessedAtIndex string
	// Schema is the quoted schema, empty when names are unqualified.
	Schema string
	// Table is the quoted, qualified inbox table.
	Table string
}

// Migrations returns the migrations of the inbox table, rendered for the
// configured schema and table, in version order. Apply them with
// [InboxStore.Migrate] or with any migration tool.
func (s *InboxStore) Migrations() []Migration {
	return migration.Export[Migration](s.migrator.migrations)
}

// MigrationFS returns the inbox migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured schema and table. Each call returns a new file system. Keep it
// apart from the outbox's [Store.MigrationFS]: both start at version 1.
func (s *InboxStore) MigrationFS() fs.FS {
	return migration.FS(s.migrator.migrations)
}

// Migrate brings the inbox table up to date, as [Store.Migrate] does for the
// outbox: in one transaction it takes a transaction-level advisory lock for
// the table, creates the schema when [InboxConfig.Schema] is set and the
// migrations table (Table + "_migrations") when missing, applies the
// migrations not yet recorded there, in order, records them and commits. A
// failure leaves nothing half done. Migrate is idempotent, and processes
// that run it at once wait for each other. A nil db returns
// [omnibox.ErrNilDB].
func (s *InboxStore) Migrate(ctx context.Context, db *sql.DB) error {
	return s.migrator.migrate(ctx, db)
}
