package inbox

import "errors"

// ErrAlreadyProcessed is returned by [Inbox.RecordTx] (the two-step form)
// when the message is already recorded for the consumer.
var ErrAlreadyProcessed = errors.New("inbox: message already processed")

// ErrEmptyMessageID is returned when a message has no ID to deduplicate by.
// Watermill documents that a message UUID can be empty; such a message is
// refused rather than let through unchecked.
var ErrEmptyMessageID = errors.New("inbox: message ID is empty")

// ErrInvalid is wrapped by errors about an invalid consumer name or message
// ID (too long, not valid UTF-8, NUL bytes).
var ErrInvalid = errors.New("inbox: invalid consumer or message ID")

// ErrNoTx is returned by [TxFromMessage] when the message's context carries
// no inbox transaction.
var ErrNoTx = errors.New("inbox: no transaction in context (is the handler wrapped by the inbox middleware?)")

// ErrRetentionDisabled is returned by [Inbox.RunRetention] when
// [Config.Retention] is zero (keep rows forever), so there is nothing to run.
var ErrRetentionDisabled = errors.New("inbox: retention is disabled (Config.Retention is zero)")

// ErrHandlerPanicked is what [HookFailed] hooks are given when the handler
// panicked. The middleware rolls back and lets the panic go on; it never
// returns this error.
var ErrHandlerPanicked = errors.New("inbox: handler panicked")

// ErrNilInbox is wrapped by the error of [NewMiddleware] (and
// [MiddlewareConfig.Validate]) when MiddlewareConfig.Inbox is nil, such as
// the *Inbox of a [New] whose error was ignored.
var ErrNilInbox = errors.New("inbox: MiddlewareConfig.Inbox is nil")

// ErrNilHook is wrapped by the error of [NewMiddleware] when an entry of
// MiddlewareConfig.Hooks is nil or holds a nil pointer.
var ErrNilHook = errors.New("inbox: a hook is nil")
