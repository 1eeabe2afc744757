package integration

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/publisher"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// The crash test runs the relay in a separate process: the test binary
// itself, started with OMNIBOX_RELAY_CHILD=1, which TestMain turns into a
// relay instead of running the tests.
const childEnv = "OMNIBOX_RELAY_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := runChildRelay(); err != nil {
			fmt.Fprintln(os.Stderr, "child relay:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChildRelay runs a relay configured by environment variables until it is
// signalled (or killed, which is the point).
func runChildRelay() error {
	lease, err := time.ParseDuration(os.Getenv("OMNIBOX_CHILD_LEASE"))
	if err != nil {
		return fmt.Errorf("OMNIBOX_CHILD_LEASE: %w", err)
	}
	db, err := sql.Open("postgres", dbtest.PostgresURL())
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := postgres.New(&postgres.Config{Schema: os.Getenv("OMNIBOX_CHILD_SCHEMA")})
	if err != nil {
		return err
	}
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: strings.Split(os.Getenv("OMNIBOX_CHILD_BROKERS"), ",")})
	if err != nil {
		return err
	}
	defer pub.Close()
	relay, err := omnibox.NewRelay(db, store, pub, &omnibox.RelayConfig{
		BatchSize:    100,
		ID:           os.Getenv("OMNIBOX_CHILD_RELAY_ID"),
		Lease:        lease,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("relay running")
	return relay.Run(ctx)
}
