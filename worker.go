package omnibox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
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

type relayCounters struct {
	batches        atomic.Int64
	breakerOpenNow atomic.Bool
	breakerOpens   atomic.Int64
	dead           atomic.Int64
	failures       atomic.Int64
	givenUp        atomic.Int64
	idConflicts    atomic.Int64
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
	// GivenUp counts calls to the database or the publisher that had not
	// returned by their deadline ([RelayConfig.DatabaseTimeout],
	// [RelayConfig.PublishTimeout]) and were given up.
	GivenUp int64
	// IDConflicts counts claims refused because another live process uses
	// this relay's ID ([ErrRelayIDInUse]).
	IDConflicts int64
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
		nonce:     newNonce(),
		retryLog:  newLogLimiter(retryLogBurst, retryLogEvery),
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
		GivenUp:      r.stats.givenUp.Load(),
		IDConflicts:  r.stats.idConflicts.Load(),
		LostLeases:   r.stats.lostLease.Load(),
		Published:    r.stats.published.Load(),
		Purged:       r.stats.purged.Load(),
		Retries:      r.stats.retries.Load(),
	}
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

// relayBatch claims, publishes and records one batch. The error is the
// database's; what the publisher did is in the outcome. Once a batch is
// claimed, it is finished even if ctx ends meanwhile, inside the lease: the
// claim has DatabaseTimeout, the publishing PublishTimeout after it, and
// the record of the outcome what is left of the lease.
func (r *Relay) relayBatch(ctx context.Context, l *lane) (batchOutcome, error) {
	owner := l.prefix + strconv.FormatInt(r.batchSeq.Add(1), 10)
	start := time.Now()
	claimed, err := r.claim(ctx, l, owner)
	if err != nil || len(claimed) == 0 {
		return batchOutcome{}, err
	}
	// From here on the batch is ours: finish it even when ctx ends.
	ctx = context.WithoutCancel(ctx)
	res := r.publish(ctx, claimed, start.Add(r.config.DatabaseTimeout+r.config.PublishTimeout))
	out := batchOutcome{claimed: len(claimed), err: res.err}
	params := CompleteParams{Owner: owner, Delivered: res.delivered, Released: res.released}
	if res.err != nil {
		params.ReleaseError = cleanError(res.err, 2000)
	}
	// A batch of which nothing was published tells of the broker, not of
	// the events, when a failure said the broker is unavailable, or when
	// failures of unknown cause hit two keys or more or came while the
	// breaker is open: such failures cost no attempt. Failures the broker
	// gave for good (ErrRejected) are always charged.
	// A failure of unknown cause on one key alone is charged, and still
	// counts towards the breaker. A batch with a refusal for good is not an
	// outage: the broker (or the publisher's own checks) judged an event, and
	// what was held back behind it says nothing of the broker.
	nothing := len(res.delivered) == 0 && res.failedKeys > 0
	spare := nothing && (res.unavailable || res.failedKeys > 1 || r.breakerIsOpen())
	out.brokerDown = nothing && !res.has(failureRejected) && (spare || res.has(failureUnknown))
	for _, f := range res.failed {
		if spare && f.class != failureRejected {
			params.Released = append(params.Released, f.ev.Seq)
			continue
		}
		fe := FailedEvent{Seq: f.ev.Seq, Error: cleanError(f.err, 2000)}
		if f.ev.Attempts+1 >= r.config.MaxAttempts {
			params.Dead = append(params.Dead, fe)
		} else {
			fe.Delay = backoff(r.config.RetryMinDelay, r.config.RetryMaxDelay, f.ev.Attempts+1)
			params.Retry = append(params.Retry, fe)
		}
	}
	done, err := r.complete(ctx, params, start.Add(r.config.Lease))
	if err != nil {
		// The published events' lease will expire and they will be published
		// again: at-least-once holds.
		return out, err
	}
	r.recorded(ctx, res, params, done, &out)
	return out, nil
}

