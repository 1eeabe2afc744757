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
	"math"
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
	DefaultBatchSize        = 1000
	DefaultBreakerCooldown  = time.Second
	DefaultBreakerThreshold = 3
	DefaultConcurrency      = 2
	DefaultLease            = 30 * time.Second
	DefaultMaxAttempts      = 10
	DefaultMaxBackoff       = 30 * time.Second
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultPollInterval     = 100 * time.Millisecond
	DefaultPurgeBatchSize   = 1000
	DefaultPurgeInterval    = time.Minute
	DefaultRetryMaxDelay    = 5 * time.Minute
	DefaultRetryMinDelay    = time.Second
)

// DeadPolicy says what a dead event means for the later events of its key.
type DeadPolicy int

const (
	// DeadBlocksKey, the default, holds the later events of a dead event's
	// key back until the dead event is requeued (it is then published
	// first) or discarded. Order per key is never broken; the key stalls
	// until an operator acts. Other keys flow.
	DeadBlocksKey DeadPolicy = iota
	// DeadSkipsKey publishes the later events of a dead event's key as if it
	// had been delivered: the key keeps flowing, with a gap; a requeued dead
	// event is then published after younger events of its key.
	DeadSkipsKey
)

// String returns the policy's name.
func (p DeadPolicy) String() string {
	switch p {
	case DeadBlocksKey:
		return "DeadBlocksKey"
	case DeadSkipsKey:
		return "DeadSkipsKey"
	}
	return "DeadPolicy(" + strconv.Itoa(int(p)) + ")"
}

// RelayConfig configures a [Relay]. The zero value takes every default.
type RelayConfig struct {
	// BatchSize is the most events claimed and published at once. Defaults
	// to [DefaultBatchSize].
	BatchSize int
	// BreakerCooldown is how long the relay pauses when its circuit breaker
	// opens (the broker looks down); it doubles with each failed probe, up to
	// MaxBackoff, with jitter. Defaults to [DefaultBreakerCooldown].
	BreakerCooldown time.Duration
	// BreakerThreshold is the number of consecutive batches that fail as a
	// whole (nothing of them published) after which the relay stops
	// publishing and pauses: the broker is taken to be down, and failures
	// while the breaker is open cost the events no attempts. After the
	// cooldown one batch probes the broker; its success closes the breaker.
	// Defaults to [DefaultBreakerThreshold].
	BreakerThreshold int
	// Concurrency is how many batches [Relay.Run] has in flight at once.
	// Each is claimed, published and recorded on its own, from partitions
	// leased to it alone (so events of a key stay in order), and counts as a
	// relay in the sharing of partitions: one batch's round trips to the
	// database overlap another's publishing. 1 relays one batch at a time.
	// When the outbox is idle the first lane polls every PollInterval and
	// the others every 10 PollIntervals; a lane that claims a full batch, or
	// [Relay.Notify], wakes another.
	// At most [Partitions]. Defaults to [DefaultConcurrency]; a store may
	// lower it ([RelayConcurrencyLimiter]: SQLite runs one).
	Concurrency int
	// ID names this relay in the outbox table (the owner of its claims, and
	// a live relay among which partitions are shared) and in logs. Give each
	// relay process a stable, unique ID (a pod name, say) and a restarted
	// relay takes over its dead predecessor's claims at once, instead of
	// waiting for them to expire. At most 100 bytes, without "/" (which
	// separates the relay, its lane and the batch in claim owners). Defaults
	// to hostname-pid-random, which is unique but not stable.
	ID string
	// Lease is how long a claim holds. A relay that dies mid-batch leaves its
	// claim behind; after Lease another relay (or its own restart) claims the
	// events again, so they are published again: the duplicates a crash
	// causes. Publishing a batch must take less than Lease, or the events may
	// be published twice. Defaults to [DefaultLease].
	Lease time.Duration
	// Logger receives the relay's logs. Defaults to a logger that discards.
	Logger *slog.Logger
	// MaxAttempts is how many times an event may fail before it is dead:
	// kept in the table, no longer retried, listed by the store's ListDead.
	// Failures while the broker is down (the circuit breaker) do not count.
	// Defaults to [DefaultMaxAttempts].
	MaxAttempts int
	// MaxBackoff caps the relay's wait after consecutive failures of the
	// database, and the breaker's cooldown. Defaults to [DefaultMaxBackoff].
	MaxBackoff time.Duration
	// MinBackoff is the wait after the first failure to claim from or write
	// to the database; it doubles with each further consecutive failure, up
	// to MaxBackoff, with ±50 % jitter so that relays do not retry in
	// lockstep. Defaults to [DefaultMinBackoff].
	MinBackoff time.Duration
	// OnDead says what a dead event means for the later events of its key.
	// Defaults to [DeadBlocksKey].
	OnDead DeadPolicy
	// PollInterval is how long an idle relay waits before looking for new
	// events again. After a batch it claims again at once; [Relay.Notify]
	// (and [Outbox.WakeOnCommit]) cut the wait short. Defaults to
	// [DefaultPollInterval].
	PollInterval time.Duration
	// PurgeBatchSize is the most delivered events deleted by one statement
	// when the store keeps delivered events (it implements [Purger]).
	// Defaults to [DefaultPurgeBatchSize].
	PurgeBatchSize int
	// PurgeInterval is how often the relay purges delivered events past the
	// store's retention period, when the store keeps them. Defaults to
	// [DefaultPurgeInterval].
	PurgeInterval time.Duration
	// RetryMaxDelay caps the wait before an event that failed is tried
	// again. Defaults to [DefaultRetryMaxDelay].
	RetryMaxDelay time.Duration
	// RetryMinDelay is the wait before an event that failed once is tried
	// again; it doubles with each further failure, up to RetryMaxDelay, with
	// ±50 % jitter. Later events of its key wait with it. Defaults to
	// [DefaultRetryMinDelay].
	RetryMinDelay time.Duration
}

