package omnibox

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Defaults of [RelayConfig].
const (
	DefaultBatchSize    = 500
	DefaultPollInterval = 100 * time.Millisecond
	DefaultLease        = 30 * time.Second
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
)

// RelayConfig configures a [Relay]. The zero value takes every default.
type RelayConfig struct {
	// BatchSize is the most events claimed and published at once. Defaults
	// to [DefaultBatchSize].
	BatchSize int
	// ID names this relay in the outbox table (the owner of its claims) and in
	// logs. Give each relay process a stable, unique ID (a pod name, say) and
	// a restarted relay takes over its dead predecessor's claims at once,
	// instead of waiting for them to expire. Defaults to hostname-pid-random,
	// which is unique but not stable.
	ID string
	// Lease is how long a claim holds. A relay that dies mid-batch leaves its
	// claim behind; after Lease another relay (or its own restart) claims the
	// events again, so they are published again: the duplicates a crash
	// causes. Publishing a batch must take less than Lease, or the events may
	// be published twice. Defaults to [DefaultLease].
	Lease time.Duration
	// Logger receives the relay's logs. Defaults to a logger that discards.
	Logger *slog.Logger
	// MaxBackoff caps the wait after consecutive failures. Defaults to
	// [DefaultMaxBackoff].
	MaxBackoff time.Duration
	// MinBackoff is the wait after the first failure to claim or publish; it
	// doubles with each further consecutive failure, up to MaxBackoff, with
	// ±50 % jitter so that relays do not retry in lockstep. Defaults to
	// [DefaultMinBackoff].
	MinBackoff time.Duration
	// PollInterval is how long an idle relay waits before looking for new
	// events again. After a full batch it claims again at once. Defaults to
	// [DefaultPollInterval].
	PollInterval time.Duration
}

func (c *RelayConfig) withDefaults() *RelayConfig {
	out := *c
	out.BatchSize = cmp.Or(out.BatchSize, DefaultBatchSize)
	out.Lease = cmp.Or(out.Lease, DefaultLease)
	out.MaxBackoff = cmp.Or(out.MaxBackoff, DefaultMaxBackoff)
	out.MinBackoff = cmp.Or(out.MinBackoff, DefaultMinBackoff)
	out.PollInterval = cmp.Or(out.PollInterval, DefaultPollInterval)
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.ID == "" {
		out.ID = defaultRelayID()
	}
	return &out
}

// Validate reports the first setting that is out of range. Zero values are
// valid: they stand for the defaults.
func (c *RelayConfig) Validate() error {
	switch {
	case c.BatchSize < 0:
		return fmt.Errorf("omnibox: RelayConfig.BatchSize must not be negative, got %d", c.BatchSize)
	case c.Lease < 0:
		return fmt.Errorf("omnibox: RelayConfig.Lease must not be negative, got %s", c.Lease)
	case c.Lease > 0 && c.Lease < time.Second:
		return fmt.Errorf("omnibox: RelayConfig.Lease must be at least 1s, got %s", c.Lease)
	case c.MinBackoff < 0:
		return fmt.Errorf("omnibox: RelayConfig.MinBackoff must not be negative, got %s", c.MinBackoff)
	case c.MaxBackoff < 0:
		return fmt.Errorf("omnibox: RelayConfig.MaxBackoff must not be negative, got %s", c.MaxBackoff)
	case c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("omnibox: RelayConfig.MinBackoff (%s) must not exceed MaxBackoff (%s)", c.MinBackoff, c.MaxBackoff)
	case c.PollInterval < 0:
		return fmt.Errorf("omnibox: RelayConfig.PollInterval must not be negative, got %s", c.PollInterval)
	case len(c.ID) > 100:
		return fmt.Errorf("omnibox: RelayConfig.ID must be at most 100 bytes, got %d", len(c.ID))
	}
	return nil
}

func defaultRelayID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = crand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", cmp.Or(host, "relay"), os.Getpid(), hex.EncodeToString(b[:]))
}

// Relay moves committed events from the outbox table to a Watermill
// publisher: it claims a batch, publishes it, and marks it delivered only
// after the publisher returned success, retrying with backoff until it does
// (at-least-once delivery). Run it as a goroutine in the service that writes
// the events or as a separate process.
type Relay struct {
	batchSeq  atomic.Int64
	config    *RelayConfig
	db        *sql.DB
	publisher message.Publisher
	running   atomic.Bool
	stats     relayCounters
	store     RelayStore
	wake      chan struct{}
	closeOnce sync.Once
	closed    chan struct{}
}

