package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/nilcheck"
)

// MiddlewareConfig configures a [Middleware]. DB and Inbox are required;
// every other field has a default.
type MiddlewareConfig struct {
	// Consumer names the consumer in the inbox table: a message is processed
	// once per consumer name. Give every replica of a service the same name,
	// so that they deduplicate against each other. Defaults to the name of
	// the router handler the message was delivered to
	// ([message.HandlerNameFromCtx]), so that one middleware added at router
	// level gives each handler its own records. At most [MaxConsumerLen]
	// bytes.
	Consumer string
	// DB is the database the transactions are begun on; the inbox table and
	// the handler's tables (and the outbox, with Outbox set) must be in it.
	// Usually a *sql.DB; a *sql.Conn (one connection) only when the handler
	// gets one message at a time, since a connection has one transaction at
	// a time. Required.
	DB omnibox.TxBeginner
	// Hooks are told about each message's outcome: every hook is checked for
	// [HookProcessed], [HookDuplicate] and [HookFailed] and called for those
	// it implements. A hook implementing none of them is a configuration
	// error. Hooks are called synchronously on the handler's goroutine and
	// must be safe for concurrent use. Optional.
	Hooks []Hook
	// Inbox keeps the records. Required.
	Inbox *Inbox
	// Logger receives the middleware's logs: duplicates skipped, at debug
	// level. Defaults to a logger that discards.
	Logger *slog.Logger
	// MessageIDMetadataKey, when set, takes the message ID from this
	// metadata entry instead of the message UUID; for producers whose UUIDs
	// are not stable across redeliveries (a retried producer that generates
	// a new UUID per attempt) but that carry an ID of their own. A message
	// without the entry is an error ([ErrEmptyMessageID]), as is one with an
	// empty UUID when this is unset. Defaults to "": the UUID.
	MessageIDMetadataKey string
	// Outbox, when set, turns on consume → produce in one transaction: the
	// messages the handler returns are written to this outbox in the
	// handler's transaction (with [omnibox.Outbox.WriteMessagesTx]) instead
	// of being returned to the router to publish. A relay publishes them
	// once the transaction commits, so the handler's database changes, its
	// inbox record and the events it emits commit or roll back together.
	// After such a commit the middleware calls [omnibox.Outbox.Committed], so
	// relays registered with WakeOnCommit publish at once.
	// The outbox's table must be in DB. Optional: without it, returned
	// messages go back to the router, which publishes them after the commit
	// (and if that publish fails, the redelivered message is a duplicate and
	// the messages are never published; see docs/inbox.md).
	Outbox *omnibox.Outbox
	// OutboxTopicFunc picks the topic a produced message is written to the
	// outbox for; consumed is the message being handled (its context carries
	// the router's values), produced the message the handler returned. Only
	// used with Outbox. Defaults to the handler's publish topic, the
	// publishTopic given to message.Router.AddHandler
	// ([message.PublishTopicFromCtx]); an empty topic is an error.
	OutboxTopicFunc func(consumed, produced *message.Message) (string, error)
	// TxOptions are the options of the transactions begun on DB. Defaults to
	// nil: the driver's defaults.
	TxOptions *sql.TxOptions
}

// Validate reports the first setting that is missing or out of range.
func (c *MiddlewareConfig) Validate() error {
	switch {
	case c.DB == nil:
		return fmt.Errorf("inbox: MiddlewareConfig.DB is required: %w", omnibox.ErrNilDB)
	case c.Inbox == nil:
		return fmt.Errorf("inbox: MiddlewareConfig.Inbox is required (a nil *inbox.Inbox: did inbox.New return an error?): %w", ErrNilInbox)
	}
	if err := nilcheck.Check("inbox", "MiddlewareConfig.DB", c.DB, omnibox.ErrNilDB); err != nil {
		return err
	}
	switch {
	case c.OutboxTopicFunc != nil && c.Outbox == nil:
		return errors.New("inbox: MiddlewareConfig.OutboxTopicFunc is set but Outbox is nil")
	}
	if c.Consumer != "" {
		if err := validateConsumer(c.Consumer); err != nil {
			return fmt.Errorf("inbox: MiddlewareConfig.Consumer: %w", err)
		}
	}
	for i, h := range c.Hooks {
		if err := nilcheck.Check("inbox", fmt.Sprintf("MiddlewareConfig.Hooks[%d]", i), h, ErrNilHook); err != nil {
			return err
		}
		_, p := h.(HookProcessed)
		_, d := h.(HookDuplicate)
		_, f := h.(HookFailed)
		if !p && !d && !f {
			return fmt.Errorf("inbox: MiddlewareConfig.Hooks[%d] (%T) implements none of HookProcessed, HookDuplicate, HookFailed", i, h)
		}
	}
	return nil
}