func (c *RelayConfig) withDefaults() *RelayConfig {
	out := *c
	out.BatchSize = cmp.Or(out.BatchSize, DefaultBatchSize)
	out.BreakerCooldown = cmp.Or(out.BreakerCooldown, DefaultBreakerCooldown)
	out.BreakerThreshold = cmp.Or(out.BreakerThreshold, DefaultBreakerThreshold)
	out.Concurrency = cmp.Or(out.Concurrency, DefaultConcurrency)
	out.Lease = cmp.Or(out.Lease, DefaultLease)
	out.MaxAttempts = cmp.Or(out.MaxAttempts, DefaultMaxAttempts)
	out.MaxBackoff = cmp.Or(out.MaxBackoff, DefaultMaxBackoff)
	out.MinBackoff = cmp.Or(out.MinBackoff, DefaultMinBackoff)
	out.PollInterval = cmp.Or(out.PollInterval, DefaultPollInterval)
	out.PurgeBatchSize = cmp.Or(out.PurgeBatchSize, DefaultPurgeBatchSize)
	out.PurgeInterval = cmp.Or(out.PurgeInterval, DefaultPurgeInterval)
	out.RetryMaxDelay = cmp.Or(out.RetryMaxDelay, DefaultRetryMaxDelay)
	out.RetryMinDelay = cmp.Or(out.RetryMinDelay, DefaultRetryMinDelay)
	out.MaxBackoff = max(out.MaxBackoff, out.MinBackoff, out.BreakerCooldown)
	out.RetryMaxDelay = max(out.RetryMaxDelay, out.RetryMinDelay)
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
	negative := func(name string, d time.Duration) error {
		if d < 0 {
			return fmt.Errorf("omnibox: RelayConfig.%s must not be negative, got %s", name, d)
		}
		return nil
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"BreakerCooldown", c.BreakerCooldown}, {"Lease", c.Lease}, {"MaxBackoff", c.MaxBackoff},
		{"MinBackoff", c.MinBackoff}, {"PollInterval", c.PollInterval}, {"PurgeInterval", c.PurgeInterval},
		{"RetryMaxDelay", c.RetryMaxDelay}, {"RetryMinDelay", c.RetryMinDelay},
	} {
		if err := negative(d.name, d.d); err != nil {
			return err
		}
	}
	switch {
	case c.BatchSize < 0:
		return fmt.Errorf("omnibox: RelayConfig.BatchSize must not be negative, got %d", c.BatchSize)
	case c.Concurrency < 0 || c.Concurrency > Partitions:
		return fmt.Errorf("omnibox: RelayConfig.Concurrency must be between 0 (the default) and %d, got %d", Partitions, c.Concurrency)
	case c.BreakerThreshold < 0:
		return fmt.Errorf("omnibox: RelayConfig.BreakerThreshold must not be negative, got %d", c.BreakerThreshold)
	case c.MaxAttempts < 0:
		return fmt.Errorf("omnibox: RelayConfig.MaxAttempts must not be negative, got %d", c.MaxAttempts)
	case c.PurgeBatchSize < 0:
		return fmt.Errorf("omnibox: RelayConfig.PurgeBatchSize must not be negative, got %d", c.PurgeBatchSize)
	case c.Lease > 0 && c.Lease < time.Second:
		return fmt.Errorf("omnibox: RelayConfig.Lease must be at least 1s, got %s", c.Lease)
	case c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("omnibox: RelayConfig.MinBackoff (%s) must not exceed MaxBackoff (%s)", c.MinBackoff, c.MaxBackoff)
	case c.RetryMinDelay > 0 && c.RetryMaxDelay > 0 && c.RetryMinDelay > c.RetryMaxDelay:
		return fmt.Errorf("omnibox: RelayConfig.RetryMinDelay (%s) must not exceed RetryMaxDelay (%s)", c.RetryMinDelay, c.RetryMaxDelay)
	case c.OnDead != DeadBlocksKey && c.OnDead != DeadSkipsKey:
		return fmt.Errorf("omnibox: RelayConfig.OnDead must be DeadBlocksKey or DeadSkipsKey, got %s", c.OnDead)
	case len(c.ID) > 100:
		return fmt.Errorf("omnibox: RelayConfig.ID must be at most 100 bytes, got %d", len(c.ID))
	case strings.Contains(c.ID, "/"):
		return fmt.Errorf("omnibox: RelayConfig.ID must not contain %q, got %q", "/", c.ID)
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
// publisher: it claims a batch, publishes it, and records the outcome only
// after the publisher returned, retrying until the broker takes each event
// (at-least-once delivery). Several relays, goroutines or processes, can run
// on one outbox: they share its partitions, so events of one key keep their
// order while different keys are relayed in parallel. Run it as a goroutine
// in the service that writes the events or as a separate process.
//
// Failures are handled at three levels. A batch that fails as a whole counts
// towards the circuit breaker ([RelayConfig.BreakerThreshold]): the broker is
// taken to be down and the relay pauses, charging no event an attempt. When
// some events of a batch fail while others are published, the failed events
// are charged an attempt and retried after a backoff
// ([RelayConfig.RetryMinDelay]), later events of their keys waiting behind
// them, until [RelayConfig.MaxAttempts] makes them dead. Failures of the
// database are retried with backoff ([RelayConfig.MinBackoff]).
type Relay struct {
	batchSeq  atomic.Int64
	config    *RelayConfig
	db        *sql.DB
	publisher message.Publisher
	running   atomic.Bool
	stats     relayCounters
	store     RelayStore
	txOptions *sql.TxOptions // of claim and complete transactions
	wake      chan struct{}
	closeOnce sync.Once
	closed    chan struct{}

	// mu guards the state shared by the lanes of Run: the circuit breaker
	// and the count of lanes failing to reach the database.
	mu             sync.Mutex
	brokerFailures int           // consecutive batches that failed as a whole
	breakerOpens   int           // consecutive openings without a success
	breakerOpen    bool          // open or half-open: failures cost no attempts
	breakerProber  int           // the lane that probes the broker while open
	breakerClosed  chan struct{} // closed when the breaker closes
	dbFailing      int           // lanes whose last database access failed
	dbFailures     int           // database failures since no lane failed
}

// lane is one of the batch loops of [Relay.Run]: its claims are owned by
// prefix + batch number, and it counts as relay id among the live relays.
// A claim may take over the partitions still leased to owners starting with
// prefix: the lane's own earlier claims (whose outcome could not be
// written), or its predecessor's in a process that died. With takeover set
// it takes over those of every lane of the relay ID: only when no other lane
// has a batch in flight (Drain, the first batch of Run).
type lane struct {
	index    int
	id       string // the relay ID, or ID/index with several lanes
	prefix   string // id + "/"
	takeover bool
}

// ownerPrefix returns the prefix of the owners whose leases l's claims take
// over.
func (r *Relay) ownerPrefix(l lane) string {
	if l.takeover {
		return r.config.ID + "/"
	}
	return l.prefix
}

func (r *Relay) lane(i int) lane {
	id := r.config.ID
	if r.config.Concurrency > 1 {
		id += "/" + strconv.Itoa(i)
	}
	return lane{index: i, id: id, prefix: id + "/"}
}

type relayCounters struct {
	batches        atomic.Int64
	breakerOpenNow atomic.Bool
	breakerOpens   atomic.Int64
	dead           atomic.Int64
	failures       atomic.Int64
	lostLease      atomic.Int64
	published      atomic.Int64
	purged         atomic.Int64
	retries        atomic.Int64
}

// RelayStats are counters of a relay since it was created.
type RelayStats struct {
	// Batches published whole.
	Batches int64
	// BreakerOpen reports whether the circuit breaker is open now: the
	// broker looks down and the relay is paused.
	BreakerOpen bool
	// BreakerOpens counts the times the circuit breaker opened.
	BreakerOpens int64
	// Dead counts events this relay marked dead.
	Dead int64
	// Failures counts failed claims, failed batches and failed writes of
	// outcomes.
	Failures int64
	// LostLeases counts events that were published but whose lease had
	// expired and been taken over before they could be marked delivered:
	// they may be published again by another relay.
	LostLeases int64
	// Published counts events published and marked delivered.
	Published int64
	// Purged counts delivered events deleted after the retention period.
	Purged int64
	// Retries counts failed events scheduled for another attempt.
	Retries int64
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
	r := &Relay{
		config:    config.withDefaults(),
		db:        db,
		publisher: publisher,
		store:     store,
		wake:      make(chan struct{}, 1),
		closed:    make(chan struct{}),
	}
	if o, ok := store.(RelayTxOptioner); ok {
		r.txOptions = o.RelayTxOptions()
	}
	if l, ok := store.(RelayConcurrencyLimiter); ok {
		r.config.Concurrency = max(1, min(r.config.Concurrency, l.RelayConcurrencyLimit()))
	}
	return r, nil
}

// ID returns the relay's ID ([RelayConfig.ID] or the generated default).
func (r *Relay) ID() string { return r.config.ID }

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Batches:      r.stats.batches.Load(),
		BreakerOpen:  r.stats.breakerOpenNow.Load(),
		BreakerOpens: r.stats.breakerOpens.Load(),
		Dead:         r.stats.dead.Load(),
		Failures:     r.stats.failures.Load(),
		LostLeases:   r.stats.lostLease.Load(),
		Published:    r.stats.published.Load(),
		Purged:       r.stats.purged.Load(),
		Retries:      r.stats.retries.Load(),
	}
}

