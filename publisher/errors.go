package publisher

import (
	"errors"
	"fmt"

	"github.com/omnibox-go/omnibox"
)

// ErrClosed is returned by [Kafka.Publish] after [Kafka.Close].
var ErrClosed = errors.New("publisher: closed")

// ErrMessageTooLarge is wrapped (together with [omnibox.ErrRejected]) by the
// error of a message that, once marshaled, does not fit in a record batch of
// the producer's ProducerBatchMaxBytes ([DefaultMaxMessageBytes] by
// default). The message is not sent. Publishing it again cannot succeed until
// the limit (and the topic's max.message.bytes) is raised.
var ErrMessageTooLarge = errors.New("publisher: message too large")

// ErrNotSent is wrapped (together with [omnibox.ErrUnavailable]) by the error
// of a message that [Kafka.Publish] did not send, or that Kafka did not
// store, because an earlier message of the same key (or, for a refusal by
// the broker, of the same partition) in the call failed: sending it would
// have stored a later event of the key without an earlier one. Nothing is
// wrong with the message itself; publishing it again after the earlier one
// can succeed, so the relay releases it without charging it an attempt.
var ErrNotSent = errors.New("publisher: not sent because an earlier message of its key failed")

// ErrReservedHeader is wrapped by [KafkaMarshaler.Marshal] and
// [KafkaMarshaler.Record] when a message's metadata has an entry named like
// the header that carries the message UUID (kafka.UUIDHeaderKey).
var ErrReservedHeader = errors.New("publisher: reserved header")

var _ omnibox.MessageErrors = (*PublishError)(nil)

// PublishError reports the messages of a [Kafka.Publish] call that Kafka did
// not acknowledge. The others were acknowledged (written with acks=all).
//
// It implements [omnibox.MessageErrors] with prefix semantics per key: among
// the messages of one partition (so of one key) in the call, the
// acknowledged ones are the first ones. The error of each failed message
// wraps [omnibox.ErrRejected] when Kafka refuses it for good (or the
// publisher's own checks do: [ErrMessageTooLarge], [ErrReservedHeader], an
// invalid or missing topic) and [omnibox.ErrUnavailable] when it may succeed
// later as it is (deadline, network, leader election, or [ErrNotSent]).
//
// A message whose error wraps ErrUnavailable may nonetheless have been
// written: its produce request was on the wire when the deadline hit and its
// outcome is unknown. Publishing it again may then store it twice, in order
// (after the call's acknowledged messages of its key); consumers deduplicate
// on the message UUID.
type PublishError struct {
	// Err is the error of the first failed message, in Publish order.
	Err error
	// Errors is the error of each failed message, by message UUID.
	Errors map[string]error
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

// MessageErrors implements [omnibox.MessageErrors]: it returns Errors.
func (e *PublishError) MessageErrors() map[string]error { return e.Errors }

// Unwrap returns the error of the first failed message, so that errors.Is
// sees its sentinels (e.g. [omnibox.ErrUnavailable]). Use MessageErrors for
// the others.
func (e *PublishError) Unwrap() error { return e.Err }
