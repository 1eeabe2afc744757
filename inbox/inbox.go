package inbox

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/nilcheck"
)

// Defaults of [Config].
const (
	// DefaultRetentionBatchSize is the default of [Config.RetentionBatchSize].
	DefaultRetentionBatchSize = 1000
	// DefaultRetentionInterval is the default of [Config.RetentionInterval].
	DefaultRetentionInterval = time.Minute
)

// Config configures an [Inbox]. The zero value takes every default and keeps
// inbox rows forever.
type Config struct {
	// Logger receives the retention loop's logs ([Inbox.RunRetention]).
	// Defaults to a logger that discards.
	Logger *slog.Logger
	// Retention is how long a processed message is remembered: rows recorded
	// longer ago than this are deleted by [Inbox.Purge] and
	// [Inbox.RunRetention]. A message redelivered after its row was deleted
	// is processed again, so make it longer than any redelivery can be late
	// (see docs/inbox.md). Zero, the default, keeps rows forever; Purge then
	// deletes nothing.
	Retention time.Duration
	// RetentionBatchSize is the most rows one DELETE statement removes: Purge
	// deletes in batches of this size, one statement each, until no row older
	// than the window is left, so no statement holds many locks or runs for
	// long. Defaults to [DefaultRetentionBatchSize].
	RetentionBatchSize int
	// RetentionInterval is how long [Inbox.RunRetention] waits between two
	// purges. Defaults to [DefaultRetentionInterval].
	RetentionInterval time.Duration
}

func (c *Config) withDefaults() *Config {
	out := *c
	out.RetentionBatchSize = cmp.Or(out.RetentionBatchSize, DefaultRetentionBatchSize)
	out.RetentionInterval = cmp.Or(out.RetentionInterval, DefaultRetentionInterval)
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return &out
}

// Validate reports the first setting that is out of range. Zero values are
// valid: they stand for the defaults.
func (c *Config) Validate() error {
	switch {
	case c.Retention < 0:
		return fmt.Errorf("inbox: Config.Retention must not be negative, got %s", c.Retention)
	case c.RetentionBatchSize < 0:
		return fmt.Errorf("inbox: Config.RetentionBatchSize must not be negative, got %d", c.RetentionBatchSize)
	case c.RetentionInterval < 0:
		return fmt.Errorf("inbox: Config.RetentionInterval must not be negative, got %s", c.RetentionInterval)
	}
	return nil
}

// Inbox records which messages each consumer has processed, in the
// consumer's own transaction, so that a redelivered message is recognised
// and its effects are not applied twice. It is safe for concurrent use.
//
// Most Watermill users want [NewMiddleware], which does all of this around a
// router handler. The methods here are for code that consumes messages some
// other way.
type Inbox struct {
	config *Config
	store  Store
}

// New returns an Inbox keeping its records through store (a dialect's inbox
// store, such as store/postgres's). config may not be nil; &Config{} takes
// the defaults. A nil store, or an interface holding a nil pointer (the
// result of a store constructor whose error was ignored), returns an error
// wrapping [omnibox.ErrNilStore]; a nil config [omnibox.ErrNilConfig].
func New(store Store, config *Config) (*Inbox, error) {
	if err := nilcheck.Check("inbox: New", "store", store, omnibox.ErrNilStore); err != nil {
		return nil, err
	}
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	return &Inbox{config: config.withDefaults(), store: store}, nil
}

// RecordOnceTx records that consumer processed messageID, through tx, and
// reports whether this is the first time: true means the caller should apply
// the message's effects in tx and commit; false means it was already
// processed and the caller should do nothing (and roll back or commit, tx is
// still usable). This is the race-safe form: it is one INSERT backed by the
// table's unique key, so of two concurrent deliveries of one message exactly
// one sees true. The other waits for the first transaction to end: if that
// commits it sees false; if it rolls back (the handler failed) it sees true
// and does the work itself.
//
// The record is part of tx: it becomes permanent when tx commits and
// disappears when tx rolls back, together with the caller's own writes, so
// a failed attempt leaves the message to be processed again.
//
// An empty messageID returns [ErrEmptyMessageID]; an empty or over-long
// consumer, or an over-long or malformed ID, an error wrapping [ErrInvalid];
// a nil tx [omnibox.ErrNilTx].
func (i *Inbox) RecordOnceTx(ctx context.Context, tx *sql.Tx, consumer, messageID string) (isNew bool, err error) {
	if tx == nil {
		return false, omnibox.ErrNilTx
	}
	params, err := newRecordParams(consumer, messageID)
	if err != nil {
		return false, err
	}
	isNew, err = i.store.Record(ctx, tx, params)
	if err != nil {
		return false, fmt.Errorf("inbox: recording message %q for consumer %q: %w", messageID, consumer, err)
	}
	return isNew, nil
}

// AlreadyProcessed reports whether consumer has processed messageID, as seen
// by db. It is the first half of the two-step form, for code that must check
// before it starts a transaction:
//
//	if done, err := in.AlreadyProcessed(ctx, db, consumer, id); err != nil || done {
//		return err // done: acknowledge and skip
//	}
//	tx, err := db.BeginTx(ctx, nil)
//	// ... apply the message's effects in tx ...
//	if err := in.RecordTx(ctx, tx, consumer, id); errors.Is(err, inbox.ErrAlreadyProcessed) {
//		return tx.Rollback() // a concurrent delivery got there first
//	}
//	return tx.Commit()
//
// The two-step form is weaker than [Inbox.RecordOnceTx]: the check and the
// record are not one statement, so two concurrent deliveries can both pass
// the check and both do the work; only [Inbox.RecordTx] at the end stops the
// second one from committing. Its effects are safe only if they are all in
// the transaction that is rolled back; anything done outside it (an HTTP
// call, an e-mail) happens twice. Prefer RecordOnceTx at the start of the
// transaction.
func (i *Inbox) AlreadyProcessed(ctx context.Context, db omnibox.DBTX, consumer, messageID string) (bool, error) {
	if err := nilcheck.Check("inbox: AlreadyProcessed", "db", db, omnibox.ErrNilDB); err != nil {
		return false, err
	}
	params, err := newRecordParams(consumer, messageID)
	if err != nil {
		return false, err
	}
	done, err := i.store.Processed(ctx, db, params)
	if err != nil {
		return false, fmt.Errorf("inbox: checking message %q for consumer %q: %w", messageID, consumer, err)
	}
	return done, nil
}

// RecordTx records that consumer processed messageID, through tx, and
// returns [ErrAlreadyProcessed] if it was already recorded (tx stays usable;
// roll it back). It is the second half of the two-step form described at
// [Inbox.AlreadyProcessed], and the same statement as [Inbox.RecordOnceTx]
// with the answer turned into an error; the weakness of the two-step form is
// the separate check, not this call. Arguments are validated as for
// RecordOnceTx.
func (i *Inbox) RecordTx(ctx context.Context, tx *sql.Tx, consumer, messageID string) error {
	isNew, err := i.RecordOnceTx(ctx, tx, consumer, messageID)
	if err != nil {
		return err
	}
	if !isNew {
		return fmt.Errorf("%w: message %q for consumer %q", ErrAlreadyProcessed, messageID, consumer)
	}
	return nil
}

// newRecordParams validates a consumer name and a message ID.
func newRecordParams(consumer, messageID string) (RecordParams, error) {
	p := RecordParams{Consumer: consumer, MessageID: messageID}
	if err := p.Validate(); err != nil {
		return RecordParams{}, err
	}
	return p, nil
}
