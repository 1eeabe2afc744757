package sqlite

// Internals for the tests of package sqlite_test, which cannot be in package
// sqlite: they use internal/dbtest, which imports this package.

// NowMicros is nowMicros: SQLite's clock, as the store stamps rows.
const NowMicros = nowMicros

// MaxInsertRows is maxInsertRows.
const MaxInsertRows = maxInsertRows

// QuotedTable returns the store's quoted table name.
func (s *Store) QuotedTable() string { return s.table }

// ClaimSQL returns the store's claim statement.
func (s *Store) ClaimSQL() string { return s.claimSQL }

// DeliverSQL returns the statement of Complete for delivered events.
func (s *Store) DeliverSQL() string { return s.deliverSQL }

// ReleaseSQL returns the statement of Complete for released events.
func (s *Store) ReleaseSQL() string { return s.releaseSQL }

// OpenParams are the DSN parameters of Open.
var OpenParams = openParams

// FileURI is fileURI.
func FileURI(abs string) string { return fileURI(abs) }

// PurgeSQL returns the inbox store's Purge statement.
func (s *InboxStore) PurgeSQL() string { return s.purgeSQL }

// OutboxPurgeSQL returns the store's Purge statement.
func (s *Store) OutboxPurgeSQL() string { return s.purgeSQL }
