// Package storetest is the conformance suite of the outbox stores: every
// dialect (store/postgres, store/mysql, store/sqlite) runs
// [Run] from its own tests against a real database, so that all of them keep
// the contract of [omnibox.Inserter] and [omnibox.RelayStore] alike.
//
// # Usage
//
// A dialect's test supplies a [Harness] that opens an isolated database per
// test and builds its store on it, and the [Features] it lacks:
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		storetest.Run(t, storetest.Harness{
//			LastError: ...,
//			NewDB:     func(t *testing.T) *sql.DB { ... },
//			NewStore:  func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) { ... },
//		}, storetest.Features{})
//	}
//
// # What is checked
//
// Visibility (an event is claimable once its transaction commits and never
// when it rolls back), claim order and limit, attempts, leases (a live lease
// at the head blocks other owners, the same owner prefix takes it over, an
// expired one is claimed again), concurrent claimers that never share an
// event, MarkDelivered and Release, per-key order, exact round trips of
// payloads, metadata and timestamps, duplicate event IDs, rejected table
// names and idempotent, concurrent migrations. Each case is a parallel
// subtest on its own database from [Harness.NewDB]; some go through
// [omnibox.Outbox] so that the writer's path is covered too.
//
// # The inbox suite
//
// [RunInbox] holds the dialects' inbox tables to the contract of
// [inbox.Store]: one race-safe statement per record (a duplicate reports
// false without aborting the transaction; concurrent deliveries never both
// see true; a waiter wins when the first transaction rolls back), exact
// comparison of consumer names and IDs, limits, bounded Purge, rejected
// table names and idempotent, concurrent migrations.
package storetest