// breakerIsOpen reports whether the breaker is open or half-open.
func (r *Relay) breakerIsOpen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.breakerOpen
}

// breakerWait returns, while the breaker is open, a channel closed when it
// closes, for the lanes other than the one probing the broker; nil
// otherwise.
func (r *Relay) breakerWait(l lane) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.breakerOpen && r.breakerProber != l.index {
		return r.breakerClosed
	}
	return nil
}

// Notify wakes the relay to look for events now instead of at its next poll.
// It never blocks; calls while a wake-up is pending coalesce. It does not cut
// short a pause of the circuit breaker.
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

// batchOutcome is what became of one claimed batch.
type batchOutcome struct {
	claimed   int
	published int
	// brokerDown reports a batch of which nothing was published: it counts
	// towards the circuit breaker.
	brokerDown bool
	// err is the first publish error of the batch, when any.
	err error
}

// Run relays events until ctx ends or [Relay.Close] is called, then returns
// nil. Batches in hand when ctx ends are finished (published and recorded)
// or released before Run returns. Errors of the database or the publisher are
// logged and retried, never returned: Run only returns an error when the
// relay is already running.
//
// Run keeps up to [RelayConfig.Concurrency] batches in flight, each in a
// lane of its own. After a batch a lane claims again at once; only when it
// found nothing does it wait, for [RelayConfig.PollInterval] or until
// [Relay.Notify]. When the
// store keeps delivered events ([Purger]), Run also purges them every
// [RelayConfig.PurgeInterval].
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
	var purgeDone chan struct{}
	if purger, ok := r.store.(Purger); ok {
		purgeDone = make(chan struct{})
		go func() {
			defer close(purgeDone)
			r.purgeLoop(ctx, purger, log)
		}()
	}
	// The first lane's first batch takes over what a predecessor with this
	// ID left behind, in any lane; the other lanes start after it.
	var lanes sync.WaitGroup
	first, started := r.lane(0), make(chan struct{})
	first.takeover = true
	lanes.Go(func() { r.runLane(ctx, first, log, sync.OnceFunc(func() { close(started) })) })
	for i := 1; i < r.config.Concurrency; i++ {
		lanes.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-started:
			}
			r.runLane(ctx, r.lane(i), log, nil)
		})
	}
	lanes.Wait()
	cancel()
	if purgeDone != nil {
		<-purgeDone
	}
	log.InfoContext(context.WithoutCancel(ctx), "omnibox relay stopped")
	return nil
}

