package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// mwBundle is the middleware tests' testBundle: a database with an inbox,
// an outbox and an applied table (the handlers' side effect, one row per
// application, with no unique key so that a double application shows), a
// GoChannel and a router that is not yet running.
type mwBundle struct {
	applied string // qualified name of the applied table
	db      *sql.DB
	hooks   *hookRecorder
	inbox   *inbox.Inbox
	logs    *logRecorder
	outbox  *omnibox.Outbox
	obStore *postgres.Store
	pubsub  *gochannel.GoChannel
	router  *message.Router
}

func setupMiddleware(t *testing.T) *mwBundle {
	t.Helper()
	ctx := context.Background()
	db, schema := dbtest.Postgres(t, "postgres")
	in, err := inbox.New(newPostgresStore(t, db, schema), &inbox.Config{})
	require.NoError(t, err)
	obStore, err := postgres.New(&postgres.Config{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, obStore.Migrate(ctx, db))
	ob, err := omnibox.New(obStore, &omnibox.Config{})
	require.NoError(t, err)
	applied := schema + ".applied"
	_, err = db.ExecContext(ctx, `CREATE TABLE `+applied+` (message_id text NOT NULL, consumer text NOT NULL DEFAULT '')`)
	require.NoError(t, err)

	// BlockPublishUntilSubscriberAck: Publish returns once the message was
	// acknowledged (GoChannel redelivers a nacked message until then), so a
	// test knows its message was handled when Publish returns.
	ps := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, router.Close())
		require.NoError(t, ps.Close())
	})
	return &mwBundle{applied: applied, db: db, hooks: &hookRecorder{}, inbox: in, logs: &logRecorder{}, outbox: ob, obStore: obStore, pubsub: ps, router: router}
}

// newMiddleware returns a middleware on the bundle's database and inbox,
// with its hooks and logs recorded; modify changes the config first.
func (b *mwBundle) newMiddleware(t *testing.T, modify func(*inbox.MiddlewareConfig)) *inbox.Middleware {
	t.Helper()
	config := &inbox.MiddlewareConfig{
		DB:     b.db,
		Hooks:  []inbox.Hook{b.hooks},
		Inbox:  b.inbox,
		Logger: slog.New(b.logs),
	}
	if modify != nil {
		modify(config)
	}
	mw, err := inbox.NewMiddleware(config)
	require.NoError(t, err)
	return mw
}

// run starts the router and waits until it runs.
func (b *mwBundle) run(t *testing.T) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.router.Run(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, b.router.Close())
		require.NoError(t, <-done)
	})
	select {
	case <-b.router.Running():
	case err := <-done:
		t.Fatalf("router stopped: %v", err)
	}
}

// publish publishes msgs to topic, each once, and returns when every one was
// acknowledged.
func (b *mwBundle) publish(t *testing.T, topic string, msgs ...*message.Message) {
	t.Helper()
	for _, m := range msgs {
		require.NoError(t, b.pubsub.Publish(topic, m))
	}
}

// apply is the handlers' side effect: a row in the applied table, written in
// the inbox transaction.
func (b *mwBundle) apply(msg *message.Message, id string) error {
	tx, err := inbox.TxFromMessage(msg)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(msg.Context(), `INSERT INTO `+b.applied+` (message_id, consumer) VALUES ($1, $2)`, id, message.HandlerNameFromCtx(msg.Context()))
	return err
}

// appliedRows returns how many times each message ID was applied.
func (b *mwBundle) appliedRows(t *testing.T) map[string]int {
	t.Helper()
	rows, err := b.db.Query(`SELECT message_id, count(*) FROM ` + b.applied + ` GROUP BY message_id`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		require.NoError(t, rows.Scan(&id, &n))
		out[id] = n
	}
	require.NoError(t, rows.Err())
	return out
}

func (b *mwBundle) processed(t *testing.T, consumer, id string) bool {
	t.Helper()
	done, err := b.inbox.AlreadyProcessed(context.Background(), b.db, consumer, id)
	require.NoError(t, err)
	return done
}

