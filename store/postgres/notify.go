package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
	// Logger receives the listener's connection state changes: connection
	// failures at warning level, a LISTEN the server refuses at error level.
	// Defaults to a logger that discards.
	Logger *slog.Logger
}

// Validate reports the first invalid setting.
func (c *ListenerConfig) Validate() error {
	return sqlident.Validate("postgres: ListenerConfig.Channel", cmp.Or(c.Channel, DefaultNotifyChannel), omnibox.ErrInvalidIdentifier)
}

// The listener's internal timing; tests shorten them.
const (
	// listenerCallTimeout bounds each network call of a [Listener] other
	// than the wait for a notification: connecting, LISTEN, a ping, closing.
	listenerCallTimeout = 10 * time.Second
	// listenerPingPeriod is how long a [Listener] waits for a notification
	// before it pings the server, to find a link that stopped answering.
	listenerPingPeriod = 30 * time.Second
	// listenerMinBackoff and listenerMaxBackoff bound the pause between two
	// attempts to connect and listen; it doubles after each failure.
	listenerMinBackoff = 100 * time.Millisecond
	listenerMaxBackoff = 10 * time.Second
)

// Listener wakes a relay (or any [omnibox.Waker]) on each NOTIFY of its
// channel, sent by a [Notifier] in the writing processes or by a store with
// [Config.NotifyChannel]. It holds one dedicated connection (opened with
// pgx's pgconn, whatever driver the rest of the program uses) and reconnects
// on its own; after each (re)connection and LISTEN it wakes the relay, which
// then finds anything committed while it was not listening. Polling stays
// the fallback: a lost connection never strands an event.
//
// Every network call has a deadline: connecting, LISTEN, pings and closing
// each get 10 seconds, and while no notification comes the listener pings
// the server every 30 seconds from the goroutine that runs [Listener.Run]
// (no other goroutine is started), so a link that stops answering is found
// within 40 seconds, and the listener reconnects.
type Listener struct {
	callTimeout time.Duration
	channel     string
	dsn         string
	logger      *slog.Logger
	maxBackoff  time.Duration
	minBackoff  time.Duration
	pingPeriod  time.Duration
	waker       omnibox.Waker
}

// NewListener returns a listener connecting with dsn (a libpq-style
// connection string or URL, as lib/pq and pgx take; it works whatever driver
// the rest of the program uses) and waking w. config may not be nil;
// &ListenerConfig{} takes the defaults. The dsn is parsed by [Listener.Run].
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
	return &Listener{
		callTimeout: listenerCallTimeout,
		channel:     cmp.Or(config.Channel, DefaultNotifyChannel),
		dsn:         dsn,
		logger:      logger,
		maxBackoff:  listenerMaxBackoff,
		minBackoff:  listenerMinBackoff,
		pingPeriod:  listenerPingPeriod,
		waker:       w,
	}, nil
}

// Run listens until ctx ends, then closes its connection and returns nil,
// promptly (closing waits at most 10 seconds for the server, after ctx has
// ended). Run must not be called again until it has returned.
//
// It returns an error at once only when the dsn cannot be parsed: nothing
// could ever fix that. Every other failure is logged and retried, after a
// pause that doubles from 100 ms to 10 s with each failure in a row: a
// database that is down or unreachable (logged at warning level), and a
// LISTEN that the server refuses (logged at error level: it needs an
// operator, as on a hot standby, which refuses LISTEN until it is promoted).
// Meanwhile the relays still poll.
func (l *Listener) Run(ctx context.Context) error {
	config, err := pgconn.ParseConfig(l.dsn)
	if err != nil {
		return fmt.Errorf("postgres: listener: parsing the dsn: %w", err)
	}
	config.OnNotification = func(*pgconn.PgConn, *pgconn.Notification) { l.waker.Notify() }
	backoff := l.minBackoff
	for {
		listened, err := l.listen(ctx, config)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff = l.minBackoff
		}
		var refused *listenRefusedError
		if errors.As(err, &refused) {
			l.logger.ErrorContext(ctx, "omnibox: listener: the server refused LISTEN; retrying (relays still poll)",
				slog.String("channel", l.channel), slog.Duration("retry_in", backoff), slog.Any("error", err))
		} else {
			l.logger.WarnContext(ctx, "omnibox: listener connection lost or not established; retrying (relays still poll)",
				slog.String("channel", l.channel), slog.Duration("retry_in", backoff), slog.Any("error", err))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, l.maxBackoff)
	}
}

// listenRefusedError is a LISTEN that reached the server and was refused.
type listenRefusedError struct{ err error }

func (e *listenRefusedError) Error() string { return "LISTEN refused: " + e.err.Error() }
func (e *listenRefusedError) Unwrap() error { return e.err }

// listen connects, listens, wakes the waker and then waits for
// notifications (which config.OnNotification forwards to the waker), pinging
// the server after each pingPeriod without one, until ctx ends or a call
// fails. It reports whether the LISTEN succeeded, and the error that ended
// it (nil when ctx ended).
func (l *Listener) listen(ctx context.Context, config *pgconn.Config) (listened bool, err error) {
	callCtx, cancel := context.WithTimeout(ctx, l.callTimeout)
	conn, err := pgconn.ConnectConfig(callCtx, config)
	cancel()
	if err != nil {
		return false, fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.callTimeout)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()

	callCtx, cancel = context.WithTimeout(ctx, l.callTimeout)
	_, err = conn.Exec(callCtx, "LISTEN "+quote(l.channel)).ReadAll()
	cancel()
	if err != nil {
		if _, ok := errors.AsType[*pgconn.PgError](err); ok {
			return false, &listenRefusedError{err: err}
		}
		return false, fmt.Errorf("LISTEN: %w", err)
	}
	l.logger.DebugContext(ctx, "omnibox: listener listening", slog.String("channel", l.channel))
	// Notifications sent while not listening are lost: the relay looks.
	l.waker.Notify()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, l.pingPeriod)
		err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case err == nil:
			continue
		case !pgconn.Timeout(err):
			return true, fmt.Errorf("waiting for notifications: %w", err)
		}
		// A ping period without a notification: check the link.
		pingCtx, cancel := context.WithTimeout(ctx, l.callTimeout)
		err = conn.Ping(pingCtx)
		cancel()
		if ctx.Err() != nil {
			return true, nil
		}
		if err != nil {
			return true, fmt.Errorf("ping: %w", err)
		}
	}
}