// idleLanePolls is how many PollIntervals a lane other than the first waits
// after finding nothing, unless woken.
const idleLanePolls = 10

// runLane relays batch after batch until ctx ends. afterFirst, when not
// nil, is called after its first batch (and when it returns).
func (r *Relay) runLane(ctx context.Context, l lane, log *slog.Logger, afterFirst func()) {
	if afterFirst != nil {
		defer afterFirst()
	}
	dbFailed := false
	for ctx.Err() == nil {
		if closed := r.breakerWait(l); closed != nil {
			// Another lane probes the broker.
			select {
			case <-ctx.Done():
			case <-closed:
			}
			continue
		}
		out, err := r.relayBatch(ctx, l)
		if l.takeover {
			l.takeover = false
			afterFirst()
		}
		var wait time.Duration
		wakeable := true
		switch {
		case err != nil && ctx.Err() != nil:
			// Stopping: the error is the cancellation.
		case err != nil:
			// The database failed (claiming or recording the outcome).
			r.stats.failures.Add(1)
			wait = r.dbFailed(ctx, log, err, &dbFailed)
			wakeable = false
		case out.claimed == 0:
			wait = r.config.PollInterval
			if l.index > 0 && wait <= math.MaxInt64/idleLanePolls {
				// Idle: the first lane polls; the others wait to be woken
				// (by Notify, or by a lane that claimed a full batch), and
				// poll only now and then, so that an idle relay costs the
				// database about one lane's polling whatever its
				// Concurrency.
				wait *= idleLanePolls
			}
		case out.brokerDown:
			r.stats.failures.Add(1)
			wait = r.brokerFailed(ctx, log, l, out.err)
			wakeable = false
		default:
			// A batch went through (some of it at least): the broker is up,
			// and there may be more to claim at once; a full batch wakes
			// another lane to claim beside this one.
			r.brokerRecovered(ctx, log)
			if out.claimed >= r.config.BatchSize && r.config.Concurrency > 1 {
				r.Notify()
			}
		}
		if err == nil && dbFailed {
			r.dbRecovered(ctx, log, &dbFailed)
		}
		if wait > 0 {
			r.sleep(ctx, wait, wakeable)
		}
	}
}