// Hook is a value that implements one or more of [HookProcessed],
// [HookDuplicate] and [HookFailed]: metrics and tracing plug in here without
// the middleware depending on them.
type Hook any

// HookProcessed is called after a message was processed: its handler
// succeeded and the transaction committed.
type HookProcessed interface {
	OnProcessed(ctx context.Context, consumer, messageID string)
}

// HookDuplicate is called when a message was already processed by the
// consumer and so was acknowledged without calling the handler.
type HookDuplicate interface {
	OnDuplicate(ctx context.Context, consumer, messageID string)
}

// HookFailed is called when a message's attempt ended without a commit: the
// handler returned an error or panicked ([ErrHandlerPanicked]), the message
// had no ID, or the database failed. The transaction was rolled back, so the
// message will be processed again when it is redelivered. messageID is empty
// when the message had none.
type HookFailed interface {
	OnFailed(ctx context.Context, consumer, messageID string, err error)
}

// MiddlewareStats are the counters of a [Middleware] since it was created.
type MiddlewareStats struct {
	// Duplicates counts messages acknowledged without calling the handler
	// because the consumer had already processed them.
	Duplicates int64
	// Failed counts attempts that were rolled back: handler errors and
	// panics, messages without an ID, database errors.
	Failed int64
	// Processed counts messages whose handler succeeded and whose
	// transaction committed.
	Processed int64
}

// Middleware deduplicates the messages of Watermill router handlers through
// an [Inbox], in a transaction shared with the handler. Add its
// [Middleware.Middleware] method to a message.Router or a handler. It is
// safe for concurrent use.
type Middleware struct {
	config     MiddlewareConfig
	duplicates atomic.Int64
	failed     atomic.Int64
	log        *slog.Logger
	processed  atomic.Int64
}

// NewMiddleware returns a Middleware configured by config, which may not be
// nil ([omnibox.ErrNilConfig]).
func NewMiddleware(config *MiddlewareConfig) (*Middleware, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	m := &Middleware{config: *config, log: config.Logger}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

// Stats returns the middleware's counters.
func (m *Middleware) Stats() MiddlewareStats {
	return MiddlewareStats{
		Duplicates: m.duplicates.Load(),
		Failed:     m.failed.Load(),
		Processed:  m.processed.Load(),
	}
}

// Middleware is the [message.HandlerMiddleware]: pass it to
// message.Router.AddMiddleware or message.Handler.AddMiddleware. For each
// message it
//
//  1. takes the consumer name and the message ID (an empty ID is an error
//     wrapping [ErrEmptyMessageID]: nothing would deduplicate it);
//  2. begins a transaction on [MiddlewareConfig.DB] and records the message
//     with [Inbox.RecordOnceTx]; a message already recorded for the consumer
//     is a duplicate: it is rolled back, logged at debug level, counted, and
//     acknowledged (nil, nil) without calling h;
//  3. calls h with the transaction in the message's context (get it with
//     [TxFromContext] or [TxFromMessage]): the handler does its database
//     work in it;
//  4. when h fails or panics, rolls back (the inbox record too, so the
//     message is processed again on redelivery) and returns h's error, with
//     no messages, or lets the panic go on;
//  5. when h succeeds, writes the messages h returned to the outbox (with
//     [MiddlewareConfig.Outbox] set) and commits; a failed commit is an
//     error, so the message is redelivered.
//
// Retry must be outside this middleware (added before it), so that every
// attempt gets a fresh transaction; see docs/inbox.md for the order with
// Retry, PoisonQueue and Recoverer. The message's original context is put
// back before the middleware returns.
func (m *Middleware) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		return m.handle(h, msg)
	}
}

