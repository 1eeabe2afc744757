package sqlite

// Internals for the tests of package sqlite_test, which cannot be in package
// sqlite: they use internal/dbtest, which imports this package.

// MaxInsertRows is maxInsertRows.
const MaxInsertRows = maxInsertRows

// QuotedTable returns the store's quoted table name.
func (s *Store) QuotedTable() string { return s.table }

// ClaimSQL returns the store's claim statement.
func (s *Store) ClaimSQL() string { return s.claimSQL }

// DeliverSQL returns the store's MarkDelivered statement.
func (s *Store) DeliverSQL() string { return s.deliverSQL }

// ReleaseSQL returns the store's Release statement.
func (s *Store) ReleaseSQL() string { return s.releaseSQL }

// FileURI is fileURI.
func FileURI(abs string) string { return fileURI(abs) }

// PurgeSQL returns the inbox store's Purge statement.
func (s *InboxStore) PurgeSQL() string { return s.purgeSQL }