// dbFailed records a lane's failure to reach the database and returns how
// long it waits. The first lane to fail logs it.
func (r *Relay) dbFailed(ctx context.Context, log *slog.Logger, err error, failed *bool) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !*failed {
		*failed = true
		r.dbFailing++
		if r.dbFailing == 1 {
			r.dbFailures = 0
			log.ErrorContext(ctx, "omnibox relay cannot reach the outbox table; retrying", slog.Any("error", err))
		}
	}
	r.dbFailures++
	return backoff(r.config.MinBackoff, r.config.MaxBackoff, r.dbFailures)
}

// dbRecovered records a lane's success after a failure; the last lane to
// recover logs it.
func (r *Relay) dbRecovered(ctx context.Context, log *slog.Logger, failed *bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*failed = false
	r.dbFailing--
	if r.dbFailing == 0 {
		log.InfoContext(ctx, "omnibox relay reaches the outbox table again", slog.Int("failures", r.dbFailures))
		r.dbFailures = 0
	}
}

// sleep waits for d, ctx's end, or (when wakeable) a Notify.
func (r *Relay) sleep(ctx context.Context, d time.Duration, wakeable bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	wake := r.wake
	if !wakeable {
		wake = nil
	}
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-wake:
	}
}

// brokerFailed counts a batch that failed whole and returns how long to
// pause: at once when the breaker stays closed, the cooldown when it opens.
func (r *Relay) brokerFailed(ctx context.Context, log *slog.Logger, l lane, err error) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.brokerFailures++
	if !r.breakerOpen && r.brokerFailures < r.config.BreakerThreshold {
		return backoff(r.config.MinBackoff, r.config.MaxBackoff, r.brokerFailures)
	}
	if r.breakerOpen && r.breakerProber != l.index {
		// A batch claimed before the breaker opened: its lane now waits for
		// the probing lane.
		return 0
	}
	r.breakerOpens++
	wait := backoff(r.config.BreakerCooldown, r.config.MaxBackoff, r.breakerOpens)
	if !r.breakerOpen {
		r.breakerOpen, r.breakerProber, r.breakerClosed = true, l.index, make(chan struct{})
		r.stats.breakerOpenNow.Store(true)
		r.stats.breakerOpens.Add(1)
		log.WarnContext(ctx, "omnibox relay paused: the broker looks down (circuit breaker open); events keep their attempts",
			slog.Any("error", err), slog.Int("failed_batches", r.brokerFailures), slog.Duration("probe_in", wait))
	}
	return wait
}

