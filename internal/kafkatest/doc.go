// Package kafkatest gives tests and demos a Kafka cluster to talk to.
//
// No Kafka server is needed: [Start] runs an in-process kfake cluster
// (github.com/twmb/franz-go/pkg/kfake) that speaks the real Kafka wire
// protocol on 127.0.0.1, so real clients (sarama, franz-go) work against it
// unchanged. In tests, [Brokers] returns the cluster named by the
// OMNIBOX_KAFKA_BROKERS environment variable when it is set, and a fresh kfake
// cluster otherwise (both from package omniboxtest, the public test kit,
// which this package extends with kfake's options and fault injection);
// [CreateTopic] and [NewTopic] create topics with a given
// number of partitions on either. [Kfake] always starts a kfake cluster and
// returns it, for tests that inject broker failures (kfake's Fault and
// Control).
//
// # What kfake does and does not do
//
// Checked against sarama (as used by watermill-kafka) by this package's
// tests and those of package publisher: the idempotent producer
// (InitProducerID, per-partition sequence numbers, duplicate records of a
// retry dropped), acks=all, consumer groups (JoinGroup, SyncGroup, Heartbeat
// and offset commits, as the watermill-kafka subscriber uses when
// ConsumerGroup is set), plain partition consumers, topic creation and
// deletion (through franz-go's kadm, as [CreateTopic] does by way of
// omniboxtest), and refusing record batches larger
// than message.max.bytes (1048588 bytes, the Kafka default) all behave as on
// Kafka, with every sarama protocol version from V0_11_0_0 to MaxVersion.
//
// Differences to keep in mind: kfake writes at once and does not replicate,
// so acks=all is answered immediately and tests cannot observe a shortage of
// in-sync replicas; and the cluster lives in memory, gone when closed.
package kafkatest
