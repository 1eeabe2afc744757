package omnibox

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

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