// brokerRecovered closes the breaker after a batch that went through.
func (r *Relay) brokerRecovered(ctx context.Context, log *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.breakerOpen {
		log.InfoContext(ctx, "omnibox relay resumed: the broker takes events again (circuit breaker closed)",
			slog.Int("failed_batches", r.brokerFailures))
		close(r.breakerClosed)
		r.breakerOpen = false
		r.stats.breakerOpenNow.Store(false)
	}
	r.brokerFailures, r.breakerOpens = 0, 0
}

// purgeLoop deletes delivered events past the retention period every
// PurgeInterval until ctx ends.
func (r *Relay) purgeLoop(ctx context.Context, purger Purger, log *slog.Logger) {
	t := time.NewTicker(r.config.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := purger.Purge(ctx, r.db, r.config.PurgeBatchSize)
			if err != nil {
				if ctx.Err() == nil {
					log.WarnContext(ctx, "omnibox relay could not purge delivered events", slog.Any("error", err))
				}
				break
			}
			r.stats.purged.Add(int64(n))
			if n < r.config.PurgeBatchSize {
				break
			}
		}
	}
}

// Drain relays every event that is claimable now and returns how many it
// published; it stops at the first error, a batch that failed whole included
// (events of a batch that failed in part are scheduled for retry and not
// waited for). For tests and for one-shot jobs. Events leased by another live
// relay are left to it.
func (r *Relay) Drain(ctx context.Context) (int, error) {
	if !r.running.CompareAndSwap(false, true) {
		return 0, ErrRelayRunning
	}
	defer r.running.Store(false)
	total := 0
	l := r.lane(0)
	l.takeover = true
	for {
		out, err := r.relayBatch(ctx, l)
		total += out.published
		if err != nil {
			return total, err
		}
		if out.brokerDown {
			return total, out.err
		}
		if out.claimed == 0 {
			return total, nil
		}
	}
}