func (m *Middleware) handle(h message.HandlerFunc, msg *message.Message) (_ []*message.Message, err error) {
	ctx := msg.Context()
	consumer := m.config.Consumer
	if consumer == "" {
		consumer = message.HandlerNameFromCtx(ctx)
	}
	if consumer == "" {
		return nil, m.fail(ctx, consumer, "", fmt.Errorf("%w: no consumer name: set MiddlewareConfig.Consumer or run the handler in a message.Router, which names it", ErrInvalid))
	}
	id := msg.UUID
	if key := m.config.MessageIDMetadataKey; key != "" {
		id = msg.Metadata.Get(key)
		if id == "" {
			return nil, m.fail(ctx, consumer, "", fmt.Errorf("%w: metadata entry %q is missing or empty (message UUID %q, consumer %q)", ErrEmptyMessageID, key, msg.UUID, consumer))
		}
	} else if id == "" {
		return nil, m.fail(ctx, consumer, "", fmt.Errorf("%w: message UUID is empty (consumer %q)", ErrEmptyMessageID, consumer))
	}

	tx, err := m.config.DB.BeginTx(ctx, m.config.TxOptions)
	if err != nil {
		return nil, m.fail(ctx, consumer, id, fmt.Errorf("inbox: begin: %w", err))
	}
	committed, returned := false, false
	defer func() {
		msg.SetContext(ctx)
		if committed {
			return
		}
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) && err != nil {
			err = errors.Join(err, fmt.Errorf("inbox: rollback: %w", rbErr))
		}
		if !returned {
			// h panicked (or called runtime.Goexit): the transaction is
			// rolled back above and the panic goes on, unrecovered, so that
			// its stack is intact for whoever recovers it.
			m.fail(ctx, consumer, id, ErrHandlerPanicked)
		}
	}()

	isNew, err := m.config.Inbox.RecordOnceTx(ctx, tx, consumer, id)
	if err != nil {
		returned = true
		return nil, m.fail(ctx, consumer, id, err)
	}
	if !isNew {
		returned = true
		m.duplicates.Add(1)
		m.log.DebugContext(ctx, "inbox: duplicate message skipped", slog.String("consumer", consumer), slog.String("message_id", id))
		for _, hook := range m.config.Hooks {
			if hk, ok := hook.(HookDuplicate); ok {
				hk.OnDuplicate(ctx, consumer, id)
			}
		}
		return nil, nil
	}

	msg.SetContext(ContextWithTx(ctx, tx))
	produced, err := h(msg)
	returned = true
	if err != nil {
		// No messages: an outer PoisonQueue that swallows the error must not
		// get a failed attempt's output published.
		return nil, m.fail(ctx, consumer, id, err)
	}
	wroteOutbox := false
	if m.config.Outbox != nil && len(produced) > 0 {
		if err := m.writeOutbox(ctx, tx, msg, produced); err != nil {
			return nil, m.fail(ctx, consumer, id, err)
		}
		produced, wroteOutbox = nil, true
	}
	committed = true
	if err := tx.Commit(); err != nil {
		return nil, m.fail(ctx, consumer, id, fmt.Errorf("inbox: commit: %w", err))
	}
	if wroteOutbox {
		// Wake the relays registered with Outbox.WakeOnCommit.
		m.config.Outbox.Committed()
	}
	m.processed.Add(1)
	for _, hook := range m.config.Hooks {
		if hk, ok := hook.(HookProcessed); ok {
			hk.OnProcessed(ctx, consumer, id)
		}
	}
	return produced, nil
}

// fail counts a failed attempt, tells the hooks and returns err.
func (m *Middleware) fail(ctx context.Context, consumer, id string, err error) error {
	m.failed.Add(1)
	for _, hook := range m.config.Hooks {
		if hk, ok := hook.(HookFailed); ok {
			hk.OnFailed(ctx, consumer, id, err)
		}
	}
	return err
}

// writeOutbox writes the produced messages to the outbox through tx, in
// order, one write per run of messages with the same topic.
func (m *Middleware) writeOutbox(ctx context.Context, tx *sql.Tx, consumed *message.Message, produced []*message.Message) error {
	topics := make([]string, len(produced))
	for i, p := range produced {
		if p == nil {
			return fmt.Errorf("inbox: the handler returned a nil message at index %d", i)
		}
		var topic string
		if m.config.OutboxTopicFunc != nil {
			t, err := m.config.OutboxTopicFunc(consumed, p)
			if err != nil {
				return fmt.Errorf("inbox: OutboxTopicFunc: %w", err)
			}
			topic = t
		} else {
			topic = message.PublishTopicFromCtx(ctx)
		}
		if topic == "" {
			return errors.New("inbox: no outbox topic for the handler's messages: give the handler a publish topic (message.Router.AddHandler) or set MiddlewareConfig.OutboxTopicFunc")
		}
		topics[i] = topic
	}
	for start := 0; start < len(produced); {
		end := start + 1
		for end < len(produced) && topics[end] == topics[start] {
			end++
		}
		if err := m.config.Outbox.WriteMessagesTx(ctx, tx, topics[start], produced[start:end]...); err != nil {
			return fmt.Errorf("inbox: writing %d message(s) to the outbox: %w", end-start, err)
		}
		start = end
	}
	return nil
}

type txKey struct{}

// ContextWithTx returns a copy of ctx carrying tx, as the middleware hands
// it to the handler. For tests of handlers that run without the middleware.
func ContextWithTx(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFromContext returns the transaction the [Middleware] began for the
// message being handled, and false when ctx carries none (the handler is not
// wrapped by the middleware). Do not commit or roll it back: the middleware
// does, according to what the handler returns.
func TxFromContext(ctx context.Context) (*sql.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(*sql.Tx)
	return tx, ok && tx != nil
}

// TxFromMessage returns the transaction the [Middleware] began for msg, from
// msg's context, or [ErrNoTx] when there is none.
func TxFromMessage(msg *message.Message) (*sql.Tx, error) {
	if tx, ok := TxFromContext(msg.Context()); ok {
		return tx, nil
	}
	return nil, ErrNoTx
}
