package publisher

import (
	"fmt"
	"maps"
	"slices"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
)

var _ kafka.MarshalerUnmarshaler = KafkaMarshaler{}

// KafkaMarshaler converts between Watermill messages and Kafka records the
// way the relay needs. [Kafka] builds its records with [KafkaMarshaler.Record];
// KafkaMarshaler also implements watermill-kafka's Marshaler and Unmarshaler,
// so that a watermill-kafka Subscriber reads them back with it (and a
// watermill-kafka Publisher writes the same records with Marshal).
//
// Record and Marshal work like watermill-kafka's DefaultMarshaler (the UUID travels in
// the kafka.UUIDHeaderKey header, metadata entries become headers) with three
// differences:
//
//   - The [omnibox.MetadataKey] entry (the event key the relay adds) becomes
//     the record key and is not sent as a header. Without that entry, or when
//     it is empty, the record has no key (null), and the partitioner spreads
//     such records over the partitions.
//   - Headers are in a deterministic order: the UUID header first, then the
//     metadata sorted by key.
//   - An empty or nil payload is sent as an empty value, never as null: a
//     null value is a tombstone, which deletes the key from a compacted topic.
//
// Unmarshal works like DefaultMarshaler's and, when the record has a
// non-empty key, puts it back into the metadata under [omnibox.MetadataKey]
// (replacing a header of that name), so a round trip through Kafka returns
// the message the relay published. The key is also available from
// kafka.MessageKeyFromCtx(msg.Context()) as with any watermill-kafka
// Unmarshaler.
type KafkaMarshaler struct{}

// Marshal converts msg into a sarama record for topic, for a watermill-kafka
// Publisher; it builds the record [KafkaMarshaler.Record] builds. It returns
// an error wrapping [ErrReservedHeader] when msg's metadata has a
// kafka.UUIDHeaderKey entry.
func (m KafkaMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	r, err := m.Record(topic, msg)
	if err != nil {
		return nil, err
	}
	headers := make([]sarama.RecordHeader, len(r.Headers))
	for i, h := range r.Headers {
		headers[i] = sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value}
	}
	var key sarama.Encoder // a nil interface, not a nil ByteEncoder: "no key"
	if r.Key != nil {
		key = sarama.ByteEncoder(r.Key)
	}
	return &sarama.ProducerMessage{
		Headers: headers,
		Key:     key,
		Topic:   topic,
		Value:   sarama.ByteEncoder(r.Value),
	}, nil
}

// Record converts msg into the franz-go record for topic that [Kafka]
// produces: the UUID header first, then the metadata sorted by key, the
// [omnibox.MetadataKey] entry as the record key (nil when absent or empty),
// and the payload as the value (empty, never nil). It returns an error
// wrapping [ErrReservedHeader] when msg's metadata has a kafka.UUIDHeaderKey
// entry. The record shares no memory with msg but the payload.
func (KafkaMarshaler) Record(topic string, msg *message.Message) (*kgo.Record, error) {
	if _, ok := msg.Metadata[kafka.UUIDHeaderKey]; ok {
		return nil, fmt.Errorf("%w: metadata %q is reserved for the message UUID", ErrReservedHeader, kafka.UUIDHeaderKey)
	}
	headers := make([]kgo.RecordHeader, 0, len(msg.Metadata)+1)
	headers = append(headers, kgo.RecordHeader{Key: kafka.UUIDHeaderKey, Value: []byte(msg.UUID)})
	var key []byte // nil: no key
	for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
		v := msg.Metadata[k]
		if k == omnibox.MetadataKey {
			if v != "" {
				key = []byte(v)
			}
			continue
		}
		headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	payload := msg.Payload
	if payload == nil {
		payload = []byte{} // a nil value is sent as null: a tombstone
	}
	return &kgo.Record{
		Headers: headers,
		Key:     key,
		Topic:   topic,
		Value:   payload,
	}, nil
}

// Unmarshal converts a consumed record into a Watermill message.
func (KafkaMarshaler) Unmarshal(record *sarama.ConsumerMessage) (*message.Message, error) {
	msg, err := kafka.DefaultMarshaler{}.Unmarshal(record)
	if err != nil {
		return nil, err
	}
	if len(record.Key) > 0 {
		if msg.Metadata == nil {
			msg.Metadata = make(message.Metadata, 1)
		}
		msg.Metadata[omnibox.MetadataKey] = string(record.Key)
	}
	return msg, nil
}
