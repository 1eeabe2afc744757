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
// Create a dialect store (store/postgres, store/mysql or store/sqlite) and an
// [Outbox], then write events inside your transaction with [Outbox.WriteTx],
// [Outbox.WriteMessagesTx] (Watermill messages as they are) or the Watermill
// publisher returned by [Outbox.Publisher]. [Outbox.InTx] is a unit-of-work
// helper for code that has none.
//
// # Relaying events
//
// [NewRelay] takes the *sql.DB, the store and a Watermill publisher (package
// publisher has a batching Kafka publisher built on franz-go). Run
// [Relay.Run] as a goroutine or in a sidecar process; [Relay.Drain] relays
// what is pending and returns, for tests and jobs.
//
// Several relays, goroutines or processes, can run on one outbox and work in
// parallel: events are spread over [Partitions] partitions by the hash of
// their key ([PartitionOf]), and each claim leases whole partitions for one
// batch, so the events of a key are published by one relay at a time, in
// order, while different partitions are published at once. Give each relay
// a unique, stable [RelayConfig.ID]: a restarted relay then takes its
// predecessor's partitions over at once instead of after [RelayConfig.Lease].
//
// After a batch a relay claims again at once; when it finds nothing it waits
// [RelayConfig.PollInterval] or until woken. [Outbox.WakeOnCommit] wakes a
// relay of the writing process when [Outbox.InTx] commits a transaction that
// wrote events ([Outbox.Committed] does it after a commit of your own);
// store/postgres's Notifier and Listener wake relays in other processes.
//
// # Failures
//
// An event the publisher refuses ([ErrRejected], or a failure of its key
// alone) is retried after a backoff ([RelayConfig.RetryMinDelay]), and the
// later events of its key wait behind it; other keys flow. After
// [RelayConfig.MaxAttempts] failures it is dead: kept in the table, and by
// default ([DeadBlocksKey]) still holding its key back, until an operator
// requeues or discards it ([DeadLetterStore], or the command "omnibox
// dead"). A failure of the broker itself ([ErrUnavailable], a deadline, or a
// batch of which nothing could be published on several keys) charges its
// events no attempt, and such batches in a row open a circuit breaker that
// pauses the relay ([RelayConfig.BreakerThreshold]). Delivered events are
// deleted, or kept for a store's retention period and purged by the relay
// ([Purger]).
//
// Every call of the relay has a deadline inside the claim's lease
// ([RelayConfig.DatabaseTimeout], [RelayConfig.PublishTimeout]): a database
// or broker link that stops answering, without closing, is given up on and
// retried, and [Relay.Run] returns about one lease after its context ends,
// whatever hangs. Two processes with one [RelayConfig.ID] are detected
// ([ErrRelayIDInUse]).
//
// # Guarantees
//
// Every committed event is published at least once; events of a rolled-back
// transaction never are. Events with the same key are first published in the
// order they were committed, with any number of relays and through faults of
// the database or the broker: a fault can cause duplicates (a replay of a
// run of a key's events, in order, after their first delivery), never a
// reordering. A relay that dies mid-batch causes that batch to be published
// again after its lease expires (at once when it restarts with the same ID).
// docs/guarantees.md spells out the details and the faults it was tested
// under.
package omnibox
