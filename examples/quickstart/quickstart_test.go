package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/store/postgres"
	"github.com/twmb/franz-go/pkg/kfake"
)

// createdLine is the line the program logs after its transaction commits.
var createdLine = regexp.MustCompile(`created user (\S+) with event (\S+);`)

// TestQuickstart builds the Quick start program, runs it against a fresh
// PostgreSQL schema and an in-process Kafka with the topic created, waits for
// the user's event on the topic, stops the program with SIGINT and checks that
// it exits with status 0 and leaves nothing pending in the outbox.
func TestQuickstart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the example: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	db, schema := dbtest.Postgres(t, "postgres")
	brokers := kafkatest.Kfake(t, kfake.SeedTopics(4, "users.created")).ListenAddrs()

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbtest.PostgresURL()+"&search_path="+schema,
		"KAFKA_BROKERS="+strings.Join(brokers, ","),
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// The program logs the IDs it wrote.
	var userID, eventID string
	for userID == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the program ended before writing its user: %v", cmd.Wait())
			}
			t.Log(line)
			if m := createdLine.FindStringSubmatch(line); m != nil {
				userID, eventID = m[1], m[2]
			}
		case <-ctx.Done():
			t.Fatal("the program did not write its user in time")
		}
	}
	go func() {
		for line := range lines {
			t.Log(line)
		}
		exited <- cmd.Wait()
	}()

	// The relay publishes the event: read the topic until it arrives.
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("users.created"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := firstRecord(ctx, t, client)
	if got := string(rec.Key); got != userID {
		t.Errorf("record key = %q, want the user ID %q", got, userID)
	}
	if got := header(rec, "_watermill_message_uuid"); got != eventID {
		t.Errorf("message UUID = %q, want the event ID %q", got, eventID)
	}
	if got := header(rec, "event_type"); got != "UserCreated" {
		t.Errorf("event_type = %q, want UserCreated", got)
	}
	var payload struct{ ID, Email string }
	if err := json.Unmarshal(rec.Value, &payload); err != nil || payload.ID != userID || payload.Email == "" {
		t.Errorf("payload %s (%v): want the user %s with an email", rec.Value, err, userID)
	}

	// SIGINT: the program shuts down and exits with status 0.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the program exited with %v after SIGINT, want status 0", err)
		}
	case <-ctx.Done():
		t.Fatal("the program did not exit after SIGINT")
	}

	store, err := postgres.New(&postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := store.Pending(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d events pending in the outbox after shutdown, want 0", pending)
	}
	var users int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM "`+schema+`".users WHERE id = $1`, userID).Scan(&users); err != nil || users != 1 {
		t.Errorf("users with id %s: %d (%v), want 1", userID, users, err)
	}
}

// firstRecord polls client until a record arrives or ctx ends.
func firstRecord(ctx context.Context, t *testing.T, client *kgo.Client) *kgo.Record {
	t.Helper()
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no record arrived on users.created in time")
		}
		for _, err := range fetches.Errors() {
			t.Logf("fetch: %v", err)
		}
		if recs := fetches.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}

// header returns the value of rec's header key, or "".
func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