// relayBatch claims, publishes and records one batch. The error is the
// database's; what the publisher did is in the outcome. Once a batch is
// claimed, it is finished even if ctx ends meanwhile.
func (r *Relay) relayBatch(ctx context.Context, l lane) (batchOutcome, error) {
	owner := l.prefix + strconv.FormatInt(r.batchSeq.Add(1), 10)
	claimed, err := r.claim(ctx, l, owner)
	if err != nil || len(claimed) == 0 {
		return batchOutcome{}, err
	}
	// From here on the batch is ours: finish it even when ctx ends.
	ctx = context.WithoutCancel(ctx)
	res := r.publish(claimed)
	out := batchOutcome{claimed: len(claimed), err: res.err}
	params := CompleteParams{Owner: owner, Delivered: res.delivered, Released: res.released}
	if res.err != nil {
		params.ReleaseError = cleanError(res.err, 2000)
	}
	// A batch of which nothing was published, on two keys or more, tells of
	// the broker rather than of the events; so does any failure while the
	// breaker is open. Such failures cost no attempt.
	out.brokerDown = len(res.delivered) == 0 && len(res.failed) > 0
	if out.brokerDown && (res.failedKeys > 1 || r.breakerIsOpen()) {
		for _, f := range res.failed {
			params.Released = append(params.Released, f.ev.Seq)
		}
	} else {
		for _, f := range res.failed {
			fe := FailedEvent{Seq: f.ev.Seq, Error: cleanError(f.err, 2000)}
			if f.ev.Attempts+1 >= r.config.MaxAttempts {
				params.Dead = append(params.Dead, fe)
			} else {
				fe.Delay = backoff(r.config.RetryMinDelay, r.config.RetryMaxDelay, f.ev.Attempts+1)
				params.Retry = append(params.Retry, fe)
			}
		}
	}
	done, err := r.complete(ctx, params)
	if err != nil {
		// The published events' lease will expire and they will be published
		// again: at-least-once holds.
		return out, err
	}
	if lost := len(res.delivered) - done.Delivered; lost > 0 {
		r.stats.lostLease.Add(int64(lost))
		r.config.Logger.WarnContext(ctx, "omnibox relay lost the lease on published events; they may be published twice (publishing took longer than RelayConfig.Lease?)",
			slog.String("relay", r.config.ID), slog.Int("events", lost))
	}
	out.published = done.Delivered
	r.stats.published.Add(int64(done.Delivered))
	r.stats.retries.Add(int64(len(params.Retry)))
	r.stats.dead.Add(int64(len(params.Dead)))
	for _, f := range params.Dead {
		r.config.Logger.ErrorContext(ctx, "omnibox relay gave up on an event: it is dead (list, requeue or discard it with the store's dead-letter methods)",
			slog.String("relay", r.config.ID), slog.Int64("seq", f.Seq), slog.Int("attempts", r.config.MaxAttempts), slog.String("error", f.Error))
	}
	if res.err == nil {
		r.stats.batches.Add(1)
	}
	return out, nil
}