func (b *mwBundle) pending(t *testing.T) int64 {
	t.Helper()
	n, err := b.obStore.Pending(context.Background(), b.db)
	require.NoError(t, err)
	return n
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("DuplicateSkippedAndCounted", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		var calls atomic.Int64
		h := bundle.router.AddConsumerHandler("orders", "in", bundle.pubsub, func(msg *message.Message) error {
			calls.Add(1)
			return bundle.apply(msg, msg.UUID)
		})
		h.AddMiddleware(mw.Middleware)
		bundle.run(t)

		a := message.NewMessage("msg-a", []byte("a"))
		bundle.publish(t, "in", a, message.NewMessage("msg-b", []byte("b")), a, a.Copy())

		require.Equal(t, map[string]int{"msg-a": 1, "msg-b": 1}, bundle.appliedRows(t))
		require.Equal(t, int64(2), calls.Load())
		require.Equal(t, inbox.MiddlewareStats{Processed: 2, Duplicates: 2}, mw.Stats())
		require.Equal(t, []string{"orders/msg-a", "orders/msg-b"}, bundle.hooks.get().processed)
		require.Equal(t, []string{"orders/msg-a", "orders/msg-a"}, bundle.hooks.get().duplicates)
		require.True(t, bundle.processed(t, "orders", "msg-a"))

		dups := bundle.logs.find("inbox: duplicate message skipped")
		require.Len(t, dups, 2)
		require.Equal(t, slog.LevelDebug, dups[0].Level)
		require.Equal(t, map[string]string{"consumer": "orders", "message_id": "msg-a"}, attrs(dups[0]))
	})

	t.Run("FailOnceThenSucceed", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		var calls atomic.Int64
		h := bundle.router.AddConsumerHandler("orders", "in", bundle.pubsub, func(msg *message.Message) error {
			// The effect is written, then the handler fails: the rollback
			// must take it away.
			if err := bundle.apply(msg, msg.UUID); err != nil {
				return err
			}
			if calls.Add(1) == 1 {
				return errors.New("transient failure")
			}
			return nil
		})
		h.AddMiddleware(mw.Middleware)
		bundle.run(t)

		bundle.publish(t, "in", message.NewMessage("msg-1", nil))

		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
		require.Equal(t, int64(2), calls.Load())
		require.Equal(t, inbox.MiddlewareStats{Processed: 1, Failed: 1}, mw.Stats())
		require.Len(t, bundle.hooks.get().failed, 1)
		require.ErrorContains(t, bundle.hooks.get().errs[0], "transient failure")
	})

	t.Run("PanicLeavesNoRecord", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) { c.Consumer = "orders" })
		handler := mw.Middleware(func(msg *message.Message) ([]*message.Message, error) {
			if err := bundle.apply(msg, msg.UUID); err != nil {
				return nil, err
			}
			panic("boom")
		})

		msg := message.NewMessage("msg-1", nil)
		require.PanicsWithValue(t, "boom", func() { _, _ = handler(msg) })

		require.False(t, bundle.processed(t, "orders", "msg-1"))
		require.Empty(t, bundle.appliedRows(t))
		require.Equal(t, inbox.MiddlewareStats{Failed: 1}, mw.Stats())
		require.Equal(t, []error{inbox.ErrHandlerPanicked}, bundle.hooks.get().errs)
		_, ok := inbox.TxFromContext(msg.Context())
		require.False(t, ok, "the message's context must be restored")
	})

	t.Run("PanicOnceThenSucceed", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		var calls atomic.Int64
		h := bundle.router.AddConsumerHandler("orders", "in", bundle.pubsub, func(msg *message.Message) error {
			if err := bundle.apply(msg, msg.UUID); err != nil {
				return err
			}
			if calls.Add(1) == 1 {
				panic("boom")
			}
			return nil
		})
		// Recoverer outside the inbox turns the panic into an error after
		// the inbox rolled back; the router nacks, GoChannel redelivers.
		bundle.router.AddMiddleware(middleware.Recoverer)
		h.AddMiddleware(mw.Middleware)
		bundle.run(t)

		bundle.publish(t, "in", message.NewMessage("msg-1", nil))

		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
		require.Equal(t, inbox.MiddlewareStats{Processed: 1, Failed: 1}, mw.Stats())
	})

	t.Run("EmptyIDIsAnError", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		var calls atomic.Int64
		next := func(msg *message.Message) ([]*message.Message, error) {
			calls.Add(1)
			return nil, nil
		}

		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) { c.Consumer = "orders" })
		_, err := mw.Middleware(next)(message.NewMessage("", nil))
		require.ErrorIs(t, err, inbox.ErrEmptyMessageID)

		keyed := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) {
			c.Consumer = "orders"
			c.MessageIDMetadataKey = "event_id"
		})
		_, err = keyed.Middleware(next)(message.NewMessage("uuid-1", nil))
		require.ErrorIs(t, err, inbox.ErrEmptyMessageID)
		require.ErrorContains(t, err, `"event_id"`)

		require.Zero(t, calls.Load())
		require.Equal(t, inbox.MiddlewareStats{Failed: 1}, mw.Stats())
		require.Equal(t, inbox.MiddlewareStats{Failed: 1}, keyed.Stats())
	})

	t.Run("NoConsumerName", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		// Called outside a router: no handler name to default to.
		_, err := mw.Middleware(func(*message.Message) ([]*message.Message, error) {
			t.Error("handler called")
			return nil, nil
		})(message.NewMessage("msg-1", nil))
		require.ErrorIs(t, err, inbox.ErrInvalid)
		require.ErrorContains(t, err, "MiddlewareConfig.Consumer")
	})

	t.Run("MessageIDFromMetadata", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) { c.MessageIDMetadataKey = "event_id" })
		h := bundle.router.AddConsumerHandler("orders", "in", bundle.pubsub, func(msg *message.Message) error {
			return bundle.apply(msg, msg.Metadata.Get("event_id"))
		})
		h.AddMiddleware(mw.Middleware)
		bundle.run(t)

		// A producer that retried with a fresh UUID: same event ID, so one
		// application.
		first := message.NewMessage(watermill.NewUUID(), nil)
		first.Metadata.Set("event_id", "evt-1")
		retried := message.NewMessage(watermill.NewUUID(), nil)
		retried.Metadata.Set("event_id", "evt-1")
		bundle.publish(t, "in", first, retried)

		require.Equal(t, map[string]int{"evt-1": 1}, bundle.appliedRows(t))
		require.Equal(t, inbox.MiddlewareStats{Processed: 1, Duplicates: 1}, mw.Stats())
		require.True(t, bundle.processed(t, "orders", "evt-1"))
		require.False(t, bundle.processed(t, "orders", first.UUID))
	})

	t.Run("ConsumerDefaultsToHandlerName", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		// Added at router level: each handler is its own consumer.
		bundle.router.AddMiddleware(mw.Middleware)
		for _, name := range []string{"billing", "shipping"} {
			bundle.router.AddConsumerHandler(name, "in", bundle.pubsub, func(msg *message.Message) error {
				return bundle.apply(msg, msg.UUID)
			})
		}
		bundle.run(t)

		msg := message.NewMessage("msg-1", nil)
		bundle.publish(t, "in", msg, msg)

		require.Equal(t, map[string]int{"msg-1": 2}, bundle.appliedRows(t))
		require.True(t, bundle.processed(t, "billing", "msg-1"))
		require.True(t, bundle.processed(t, "shipping", "msg-1"))
		require.Equal(t, inbox.MiddlewareStats{Processed: 2, Duplicates: 2}, mw.Stats())
	})

	t.Run("ConsumerConfigured", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		// Two handlers (as two replicas would be) sharing one consumer name:
		// the message is applied by one of them only.
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) { c.Consumer = "orders-service" })
		bundle.router.AddMiddleware(mw.Middleware)
		for _, name := range []string{"replica-1", "replica-2"} {
			bundle.router.AddConsumerHandler(name, "in", bundle.pubsub, func(msg *message.Message) error {
				return bundle.apply(msg, msg.UUID)
			})
		}
		bundle.run(t)

		bundle.publish(t, "in", message.NewMessage("msg-1", nil))

		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
		require.True(t, bundle.processed(t, "orders-service", "msg-1"))
		require.False(t, bundle.processed(t, "replica-1", "msg-1"))
		require.Equal(t, inbox.MiddlewareStats{Processed: 1, Duplicates: 1}, mw.Stats())
	})

	t.Run("TxOptions", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) {
			c.Consumer = "orders"
			c.TxOptions = &sql.TxOptions{Isolation: sql.LevelSerializable}
		})
		var level string
		_, err := mw.Middleware(func(msg *message.Message) ([]*message.Message, error) {
			tx, ok := inbox.TxFromContext(msg.Context())
			require.True(t, ok)
			return nil, tx.QueryRowContext(msg.Context(), `SHOW transaction_isolation`).Scan(&level)
		})(message.NewMessage("msg-1", nil))
		require.NoError(t, err)
		require.Equal(t, "serializable", level)
	})

	t.Run("WithoutOutboxTheRouterPublishes", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		out, err := bundle.pubsub.Subscribe(ctx, "out")
		require.NoError(t, err)
		h := bundle.router.AddHandler("orders", "in", bundle.pubsub, "out", bundle.pubsub, func(msg *message.Message) ([]*message.Message, error) {
			if err := bundle.apply(msg, msg.UUID); err != nil {
				return nil, err
			}
			return []*message.Message{message.NewMessage("out-1", []byte("produced"))}, nil
		})
		h.AddMiddleware(mw.Middleware)
		bundle.run(t)

		// Publish returns when the input is acknowledged, which is after the
		// router published the output and the output was acknowledged.
		published := make(chan error, 1)
		go func() { published <- bundle.pubsub.Publish("in", message.NewMessage("msg-1", nil)) }()
		got := <-out
		got.Ack()
		require.NoError(t, <-published)
		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
		require.Equal(t, "out-1", got.UUID)
		require.Zero(t, bundle.pending(t))
	})

	t.Run("TxFromContextOutsideTheMiddleware", func(t *testing.T) {
		t.Parallel()
		_, ok := inbox.TxFromContext(ctx)
		require.False(t, ok)
		_, err := inbox.TxFromMessage(message.NewMessage("m", nil))
		require.ErrorIs(t, err, inbox.ErrNoTx)

		bundle := setupMiddleware(t)
		tx, err := bundle.db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		msg := message.NewMessage("m", nil)
		msg.SetContext(inbox.ContextWithTx(ctx, tx))
		got, err := inbox.TxFromMessage(msg)
		require.NoError(t, err)
		require.Same(t, tx, got)
	})
}

