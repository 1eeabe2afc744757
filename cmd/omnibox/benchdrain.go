package main

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
)

// fill writes n events (topic, key i mod -keys, the payload) into env's
// outbox through the store's Insert: benchFillChunk events per call (a few
// multi-row INSERTs), benchFillTx per transaction, benchFillWorkers
// transactions at a time. It is not timed.
func (b *bench) fill(ctx context.Context, env *benchEnv, topic string, n int) error {
	var (
		next atomic.Int64 // the first event of the next transaction
		wg   sync.WaitGroup
		errs = make([]error, benchFillWorkers)
	)
	now := time.Now().UTC()
	for w := range benchFillWorkers {
		wg.Go(func() {
			pprof.Do(ctx, pprof.Labels("bench", "fill"), func(ctx context.Context) {
				events := make([]omnibox.Event, 0, benchFillChunk)
				for errs[w] == nil {
					first := int(next.Add(benchFillTx) - benchFillTx)
					if first >= n {
						return
					}
					errs[w] = b.fillTx(ctx, env, topic, first, min(n, first+benchFillTx), now, events)
				}
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	return nil
}

// fillTx writes events [first, end) in one transaction.
func (b *bench) fillTx(ctx context.Context, env *benchEnv, topic string, first, end int, now time.Time, events []omnibox.Event) (err error) {
	tx, err := env.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreTxDone(tx.Rollback()))
		}
	}()
	for done := first; done < end; done += len(events) {
		events = events[:0]
		for i := done; i < min(end, done+benchFillChunk); i++ {
			id, err := omnibox.NewEventID()
			if err != nil {
				return err
			}
			events = append(events, omnibox.Event{ID: id, Topic: topic, Key: strconv.Itoa(i % b.cfg.keys), Payload: b.payload, CreatedAt: now})
		}
		if err := env.store.Insert(ctx, tx, omnibox.InsertParams{Events: events}); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// timedStore wraps a store to time the relays' Claim and Complete calls.
type timedStore struct {
	demoStore
	claims        atomic.Int64
	emptyClaims   atomic.Int64
	claimNanos    atomic.Int64
	completeNanos atomic.Int64
}

func (s *timedStore) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	start := time.Now()
	res, err := s.demoStore.Claim(ctx, tx, params)
	s.claimNanos.Add(int64(time.Since(start)))
	s.claims.Add(1)
	if err == nil && len(res.Events) == 0 {
		s.emptyClaims.Add(1)
	}
	return res, err
}

func (s *timedStore) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	start := time.Now()
	res, err := s.demoStore.Complete(ctx, tx, params)
	s.completeNanos.Add(int64(time.Since(start)))
	return res, err
}

// drainResult is one timed drain: its rate and where the relays' time went.
type drainResult struct {
	rate float64 // events/s
	// Shares of the lanes' wall time (elapsed × relays × Concurrency) spent in the
	// store's Claim, the publisher's Publish and the store's Complete; the
	// rest is transaction begin/commit, the relay's own work and idling.
	claimShare, publishShare, completeShare float64
	batch                                   float64 // events per non-empty claim
	emptyClaims                             float64 // claims that found nothing (the claim lock was held, or no free partition)
	fill                                    time.Duration
}

func (r drainResult) breakdown() string {
	return fmt.Sprintf("%.0f events/claim, %.0f empty claims; time in claim %.0f %%, publish %.0f %%, complete %.0f %%; filled in %s",
		r.batch, r.emptyClaims, 100*r.claimShare, 100*r.publishShare, 100*r.completeShare, r.fill.Round(100*time.Millisecond))
}

func (r drainResult) record(s *benchSamples, k benchKey, run int) {
	s.add(k, run, r.rate)
	for metric, v := range map[string]float64{
		"drain claim share": r.claimShare, "drain publish share": r.publishShare, "drain complete share": r.completeShare,
		"drain batch": r.batch, "drain empty claims": r.emptyClaims,
	} {
		s.add(benchKey{k.db, k.broker, metric, k.variant, k.n}, run, v)
	}
}

// drain fills a backlog of n events on fresh tables, then times relays
// separate Relays (distinct IDs, default settings but BatchSize) running
// together until they have published and deleted all n events.
func (b *bench) drain(ctx context.Context, t *benchTarget, broker string, n int, k drainCase) (drainResult, error) {
	relays := k.relays
	env, err := t.fresh(ctx, freshOptions{})
	if err != nil {
		return drainResult{}, err
	}
	defer env.close()
	pub, topic, closePub, err := b.publisher(ctx, broker)
	if err != nil {
		return drainResult{}, err
	}
	defer closePub()
	fillStart := time.Now()
	if err := b.fill(ctx, env, topic, n); err != nil {
		return drainResult{}, err
	}
	fillTime := time.Since(fillStart)
	store := &timedStore{demoStore: env.store}
	counted := &countingPublisher{Publisher: pub}
	rs := make([]*omnibox.Relay, relays)
	for i := range rs {
		rs[i], err = omnibox.NewRelay(env.db, store, counted, &omnibox.RelayConfig{
			BatchSize:   b.cfg.batch,
			Concurrency: k.lanes,
			ID:          fmt.Sprintf("bench-%d-%d-%d-%d", n, relays, k.lanes, i+1),
			Logger:      b.logger,
		})
		if err != nil {
			return drainResult{}, err
		}
	}
	published := func() int64 {
		var sum int64
		for _, r := range rs {
			sum += r.Stats().Published
		}
		return sum
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for _, r := range rs {
		wg.Go(func() {
			pprof.Do(runCtx, pprof.Labels("bench", "relay"), func(ctx context.Context) { _ = r.Run(ctx) })
		})
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	last, lastProgress := int64(0), start
	for {
		got := published()
		if got >= int64(n) {
			break
		}
		now := time.Now()
		if got > last {
			last, lastProgress = got, now
		} else if now.Sub(lastProgress) > benchStall {
			cancel()
			wg.Wait()
			return drainResult{}, fmt.Errorf("no progress for %s: %d of %d events published", benchStall, got, n)
		}
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			return drainResult{}, ctx.Err()
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	if got := published(); got != int64(n) {
		return drainResult{}, fmt.Errorf("relays published %d events, want %d", got, n)
	}
	if pending, err := env.store.Pending(ctx, env.db); err != nil || pending != 0 {
		return drainResult{}, fmt.Errorf("after the drain the outbox holds %d events (%v), want 0", pending, err)
	}
	for _, r := range rs {
		if st := r.Stats(); st.Failures > 0 || st.LostLeases > 0 || st.Retries > 0 {
			fmt.Fprintf(b.progress, "bench: relay %s: %d failures, %d lost leases, %d retries\n", r.ID(), st.Failures, st.LostLeases, st.Retries)
		}
	}
	wall := float64(elapsed) * float64(relays*k.lanes)
	nonEmpty := store.claims.Load() - store.emptyClaims.Load()
	return drainResult{
		rate:          float64(n) / elapsed.Seconds(),
		claimShare:    float64(store.claimNanos.Load()) / wall,
		publishShare:  float64(counted.nanos.Load()) / wall,
		completeShare: float64(store.completeNanos.Load()) / wall,
		batch:         float64(n) / float64(max(nonEmpty, 1)),
		emptyClaims:   float64(store.emptyClaims.Load()),
		fill:          fillTime,
	}, nil
}

// dbCeiling fills a bare table of n rows (payload only) and times
// benchRawWorker workers claiming and deleting the oldest benchBatch rows at
// a time (SKIP LOCKED, reading the payloads) until it is empty: rows/s. No
// partitions, no leases, no publishing: an upper bound, not a target.
func (b *bench) dbCeiling(ctx context.Context, t *benchTarget, n int) (float64, error) {
	env, err := t.fresh(ctx, freshOptions{})
	if err != nil {
		return 0, err
	}
	defer env.close()
	const chunk = 2000
	args := make([]any, chunk)
	for i := range args {
		args[i] = b.payload
	}
	for done := 0; done < n; done += chunk {
		rows := min(chunk, n-done)
		if _, err := env.db.ExecContext(ctx, env.rawInsert(rows), args[:rows]...); err != nil {
			return 0, fmt.Errorf("fill: %w", err)
		}
	}
	var (
		deleted atomic.Int64
		wg      sync.WaitGroup
		errs    = make([]error, benchRawWorker)
	)
	start := time.Now()
	for w := range benchRawWorker {
		wg.Go(func() {
			for {
				k, err := env.rawClaimDelete(ctx)
				if err != nil {
					errs[w] = err
					return
				}
				if k == 0 {
					return
				}
				deleted.Add(int64(k))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if got := deleted.Load(); got != int64(n) {
		return 0, fmt.Errorf("deleted %d rows, want %d", got, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// brokerCeiling times a bare loop producing n messages to broker, benchBatch
// per call: for Kafka a franz-go client's ProduceSync (with
// publisher.DefaultKafkaOptions, as the relay's publisher), for a
// GoChannel its Publish: messages/s.
func (b *bench) brokerCeiling(ctx context.Context, broker string, n int) (float64, error) {
	if broker == "kafka" {
		return b.kafkaCeiling(n)
	}
	pub, topic, closePub, err := b.publisher(ctx, broker)
	if err != nil {
		return 0, err
	}
	defer closePub()
	batches := make([][]*message.Message, 0, (n+benchBatch-1)/benchBatch)
	for done := 0; done < n; done += benchBatch {
		batch := make([]*message.Message, 0, benchBatch)
		for i := done; i < min(n, done+benchBatch); i++ {
			id, err := omnibox.NewEventID()
			if err != nil {
				return 0, err
			}
			batch = append(batch, omnibox.ToMessage(omnibox.Event{ID: id, Topic: topic, Key: strconv.Itoa(i % b.cfg.keys), Payload: b.payload}))
		}
		batches = append(batches, batch)
	}
	start := time.Now()
	for _, batch := range batches {
		if err := pub.Publish(topic, batch...); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func (b *bench) kafkaCeiling(n int) (rate float64, err error) {
	topic, err := b.kafkaTopic()
	if err != nil {
		return 0, err
	}
	defer b.dropKafkaTopic(topic)
	// The raw loop: a franz-go client with the publisher's own settings,
	// producing each batch of records at once and waiting for them all, as
	// publisher.Kafka does without its checks, marshaling and error report.
	client, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.brokers...)}, publisher.DefaultKafkaOptions()...)...)
	if err != nil {
		return 0, fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()
	batches := make([][]*kgo.Record, 0, (n+benchBatch-1)/benchBatch)
	for done := 0; done < n; done += benchBatch {
		batch := make([]*kgo.Record, 0, benchBatch)
		for i := done; i < min(n, done+benchBatch); i++ {
			batch = append(batch, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i % b.cfg.keys)), Value: b.payload})
		}
		batches = append(batches, batch)
	}
	start := time.Now()
	for _, batch := range batches {
		ctx, cancel := context.WithTimeout(context.Background(), publisher.DefaultPublishTimeout)
		err := client.ProduceSync(ctx, batch...).FirstErr()
		cancel()
		if err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
