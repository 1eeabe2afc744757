package omnibox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// The tests in this file inject the faults the relay's promises must
// survive: a publisher that refuses one event for good, one that reports
// which messages of a call failed, and calls to the publisher and the
// database that never return.

// faultLease is the lease of these tests: DatabaseTimeout 1 s and
// PublishTimeout 3 s follow from it.
const faultLease = 6 * time.Second

// runRelay runs relay until the test ends and checks that Run returns within
// a bound after its context ends.
func runRelayBounded(t *testing.T, relay *omnibox.Relay, bound time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(bound):
				t.Fatalf("Run did not return within %s after its context ended", bound)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// attempts returns the attempts of the outbox's events by payload.
func (b *relayBundle) attempts(t *testing.T) map[string]int {
	t.Helper()
	rows, err := b.db.QueryContext(context.Background(), `SELECT convert_from(payload, 'UTF8'), attempts FROM `+b.table)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			p string
			n int
		)
		require.NoError(t, rows.Scan(&p, &n))
		out[p] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// refusingPublisher refuses for good (omnibox.ErrRejected) the messages
// whose payload is in refuse, and publishes the others to next.
type refusingPublisher struct {
	next   message.Publisher
	refuse map[string]bool
}

func (p *refusingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if p.refuse[string(m.Payload)] {
			return fmt.Errorf("%w: topic %q does not exist", omnibox.ErrRejected, topic)
		}
	}
	return p.next.Publish(topic, msgs...)
}

func (p *refusingPublisher) Close() error { return nil }

// A poison event on an otherwise idle outbox: before, with nothing else
// flowing, every failed batch counted as an outage, the breaker opened after
// BreakerThreshold attempts and the event never died. A refusal for good is
// the event's fault: it is charged each time and dies after MaxAttempts.
func TestRelayPoisonEventOnQuietOutboxDies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	pub := &refusingPublisher{next: b.pubsub, refuse: map[string]bool{"poison": true}}
	relay, err := omnibox.NewRelay(b.db, b.store, pub, &omnibox.RelayConfig{
		MaxAttempts: 5, RetryMinDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
		PollInterval: time.Millisecond, BreakerThreshold: 2, Lease: faultLease,
	})
	require.NoError(t, err)
	b.write(t, omnibox.Event{Topic: "t", Key: "k", Payload: []byte("poison")})
	runRelayBounded(t, relay, 10*time.Second)

	var dead []omnibox.DeadEvent
	require.Eventually(t, func() bool {
		dead, err = b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		return len(dead) == 1
	}, 20*time.Second, 5*time.Millisecond, "the poison event must die")
	require.Equal(t, 5, dead[0].Attempts)
	require.Contains(t, dead[0].LastError, "does not exist")
	stats := relay.Stats()
	require.Zero(t, stats.BreakerOpens, "a refusal for good is not an outage")
	require.False(t, stats.BreakerOpen)
	require.EqualValues(t, 4, stats.Retries)
	require.EqualValues(t, 1, stats.Dead)
}

// messageErrors is an error that says which messages of a call failed.
type messageErrors map[string]error

func (e messageErrors) Error() string                   { return fmt.Sprintf("%d message(s) failed", len(e)) }
func (e messageErrors) MessageErrors() map[string]error { return e }

// prefixPublisher publishes every message to next except, per key in
// failKeys, those from the second on: the first of them is refused for
// good, the later ones not sent. It reports them with MessageErrors, as
// publisher.Kafka does, and counts what it published by UUID.
type prefixPublisher struct {
	next      message.Publisher
	mu        sync.Mutex
	failKeys  map[string]bool
	published map[string]int
}