func TestMiddlewareConsumeProduce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// handler writes its effect and returns one output message per input,
	// failing (after writing both) when the input's payload says so.
	handler := func(bundle *mwBundle) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if err := bundle.apply(msg, msg.UUID); err != nil {
				return nil, err
			}
			out := message.NewMessage("out-of-"+msg.UUID, []byte("order placed: "+string(msg.Payload)))
			out.Metadata.Set(omnibox.MetadataKey, "customer-1")
			out.Metadata.Set("event_type", "OrderPlaced")
			if string(msg.Payload) == "fail" {
				return []*message.Message{out}, errors.New("handler failed")
			}
			return []*message.Message{out}, nil
		}
	}
	// neverPublisher is the router's publisher for handlers whose output goes
	// to the outbox: it must never be called.
	never := neverPublisher{t: t}

	t.Run("Success", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) { c.Outbox = bundle.outbox })
		h := bundle.router.AddHandler("orders", "in", bundle.pubsub, "orders.placed", never, handler(bundle))
		h.AddMiddleware(mw.Middleware)
		bundle.run(t)

		msg := message.NewMessage("msg-1", []byte("order 1"))
		bundle.publish(t, "in", msg, msg) // the duplicate writes no second event

		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
		require.Equal(t, int64(1), bundle.pending(t))
		require.Equal(t, inbox.MiddlewareStats{Processed: 1, Duplicates: 1}, mw.Stats())

		// The relay publishes the event, with its ID, key and metadata.
		relayed := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 10}, watermill.NopLogger{})
		defer func() { require.NoError(t, relayed.Close()) }()
		out, err := relayed.Subscribe(ctx, "orders.placed")
		require.NoError(t, err)
		relay, err := omnibox.NewRelay(bundle.db, bundle.obStore, relayed, &omnibox.RelayConfig{})
		require.NoError(t, err)
		n, err := relay.Drain(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		got := <-out
		got.Ack()
		require.Equal(t, "out-of-msg-1", got.UUID)
		require.Equal(t, "order placed: order 1", string(got.Payload))
		require.Equal(t, "customer-1", got.Metadata.Get(omnibox.MetadataKey))
		require.Equal(t, "OrderPlaced", got.Metadata.Get("event_type"))
		require.Zero(t, bundle.pending(t))
	})

	t.Run("Failure", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) { c.Outbox = bundle.outbox })
		// A poison queue outside the inbox takes the failed message, so that
		// GoChannel stops redelivering it.
		poison := &countingPublisher{}
		pq, err := middleware.PoisonQueue(poison, "poison")
		require.NoError(t, err)
		bundle.router.AddMiddleware(pq, mw.Middleware)
		bundle.router.AddHandler("orders", "in", bundle.pubsub, "orders.placed", never, handler(bundle))
		bundle.run(t)

		bundle.publish(t, "in", message.NewMessage("msg-1", []byte("fail")))

		require.Empty(t, bundle.appliedRows(t))
		require.Zero(t, bundle.pending(t))
		require.False(t, bundle.processed(t, "orders", "msg-1"))
		require.Equal(t, []string{"msg-1"}, poison.uuids("poison"))
		require.Equal(t, inbox.MiddlewareStats{Failed: 1}, mw.Stats())
	})

	t.Run("OutboxTopicFunc", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) {
			c.Consumer = "orders"
			c.Outbox = bundle.outbox
			c.OutboxTopicFunc = func(consumed, produced *message.Message) (string, error) {
				if produced.Metadata.Get("topic") == "" {
					return "", fmt.Errorf("message %s has no topic", produced.UUID)
				}
				return produced.Metadata.Get("topic"), nil
			}
		})
		produce := func(topics ...string) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				var out []*message.Message
				for i, topic := range topics {
					m := message.NewMessage(fmt.Sprintf("%s-out-%d", msg.UUID, i), nil)
					m.Metadata.Set("topic", topic)
					out = append(out, m)
				}
				return out, nil
			}
		}

		produced, err := mw.Middleware(produce("a", "a", "b", "a"))(message.NewMessage("msg-1", nil))
		require.NoError(t, err)
		require.Empty(t, produced, "written to the outbox, not returned to the router")
		require.Equal(t, int64(4), bundle.pending(t))

		// One message without a topic fails the whole attempt.
		_, err = mw.Middleware(produce("a", ""))(message.NewMessage("msg-2", nil))
		require.ErrorContains(t, err, "has no topic")
		require.Equal(t, int64(4), bundle.pending(t))
		require.False(t, bundle.processed(t, "orders", "msg-2"))

		// The relay publishes them in order, grouped by topic.
		relayed := &countingPublisher{}
		relay, err := omnibox.NewRelay(bundle.db, bundle.obStore, relayed, &omnibox.RelayConfig{})
		require.NoError(t, err)
		n, err := relay.Drain(ctx)
		require.NoError(t, err)
		require.Equal(t, 4, n)
		require.Equal(t, []string{"msg-1-out-0", "msg-1-out-1", "msg-1-out-3"}, relayed.uuids("a"))
		require.Equal(t, []string{"msg-1-out-2"}, relayed.uuids("b"))
	})

	t.Run("NoTopic", func(t *testing.T) {
		t.Parallel()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, func(c *inbox.MiddlewareConfig) {
			c.Consumer = "orders"
			c.Outbox = bundle.outbox
		})
		// Outside a router (or in a handler without a publish topic) there is
		// no topic to write the output to.
		_, err := mw.Middleware(handler(bundle))(message.NewMessage("msg-1", []byte("ok")))
		require.ErrorContains(t, err, "no outbox topic")
		require.Empty(t, bundle.appliedRows(t))
		require.False(t, bundle.processed(t, "orders", "msg-1"))
	})
}

