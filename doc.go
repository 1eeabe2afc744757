// Package omnibox implements the transactional outbox for Go services built
// on database/sql: events are written into an outbox table in the same
// *sql.Tx as the business rows, and a [Relay] publishes them to a broker
// (Kafka by default, any Watermill publisher will do) once that transaction
// has committed.
//
// # The problem
//
// A service that changes its database and then produces to Kafka loses the
// event when it crashes between COMMIT and produce, and publishes a lie when
// it produces first and then rolls back. There is no transaction spanning
// both. The outbox makes the event part of the database transaction; the
// relay delivers it afterwards, retrying until the broker acknowledges
// (at-least-once). Consumers deduplicate by the event ID, which is carried as
// the Watermill message UUID.
//
// # Writing events
//
// Create a dialect store (store/postgres) and an [Outbox], then write events
// inside your transaction with [Outbox.WriteTx], [Outbox.WriteMessagesTx]
// (Watermill messages as they are) or the Watermill publisher returned by
// [Outbox.Publisher]. [Outbox.InTx] is a unit-of-work helper for code that
// has none.
//
// # Relaying events
//
// [NewRelay] takes the *sql.DB, the store and a Watermill publisher (package
// publisher has a batching Kafka publisher built on watermill-kafka). Run
// [Relay.Run] as a goroutine or in a sidecar process; [Relay.Drain] relays
// what is pending and returns, for tests and jobs.
//
// # Guarantees
//
// Every committed event is published at least once; events of a rolled-back
// transaction never are. Events with the same key are published in the order
// they were committed. A relay that dies mid-batch causes that batch to be
// published again after its lease expires. docs/guarantees.md spells out the
// details.
package omnibox
