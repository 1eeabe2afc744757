// Package storetest is the conformance suite of the outbox stores: every
// dialect (store/postgres, store/mysql, store/sqlite) runs
// [Run] from its own tests against a real database, so that all of them keep
// the contracts of [omnibox.Inserter], [omnibox.RelayStore],
// [omnibox.DeadLetterStore] and [omnibox.Purger] alike.
//
// # Usage
//
// A dialect's test supplies a [Harness] that opens an isolated database per
// test, builds its store on it (with and without a retention period) and
// reads back the little the store interfaces do not return, and the
// [Features] it lacks:
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		storetest.Run(t, storetest.Harness{
//			BackdateDelivered:     ...,
//			LastError:             ...,
//			NewDB:                 func(t *testing.T) *sql.DB { ... },
//			NewStore:              func(t *testing.T, db *sql.DB, table string) (storetest.Store, error) { ... },
//			NewStoreWithRetention: func(t *testing.T, db *sql.DB, table string, retention time.Duration) (storetest.Store, error) { ... },
//		}, storetest.Features{})
//	}
//
// # What is checked
//
//   - Visibility: an event is claimable once its transaction commits, and
//     never when it rolls back.
//   - Claim order: within a partition, and so for each key, events are
//     claimed in insert order; claiming is not an attempt.
//   - Partition leases: a claim leases the partitions it takes events from
//     ([omnibox.PartitionOf]: a key's events share one), and no other owner
//     gets any event of them (another key's included) until Complete or
//     the lease's expiry, while other partitions go to other owners; the
//     same owner prefix takes its leases over; an owner whose lease was
//     taken over changes nothing with Complete, and frees nothing.
//   - Sharing: with 1, 2 and 4 live relays a claim takes the 64, 32 and 16
//     partitions whose oldest event is oldest; a relay that stops claiming
//     stops counting once its lease expires.
//   - Complete: delivered events are deleted (only the owner's), released
//     ones are claimable at once with their error recorded and their
//     attempts unchanged, retried ones count an attempt, wait for their
//     delay and block the later events of their key (only of their key),
//     and are claimed first once due.
//   - Dead events: listed with their event, attempts, error and time of
//     death, paged and filtered by topic; with BlockOnDead they block their
//     key, without it they are stepped over; Requeue puts one back before
//     the later events of its key, Discard lets them go on; both touch dead
//     events only. Events without a key block nothing.
//   - Retention: delivered events kept are out of claims, Pending and the
//     dead events; Purge deletes only those past the retention period,
//     oldest first, at most its limit at a time, and nothing without a
//     retention period.
//   - One process per relay ID: a claim whose relay ID is recorded as live
//     with another nonce fails with [omnibox.ErrRelayIDInUse], naming the
//     ID, and claims and records nothing; Restart replaces the record (the
//     twin then fails); an expired record or an empty nonce is no conflict.
//   - Deadlines: a claim with a deadline returns by then while another
//     claim's transaction is open; a claim transaction left open past its
//     deadline (a relay that stopped answering) is ended by the server,
//     and another relay gets its partitions (not on SQLite, see
//     [Features.NoServerSideGuards]).
//   - Concurrency: eight relays claiming and completing at once (some
//     events failing once) never hold one event together, and deliver each
//     key's events in insert order.
//   - Exact round trips of payloads, metadata and timestamps, duplicate
//     event IDs, rejected table names, separate tables, idempotent and
//     concurrent migrations.
//
// Each case is a parallel subtest on its own database from [Harness.NewDB];
// some go through [omnibox.Outbox] so that the writer's path is covered too.
// The cases that wait for a lease, a retry delay or a relay's liveness to
// expire use short durations (50–300 ms) on the database's clock and poll,
// so they assert nothing about the local clock.
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
