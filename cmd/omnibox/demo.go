package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/internal/sqlident"
	"github.com/omnibox-go/omnibox/publisher"
)

type demoConfig struct {
	dsn      string
	duration time.Duration
	rate     int
	rollback float64
	schema   string
}

func parseDemoFlags(args []string, stderr io.Writer) (*demoConfig, error) {
	fs := flag.NewFlagSet("omnibox demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &demoConfig{}
	fs.StringVar(&c.dsn, "dsn", os.Getenv("OMNIBOX_DSN"), "database: postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH; empty (the default, unless $OMNIBOX_DSN is set) runs on SQLite in a temporary file, no server needed")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long the service writes")
	fs.IntVar(&c.rate, "rate", 200, "transactions per second the service attempts")
	fs.Float64Var(&c.rollback, "rollback", 0.1, "fraction of transactions rolled back on purpose")
	fs.StringVar(&c.schema, "schema", "omnibox_demo", "PostgreSQL only: the schema the demo drops and recreates for its tables")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("demo: unexpected arguments %q", fs.Args())
	case c.duration <= 0:
		return nil, fmt.Errorf("demo: -duration must be positive, got %s", c.duration)
	case c.rate <= 0 || c.rate > 10_000:
		return nil, fmt.Errorf("demo: -rate must be between 1 and 10000, got %d", c.rate)
	case c.rollback < 0 || c.rollback >= 1:
		return nil, fmt.Errorf("demo: -rollback must be in [0, 1), got %g", c.rollback)
	}
	if err := sqlident.Validate("schema", c.schema, omnibox.ErrInvalidIdentifier); err != nil {
		return nil, fmt.Errorf("demo: -schema: %w", err)
	}
	return c, nil
}

// demoStats are the demo's counters, shared by the writer and the consumer.
type demoStats struct {
	committed  atomic.Int64
	rolledBack atomic.Int64
	consumed   atomic.Int64

	mu          sync.Mutex
	commitTimes map[string]time.Time // event ID -> commit time, for committed events
	rolledIDs   map[string]bool
	seen        map[string]bool
	duplicates  int
	phantoms    int // events consumed that were rolled back or never written
	latencies   []time.Duration
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseDemoFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ddb, err := openDemoDB(ctx, cfg.dsn, cfg.schema)
	if err != nil {
		return err
	}
	db, store := ddb.db, ddb.store
	defer db.Close()
	fmt.Fprintf(stdout, "omnibox demo: database %s (tables created fresh)\n", ddb.description)
	outbox, err := omnibox.New(store, &omnibox.Config{})
	if err != nil {
		return err
	}

	// An in-process Kafka cluster (kfake speaks the real protocol).
	const topic = "users.user_created"
	brokers, closeKafka, err := kafkatest.Start(kfake.SeedTopics(4, topic))
	if err != nil {
		return fmt.Errorf("demo: start in-process Kafka: %w", err)
	}
	defer closeKafka()
	fmt.Fprintf(stdout, "omnibox demo: in-process Kafka broker at %v, topic %q\n", brokers, topic)

	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers, Logger: logger})
	if err != nil {
		return fmt.Errorf("demo: Kafka publisher: %w", err)
	}
	defer pub.Close()
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{Logger: logger})
	if err != nil {
		return err
	}
	// The relay runs in the writing process: wake it when InTx commits events.
	if err := outbox.WakeOnCommit(relay); err != nil {
		return err
	}

	stats := &demoStats{commitTimes: map[string]time.Time{}, rolledIDs: map[string]bool{}, seen: map[string]bool{}}

	// The consumer: a watermill-kafka subscriber in a consumer group.
	subCfg := kafka.DefaultSaramaSubscriberConfig()
	subCfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               brokers,
		ConsumerGroup:         "omnibox-demo",
		OverwriteSaramaConfig: subCfg,
		Unmarshaler:           publisher.KafkaMarshaler{},
	}, watermill.NewSlogLogger(logger))
	if err != nil {
		return fmt.Errorf("demo: Kafka subscriber: %w", err)
	}
	defer sub.Close()
	subCtx, stopSub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSub()
	msgs, err := sub.Subscribe(subCtx, topic)
	if err != nil {
		return fmt.Errorf("demo: subscribe: %w", err)
	}
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for m := range msgs {
			now := time.Now()
			stats.consumed.Add(1)
			stats.mu.Lock()
			switch {
			case stats.seen[m.UUID]:
				stats.duplicates++
			case stats.rolledIDs[m.UUID]:
				stats.phantoms++
			default:
				if at, ok := stats.commitTimes[m.UUID]; ok {
					stats.latencies = append(stats.latencies, now.Sub(at))
				} else {
					// Consumed before the writer recorded the commit: the
					// latency is below the clock's reach, count it as zero.
					stats.latencies = append(stats.latencies, 0)
				}
			}
			stats.seen[m.UUID] = true
			stats.mu.Unlock()
			m.Ack()
		}
	}()

	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()

	// The "create user" service.
	fmt.Fprintf(stdout, "omnibox demo: writing %d users/s for %s, rolling back %.0f%% on purpose\n", cfg.rate, cfg.duration, cfg.rollback*100)
	writeCtx, stopWriting := context.WithTimeout(ctx, cfg.duration)
	defer stopWriting()
	writerDone := make(chan error, 1)
	go func() { writerDone <- writeUsers(writeCtx, ddb, outbox, cfg, topic, stats) }()

	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	start := time.Now()
	printProgress := func() {
		pending, _ := store.Pending(context.WithoutCancel(ctx), db)
		fmt.Fprintf(stdout, "  %4.0fs  committed %6d  rolled back %5d  published %6d  consumed %6d  pending %5d\n",
			time.Since(start).Seconds(), stats.committed.Load(), stats.rolledBack.Load(), relay.Stats().Published, stats.consumed.Load(), pending)
	}
	var writeErr error
