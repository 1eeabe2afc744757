package inbox

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/omnibox-go/omnibox"
)

// Store is what the inbox needs of a dialect's inbox table, a row per
// (consumer, message ID) processed. The dialect packages (store/postgres,
// store/mysql, store/sqlite) provide one each; the conformance suite in
// store/storetest checks them.
type Store interface {
	// Record inserts (Consumer, MessageID) through tx with one statement
	// backed by the table's unique key, and reports whether the row is new.
	// It returns false, without error, when the pair is already recorded
	// (committed by another transaction). When another, uncommitted
	// transaction holds the same pair, Record waits for it: if it commits,
	// Record returns false; if it rolls back, Record inserts and returns
	// true. So two concurrent deliveries of one message never both see true.
	// Where several deliveries wait on one transaction that rolls back, a
	// store may fail all but one of them with a retryable error (InnoDB
	// breaks that deadlock with error 1213); the failed delivery is retried
	// by redelivery and then finds the record.
	// It must not abort tx when the pair exists (no failed statement).
	Record(ctx context.Context, tx omnibox.DBTX, params RecordParams) (bool, error)
	// Processed reports whether (Consumer, MessageID) is recorded, as seen
	// by db. It is the check of the weaker two-step form.
	Processed(ctx context.Context, db omnibox.DBTX, params RecordParams) (bool, error)
	// Purge deletes at most params.Limit rows processed more than
	// params.OlderThan ago, oldest first, with one bounded statement, and
	// reports how many it deleted. The cutoff must be computed by the
	// database, from the clock that stamped the rows (never from the
	// application's clock, which may be skewed). A Limit of zero or less, or
	// a negative OlderThan, must return an error.
	Purge(ctx context.Context, db omnibox.DBTX, params PurgeParams) (int, error)
}

// RecordParams name one processed message.
type RecordParams struct {
	// Consumer names the consumer (a handler, a service): the same message
	// may be processed once by each consumer. At most [MaxConsumerLen] bytes.
	Consumer string
	// MessageID is the message's ID (for omnibox events, the event ID). At
	// most [MaxMessageIDLen] bytes.
	MessageID string
}

// Validate reports whether the consumer name and message ID are what every
// dialect's table holds: non-empty, at most [MaxConsumerLen] and
// [MaxMessageIDLen] bytes, valid UTF-8 without NUL bytes. An empty message
// ID returns [ErrEmptyMessageID]; anything else wrong an error wrapping
// [ErrInvalid]. Stores call it before touching the database.
func (p RecordParams) Validate() error {
	switch {
	case p.MessageID == "":
		return ErrEmptyMessageID
	case len(p.MessageID) > MaxMessageIDLen:
		return fmt.Errorf("%w: message ID is %d bytes long, the limit is %d", ErrInvalid, len(p.MessageID), MaxMessageIDLen)
	case !validText(p.MessageID):
		return fmt.Errorf("%w: message ID %q is not valid UTF-8 or contains a NUL byte", ErrInvalid, p.MessageID)
	}
	return validateConsumer(p.Consumer)
}

func validateConsumer(consumer string) error {
	switch {
	case consumer == "":
		return fmt.Errorf("%w: consumer name is empty", ErrInvalid)
	case len(consumer) > MaxConsumerLen:
		return fmt.Errorf("%w: consumer name is %d bytes long, the limit is %d", ErrInvalid, len(consumer), MaxConsumerLen)
	case !validText(consumer):
		return fmt.Errorf("%w: consumer name %q is not valid UTF-8 or contains a NUL byte", ErrInvalid, consumer)
	}
	return nil
}

// validText reports whether s is valid UTF-8 without NUL bytes: what every
// dialect stores and compares unchanged.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// PurgeParams are the arguments of [Store.Purge].
type PurgeParams struct {
	// Limit is the most rows deleted by one call. It must be positive.
	Limit int
	// OlderThan is the age beyond which rows are deleted: those processed
	// earlier than the database's current time minus OlderThan. It must not
	// be negative.
	OlderThan time.Duration
}

// Validate reports whether Limit is positive and OlderThan not negative.
// Stores call it before touching the database.
func (p PurgeParams) Validate() error {
	switch {
	case p.Limit <= 0:
		return fmt.Errorf("inbox: PurgeParams.Limit must be positive, got %d", p.Limit)
	case p.OlderThan < 0:
		return fmt.Errorf("inbox: PurgeParams.OlderThan must not be negative, got %s", p.OlderThan)
	}
	return nil
}

// Limits on what the inbox records; every dialect's table holds them.
const (
	// MaxConsumerLen is the longest consumer name, in bytes.
	MaxConsumerLen = 255
	// MaxMessageIDLen is the longest message ID, in bytes (the same as
	// [omnibox.MaxIDLen]).
	MaxMessageIDLen = omnibox.MaxIDLen
)
