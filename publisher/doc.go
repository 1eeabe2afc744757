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
// [Kafka] is the default for Kafka. It produces with franz-go (kgo) and
// writes the records watermill-kafka's subscribers read (with
// [KafkaMarshaler] as their Unmarshaler). It differs from watermill-kafka's
// own Publisher in four ways:
//
//   - Batching. watermill-kafka sends one message per blocking round trip;
//     [Kafka.Publish] hands all the messages of the call to the producer at
//     once, so a relay's batch of 1,000 events costs a few produce requests
//     instead of 1,000. BenchmarkPublish measures this.
//   - Keys. The [omnibox.MetadataKey] entry becomes the Kafka record key
//     (not a header), so Kafka partitions by the event key (murmur2, as the
//     Java client) and keeps each key's events in order.
//   - A deadline. Publish returns by the deadline of its messages' context
//     (the relay's lease), or [KafkaConfig.PublishTimeout], even when a
//     broker stops answering without closing the connection.
//   - Per-message errors with prefix semantics. A failed Publish returns a
//     *[PublishError], which implements [omnibox.MessageErrors]: which
//     messages failed, each wrapping [omnibox.ErrRejected] (refused for
//     good) or [omnibox.ErrUnavailable] (may succeed later as it is); of
//     each key, the stored messages are the first ones of the call.
//
// # What a fault can duplicate, and what it cannot reorder
//
// A fault never stores a later record of a key without every earlier one of
// the same Publish call: when a record of a partition fails, franz-go fails
// every record of that partition it still holds ("gapless ordering"), and
// the idempotent producer's sequence numbers make the broker refuse a
// record whose predecessors it does not have. A message that fails the
// publisher's own checks holds back the later messages of its key
// ([ErrNotSent]).
//
// A fault can duplicate a record, in order: one whose produce request was
// in flight when the deadline passed (the broker may have written it), or
// whose acknowledgement was lost, is reported failed, and the relay
// publishes it again. A key's records then read 1..m followed by a replay
// from some k ≤ m+1. Consumers deduplicate on the message UUID (the
// _watermill_message_uuid header).
//
// Until this version the publisher used sarama, whose documentation we
// summarized as "retries cannot reorder". That was wrong: when the link to
// a broker dropped, sarama's producer failed the records of one retry level
// and went on to write the later records of the same partition, so a
// Publish could store a suffix of a key's records (issue 10), and it had no
// deadline. franz-go fails partitions gaplessly, can cancel in-flight
// records at a deadline, and is the client the tests' kfake broker comes
// from. TestKafka_LinkDown shows both behaviours.
//
// # Settings
//
// [DefaultKafkaOptions] documents each producer setting. In short: acks
// from all in-sync replicas; an idempotent producer whose in-flight records
// a deadline may cancel; connections that close with a reset; the murmur2
// partitioner; no linger; batches up to 1 MiB, Kafka's default message
// limit, which leaves a payload a little under 1 MiB once the key, headers
// and record overhead are counted; no compression; and no automatic topic
// creation. [KafkaConfig.Options] appends franz-go options (SASL, TLS
// through [Dialer], compression) after them.
//
// # Errors
//
// Publish checks each message before sending: the topic name must be
// valid, the message must marshal ([ErrReservedHeader]) and fit in a
// record batch ([ErrMessageTooLarge]). A topic that does not exist fails
// with [omnibox.ErrRejected] and an error naming it, after franz-go has
// looked it up a few times (about a second). After [Kafka.Close], Publish
// returns [ErrClosed].
package publisher