wait:
	for {
		select {
		case writeErr = <-writerDone:
			break wait
		case <-progress.C:
			printProgress()
		}
	}
	if writeErr != nil {
		stopRelay()
		<-relayDone
		return fmt.Errorf("demo: writer: %w", writeErr)
	}

	// Let the relay and the consumer catch up with what was committed.
	fmt.Fprintln(stdout, "omnibox demo: writer stopped; waiting for the relay and the consumer to catch up")
	deadline := time.Now().Add(60 * time.Second)
	for stats.uniqueConsumed() < int(stats.committed.Load()) && time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-progress.C:
			printProgress()
		case <-time.After(20 * time.Millisecond):
		}
	}
	stopRelay()
	if err := <-relayDone; err != nil {
		return err
	}
	printProgress()
	stopSub()
	_ = sub.Close()
	<-consumerDone
	return printSummary(stdout, stats, relay.Stats().Published)
}

// writeUsers inserts a user and its UserCreated event in one transaction at
// cfg.rate per second until ctx ends, rolling some back on purpose.
func writeUsers(ctx context.Context, ddb *demoDB, outbox *omnibox.Outbox, cfg *demoConfig, topic string, stats *demoStats) error {
	tick := time.NewTicker(time.Second / time.Duration(cfg.rate))
	defer tick.Stop()
	db, insertUser := ddb.db, ddb.insertUser
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		userID, err := omnibox.NewEventID()
		if err != nil {
			return err
		}
		eventID, err := omnibox.NewEventID()
		if err != nil {
			return err
		}
		payload, _ := json.Marshal(map[string]string{"user_id": userID, "email": fmt.Sprintf("user%d@example.com", n)})
		rollback := rand.Float64() < cfg.rollback
		errRollback := errors.New("rolled back on purpose")
		err = outbox.InTx(ctx, db, nil, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, insertUser, userID, fmt.Sprintf("user%d@example.com", n)); err != nil {
				return err
			}
			if err := outbox.WriteTx(ctx, tx, omnibox.Event{
				ID:       eventID,
				Topic:    topic,
				Key:      userID,
				Payload:  payload,
				Metadata: map[string]string{"event_type": "UserCreated"},
			}); err != nil {
				return err
			}
			if rollback {
				return errRollback
			}
			return nil
		})
		now := time.Now()
		switch {
		case errors.Is(err, errRollback):
			stats.rolledBack.Add(1)
			stats.mu.Lock()
			stats.rolledIDs[eventID] = true
			stats.mu.Unlock()
		case err != nil && ctx.Err() != nil:
			return nil // the run ended mid-transaction, which rolled back
		case err != nil:
			return err
		default:
			stats.mu.Lock()
			stats.commitTimes[eventID] = now
			stats.mu.Unlock()
			stats.committed.Add(1)
		}
	}
}

func (s *demoStats) uniqueConsumed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func printSummary(w io.Writer, s *demoStats, published int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lost := 0
	for id := range s.commitTimes {
		if !s.seen[id] {
			lost++
		}
	}
	lat := slices.Clone(s.latencies)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))].Round(100 * time.Microsecond)
	}
	fmt.Fprintf(w, `
omnibox demo summary
  committed      %d
  rolled back    %d
  published      %d
  consumed       %d
  duplicates     %d
  lost           %d
  phantoms       %d   (consumed events of rolled-back transactions)
  commit -> consume latency  p50 %s  p99 %s  max %s
`, s.committed.Load(), s.rolledBack.Load(), published, s.consumed.Load(), s.duplicates, lost, s.phantoms, pct(0.50), pct(0.99), pct(1))
	if lost > 0 || s.phantoms > 0 {
		return fmt.Errorf("demo: %d committed events were not consumed and %d rolled-back events were", lost, s.phantoms)
	}
	return nil
}