// TestMiddlewareRetryAndPoisonQueue runs the inbox inside Watermill's Retry
// and PoisonQueue in the order docs/inbox.md gives:
// router.AddMiddleware(poisonQueue, retry.Middleware, inbox.Middleware).
func TestMiddlewareRetryAndPoisonQueue(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		*mwBundle
		calls    *atomic.Int64
		failures *atomic.Int64
		mw       *inbox.Middleware
		poison   *countingPublisher
	}
	// setup wires the documented order around a handler that applies its
	// effect and then fails while it has been called at most failures times.
	setup := func(t *testing.T, failures int64) *testBundle {
		t.Helper()
		bundle := setupMiddleware(t)
		mw := bundle.newMiddleware(t, nil)
		poison := &countingPublisher{}
		pq, err := middleware.PoisonQueue(poison, "poison")
		require.NoError(t, err)
		retry := middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond, Multiplier: 1}
		bundle.router.AddMiddleware(pq, retry.Middleware, mw.Middleware)
		calls, fail := &atomic.Int64{}, &atomic.Int64{}
		fail.Store(failures)
		bundle.router.AddConsumerHandler("orders", "in", bundle.pubsub, func(msg *message.Message) error {
			if err := bundle.apply(msg, msg.UUID); err != nil {
				return err
			}
			if calls.Add(1) <= fail.Load() {
				return fmt.Errorf("attempt %d failed", calls.Load())
			}
			return nil
		})
		bundle.run(t)
		return &testBundle{mwBundle: bundle, calls: calls, failures: fail, mw: mw, poison: poison}
	}

	t.Run("TransientFailureAppliedOnce", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t, 2)
		bundle.publish(t, "in", message.NewMessage("msg-1", nil))

		require.Equal(t, int64(3), bundle.calls.Load(), "two retries")
		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
		require.True(t, bundle.processed(t, "orders", "msg-1"))
		require.Empty(t, bundle.poison.uuids("poison"))
		require.Equal(t, inbox.MiddlewareStats{Processed: 1, Failed: 2}, bundle.mw.Stats())
	})

	t.Run("PermanentFailureToPoisonQueue", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t, 1<<30)
		bundle.publish(t, "in", message.NewMessage("msg-1", nil))

		require.Equal(t, int64(3), bundle.calls.Load(), "the first attempt and two retries")
		require.Equal(t, []string{"msg-1"}, bundle.poison.uuids("poison"))
		require.Empty(t, bundle.appliedRows(t))
		require.False(t, bundle.processed(t, "orders", "msg-1"), "no inbox record for a poisoned message")
		require.Equal(t, inbox.MiddlewareStats{Failed: 3}, bundle.mw.Stats())

		// Replayed from the poison queue once fixed, it is processed: the
		// inbox does not remember it as done.
		bundle.failures.Store(0)
		bundle.publish(t, "in", message.NewMessage("msg-1", nil))
		require.Equal(t, map[string]int{"msg-1": 1}, bundle.appliedRows(t))
	})
}

