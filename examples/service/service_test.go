package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// TestService runs the service against PostgreSQL and an in-process Kafka,
// creates users over HTTP, and checks that every created user, and only
// those, has its UserCreated event on the topic, that a failed request (a
// duplicate email) wrote neither a user nor an event, and that shutdown leaves
// nothing pending in the outbox.
func TestService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const topic = "users.created"
	db, schema := dbtest.Postgres(t, "postgres")
	// One partition, so that a record the test produces after the service
	// stopped comes after everything the service published.
	brokers := kafkatest.Kfake(t, kfake.SeedTopics(1, topic)).ListenAddrs()

	svcCtx, stopService := context.WithCancel(ctx)
	defer stopService()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(svcCtx, Config{
			Addr:         "127.0.0.1:0",
			DatabaseURL:  dbtest.PostgresURL() + "&search_path=" + schema,
			KafkaBrokers: brokers,
			Logger:       slog.New(slog.NewTextHandler(t.Output(), nil)),
			Topic:        topic,
		}, ready)
	}()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("the service stopped before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("the service did not start in time")
	}

	// Three users are created; a duplicate email and a bad email are refused.
	created := map[string]string{} // user ID → email
	for _, email := range []string{"ada@example.com", "grace@example.com", "edsger@example.com"} {
		var user UserCreated
		if status := post(ctx, t, base+"/users", `{"email":"`+email+`"}`, &user); status != http.StatusCreated {
			t.Fatalf("POST /users %s: status %d, want 201", email, status)
		}
		created[user.ID] = email
	}
	if status := post(ctx, t, base+"/users", `{"email":"ada@example.com"}`, nil); status != http.StatusConflict {
		t.Errorf("POST /users with a taken email: status %d, want 409", status)
	}
	if status := post(ctx, t, base+"/users", `{"email":"not an email"}`, nil); status != http.StatusBadRequest {
		t.Errorf("POST /users with a bad email: status %d, want 400", status)
	}
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: status %d, want 200", resp.StatusCode)
	}

	// Shutdown: run returns nil, and the outbox has nothing pending.
	stopService()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v after its context ended, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("the service did not stop in time")
	}
	store, err := postgres.New(&postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if pending, err := store.Pending(ctx, db); err != nil || pending != 0 {
		t.Errorf("pending events after shutdown: %d (%v), want 0", pending, err)
	}
	var users int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM "`+schema+`".users`).Scan(&users); err != nil || users != len(created) {
		t.Errorf("users in the table: %d (%v), want %d", users, err, len(created))
	}

	// Everything on the topic: one event per created user, none for the
	// refused requests (an event of theirs would carry an unknown key).
	got := readAll(ctx, t, brokers, topic)
	if len(got) != len(created) {
		t.Errorf("the topic has events for %d users, want %d (one per created user)", len(got), len(created))
	}
	for id, email := range created {
		ev, ok := got[id]
		if !ok {
			t.Errorf("no UserCreated event for user %s (%s)", id, email)
		} else if ev.Email != email || ev.ID != id {
			t.Errorf("event of user %s = %+v, want email %s", id, ev, email)
		}
	}
}

// post POSTs body to url and decodes a JSON answer into out when not nil.
func post(ctx context.Context, t *testing.T, url, body string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("decoding the answer of POST %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// readAll produces a sentinel record to topic (which has one partition) and
// reads the topic from the start up to it: everything published before. It
// returns the UserCreated events by key, checking each record's metadata.
func readAll(ctx context.Context, t *testing.T, brokers []string, topic string) map[string]UserCreated {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sentinel := []byte("end of test")
	if err := client.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: sentinel}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	events := map[string]UserCreated{}
	for {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the sentinel record did not come back in time; read %d events", len(events))
		}
		for _, rec := range fetches.Records() {
			if bytes.Equal(rec.Value, sentinel) {
				return events
			}
			var ev UserCreated
			if err := json.Unmarshal(rec.Value, &ev); err != nil {
				t.Errorf("record %s is not a UserCreated: %v", rec.Value, err)
				continue
			}
			if string(rec.Key) != ev.ID {
				t.Errorf("record key %q, want the user ID %q", rec.Key, ev.ID)
			}
			if typ := header(rec, "event_type"); typ != "UserCreated" {
				t.Errorf("record event_type %q, want UserCreated", typ)
			}
			if header(rec, "_watermill_message_uuid") == "" {
				t.Errorf("record of user %s has no message UUID", ev.ID)
			}
			events[ev.ID] = ev // a redelivery replaces its first copy
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
