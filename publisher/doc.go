// Package publisher has the default Kafka publisher for the omnibox relay.
//
// The [omnibox.Relay] publishes through any Watermill message.Publisher: a
// gochannel.GoChannel in tests, or the AMQP, NATS, Google Cloud Pub/Sub, SQL
// or Redis Streams publishers of the Watermill ecosystem. Whatever the
// publisher, a message's UUID is the event ID, its payload and metadata are
// the event's, and a keyed event carries its key in the metadata under
// [omnibox.MetadataKey], for the publisher to route by.
//
// # The Kafka publisher
//
// [Kafka] is the default for Kafka. It is built on watermill-kafka and
// sarama, and differs from watermill-kafka's own Publisher in two ways:
//
//   - Batching. watermill-kafka sends one message per blocking round trip;
//     [Kafka.Publish] marshals all the messages of the call and hands them to
//     the producer at once, so a relay's batch of 1,000 events costs a few
//     produce requests instead of 1,000. BenchmarkPublish measures this.
//   - Keys. [KafkaMarshaler] turns the [omnibox.MetadataKey] entry into the
//     Kafka record key (not a header), so Kafka partitions by the event key
//     and keeps each key's events in order. Consumers using KafkaMarshaler as
//     their watermill-kafka Unmarshaler get the key back in the metadata.
//
// # Settings
//
// [DefaultKafkaSaramaConfig] documents each producer setting. In short:
// acks from all in-sync replicas; an idempotent producer with one request in
// flight per broker, so retries neither duplicate nor reorder records; about
// 7 s of retries with exponential backoff before Publish fails and the relay
// retries the batch; the murmur2 partitioner, which maps keys to partitions
// as the Java client and franz-go do; a 1 ms linger that lets a batch go out
// in one request; no automatic topic creation; and a 1 MiB message limit,
// Kafka's default, which leaves a payload a little under 1 MiB once the key,
// headers and record overhead are counted.
//
// # Errors
//
// Publish checks everything it can before sending anything: a message that
// fails to marshal ([ErrReservedHeader]) or is too large
// ([ErrMessageTooLarge]), an empty topic and a topic that does not exist
// (sarama.ErrUnknownTopicOrPartition) fail the call with nothing sent. When
// Kafka refuses some records of a call, Publish returns a *[PublishError]
// saying which; the others are written, so the relay's retry of the batch
// duplicates them, which consumers absorb by deduplicating on the message
// UUID. After [Kafka.Close], Publish returns [ErrClosed].
package publisher