type relayCounters struct {
	batches   atomic.Int64
	failures  atomic.Int64
	published atomic.Int64
	lostLease atomic.Int64
}

// RelayStats are counters of a relay since it was created.
type RelayStats struct {
	// Batches published successfully.
	Batches int64
	// Failures counts failed claims and publishes.
	Failures int64
	// LostLeases counts events that were published but whose lease had
	// expired before they could be marked delivered: they may be published
	// again by another relay.
	LostLeases int64
	// Published counts events published and marked delivered.
	Published int64
}

// NewRelay returns a relay claiming events through store on db and
// publishing them with publisher. config may not be nil; &RelayConfig{}
// takes the defaults.
func NewRelay(db *sql.DB, store RelayStore, publisher message.Publisher, config *RelayConfig) (*Relay, error) {
	switch {
	case db == nil:
		return nil, ErrNilDB
	case store == nil:
		return nil, ErrNilStore
	case publisher == nil:
		return nil, ErrNilPublisher
	case config == nil:
		return nil, ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	return &Relay{
		config:    config.withDefaults(),
		db:        db,
		publisher: publisher,
		store:     store,
		wake:      make(chan struct{}, 1),
		closed:    make(chan struct{}),
	}, nil
}

// ID returns the relay's ID ([RelayConfig.ID] or the generated default).
func (r *Relay) ID() string { return r.config.ID }

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Batches:    r.stats.batches.Load(),
		Failures:   r.stats.failures.Load(),
		LostLeases: r.stats.lostLease.Load(),
		Published:  r.stats.published.Load(),
	}
}

// Notify wakes the relay to look for events now instead of at its next poll.
// It never blocks; calls while a wake-up is pending coalesce.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops a running [Relay.Run] as cancelling its context would. It is
// idempotent and does not close the publisher, which is the caller's.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return nil
}

// ErrRelayRunning is returned by [Relay.Run] and [Relay.Drain] when the relay
// is already running.
var ErrRelayRunning = errors.New("omnibox: relay is already running")

// Run relays events until ctx ends or [Relay.Close] is called, then returns
// nil. A batch in hand when ctx ends is finished (published and marked
// delivered) or released before Run returns. Errors of the database or the
// publisher are logged and retried with backoff, never returned: Run only
// returns an error when the relay is already running.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRelayRunning
	}
	defer r.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.closed:
			cancel()
		case <-ctx.Done():
		}
	}()

	log := r.config.Logger.With(slog.String("relay", r.config.ID))
	log.InfoContext(ctx, "omnibox relay started", slog.Int("batch_size", r.config.BatchSize))
	failures := 0
	healthy := true
	for ctx.Err() == nil {
		n, err := r.relayBatch(ctx)
		var wait time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			// Stopping: the error is the cancellation.
		case err != nil:
			failures++
			r.stats.failures.Add(1)
			wait = backoff(r.config.MinBackoff, r.config.MaxBackoff, failures)
			if healthy || failures%10 == 0 {
				log.ErrorContext(ctx, "omnibox relay batch failed; retrying", slog.Any("error", err), slog.Int("consecutive_failures", failures), slog.Duration("backoff", wait))
			}
			healthy = false
		case n == r.config.BatchSize:
			// A full batch: there is likely more, claim again at once.
		default:
			wait = r.config.PollInterval
		}
		if err == nil {
			if !healthy {
				log.InfoContext(ctx, "omnibox relay recovered", slog.Int("failures", failures))
			}
			failures, healthy = 0, true
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-r.wake:
			}
			t.Stop()
		}
	}
	log.InfoContext(context.WithoutCancel(ctx), "omnibox relay stopped")
	return nil
}

// Drain relays every event that is pending now and returns how many it
// published; it stops at the first error. For tests and for one-shot jobs.
// Events leased by another live relay are left to it.
func (r *Relay) Drain(ctx context.Context) (int, error) {
	if !r.running.CompareAndSwap(false, true) {
		return 0, ErrRelayRunning
	}
	defer r.running.Store(false)
	total := 0
	for {
		n, err := r.relayBatch(ctx)
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
	}
}

