package omnibox

import (
	"errors"
	"fmt"
)

// ErrNilTx is returned when a write is given a nil transaction. Writing to the
// outbox outside a transaction would defeat its purpose, so it is refused.
var ErrNilTx = errors.New("omnibox: transaction is nil")

// ErrNilDB is wrapped by the error of a constructor or helper given a nil
// database handle, or an interface holding a nil *sql.DB (the result of a
// failed sql.Open whose error was ignored).
var ErrNilDB = errors.New("omnibox: database handle is nil")

// ErrNilStore is wrapped by the error of a constructor given a nil store, or
// an interface holding a nil pointer (such as the *postgres.Store of a failed
// postgres.New whose error was ignored).
var ErrNilStore = errors.New("omnibox: store is nil")

// ErrNilPublisher is wrapped by the error of [NewRelay] when given a nil
// publisher, or an interface holding a nil pointer: the *publisher.Kafka of
// a failed publisher.NewKafka whose error was ignored would otherwise panic
// on the relay's first batch.
var ErrNilPublisher = errors.New("omnibox: publisher is nil")

// ErrNilWaker is wrapped by the error of [Outbox.WakeOnCommit] when given a
// nil [Waker], or an interface holding a nil pointer (a *Relay whose
// NewRelay failed).
var ErrNilWaker = errors.New("omnibox: waker is nil")

// ErrNilConfig is returned by constructors given a nil config pointer. Pass
// &Config{} to take every default.
var ErrNilConfig = errors.New("omnibox: config is nil")

// ErrInvalidEvent is wrapped by every validation error about an event (empty
// topic, oversized payload, malformed ID or metadata). Use errors.Is to test
// for it and errors.As with *[EventError] to learn which event and why.
var ErrInvalidEvent = errors.New("omnibox: invalid event")

// ErrPayloadTooLarge is wrapped (together with [ErrInvalidEvent]) when an
// event's payload is larger than [Config.MaxPayloadBytes].
var ErrPayloadTooLarge = errors.New("payload too large")

// ErrMetadataTooLarge is wrapped (together with [ErrInvalidEvent]) when an
// event's metadata is larger than [Config.MaxMetadataBytes].
var ErrMetadataTooLarge = errors.New("metadata too large")

// ErrDuplicateEventID is returned by stores when an event with the same ID is
// already in the outbox. Stores must wrap it so that errors.Is reports true.
var ErrDuplicateEventID = errors.New("omnibox: duplicate event ID")

// ErrInvalidIdentifier is returned when a schema or table name from
// configuration is not a plain SQL identifier. Names are never concatenated
// into SQL unchecked.
var ErrInvalidIdentifier = errors.New("omnibox: invalid SQL identifier")

// EventError reports which event of a write was rejected and why. Err wraps
// [ErrInvalidEvent] and, where it applies, a more specific sentinel such as
// [ErrPayloadTooLarge].
type EventError struct {
	// Index is the position of the event in the write call.
	Index int
	// ID is the event's ID, empty when the caller left it empty.
	ID string
	// Reason says what is wrong, in words.
	Reason string
	// Err is the sentinel behind Reason.
	Err error
}

// Error implements error.
func (e *EventError) Error() string {
	id := e.ID
	if id == "" {
		id = "<generated>"
	}
	return fmt.Sprintf("omnibox: invalid event at index %d (id %s): %s", e.Index, id, e.Reason)
}

// Unwrap returns the sentinels behind the error, so errors.Is works for both
// [ErrInvalidEvent] and the specific cause.
func (e *EventError) Unwrap() []error {
	if e.Err == nil || e.Err == ErrInvalidEvent {
		return []error{ErrInvalidEvent}
	}
	return []error{ErrInvalidEvent, e.Err}
}

// ErrSchemaTooNew is wrapped by the error of a store's Migrate when the
// database's schema was migrated by a newer release of omnibox than this
// binary: running against a schema it does not know could lose events, so it
// refuses. Upgrade github.com/omnibox-go/omnibox in the binary.
var ErrSchemaTooNew = errors.New("omnibox: the schema was migrated by a newer release of omnibox")

// ErrRejected is wrapped by a publisher's error for a message the broker
// refuses for good: too large, invalid, for a topic that does not exist or
// that the publisher may not write to. Sending it again cannot succeed until
// someone changes the event or the broker. The relay charges the event an
// attempt, so that it is dead after [RelayConfig.MaxAttempts], even when no
// other event flows.
var ErrRejected = errors.New("omnibox: the broker rejected the message")

// ErrUnavailable is wrapped by a publisher's error when the broker could not
// be reached or did not answer in time: the message may succeed later as it
// is. The relay charges the event no attempt; a batch of which nothing was
// published counts towards the circuit breaker.
var ErrUnavailable = errors.New("omnibox: the broker is unavailable")

// ErrRelayIDInUse is returned by a store's Claim (and logged by the relay)
// when another live process records itself under the same relay ID: each
// relay process needs an ID of its own ([RelayConfig.ID]).
var ErrRelayIDInUse = errors.New("omnibox: the relay ID is in use by another live process")

// MessageErrors is implemented by the error a publisher returns from a
// Publish call of which only some messages failed. The relay then records
// the others as delivered instead of publishing them again.
//
// A publisher that implements it promises prefix semantics per key: among
// the messages of one key (for Kafka: of one partition) in a call, those it
// stored are the first ones, in order; once one failed, none after it was or
// will be stored by that call.
type MessageErrors interface {
	error
	// MessageErrors returns the error of each message that was not
	// acknowledged, by message UUID. Messages of the call that are not in
	// the map were acknowledged.
	MessageErrors() map[string]error
}
