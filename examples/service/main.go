// Command service is a small but complete service built on omnibox: POST
// /users inserts a user and writes a UserCreated event in one PostgreSQL
// transaction, a relay in the same process publishes the events to Kafka, and
// SIGINT or SIGTERM shuts it down in the right order.
//
//	go run ./examples/service \
//	  -database-url 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	  -kafka-brokers 127.0.0.1:9092
//	curl -X POST localhost:8080/users -d '{"email":"ada@example.com"}'
//
// Every flag has an environment variable (see -h). The topic (users.created by
// default) must exist: the publisher does not create topics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Config configures the service. DatabaseURL and KafkaBrokers are required.
type Config struct {
	// Addr is the HTTP listen address. Defaults to ":8080".
	Addr string
	// DatabaseURL is the PostgreSQL connection URL (lib/pq). Required.
	DatabaseURL string
	// KafkaBrokers are the host:port addresses of the Kafka brokers. Required.
	KafkaBrokers []string
	// Logger receives the service's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// RelayID names this process's relay: unique among the running relays,
	// stable across restarts (e.g. the pod name). Defaults to one derived
	// from the host name and process ID.
	RelayID string
	// RequestTimeout bounds the database work of one request. Defaults to 5 s.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests at shutdown.
	// Defaults to 10 s.
	ShutdownTimeout time.Duration
	// Topic is where UserCreated events are published. Defaults to
	// "users.created".
	Topic string
}

// Validate reports a missing required setting or a negative duration.
func (c *Config) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("service: the database URL is empty: set -database-url or DATABASE_URL")
	case len(c.KafkaBrokers) == 0:
		return errors.New("service: no Kafka brokers: set -kafka-brokers or KAFKA_BROKERS (comma-separated host:port)")
	case c.RequestTimeout < 0 || c.ShutdownTimeout < 0:
		return fmt.Errorf("service: negative timeout (request %v, shutdown %v): use 0 for the default", c.RequestTimeout, c.ShutdownTimeout)
	}
	return nil
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Topic == "" {
		c.Topic = "users.created"
	}
	return c
}

func main() {
	cfg := Config{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}
	var brokers string
	flag.StringVar(&cfg.Addr, "addr", envOr("ADDR", ":8080"), "HTTP listen address (env ADDR)")
	flag.StringVar(&cfg.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL (env DATABASE_URL)")
	flag.StringVar(&brokers, "kafka-brokers", os.Getenv("KAFKA_BROKERS"), "comma-separated Kafka brokers (env KAFKA_BROKERS)")
	flag.StringVar(&cfg.RelayID, "relay-id", os.Getenv("POD_NAME"), "relay ID, unique and stable (env POD_NAME)")
	flag.StringVar(&cfg.Topic, "topic", envOr("TOPIC", "users.created"), "topic of the UserCreated events (env TOPIC)")
	flag.Parse()
	for b := range strings.SplitSeq(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.KafkaBrokers = append(cfg.KafkaBrokers, b)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		cfg.Logger.Error("service failed", "err", err)
		os.Exit(1)
	}
}

// envOr returns the environment variable key, or def when it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
