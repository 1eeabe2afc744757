package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
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
	db, store, err := openChild()
	if err != nil {
		return err
	}
	defer db.Close()
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
