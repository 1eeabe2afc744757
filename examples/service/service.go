package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	_ "github.com/lib/pq" // the "postgres" database/sql driver

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// usersDDL creates the service's own table. A real service would keep it in
// its migrations, next to the outbox's (postgres.Store.MigrationFS).
const usersDDL = `CREATE TABLE IF NOT EXISTS users (
	id         text PRIMARY KEY,
	email      text NOT NULL UNIQUE,
	created_at timestamptz NOT NULL DEFAULT now()
)`

// deps are what the service opens at start and closes at shutdown.
type deps struct {
	db     *sql.DB
	outbox *omnibox.Outbox
	pub    *publisher.Kafka
	relay  *omnibox.Relay
}

// open opens the database, migrates it and creates the outbox, the Kafka
// publisher and the relay. On error it closes what it opened.
func open(ctx context.Context, cfg Config) (_ *deps, err error) {
	db, err := sql.Open("postgres", cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	store, err := migrate(ctx, db)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: cfg.KafkaBrokers, Logger: cfg.Logger})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("connecting to Kafka: %w", err), db.Close())
	}
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{ID: cfg.RelayID, Logger: cfg.Logger})
	if err != nil {
		return nil, errors.Join(err, pub.Close(), db.Close())
	}
	// Publish as soon as a request's transaction commits, not at the next poll.
	if err := outbox.WakeOnCommit(relay); err != nil {
		return nil, errors.Join(err, pub.Close(), db.Close())
	}
	return &deps{db: db, outbox: outbox, pub: pub, relay: relay}, nil
}

// run runs the service until ctx ends, then shuts it down and returns. When
// ready is not nil, run sends it the HTTP listen address once it serves.
func run(ctx context.Context, cfg Config, ready chan<- string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	d, err := open(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return errors.Join(fmt.Errorf("listening on %s: %w", cfg.Addr, err), d.pub.Close(), d.db.Close())
	}

	// The relay gets a context of its own, cancelled only after the HTTP
	// server has stopped, so that it publishes the last requests' events.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan error, 1)
	go func() { relayDone <- d.relay.Run(relayCtx) }()

	srv := &http.Server{
		Handler:           newHandler(d.db, d.outbox, cfg),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      cfg.RequestTimeout + 5*time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "topic", cfg.Topic, "relay", d.relay.ID())
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr: // the server failed on its own: shut the rest down
		err = fmt.Errorf("serving HTTP: %w", err)
	}

	// snippet-start: service-shutdown
	// 1. Stop accepting requests and wait for those in flight: each may still
	// commit a user and its event. At the timeout the rest are cut off; their
	// transactions roll back, or commit and are relayed after a restart.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if e := srv.Shutdown(shutdownCtx); e != nil {
		err = errors.Join(err, fmt.Errorf("stopping the HTTP server: %w", e))
	}

	// 2. Stop the relay and wait for Run to return: it finishes or releases
	// the batch in hand. Then Drain publishes what the last requests
	// committed after Run's last claim, within what is left of the timeout;
	// anything it cannot publish (the broker is down) stays in the outbox
	// for the next start. After this nothing uses the publisher.
	stopRelay()
	if e := <-relayDone; e != nil {
		err = errors.Join(err, fmt.Errorf("relay: %w", e))
	}
	if n, e := d.relay.Drain(shutdownCtx); e != nil {
		log.Warn("events left in the outbox for the next start", "published", n, "err", e)
	}

	// 3. Close the publisher, now that the relay no longer publishes.
	if e := d.pub.Close(); e != nil {
		err = errors.Join(err, fmt.Errorf("closing the Kafka publisher: %w", e))
	}

	// 4. Close the database last: the handlers and the relay used it.
	if e := d.db.Close(); e != nil {
		err = errors.Join(err, fmt.Errorf("closing the database: %w", e))
	}
	// snippet-end: service-shutdown
	log.Info("stopped", "err", err)
	return err
}

// migrate creates the users table and the outbox table if missing.
func migrate(ctx context.Context, db *sql.DB) (*postgres.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, usersDDL); err != nil {
		return nil, fmt.Errorf("creating the users table: %w", err)
	}
	store, err := postgres.New(&postgres.Config{})
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx, db); err != nil {
		return nil, fmt.Errorf("migrating the outbox: %w", err)
	}
	return store, nil
}
