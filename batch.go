package omnibox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

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
	// Whose fault is a batch of which nothing was published? A refusal for
	// good (ErrRejected) is the event's: always charged, and the batch is
	// no outage, whatever was held back behind it. Failures the publisher
	// blamed on the broker (ErrUnavailable, a deadline), or of unknown cause
	// on two keys or more or while the breaker is open, are spared an
	// attempt and count towards the breaker. A failure of unknown cause on
	// one key alone is charged, and still counts towards the breaker.
	nothing := len(res.delivered) == 0 && len(res.failedKeys) > 0
	spare := nothing && (res.unavailable || len(res.failedKeys) > 1 || r.breakerIsOpen())
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
		log.ErrorContext(ctx, fmt.Sprintf("omnibox relay gave up on event seq %d: it is dead. Fix the cause, then requeue it with "+
			"`omnibox dead -dsn DSN requeue %d` (or drop it: `omnibox dead -dsn DSN discard %d`; see them all: `omnibox dead -dsn DSN list`), "+
			"or from code with the store's ListDead, Requeue and Discard", f.Seq, f.Seq, f.Seq),
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
