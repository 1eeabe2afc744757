package omnibox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox/internal/nilcheck"
)

// DefaultMaxPayloadBytes is the default of [Config.MaxPayloadBytes]:
// 1,000,000 bytes. A Kafka broker's default message.max.bytes (1,048,588)
// bounds a whole record batch; this leaves about 48 KiB of it for the key,
// the metadata headers and the record overhead, so an event the outbox
// accepts with modest metadata is one a default broker accepts too.
const DefaultMaxPayloadBytes = 1_000_000

// DefaultMaxMetadataBytes is the default of [Config.MaxMetadataBytes]:
// 32 KiB of metadata keys and values, which with a payload of
// [DefaultMaxPayloadBytes] still fits a default Kafka broker's record batch.
const DefaultMaxMetadataBytes = 32 << 10

// Config configures an [Outbox]. The zero value takes every default.
type Config struct {
	// MaxPayloadBytes is the largest payload accepted. An event over it is
	// rejected at write time, with nothing written, rather than becoming an
	// event the broker will never take. Raise it together with the broker's
	// limit (Kafka: message.max.bytes, and the publisher's batch limit,
	// kgo.ProducerBatchMaxBytes in publisher.KafkaConfig.Options).
	// Defaults to [DefaultMaxPayloadBytes].
	MaxPayloadBytes int
	// MaxMetadataBytes is the most metadata accepted, counting the bytes of
	// its keys and values (which travel as message headers). An event over
	// it is rejected at write time, with nothing written: a broker would
	// refuse it, and it would only die after the relay's MaxAttempts.
	// Defaults to [DefaultMaxMetadataBytes].
	MaxMetadataBytes int
	// MessageKeyFunc derives the event key of a Watermill message written with
	// [Outbox.WriteMessagesTx] or [Outbox.Publisher]. Defaults to reading the
	// [MetadataKey] entry of the message's metadata (and storing the metadata
	// without it).
	MessageKeyFunc func(topic string, msg *message.Message) (string, error)
}

func (c *Config) withDefaults() *Config {
	out := *c
	out.MaxPayloadBytes = cmp.Or(out.MaxPayloadBytes, DefaultMaxPayloadBytes)
	out.MaxMetadataBytes = cmp.Or(out.MaxMetadataBytes, DefaultMaxMetadataBytes)
	return &out
}

// Validate reports the first setting that is out of range.
func (c *Config) Validate() error {
	if c.MaxPayloadBytes < 0 {
		return fmt.Errorf("omnibox: Config.MaxPayloadBytes must not be negative, got %d", c.MaxPayloadBytes)
	}
	if c.MaxMetadataBytes < 0 {
		return fmt.Errorf("omnibox: Config.MaxMetadataBytes must not be negative, got %d", c.MaxMetadataBytes)
	}
	return nil
}

// Outbox writes events into the outbox table inside the caller's
// transaction. It is safe for concurrent use.
type Outbox struct {
	config *Config
	now    func() time.Time
	store  Inserter

	mu     sync.Mutex
	wakers []Waker
	inTx   map[*sql.Tx]bool // transactions of running InTx calls: did they write?
}

// Waker is woken when a transaction that wrote events has committed: a
// [Relay] (its Notify), or a notifier that wakes relays in other processes
// (store/postgres's Notifier). Notify must not block.
type Waker interface {
	Notify()
}

// WakeOnCommit registers w to be woken each time a transaction that wrote
// events through this Outbox commits in [Outbox.InTx] (or is reported with
// [Outbox.Committed]): a relay in the same process then publishes the events
// within milliseconds instead of at its next poll, at the cost of a channel
// send for the writer. Polling stays the fallback, so a lost wake-up never
// strands an event.
//
// A nil w, or an interface holding a nil pointer (the *Relay of a NewRelay
// whose error was ignored), returns an error wrapping [ErrNilWaker] and
// registers nothing.
func (o *Outbox) WakeOnCommit(w Waker) error {
	if err := nilcheck.Check("omnibox: WakeOnCommit", "waker", w, ErrNilWaker); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.wakers = append(o.wakers, w)
	return nil
}

// Committed wakes the [Waker]s registered with [Outbox.WakeOnCommit]. Call it
// after committing a transaction in which you wrote events, when you manage
// the transaction yourself rather than through InTx. It never blocks.
func (o *Outbox) Committed() {
	o.mu.Lock()
	wakers := o.wakers
	o.mu.Unlock()
	for _, w := range wakers {
		w.Notify()
	}
}

// markWritten records that tx, when it is an InTx transaction, wrote events.
func (o *Outbox) markWritten(tx *sql.Tx) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.inTx[tx]; ok {
		o.inTx[tx] = true
	}
}

