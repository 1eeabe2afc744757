package publisher

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by [Kafka.Publish] after [Kafka.Close].
var ErrClosed = errors.New("publisher: closed")

// ErrMessageTooLarge is wrapped by [Kafka.Publish] when a message, once
// marshaled, is larger than the producer's Producer.MaxMessageBytes allows.
// Nothing of that Publish call is sent. Publishing the message again cannot
// succeed until the limit (and the topic's max.message.bytes) is raised.
var ErrMessageTooLarge = errors.New("publisher: message too large")

// ErrReservedHeader is wrapped by [KafkaMarshaler.Marshal] when a message's
// metadata has an entry named like the header that carries the message UUID
// (kafka.UUIDHeaderKey).
var ErrReservedHeader = errors.New("publisher: reserved header")

// PublishError reports the messages of a [Kafka.Publish] call that Kafka did
// not acknowledge. The others were acknowledged (written with acks=all):
// publishing them again makes duplicates, which consumers remove by the
// message UUID. errors.Is and errors.As see the first failure's cause through
// Unwrap, e.g. sarama.ErrUnknownTopicOrPartition.
type PublishError struct {
	// Err is the cause of the first failed message, in Publish order.
	Err error
	// FailedUUIDs are the UUIDs of the failed messages, in Publish order.
	FailedUUIDs []string
	// Topic is the topic of the Publish call.
	Topic string
	// Total is the number of messages in the Publish call.
	Total int
}

// Error implements error.
func (e *PublishError) Error() string {
	first := ""
	if len(e.FailedUUIDs) > 0 {
		first = e.FailedUUIDs[0]
	}
	return fmt.Sprintf("publisher: %d of %d message(s) to topic %q not acknowledged by Kafka; first failure (message %s): %v",
		len(e.FailedUUIDs), e.Total, e.Topic, first, e.Err)
}

// Unwrap returns the cause of the first failed message.
func (e *PublishError) Unwrap() error { return e.Err }