func TestMiddlewareConfig(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		db    *sql.DB
		inbox *inbox.Inbox
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		db, err := sql.Open("postgres", dbtest.PostgresURL()) // never connects
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		in, err := inbox.New(&countingStore{}, &inbox.Config{})
		require.NoError(t, err)
		return &testBundle{db: db, inbox: in}
	}

	t.Run("Nil", func(t *testing.T) {
		t.Parallel()
		_, err := inbox.NewMiddleware(nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		topicFunc := func(_, _ *message.Message) (string, error) { return "t", nil }
		for want, config := range map[string]*inbox.MiddlewareConfig{
			"MiddlewareConfig.DB is required":        {Inbox: bundle.inbox},
			"MiddlewareConfig.Inbox is required":     {DB: bundle.db},
			"OutboxTopicFunc is set but Outbox":      {DB: bundle.db, Inbox: bundle.inbox, OutboxTopicFunc: topicFunc},
			"MiddlewareConfig.Consumer":              {DB: bundle.db, Inbox: bundle.inbox, Consumer: "bad\x00name"},
			"Hooks[0] (string) implements none of":   {DB: bundle.db, Inbox: bundle.inbox, Hooks: []inbox.Hook{"not a hook"}},
			"Hooks[1] (int) implements none of Hook": {DB: bundle.db, Inbox: bundle.inbox, Hooks: []inbox.Hook{&hookRecorder{}, 42}},
		} {
			_, err := inbox.NewMiddleware(config)
			require.ErrorContains(t, err, want)
		}
		_, err := inbox.NewMiddleware(&inbox.MiddlewareConfig{Inbox: bundle.inbox})
		require.ErrorIs(t, err, omnibox.ErrNilDB)
		_, err = inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: bundle.db})
		require.ErrorIs(t, err, inbox.ErrNilInbox)
		var nilDB *sql.DB
		_, err = inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: nilDB, Inbox: bundle.inbox})
		require.ErrorIs(t, err, omnibox.ErrNilDB)
		require.EqualError(t, err, "inbox: MiddlewareConfig.DB is a nil *sql.DB (did sql.Open return an error?)")
		var nilHook *hookRecorder
		_, err = inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: bundle.db, Inbox: bundle.inbox, Hooks: []inbox.Hook{&hookRecorder{}, nilHook}})
		require.ErrorIs(t, err, inbox.ErrNilHook)
		require.EqualError(t, err, "inbox: MiddlewareConfig.Hooks[1] is a nil *inbox_test.hookRecorder (did the call that made it return an error?)")
	})

	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		bundle := setup(t)
		mw, err := inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: bundle.db, Inbox: bundle.inbox})
		require.NoError(t, err)
		require.Equal(t, inbox.MiddlewareStats{}, mw.Stats())
	})
}

