package omnibox

import (
	"sync/atomic"
)

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
