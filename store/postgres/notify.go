package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/lib/pq"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/sqlident"
)

// DefaultNotifyChannel is the default LISTEN/NOTIFY channel of
// [NotifierConfig] and [ListenerConfig].
const DefaultNotifyChannel = "omnibox_outbox"

// DefaultNotifyInterval is the default of [NotifierConfig.MinInterval].
const DefaultNotifyInterval = 5 * time.Millisecond

// NotifierConfig configures a [Notifier]. The zero value takes every default.
type NotifierConfig struct {
	// Channel is the LISTEN/NOTIFY channel, a plain lower-case identifier.
	// Defaults to [DefaultNotifyChannel].
	Channel string
	// Logger receives failures to notify (they cost latency only: relays
	// still poll). Defaults to a logger that discards.
	Logger *slog.Logger
	// MinInterval is the least time between two NOTIFYs: wake-ups within it
	// are coalesced into one. Defaults to [DefaultNotifyInterval].
	MinInterval time.Duration
}

// Validate reports the first invalid setting.
func (c *NotifierConfig) Validate() error {
	if c.MinInterval < 0 {
		return fmt.Errorf("postgres: NotifierConfig.MinInterval must not be negative, got %s", c.MinInterval)
	}
	return sqlident.Validate("postgres: NotifierConfig.Channel", cmp.Or(c.Channel, DefaultNotifyChannel), omnibox.ErrInvalidIdentifier)
}

// Notifier wakes relays in other processes after events were committed,
// with PostgreSQL's NOTIFY sent outside the writers' transactions and
// coalesced: at most one NOTIFY per MinInterval, however many transactions
// committed. A NOTIFY inside each writing transaction takes a database-wide
// lock at commit and costs concurrent writers much of their commit rate
// (docs/benchmarks.md measures it); this costs them a channel send.
//
// Register it with [omnibox.Outbox.WakeOnCommit] and run [Notifier.Run]; the
// relays listen with a [Listener]. A lost NOTIFY only costs latency: relays
// still poll.
type Notifier struct {
	channel  string
	db       *sql.DB
	interval time.Duration
	logger   *slog.Logger
	signal   chan struct{}
}

// NewNotifier returns a notifier sending NOTIFY through db. config may not be
// nil; &NotifierConfig{} takes the defaults.
func NewNotifier(db *sql.DB, config *NotifierConfig) (*Notifier, error) {
	if db == nil {
		return nil, omnibox.ErrNilDB
	}
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	logger := config.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Notifier{
		channel:  cmp.Or(config.Channel, DefaultNotifyChannel),
		db:       db,
		interval: cmp.Or(config.MinInterval, DefaultNotifyInterval),
		logger:   logger,
		signal:   make(chan struct{}, 1),
	}, nil
}

// Notify asks for a NOTIFY; it never blocks, and requests made while one is
// pending coalesce. It implements [omnibox.Waker].
func (n *Notifier) Notify() {
	select {
	case n.signal <- struct{}{}:
	default:
	}
}

// Run sends the requested NOTIFYs until ctx ends, then returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.signal:
		}
		if _, err := n.db.ExecContext(ctx, "SELECT pg_notify($1, '')", n.channel); err != nil && ctx.Err() == nil {
			n.logger.WarnContext(ctx, "omnibox: NOTIFY failed; relays in other processes will find the events at their next poll",
				slog.String("channel", n.channel), slog.Any("error", err))
		}
		t := time.NewTimer(n.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// ListenerConfig configures a [Listener]. The zero value takes every default.
type ListenerConfig struct {
	// Channel is the LISTEN/NOTIFY channel, a plain lower-case identifier.
	// Defaults to [DefaultNotifyChannel].
	Channel string
	// Logger receives the listener's connection state changes. Defaults to a
	// logger that discards.
	Logger *slog.Logger
}

// Validate reports the first invalid setting.
func (c *ListenerConfig) Validate() error {
	return sqlident.Validate("postgres: ListenerConfig.Channel", cmp.Or(c.Channel, DefaultNotifyChannel), omnibox.ErrInvalidIdentifier)
}

// Listener wakes a relay (or any [omnibox.Waker]) on each NOTIFY of its
// channel, sent by a [Notifier] in the writing processes or by a store with
// [Config.NotifyChannel]. It holds one dedicated connection (lib/pq's
// Listener) and reconnects on its own; after each (re)connection it wakes the
// relay, which then finds anything committed while it was not listening.
// Polling stays the fallback: a lost connection never strands an event.
type Listener struct {
	channel string
	dsn     string
	logger  *slog.Logger
	waker   omnibox.Waker
}

// NewListener returns a listener connecting with dsn (a lib/pq connection
// string or URL; it works whatever driver the rest of the program uses) and
// waking w. config may not be nil; &ListenerConfig{} takes the defaults.
func NewListener(dsn string, w omnibox.Waker, config *ListenerConfig) (*Listener, error) {
	switch {
	case dsn == "":
		return nil, fmt.Errorf("postgres: NewListener: dsn is empty")
	case w == nil:
		return nil, fmt.Errorf("postgres: NewListener: waker is nil")
	case config == nil:
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	logger := config.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Listener{channel: cmp.Or(config.Channel, DefaultNotifyChannel), dsn: dsn, logger: logger, waker: w}, nil
}

// Run listens until ctx ends, then closes its connection and returns nil. It
// returns an error only when it cannot start listening at all (a malformed
// dsn); a database that is down is retried.
func (l *Listener) Run(ctx context.Context) error {
	events := make(chan pq.ListenerEventType, 8)
	pl := pq.NewListener(l.dsn, 10*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		select {
		case events <- ev:
		default:
		}
		if err != nil {
			l.logger.Warn("omnibox: listener connection", slog.String("event", ev.String()), slog.Any("error", err))
		}
	})
	defer func() { _ = pl.Close() }()
	if err := pl.Listen(l.channel); err != nil && err != pq.ErrChannelAlreadyOpen {
		// Listen fails when not connected yet; the listener retries the
		// LISTEN itself after connecting, unless the dsn is unusable.
		if _, parseErr := pq.NewConnector(l.dsn); parseErr != nil {
			return fmt.Errorf("postgres: listener: %w", parseErr)
		}
	}
	l.waker.Notify()
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-pl.Notify:
			// nil after a reconnection: notifications may have been missed.
			_ = n
			l.waker.Notify()
		case ev := <-events:
			if ev == pq.ListenerEventReconnected || ev == pq.ListenerEventConnected {
				l.waker.Notify()
			}
		case <-ping.C:
			go func() { _ = pl.Ping() }()
		}
	}
}
