package omnibox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox/internal/nilcheck"
)

// Relay moves committed events from the outbox table to a Watermill
// publisher: it claims a batch, publishes it, and records the outcome only
// after the publisher returned, retrying until the broker takes each event
// (at-least-once delivery). Several relays, goroutines or processes, can run
// on one outbox: they share its partitions, so events of one key keep their
// order while different keys are relayed in parallel. Run it as a goroutine
// in the service that writes the events or as a separate process.
//
// Failures are handled at three levels. A failure of the broker itself (an
// error wrapping [ErrUnavailable], a publish past its deadline, or a batch of
// which nothing went through on several keys) charges no event an attempt and
// counts towards the circuit breaker ([RelayConfig.BreakerThreshold]), which
// pauses the relay. A failure that is the event's own (wrapping
// [ErrRejected], or one key failing while others are published) charges the
// event an attempt: it is retried after a backoff
// ([RelayConfig.RetryMinDelay]), later events of its key waiting behind it,
// until [RelayConfig.MaxAttempts] makes it dead, even when nothing else
// flows. Failures of the database are retried with backoff
// ([RelayConfig.MinBackoff]).
//
// Every call has a deadline inside the lease ([RelayConfig.DatabaseTimeout],
// [RelayConfig.PublishTimeout]); a call that does not return by then is
// given up, so a database or broker link that stops answering cannot hang
// the relay, and a batch cannot outlive its lease while the relay waits.
//
// What a fault can and cannot do: it can make the relay publish an event
// again (a crash or a lost acknowledgement after the broker stored it, a
// publish given up at its deadline that the broker had in fact stored, an
// outcome that could not be written); it cannot make the first delivery of
// an event come after the first delivery of a later event of its key, as
// long as the publisher keeps per-key prefix semantics ([MessageErrors]):
// the relay only ever sends a key's events from its oldest undelivered one
// on, in order.
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
	nonce     string      // this Relay's, recorded beside its ID (ClaimParams.Nonce)
	retryLog  *logLimiter // of the warnings about events to be retried
	// idConflict is set while claims are refused because another process
	// uses this relay's ID; the first refusal logs it.
	idConflict atomic.Bool
	closed     chan struct{}

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
	// restart marks the lane's claims until one succeeds: they replace a
	// live record of the lane's ID left by a predecessor (ClaimParams.Restart).
	restart bool
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
	return lane{index: i, id: id, prefix: id + "/", restart: true}
}

// NewRelay returns a relay claiming events through store on db and
// publishing them with publisher. config may not be nil; &RelayConfig{}
// takes the defaults.
//
// A nil db, store or publisher, or an interface holding a nil pointer (the
// result of a constructor whose error was ignored, such as a failed
// publisher.NewKafka), returns an error wrapping [ErrNilDB], [ErrNilStore]
// or [ErrNilPublisher] that names the type; a nil config [ErrNilConfig].
//
// Given a Watermill *gochannel.GoChannel (a test double) not configured with
// both BlockPublishUntilSubscriberAck and Persistent, it logs a warning: in
// that config a GoChannel reorders the events of a key and drops what is
// published before a subscriber exists.
func NewRelay(db *sql.DB, store RelayStore, publisher message.Publisher, config *RelayConfig) (*Relay, error) {
	const where = "omnibox: NewRelay"
	if err := cmp.Or(
		nilcheck.Check(where, "db", db, ErrNilDB),
		nilcheck.Check(where, "store", store, ErrNilStore),
		nilcheck.Check(where, "publisher", publisher, ErrNilPublisher),
	); err != nil {
		return nil, err
	}
	if config == nil {
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
		nonce:     newNonce(),
		retryLog:  newLogLimiter(retryLogBurst, retryLogEvery),
	}
	if o, ok := store.(RelayTxOptioner); ok {
		r.txOptions = o.RelayTxOptions()
	}
	if l, ok := store.(RelayConcurrencyLimiter); ok {
		r.config.Concurrency = max(1, min(r.config.Concurrency, l.RelayConcurrencyLimit()))
	}
	warnGoChannel(r.config.Logger, r.config.ID, publisher)
	return r, nil
}

// ID returns the relay's ID ([RelayConfig.ID] or the generated default).
func (r *Relay) ID() string { return r.config.ID }

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
// or released before Run returns, which bounds the wait: Run returns at
// most about one [RelayConfig.Lease] after ctx ends, even with the database
// or the broker hanging (calls given up at their deadline are left to end on
// their own). Errors of the database or the publisher are logged and
// retried, never returned: Run only returns an error when the relay is
// already running.
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
		out, err := r.relayBatch(ctx, &l)
		if l.takeover {
			l.takeover = false
			afterFirst()
		}
		var wait time.Duration
		wakeable := true
		switch {
		case err != nil && ctx.Err() != nil:
			// Stopping: the error is the cancellation.
		case errors.Is(err, ErrRelayIDInUse):
			wait = r.idInUse(ctx, log, err)
			wakeable = false
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
			// A batch went through (some of it at least; or its failures
			// were the events' own): there may be more to claim at once; a
			// full batch wakes another lane to claim beside this one.
			if out.published > 0 {
				r.brokerRecovered(ctx, log)
			}
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
			pctx, cancel := context.WithTimeout(ctx, r.config.DatabaseTimeout)
			n, err := within(r, pctx, "purge", func(ctx context.Context) (int, error) {
				return purger.Purge(ctx, r.db, r.config.PurgeBatchSize)
			})
			cancel()
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
		out, err := r.relayBatch(ctx, &l)
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