// recorded counts and logs what became of a batch whose outcome was written.
func (r *Relay) recorded(ctx context.Context, res publishResult, params CompleteParams, done *CompleteResult, out *batchOutcome) {
	log := r.config.Logger
	if lost := len(res.delivered) - done.Delivered; lost > 0 {
		r.stats.lostLease.Add(int64(lost))
		log.WarnContext(ctx, "omnibox relay lost the lease on published events; they may be published twice (publishing took longer than RelayConfig.Lease, or another process runs with the same RelayConfig.ID)",
			slog.String("relay", r.config.ID), slog.Int("events", lost))
	}
	out.published = done.Delivered
	r.stats.published.Add(int64(done.Delivered))
	r.stats.retries.Add(int64(len(params.Retry)))
	r.stats.dead.Add(int64(len(params.Dead)))
	for _, f := range params.Retry {
		if ok, suppressed := r.retryLog.allow(); ok {
			log.WarnContext(ctx, "omnibox relay failed to publish an event; it will be retried, its key waiting behind it",
				slog.String("relay", r.config.ID), slog.Int64("seq", f.Seq), slog.Duration("retry_in", f.Delay),
				slog.Int("max_attempts", r.config.MaxAttempts), slog.String("error", f.Error), slog.Int("suppressed", suppressed))
		}
	}
	for _, f := range params.Dead {
		log.ErrorContext(ctx, "omnibox relay gave up on an event: it is dead (list, requeue or discard it with `omnibox dead` or the store's dead-letter methods)",
			slog.String("relay", r.config.ID), slog.Int64("seq", f.Seq), slog.Int("attempts", r.config.MaxAttempts), slog.String("error", f.Error))
	}
	if res.err == nil {
		r.stats.batches.Add(1)
	}
}

// claim claims a batch within DatabaseTimeout.
func (r *Relay) claim(ctx context.Context, l *lane, owner string) ([]ClaimedEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, r.config.DatabaseTimeout)
	defer cancel()
	params := ClaimParams{
		BlockOnDead: r.config.OnDead == DeadBlocksKey,
		Lease:       r.config.Lease,
		Limit:       r.config.BatchSize,
		Nonce:       r.nonce,
		Owner:       owner,
		OwnerPrefix: r.ownerPrefix(*l),
		Relay:       l.id,
		Restart:     l.restart,
	}
	events, err := within(r, ctx, "claim", func(ctx context.Context) ([]ClaimedEvent, error) {
		return r.claimOnce(ctx, params)
	})
	if err != nil {
		return nil, err
	}
	l.restart = false
	if r.idConflict.CompareAndSwap(true, false) {
		r.config.Logger.InfoContext(ctx, "omnibox relay claims again: no other live process uses its ID", slog.String("relay", r.config.ID))
	}
	return events, nil
}

func (r *Relay) claimOnce(ctx context.Context, params ClaimParams) ([]ClaimedEvent, error) {
	tx, err := r.db.BeginTx(ctx, r.txOptions)
	if err != nil {
		return nil, fmt.Errorf("omnibox: claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := r.store.Claim(ctx, tx, params)
	if err != nil {
		return nil, fmt.Errorf("omnibox: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("omnibox: claim: commit: %w", err)
	}
	return res.Events, nil
}

// idInUse records a claim refused because another live process uses this
// relay's ID and returns how long to wait before claiming again.
func (r *Relay) idInUse(ctx context.Context, log *slog.Logger, err error) time.Duration {
	r.stats.idConflicts.Add(1)
	if r.idConflict.CompareAndSwap(false, true) {
		log.ErrorContext(ctx, "omnibox relay stops claiming: another live process runs with the same RelayConfig.ID, and two relays with one ID take each other's claims (duplicates); give each relay process an ID of its own. This relay claims again once the other has stopped for a lease",
			slog.Any("error", err))
	}
	return max(r.config.PollInterval, r.config.Lease/4)
}

// completeAttempts is how many times the outcome of a batch is written before
// the relay gives up on it (and the batch is published again after its lease):
// a deadlock or a dropped connection must not turn a published batch into
// duplicates.
const completeAttempts = 4

// complete records the outcome of a batch, retrying a few times while the
// lease lasts, each attempt within DatabaseTimeout.
func (r *Relay) complete(ctx context.Context, params CompleteParams, leaseEnd time.Time) (*CompleteResult, error) {
	var errs []error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, r.config.DatabaseTimeout)
		res, err := within(r, actx, "recording a batch's outcome", func(ctx context.Context) (*CompleteResult, error) {
			return r.completeOnce(ctx, params)
		})
		cancel()
		if err == nil {
			return res, nil
		}
		errs = append(errs, err)
		wait := backoff(10*time.Millisecond, time.Second, attempt)
		if attempt == completeAttempts || time.Now().Add(wait+r.config.DatabaseTimeout).After(leaseEnd) {
			return nil, errors.Join(errs...)
		}
		// Even when the relay is stopping: the batch is published, and
		// recording it saves republishing it.
		time.Sleep(wait)
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
