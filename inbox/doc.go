// Package inbox implements the transactional inbox: a consumer records each
// message ID in an inbox table in the same transaction as its own work, so
// that Kafka's at-least-once delivery has an exactly-once effect on the
// consumer's database. Watermill's Deduplicator middleware keeps its memory
// in the process, which forgets on restart and is not shared by replicas;
// the inbox is a table, shared by every replica and written atomically with
// the handler's changes.
//
// # The Watermill middleware
//
// [NewMiddleware] returns a [Middleware] whose [Middleware.Middleware]
// method is a message.HandlerMiddleware. For each message it begins a
// transaction on [MiddlewareConfig.DB], records (consumer, message ID) with
// one INSERT backed by the table's unique key, and calls the handler with
// the transaction in the message's context ([TxFromMessage],
// [TxFromContext]). It commits when the handler succeeds and rolls back when
// it fails or panics, so the inbox record goes with the handler's changes
// and a failed message is processed again on redelivery. A message already
// recorded is acknowledged without calling the handler, logged at debug
// level and counted ([Middleware.Stats], [HookDuplicate]).
//
//	in, _ := inbox.New(inboxStore, &inbox.Config{})  // inboxStore: postgres.NewInbox(...)
//	dedup, _ := inbox.NewMiddleware(&inbox.MiddlewareConfig{DB: db, Inbox: in})
//	router.AddMiddleware(poisonQueue, retry.Middleware, dedup.Middleware)
//	router.AddConsumerHandler("charge-payment", "orders.placed", sub, func(msg *message.Message) error {
//		tx, err := inbox.TxFromMessage(msg)
//		if err != nil {
//			return err
//		}
//		_, err = tx.ExecContext(msg.Context(), `INSERT INTO payments ...`)
//		return err
//	})
//
// The consumer name defaults to the handler name; the message ID is the
// message UUID, or the metadata entry named by
// [MiddlewareConfig.MessageIDMetadataKey]. A message without an ID is an
// error ([ErrEmptyMessageID]), never let through unchecked.
//
// # Middleware order
//
// Add Watermill's PoisonQueue first, then Retry, then this middleware (the
// first added runs outermost). Retry then runs every attempt in a
// transaction of its own, and PoisonQueue sees the final error after the
// last attempt was rolled back, so a poisoned message leaves no inbox record
// and can be replayed once fixed. docs/inbox.md explains the order and what
// goes wrong with another.
//
// # Consume → produce
//
// With [MiddlewareConfig.Outbox] set, the messages a handler returns are
// written to that outbox (package omnibox) in the handler's transaction
// instead of being published by the router. The handler's changes, its
// inbox record and the events it emits then commit or roll back together,
// and an [omnibox.Relay] publishes the events after the commit. Without an
// outbox, the router publishes them after the commit; if that publish fails,
// the redelivered message is a duplicate and its output is lost.
//
// # Without Watermill
//
// [Inbox.RecordOnceTx] is the race-safe single call for other consumers:
// call it first in the transaction that applies the message, and skip the
// work when it reports false. [Inbox.AlreadyProcessed] and [Inbox.RecordTx]
// are the two-step form (check, work, record), which is weaker: see
// [Inbox.AlreadyProcessed].
//
// # Retention
//
// Inbox rows are kept forever unless [Config.Retention] is set; then
// [Inbox.Purge] deletes the rows older than the window in bounded batches,
// and [Inbox.RunRetention] does so periodically. A message redelivered after
// its row was purged is processed again: make the window longer than the
// oldest redelivery you can get (for Kafka, the topic's retention).
//
// # Stores
//
// The inbox table lives in the dialect packages: store/postgres
// (NewInbox), store/mysql and store/sqlite, each implementing [Store] and
// held to the conformance suite in store/storetest.
package inbox
