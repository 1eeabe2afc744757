// Package integration holds omnibox's end-to-end tests: events written in
// business transactions on the local PostgreSQL, relayed by a real relay
// (in the test process, or in a separate process that is killed) to Kafka
// (an in-process kfake cluster, or the cluster named by
// OMNIBOX_KAFKA_BROKERS), and read back by a real Kafka consumer (the
// watermill-kafka subscriber).
package integration
