package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/omnibox-go/omnibox"
)

// BenchmarkClaim measures the relay's claim path on store, for a dialect's
// benchmarks: each iteration begins a transaction with the relay's options,
// claims up to 100 events as a relay does (with a nonce, and a context with
// a 5s deadline, so that the store sets its server-side guards), commits,
// and gives the events back with Complete in a transaction of its own. The
// outbox holds 1000 events, spread over every partition. It reports the
// claim transaction alone as claim-µs/op.
func BenchmarkClaim(b *testing.B, db *sql.DB, store interface {
	omnibox.Inserter
	omnibox.RelayStore
},
) {
	b.Helper()
	ctx := b.Context()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Insert(ctx, tx, omnibox.InsertParams{Events: NumberedEvents(0, 1000)}); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	var claiming time.Duration
	i := 0
	for b.Loop() {
		i++
		owner := fmt.Sprintf("bench/%d", i)
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		events, err := tryClaim(callCtx, db, store, omnibox.ClaimParams{
			BlockOnDead: true, Lease: time.Minute, Limit: 100, Nonce: "bench-nonce", Owner: owner, Relay: "bench",
		})
		claiming += time.Since(start)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		if len(events) == 0 {
			cancel()
			b.Fatal("claim: no events")
		}
		_, err = tryComplete(callCtx, db, store, omnibox.CompleteParams{Owner: owner, Released: seqs(events)})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(claiming.Microseconds())/float64(b.N), "claim-µs/op")
}