// hookRecorder implements every hook and records the calls as
// "consumer/messageID".
type hookRecorder struct {
	mu  sync.Mutex
	rec hookCalls
}

type hookCalls struct {
	duplicates []string
	errs       []error
	failed     []string
	processed  []string
}

func (h *hookRecorder) OnProcessed(_ context.Context, consumer, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rec.processed = append(h.rec.processed, consumer+"/"+id)
}

func (h *hookRecorder) OnDuplicate(_ context.Context, consumer, id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rec.duplicates = append(h.rec.duplicates, consumer+"/"+id)
}

func (h *hookRecorder) OnFailed(_ context.Context, consumer, id string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rec.failed = append(h.rec.failed, consumer+"/"+id)
	h.rec.errs = append(h.rec.errs, err)
}

func (h *hookRecorder) get() hookCalls {
	h.mu.Lock()
	defer h.mu.Unlock()
	return hookCalls{
		duplicates: append([]string(nil), h.rec.duplicates...),
		errs:       append([]error(nil), h.rec.errs...),
		failed:     append([]string(nil), h.rec.failed...),
		processed:  append([]string(nil), h.rec.processed...),
	}
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) find(msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.records {
		if r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

func attrs(r slog.Record) map[string]string {
	out := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		out[a.Key] = a.Value.String()
		return true
	})
	return out
}

// countingPublisher keeps what is published to it.
type countingPublisher struct {
	mu   sync.Mutex
	msgs map[string][]string
}

func (p *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs = map[string][]string{}
	}
	for _, m := range msgs {
		p.msgs[topic] = append(p.msgs[topic], m.UUID)
	}
	return nil
}

func (p *countingPublisher) Close() error { return nil }

func (p *countingPublisher) uuids(topic string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.msgs[topic]...)
}

// neverPublisher fails the test when anything is published through it.
type neverPublisher struct{ t *testing.T }

func (p neverPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.t.Errorf("router published %d message(s) to %q directly; they belong in the outbox", len(msgs), topic)
	return errors.New("neverPublisher")
}

func (p neverPublisher) Close() error { return nil }