func (p *prefixPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := messageErrors{}
	seen := map[string]int{}
	failed := map[string]bool{}
	for _, m := range msgs {
		k := m.Metadata.Get(omnibox.MetadataKey)
		seen[k]++
		switch {
		case failed[k]:
			errs[m.UUID] = errors.New("not sent: an earlier message of its key failed")
			continue
		case p.failKeys[k] && seen[k] >= 2:
			failed[k] = true
			errs[m.UUID] = fmt.Errorf("%w: record too large", omnibox.ErrRejected)
			continue
		}
		if err := p.next.Publish(topic, m); err != nil {
			return err
		}
		p.published[m.UUID]++
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func (p *prefixPublisher) Close() error { return nil }

// A call that says which messages failed is taken at its word: the messages
// it published are recorded as delivered, not published again (before, the
// relay ignored the report and published the whole call again one event at
// a time); the first failed event of a key is charged, the later ones of its
// key released.
func TestRelayTakesMessageErrorsAtTheirWord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	pub := &prefixPublisher{next: b.pubsub, failKeys: map[string]bool{"x": true}, published: map[string]int{}}
	relay, err := omnibox.NewRelay(b.db, b.store, pub, &omnibox.RelayConfig{RetryMinDelay: time.Hour, Lease: faultLease})
	require.NoError(t, err)
	var events []omnibox.Event
	for i := range 4 {
		for _, k := range []string{"x", "y", "z"} {
			events = append(events, omnibox.Event{Topic: "t", Key: k, Payload: fmt.Appendf(nil, "%s-%d", k, i)})
		}
	}
	b.write(t, events...)

	n, err := relay.Drain(ctx)
	require.NoError(t, err)
	require.Equal(t, 9, n, "x-0 and every y and z")
	for id, times := range pub.published {
		require.Equal(t, 1, times, "message %s published again", id)
	}
	require.Len(t, pub.published, 9)
	require.Equal(t, map[string]int{"x-1": 1, "x-2": 0, "x-3": 0}, b.attempts(t))
	stats := relay.Stats()
	require.EqualValues(t, 1, stats.Retries)
	require.Zero(t, stats.BreakerOpens)
}

// hangingPublisher never returns from Publish until released, whatever the
// messages' context says: the worst case of a publisher on a link that
// stopped answering.
type hangingPublisher struct {
	release chan struct{}
	calls   atomic.Int64
	ctxDone atomic.Bool // the messages' context had a deadline
}

func (p *hangingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.calls.Add(1)
	if _, ok := msgs[0].Context().Deadline(); ok {
		p.ctxDone.Store(true)
	}
	<-p.release
	return errors.New("released")
}

func (p *hangingPublisher) Close() error { return nil }

// A Publish that never returns: before, the relay waited for it forever and
// the batch outlived its lease. Now the messages carry the deadline, and the
// call is given up shortly after it; the events go back unpublished and
// uncharged.
func TestRelayGivesUpAHungPublish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	pub := &hangingPublisher{release: make(chan struct{})}
	t.Cleanup(func() { close(pub.release) })
	relay, err := omnibox.NewRelay(b.db, b.store, pub, &omnibox.RelayConfig{Lease: faultLease})
	require.NoError(t, err)
	b.write(t, omnibox.Event{Topic: "t", Key: "a", Payload: []byte("a")}, omnibox.Event{Topic: "t", Key: "b", Payload: []byte("b")})

	done := make(chan error, 1)
	go func() {
		_, err := relay.Drain(ctx)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Drain hangs with the publisher")
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "publish given up")
	require.True(t, pub.ctxDone.Load(), "the messages carry the deadline")
	require.EqualValues(t, 1, relay.Stats().GivenUp)
	require.Equal(t, map[string]int{"a": 0, "b": 0}, b.attempts(t), "released without a charge")
	require.EqualValues(t, 2, b.pending(t))
}

// hangingStore wraps a store; the calls it is told to hang never return
// until released, whatever their context says (lib/pq on a silent link).
type hangingStore struct {
	*postgresStore
	release      chan struct{}
	hangClaims   atomic.Int64 // claims still to hang
	hangComplete atomic.Bool
	claims       atomic.Int64
	restarts     atomic.Int64
	nonces       sync.Map
}

func (s *hangingStore) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	s.claims.Add(1)
	s.nonces.Store(params.Nonce, true)
	if params.Restart {
		s.restarts.Add(1)
	}
	if s.hangClaims.Add(-1) >= 0 {
		<-s.release
	}
	return s.postgresStore.Claim(ctx, tx, params)
}

func (s *hangingStore) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	if s.hangComplete.Load() {
		<-s.release
	}
	return s.postgresStore.Complete(ctx, tx, params)
}

