package omnibox

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MetadataKey is the metadata entry that carries an event's key through a
// Watermill message. [Outbox.WriteMessagesTx] takes the key from it (and
// stores it in the key column, not in the metadata); the [Relay] puts it back
// on the message it publishes when the event has a key, so that any Watermill
// publisher can route by it. The Kafka publisher in package publisher moves it
// into the Kafka record key instead of a header.
const MetadataKey = "omnibox_key"

// Limits on the parts of an event. They are enforced by [Outbox] before
// anything is written, so that every dialect accepts every event the outbox
// accepted.
const (
	// MaxIDLen is the longest event ID accepted, in bytes.
	MaxIDLen = 128
	// MaxTopicLen is the longest topic accepted, in bytes.
	MaxTopicLen = 255
	// MaxKeyLen is the longest key accepted, in bytes.
	MaxKeyLen = 255
)

// Event is one message in the outbox: written in the caller's transaction,
// relayed to the broker after that transaction commits.
type Event struct {
	// CreatedAt is when the event was written. Left zero, it is set to the
	// current time. It is truncated to microseconds (the precision the stores
	// keep) and must fall within the years 1000 to 9999 (MySQL's range).
	CreatedAt time.Time
	// ID identifies the event for its whole life: it becomes the Watermill
	// message UUID, which consumers use to deduplicate. Left empty, a UUIDv7 is
	// generated. Any non-empty string of valid UTF-8 up to [MaxIDLen] bytes is
	// accepted, so ULIDs and domain IDs work too. It must be unique among the
	// events in the outbox.
	ID string
	// Key orders events: events with the same non-empty key reach the broker in
	// the order they were written, when written in one transaction or by
	// transactions that commit one after another (concurrent transactions
	// writing one key have no defined order). For Kafka the key becomes the
	// record key and so picks the partition. Empty means no ordering with
	// respect to other events.
	Key string
	// Metadata travels with the event (as Watermill metadata; Kafka headers).
	// Keys and values must be valid UTF-8 without NUL bytes, and no key may be
	// [MetadataKey].
	Metadata map[string]string
	// Payload is the message body, stored and published byte for byte. At most
	// [Config.MaxPayloadBytes] long; nil and empty are both published as empty.
	Payload []byte
	// Topic is where the event is published. Required.
	Topic string
}

// prepare fills in defaults (ID, CreatedAt) and validates the event. It does
// not modify the caller's event: it returns the completed copy.
func (e Event) prepare(index int, maxPayload, maxMetadata int, now time.Time) (Event, error) {
	fail := func(reason string, sentinel error) (Event, error) {
		return Event{}, &EventError{Index: index, ID: e.ID, Reason: reason, Err: sentinel}
	}
	if e.ID == "" {
		id, err := NewEventID()
		if err != nil {
			return Event{}, err
		}
		e.ID = id
	}
	switch {
	case len(e.ID) > MaxIDLen:
		return fail(fmt.Sprintf("ID is %d bytes long, the limit is %d", len(e.ID), MaxIDLen), ErrInvalidEvent)
	case !validText(e.ID):
		return fail("ID is not valid UTF-8 or contains a NUL byte", ErrInvalidEvent)
	case strings.TrimSpace(e.Topic) == "":
		return fail("topic is empty", ErrInvalidEvent)
	case len(e.Topic) > MaxTopicLen:
		return fail(fmt.Sprintf("topic is %d bytes long, the limit is %d", len(e.Topic), MaxTopicLen), ErrInvalidEvent)
	case !validText(e.Topic):
		return fail("topic is not valid UTF-8 or contains a NUL byte", ErrInvalidEvent)
	case len(e.Key) > MaxKeyLen:
		return fail(fmt.Sprintf("key is %d bytes long, the limit is %d", len(e.Key), MaxKeyLen), ErrInvalidEvent)
	case !validText(e.Key):
		return fail("key is not valid UTF-8 or contains a NUL byte", ErrInvalidEvent)
	case len(e.Payload) > maxPayload:
		return fail(fmt.Sprintf("payload is %d bytes, the limit (Config.MaxPayloadBytes) is %d", len(e.Payload), maxPayload), ErrPayloadTooLarge)
	}
	metadataBytes := 0
	for k, v := range e.Metadata {
		metadataBytes += len(k) + len(v)
		switch {
		case k == "":
			return fail("metadata has an empty key", ErrInvalidEvent)
		case k == MetadataKey:
			return fail(fmt.Sprintf("metadata key %q is reserved for the event key; set Event.Key instead", MetadataKey), ErrInvalidEvent)
		case !validText(k):
			return fail(fmt.Sprintf("metadata key %q is not valid UTF-8 or contains a NUL byte", k), ErrInvalidEvent)
		case !validText(v):
			return fail(fmt.Sprintf("metadata value of %q is not valid UTF-8 or contains a NUL byte", k), ErrInvalidEvent)
		}
	}
	if metadataBytes > maxMetadata {
		return fail(fmt.Sprintf("metadata is %d bytes (keys and values), the limit (Config.MaxMetadataBytes) is %d", metadataBytes, maxMetadata), ErrMetadataTooLarge)
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = now
	}
	if y := e.CreatedAt.UTC().Year(); y < 1000 || y > 9999 {
		return fail(fmt.Sprintf("CreatedAt %s is outside the years 1000 to 9999 that every store can hold", e.CreatedAt.UTC().Format(time.RFC3339)), ErrInvalidEvent)
	}
	e.CreatedAt = e.CreatedAt.Truncate(time.Microsecond).UTC()
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	return e, nil
}

// validText reports whether s is valid UTF-8 without NUL bytes: what every
// dialect stores and returns unchanged.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// newEventID returns a new UUIDv7: unique, and ordered by time, which keeps
// the stores' unique index on the ID compact.
func NewEventID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("omnibox: generating event ID: %w", err)
	}
	return id.String(), nil
}