// relayBatch claims, publishes and marks delivered one batch. It returns the
// number of events published. Once a batch is claimed, it is finished even if
// ctx ends meanwhile.
func (r *Relay) relayBatch(ctx context.Context) (int, error) {
	owner := r.config.ID + "/" + strconv.FormatInt(r.batchSeq.Add(1), 10)
	claimed, err := r.claim(ctx, owner)
	if err != nil {
		return 0, err
	}
	if len(claimed) == 0 {
		return 0, nil
	}
	// From here on the batch is ours: finish it even when ctx ends.
	ctx = context.WithoutCancel(ctx)
	published, unpublished, pubErr := r.publish(claimed)
	if len(published) > 0 {
		n, err := r.store.MarkDelivered(ctx, r.db, MarkDeliveredParams{Owner: owner, Seqs: published})
		if err != nil {
			// The events were published; the lease will expire and they will
			// be published again. At-least-once holds.
			return 0, fmt.Errorf("omnibox: marking %d event(s) delivered: %w", len(published), err)
		}
		if lost := len(published) - n; lost > 0 {
			r.stats.lostLease.Add(int64(lost))
			r.config.Logger.WarnContext(ctx, "omnibox relay lost the lease on published events; they may be published twice (publishing took longer than RelayConfig.Lease?)",
				slog.String("relay", r.config.ID), slog.Int("events", lost))
		}
		r.stats.published.Add(int64(n))
	}
	if pubErr != nil {
		if err := r.store.Release(ctx, r.db, ReleaseParams{Owner: owner, Seqs: unpublished, Error: cleanError(pubErr, 2000)}); err != nil {
			pubErr = errors.Join(pubErr, fmt.Errorf("omnibox: releasing %d event(s): %w", len(unpublished), err))
		}
		return len(published), pubErr
	}
	r.stats.batches.Add(1)
	return len(published), nil
}

func (r *Relay) claim(ctx context.Context, owner string) ([]ClaimedEvent, error) {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("omnibox: claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := r.store.Claim(ctx, tx, ClaimParams{
		Lease:       r.config.Lease,
		Limit:       r.config.BatchSize,
		Owner:       owner,
		OwnerPrefix: r.config.ID + "/",
	})
	if err != nil {
		return nil, fmt.Errorf("omnibox: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("omnibox: claim: commit: %w", err)
	}
	return res.Events, nil
}

// publish publishes the claimed events with one Publish call per topic, each
// in claim order (so per key order holds within a topic). It returns the seqs
// of the events published and of those not published, and the error that
// stopped it.
func (r *Relay) publish(claimed []ClaimedEvent) (published, unpublished []int64, err error) {
	var topics []string
	byTopic := make(map[string][]ClaimedEvent)
	for _, ev := range claimed {
		if _, ok := byTopic[ev.Topic]; !ok {
			topics = append(topics, ev.Topic)
		}
		byTopic[ev.Topic] = append(byTopic[ev.Topic], ev)
	}
	published = make([]int64, 0, len(claimed))
	for i, topic := range topics {
		events := byTopic[topic]
		msgs := make([]*message.Message, len(events))
		for j, ev := range events {
			msgs[j] = ToMessage(ev.Event)
		}
		if pubErr := r.publisher.Publish(topic, msgs...); pubErr != nil {
			for _, t := range topics[i:] {
				for _, ev := range byTopic[t] {
					unpublished = append(unpublished, ev.Seq)
				}
			}
			return published, unpublished, fmt.Errorf("omnibox: publishing %d event(s) to topic %q: %w", len(msgs), topic, pubErr)
		}
		for _, ev := range events {
			published = append(published, ev.Seq)
		}
	}
	return published, nil, nil
}

// ToMessage converts an event into the Watermill message the relay publishes:
// the UUID is the event ID, the payload and metadata are the event's, and a
// non-empty key is added to the metadata as [MetadataKey].
func ToMessage(ev Event) *message.Message {
	msg := message.NewMessage(ev.ID, ev.Payload)
	if len(ev.Metadata) > 0 || ev.Key != "" {
		msg.Metadata = make(message.Metadata, len(ev.Metadata)+1)
		maps.Copy(msg.Metadata, ev.Metadata)
		if ev.Key != "" {
			msg.Metadata[MetadataKey] = ev.Key
		}
	}
	return msg
}

// backoff returns the wait after the n-th consecutive failure (n ≥ 1):
// min·2^(n-1), capped at max, with ±50 % jitter.
func backoff(minWait, maxWait time.Duration, n int) time.Duration {
	d := minWait
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	jittered := time.Duration(float64(d) * (0.5 + rand.Float64()))
	return min(jittered, maxWait)
}

// cleanError renders err as text every store accepts: valid UTF-8, no NUL
// bytes, at most n bytes.
func cleanError(err error, n int) string {
	s := err.Error()
	if len(s) > n {
		s = s[:n]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\x00", "")
}