// A claim that never returns is given up at DatabaseTimeout; the lane claims
// again and publishes. Before, the relay waited for it forever.
func TestRelayGivesUpAHungClaim(t *testing.T) {
	t.Parallel()
	b := setupRelay(t, "t")
	store := &hangingStore{postgresStore: b.store, release: make(chan struct{})}
	store.hangClaims.Store(1)
	t.Cleanup(func() { close(store.release) })
	relay, err := omnibox.NewRelay(b.db, store, b.pubsub, &omnibox.RelayConfig{Lease: faultLease, Concurrency: 1, PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	b.write(t, omnibox.Event{Topic: "t", Key: "a", Payload: []byte("a")})
	runRelayBounded(t, relay, 10*time.Second)

	require.Equal(t, "a", string(receive(t, b.messages, 1)[0].Payload))
	stats := relay.Stats()
	require.EqualValues(t, 1, stats.GivenUp)
	require.Positive(t, stats.Failures)
	require.GreaterOrEqual(t, store.restarts.Load(), int64(2), "claims replace a predecessor's record until one succeeds")
	n := 0
	store.nonces.Range(func(k, _ any) bool {
		require.NotEmpty(t, k)
		n++
		return true
	})
	require.Equal(t, 1, n, "one nonce per relay")
}

// Run returns within a bound after its context ends even when the database
// never answers the record of a batch's outcome: every attempt is given up
// at DatabaseTimeout and no attempt starts past the lease.
func TestRelayRunReturnsWhileDatabaseHangs(t *testing.T) {
	t.Parallel()
	b := setupRelay(t, "t")
	store := &hangingStore{postgresStore: b.store, release: make(chan struct{})}
	store.hangComplete.Store(true)
	t.Cleanup(func() { close(store.release) })
	relay, err := omnibox.NewRelay(b.db, store, b.pubsub, &omnibox.RelayConfig{Lease: faultLease, Concurrency: 1})
	require.NoError(t, err)
	b.write(t, omnibox.Event{Topic: "t", Key: "a", Payload: []byte("a")})
	stop := runRelayBounded(t, relay, faultLease+5*time.Second)

	receive(t, b.messages, 1)
	stop()
	require.GreaterOrEqual(t, relay.Stats().GivenUp, int64(1))
}

// idConflictStore refuses every claim that is not a restart, as a store does
// while another live process records the same relay ID.
type idConflictStore struct {
	*postgresStore
}

func (s idConflictStore) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	res, err := s.postgresStore.Claim(ctx, tx, params)
	if err == nil && !params.Restart {
		return nil, fmt.Errorf("relay %q: %w", params.Relay, omnibox.ErrRelayIDInUse)
	}
	return res, err
}

// A claim refused because another process uses the relay's ID is counted
// and logged once, at error, naming the fix; it is not a database failure.
func TestRelayReportsAnIDInUse(t *testing.T) {
	t.Parallel()
	b := setupRelay(t, "t")
	var logs strings.Builder
	var mu sync.Mutex
	relay, err := omnibox.NewRelay(b.db, idConflictStore{b.store}, b.pubsub, &omnibox.RelayConfig{
		Lease: faultLease, Concurrency: 1, PollInterval: time.Millisecond, Logger: lockedLogger(&mu, &logs),
	})
	require.NoError(t, err)
	runRelayBounded(t, relay, 10*time.Second)
	require.Eventually(t, func() bool { return relay.Stats().IDConflicts >= 1 }, 10*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, strings.Count(logs.String(), "another live process runs with the same RelayConfig.ID"))
	require.Zero(t, relay.Stats().Failures)
}

// postgresStore names the store the tests wrap, so that wrappers can embed it.
type postgresStore = postgres.Store

// lockedWriter is an io.Writer for a logger written by several goroutines.
type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func lockedLogger(mu *sync.Mutex, b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, b}, nil))
}

// heldBackPublisher refuses for good the message whose payload is poison and
// holds back every later message of the call (ErrUnavailable), as
// publisher.Kafka does with the later records of a Kafka partition after a
// refused one; the messages before it are published.
type heldBackPublisher struct {
	next   message.Publisher
	poison string
}

func (p *heldBackPublisher) Publish(topic string, msgs ...*message.Message) error {
	errs := messageErrors{}
	for _, m := range msgs {
		switch {
		case len(errs) > 0:
			errs[m.UUID] = fmt.Errorf("not sent (%w)", omnibox.ErrUnavailable)
		case string(m.Payload) == p.poison:
			errs[m.UUID] = fmt.Errorf("record too large (%w)", omnibox.ErrRejected)
		default:
			if err := p.next.Publish(topic, m); err != nil {
				return err
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func (p *heldBackPublisher) Close() error { return nil }

// Events held back behind a refused one are released uncharged, and the
// batch is no outage: the breaker stays closed (BreakerThreshold 1 would
// open it at the first batch taken for an outage) while the poison dies and
// the other keys flow.
func TestRelayHeldBackEventsAreNoOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupRelay(t, "t")
	relay, err := omnibox.NewRelay(b.db, b.store, &heldBackPublisher{next: b.pubsub, poison: "p"}, &omnibox.RelayConfig{
		MaxAttempts: 3, RetryMinDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
		PollInterval: time.Millisecond, BreakerThreshold: 1, Lease: faultLease, OnDead: omnibox.DeadSkipsKey,
	})
	require.NoError(t, err)
	b.write(t, omnibox.Event{Topic: "t", Key: "a", Payload: []byte("p")},
		omnibox.Event{Topic: "t", Key: "b", Payload: []byte("b1")}, omnibox.Event{Topic: "t", Key: "c", Payload: []byte("c1")})
	runRelayBounded(t, relay, 10*time.Second)

	got := receive(t, b.messages, 2)
	require.ElementsMatch(t, []string{"b1", "c1"}, []string{string(got[0].Payload), string(got[1].Payload)})
	require.Eventually(t, func() bool {
		dead, err := b.store.ListDead(ctx, b.db, omnibox.ListDeadParams{})
		require.NoError(t, err)
		return len(dead) == 1 && dead[0].Attempts == 3
	}, 20*time.Second, 5*time.Millisecond)
	require.Zero(t, relay.Stats().BreakerOpens)
}