// New returns an Outbox writing through store (a dialect store such as
// store/postgres's). config may not be nil; &Config{} takes the defaults.
// A nil store, or an interface holding a nil pointer (the result of a store
// constructor whose error was ignored), returns an error wrapping
// [ErrNilStore]; a nil config [ErrNilConfig].
func New(store Inserter, config *Config) (*Outbox, error) {
	if err := nilcheck.Check("omnibox: New", "store", store, ErrNilStore); err != nil {
		return nil, err
	}
	if config == nil {
		return nil, ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	return &Outbox{config: config.withDefaults(), now: time.Now, store: store}, nil
}

// WriteTx writes events into the outbox through tx, all or none. The events
// become visible to the relay when tx commits and never if it rolls back, so
// the business rows written in tx and the events stand or fall together.
//
// Events with the same key are relayed in the order they were written. Each
// event is validated first; the first invalid one fails the whole call with
// an *[EventError] and nothing is written. Empty IDs are generated (UUIDv7)
// and zero CreatedAt set to now; the caller's events are not modified.
// A nil tx returns [ErrNilTx]; a committed or rolled-back tx returns an error
// wrapping [sql.ErrTxDone].
func (o *Outbox) WriteTx(ctx context.Context, tx *sql.Tx, events ...Event) error {
	_, err := o.WriteTxIDs(ctx, tx, events...)
	return err
}

// WriteTxIDs is [Outbox.WriteTx] that also returns the IDs of the events,
// in the order given: the caller's where set, the generated UUIDv7s where
// empty. On error it returns no IDs and nothing was written.
func (o *Outbox) WriteTxIDs(ctx context.Context, tx *sql.Tx, events ...Event) ([]string, error) {
	if tx == nil {
		return nil, ErrNilTx
	}
	if len(events) == 0 {
		return []string{}, nil
	}
	prepared := make([]Event, len(events))
	now := o.now()
	for i, e := range events {
		p, err := e.prepare(i, o.config.MaxPayloadBytes, o.config.MaxMetadataBytes, now)
		if err != nil {
			return nil, err
		}
		prepared[i] = p
	}
	if err := o.store.Insert(ctx, tx, InsertParams{Events: prepared}); err != nil {
		return nil, fmt.Errorf("omnibox: writing %d event(s): %w", len(prepared), err)
	}
	o.markWritten(tx)
	ids := make([]string, len(prepared))
	for i, e := range prepared {
		ids[i] = e.ID
	}
	return ids, nil
}

// WriteMessagesTx writes Watermill messages into the outbox through tx, to be
// published on topic; see [Outbox.WriteTx] for the transaction semantics.
// Each message's UUID becomes the event ID (when empty, one is generated and
// assigned to msg.UUID), its payload and metadata are kept as they are, and
// its key comes from [Config.MessageKeyFunc].
func (o *Outbox) WriteMessagesTx(ctx context.Context, tx *sql.Tx, topic string, msgs ...*message.Message) error {
	if tx == nil {
		return ErrNilTx
	}
	events := make([]Event, len(msgs))
	for i, msg := range msgs {
		if msg == nil {
			return &EventError{Index: i, Reason: "message is nil", Err: ErrInvalidEvent}
		}
		ev, err := o.messageToEvent(topic, msg)
		if err != nil {
			return &EventError{Index: i, ID: msg.UUID, Reason: err.Error(), Err: ErrInvalidEvent}
		}
		events[i] = ev
	}
	for i := range events {
		if events[i].ID == "" {
			id, err := NewEventID()
			if err != nil {
				return err
			}
			events[i].ID = id
		}
	}
	if err := o.WriteTx(ctx, tx, events...); err != nil {
		return err
	}
	for i, msg := range msgs {
		msg.UUID = events[i].ID
	}
	return nil
}

func (o *Outbox) messageToEvent(topic string, msg *message.Message) (Event, error) {
	md := maps.Clone(map[string]string(msg.Metadata))
	var key string
	if o.config.MessageKeyFunc != nil {
		k, err := o.config.MessageKeyFunc(topic, msg)
		if err != nil {
			return Event{}, fmt.Errorf("MessageKeyFunc: %w", err)
		}
		key = k
	} else {
		key = md[MetadataKey]
	}
	delete(md, MetadataKey)
	return Event{ID: msg.UUID, Topic: topic, Key: key, Payload: msg.Payload, Metadata: md}, nil
}

// Publisher returns a Watermill [message.Publisher] that writes into the
// outbox through tx, so code written against Watermill publishes
// transactionally without change. Publish runs [Outbox.WriteMessagesTx] with
// a background context; Close does nothing (the transaction is the caller's).
func (o *Outbox) Publisher(tx *sql.Tx) message.Publisher {
	return &txPublisher{outbox: o, tx: tx}
}

type txPublisher struct {
	outbox *Outbox
	tx     *sql.Tx
}

func (p *txPublisher) Publish(topic string, msgs ...*message.Message) error {
	return p.outbox.WriteMessagesTx(context.Background(), p.tx, topic, msgs...)
}

func (p *txPublisher) Close() error { return nil }

// TxBeginner begins transactions: *sql.DB and *sql.Conn implement it (and
// wrappers that embed them), so [Outbox.InTx] runs on a pool or on one
// connection held by the caller.
type TxBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

var (
	_ TxBeginner = (*sql.DB)(nil)
	_ TxBeginner = (*sql.Conn)(nil)
)

// InTx runs fn in a transaction on db: it begins the transaction (with opts,
// which may be nil), calls fn, and commits when fn returns nil. When fn
// returns an error the transaction is rolled back and that error returned;
// when fn panics it is rolled back and the panic goes on. For code that has no
// unit-of-work helper of its own. When fn wrote events through this Outbox
// and the commit succeeded, the wakers registered with [Outbox.WakeOnCommit]
// are woken.
func (o *Outbox) InTx(ctx context.Context, db TxBeginner, opts *sql.TxOptions, fn func(ctx context.Context, tx *sql.Tx) error) (err error) {
	if err := nilcheck.Check("omnibox: InTx", "db", db, ErrNilDB); err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("omnibox: begin: %w", err)
	}
	o.mu.Lock()
	if o.inTx == nil {
		o.inTx = make(map[*sql.Tx]bool)
	}
	o.inTx[tx] = false
	o.mu.Unlock()
	committed := false
	defer func() {
		o.mu.Lock()
		wrote := o.inTx[tx]
		delete(o.inTx, tx)
		o.mu.Unlock()
		if committed {
			if wrote && err == nil {
				o.Committed()
			}
			return
		}
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) && err != nil {
			err = errors.Join(err, fmt.Errorf("omnibox: rollback: %w", rbErr))
		}
	}()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	committed = true
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("omnibox: commit: %w", err)
	}
	return nil
}