func (r *Relay) claim(ctx context.Context, l lane, owner string) ([]ClaimedEvent, error) {
	tx, err := r.db.BeginTx(ctx, r.txOptions)
	if err != nil {
		return nil, fmt.Errorf("omnibox: claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := r.store.Claim(ctx, tx, ClaimParams{
		BlockOnDead: r.config.OnDead == DeadBlocksKey,
		Lease:       r.config.Lease,
		Limit:       r.config.BatchSize,
		Owner:       owner,
		OwnerPrefix: r.ownerPrefix(l),
		Relay:       l.id,
	})
	if err != nil {
		return nil, fmt.Errorf("omnibox: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("omnibox: claim: commit: %w", err)
	}
	return res.Events, nil
}

// completeAttempts is how many times the outcome of a batch is written before
// the relay gives up on it (and the batch is published again after its lease):
// a deadlock or a dropped connection must not turn a published batch into
// duplicates.
const completeAttempts = 4

// complete records the outcome of a batch, retrying a few times.
func (r *Relay) complete(ctx context.Context, params CompleteParams) (*CompleteResult, error) {
	var errs []error
	for attempt := 1; ; attempt++ {
		res, err := r.completeOnce(ctx, params)
		if err == nil {
			return res, nil
		}
		errs = append(errs, err)
		if attempt == completeAttempts {
			return nil, errors.Join(errs...)
		}
		// Even when the relay is stopping: the batch is published, and
		// recording it saves republishing it.
		time.Sleep(backoff(10*time.Millisecond, time.Second, attempt))
	}
}

func (r *Relay) completeOnce(ctx context.Context, params CompleteParams) (*CompleteResult, error) {
	tx, err := r.db.BeginTx(ctx, r.txOptions)
	if err != nil {
		return nil, fmt.Errorf("omnibox: recording a batch's outcome: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := r.store.Complete(ctx, tx, params)
	if err != nil {
		return nil, fmt.Errorf("omnibox: recording a batch's outcome: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("omnibox: recording a batch's outcome: commit: %w", err)
	}
	return res, nil
}

// publishResult is what the publisher did with a batch.
type publishResult struct {
	delivered []int64
	failed    []failedPublish
	// failedKeys counts the distinct keys (an event without a key counts
	// alone) whose publication failed.
	failedKeys int
	// released are events not tried, or not tried alone, because an earlier
	// event of their key failed or the broker looked down.
	released []int64
	err      error
}

type failedPublish struct {
	ev  ClaimedEvent
	err error
}

// isolateProbes is how many failed single-event publishes in a row, with none
// succeeding, end the isolation of a failed batch: the broker is down.
const isolateProbes = 3

// publish publishes the claimed events with one Publish call per topic, each
// in claim order (so per-key order holds within a topic). When a call fails,
// its events are published one at a time to tell the events that fail from
// those that do not: keys are taken in random order (so a few poison events
// at the head cannot pass for a broker outage every time), the events of a
// key in order, and a key's events after its first failure are not tried.
// Three failures in a row with no success stop it: the broker is down.
func (r *Relay) publish(claimed []ClaimedEvent) publishResult {
	var (
		res     publishResult
		topics  []string
		byTopic = make(map[string][]ClaimedEvent)
	)
	for _, ev := range claimed {
		if _, ok := byTopic[ev.Topic]; !ok {
			topics = append(topics, ev.Topic)
		}
		byTopic[ev.Topic] = append(byTopic[ev.Topic], ev)
	}
	res.delivered = make([]int64, 0, len(claimed))
	failedKeys := make(map[string]bool)
	down := false
	for _, topic := range topics {
		events := byTopic[topic]
		if down {
			for _, ev := range events {
				res.released = append(res.released, ev.Seq)
			}
			continue
		}
		msgs := make([]*message.Message, len(events))
		for j, ev := range events {
			msgs[j] = ToMessage(ev.Event)
		}
		err := r.publisher.Publish(topic, msgs...)
		if err == nil {
			for _, ev := range events {
				res.delivered = append(res.delivered, ev.Seq)
			}
			continue
		}
		err = fmt.Errorf("omnibox: publishing %d event(s) to topic %q: %w", len(msgs), topic, err)
		if res.err == nil {
			res.err = err
		}
		if len(events) == 1 {
			res.failed = append(res.failed, failedPublish{ev: events[0], err: err})
			failedKeys[keyOf(events[0])] = true
			down = len(res.delivered) == 0 && len(failedKeys) >= isolateProbes
			continue
		}
		down = r.isolate(topic, events, &res, failedKeys)
	}
	res.failedKeys = len(failedKeys)
	return res
}

// isolate publishes events of a failed Publish call one at a time; see
// publish. It reports whether the broker looks down.
func (r *Relay) isolate(topic string, events []ClaimedEvent, res *publishResult, failedKeys map[string]bool) bool {
	var keys []string
	byKey := make(map[string][]ClaimedEvent)
	for _, ev := range events {
		k := keyOf(ev)
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], ev)
	}
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	failuresInARow, down := 0, false
	for _, k := range keys {
		for i, ev := range byKey[k] {
			if down || failedKeys[k] {
				res.released = append(res.released, ev.Seq)
				continue
			}
			if err := r.publisher.Publish(topic, ToMessage(ev.Event)); err != nil {
				res.failed = append(res.failed, failedPublish{ev: ev, err: fmt.Errorf("omnibox: publishing event %q to topic %q: %w", ev.ID, topic, err)})
				failedKeys[k] = true
				failuresInARow++
				down = len(res.delivered) == 0 && failuresInARow >= isolateProbes
				for _, later := range byKey[k][i+1:] {
					res.released = append(res.released, later.Seq)
				}
				break
			}
			res.delivered = append(res.delivered, ev.Seq)
			failuresInARow = 0
		}
	}
	return down
}

// keyOf returns the ordering key of an event: its key, or for an event
// without one a name of its own.
func keyOf(ev ClaimedEvent) string {
	if ev.Key != "" {
		return "k:" + ev.Key
	}
	return "s:" + strconv.FormatInt(ev.Seq, 10)
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
