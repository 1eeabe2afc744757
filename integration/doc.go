// Package integration holds omnibox's end-to-end tests: events written in
// business transactions on the local PostgreSQL, MariaDB (or MySQL) and
// SQLite, relayed by real relays (in the test process, or in a separate
// process that is killed) to Kafka (an in-process kfake cluster, or the
// cluster named by OMNIBOX_KAFKA_BROKERS), and read back by a real Kafka
// consumer (the watermill-kafka subscriber).
//
// Besides the happy path they run the failures the relay is built for:
// several relays sharing the outbox's partitions, a relay process killed
// with SIGKILL, a relay's database connections cut at every stage of a
// batch, an event the broker always rejects (retried, then dead, then
// requeued), and the broker down for a while (the circuit breaker). In every
// case no committed event may be lost and each key's first deliveries must
// keep their written order.
package integration
