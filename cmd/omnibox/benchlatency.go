package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// latencyResult is one latency measurement: commit → publish latencies in
// milliseconds and the commit rate the writers achieved.
type latencyResult struct {
	achieved      float64 // events/s
	p50, p99, max float64 // ms
}

func (r latencyResult) record(s *benchSamples, db, broker, mode string, rate, run int) {
	for metric, v := range map[string]float64{
		"latency p50": r.p50, "latency p99": r.p99, "latency max": r.max, "latency achieved rate": r.achieved,
	} {
		s.add(benchKey{db, broker, metric, mode, rate}, run, v)
	}
}

// countingWaker counts wake-ups and passes them on to next, when set.
type countingWaker struct {
	n    atomic.Int64
	next omnibox.Waker
}

func (w *countingWaker) Notify() {
	w.n.Add(1)
	if w.next != nil {
		w.next.Notify()
	}
}

// startListener runs a postgres.Listener on benchNotifyChannel waking w, and
// returns once a test NOTIFY has come through (the LISTEN is in effect). The
// listener stops when ctx ends; wait for that on the returned WaitGroup.
func startListener(ctx context.Context, t *benchTarget, w omnibox.Waker, wg *sync.WaitGroup) error {
	counter := &countingWaker{next: w}
	l, err := postgres.NewListener(t.dsn, counter, &postgres.ListenerConfig{Channel: benchNotifyChannel})
	if err != nil {
		return err
	}
	wg.Go(func() { _ = l.Run(ctx) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := counter.n.Load()
		if _, err := t.db.ExecContext(ctx, `SELECT pg_notify($1, '')`, benchNotifyChannel); err != nil {
			return fmt.Errorf("test NOTIFY: %w", err)
		}
		for range 20 {
			time.Sleep(5 * time.Millisecond)
			if counter.n.Load() > before {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the listener received no NOTIFY in 10s")
		}
	}
}

// latency measures commit → publish latency: b.cfg.writers writers commit
// one event per transaction through Outbox.InTx, paced to rate events/s in
// all, for -latency-duration, while one relay (default settings but
// BatchSize) publishes them to broker. An event's latency runs from the
// return of its InTx to the return of the Publish call that published it.
// The relay learns of commits as mode says:
//
//	poll       only by polling (PollInterval, 100 ms)
//	wake       Outbox.WakeOnCommit(relay): in-process
//	notify     a postgres.Notifier registered with WakeOnCommit sends a
//	           coalesced NOTIFY outside the writers' transactions; the relay
//	           is woken only by a postgres.Listener, as in another process
//	notify-tx  the store NOTIFYs in each writer's transaction
//	           (postgres.Config.NotifyChannel); the relay is
//	           woken by a Listener
func (b *bench) latency(ctx context.Context, t *benchTarget, broker, mode string, rate int) (latencyResult, error) {
	env, err := t.fresh(ctx, freshOptions{notifyInTx: mode == "notify-tx"})
	if err != nil {
		return latencyResult{}, err
	}
	defer env.close()
	pub, topic, closePub, err := b.publisher(ctx, broker)
	if err != nil {
		return latencyResult{}, err
	}
	defer closePub()

	count := max(1, int(float64(rate)*b.cfg.latencyFor.Seconds()))
	ids := make([]string, count)
	index := make(map[string]int, count)
	for i := range ids {
		if ids[i], err = omnibox.NewEventID(); err != nil {
			return latencyResult{}, err
		}
		index[ids[i]] = i
	}
	committed := make([]int64, count) // UnixNano; each written by its writer only
	published := make([]atomic.Int64, count)
	var publishedN atomic.Int64
	counted := &countingPublisher{Publisher: pub, onPublished: func(msgs []*message.Message, at time.Time) {
		for _, m := range msgs {
			if i, ok := index[m.UUID]; ok && published[i].CompareAndSwap(0, at.UnixNano()) {
				publishedN.Add(1)
			}
		}
	}}

	outbox, err := omnibox.New(env.store, &omnibox.Config{})
	if err != nil {
		return latencyResult{}, err
	}
	relay, err := omnibox.NewRelay(env.db, env.store, counted, &omnibox.RelayConfig{BatchSize: b.cfg.batch, ID: "bench-latency", Logger: b.logger})
	if err != nil {
		return latencyResult{}, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	switch mode {
	case "wake":
		if err := outbox.WakeOnCommit(relay); err != nil {
			return latencyResult{}, err
		}
	case "notify", "notify-tx":
		if mode == "notify" {
			notifier, err := postgres.NewNotifier(env.db, &postgres.NotifierConfig{Channel: benchNotifyChannel})
			if err != nil {
				return latencyResult{}, err
			}
			if err := outbox.WakeOnCommit(notifier); err != nil {
				return latencyResult{}, err
			}
			wg.Go(func() { _ = notifier.Run(runCtx) })
		}
		if err := startListener(runCtx, t, relay, &wg); err != nil {
			return latencyResult{}, err
		}
	}
	wg.Go(func() {
		pprof.Do(runCtx, pprof.Labels("bench", "relay"), func(ctx context.Context) { _ = relay.Run(ctx) })
	})
	// Let the relay's first, empty claim pass.
	time.Sleep(200 * time.Millisecond)

	var (
		next    atomic.Int64
		writers sync.WaitGroup
		errsMu  sync.Mutex
		errs    []error
	)
	period := float64(time.Second) / float64(rate)
	start := time.Now()
	for range b.cfg.writers {
		writers.Go(func() {
			pprof.Do(ctx, pprof.Labels("bench", "writer"), func(ctx context.Context) {
				for {
					i := int(next.Add(1) - 1)
					if i >= count {
						return
					}
					time.Sleep(time.Until(start.Add(time.Duration(float64(i) * period))))
					err := outbox.InTx(ctx, env.db, nil, func(ctx context.Context, tx *sql.Tx) error {
						return outbox.WriteTx(ctx, tx, omnibox.Event{ID: ids[i], Topic: topic, Key: strconv.Itoa(i % b.cfg.keys), Payload: b.payload})
					})
					if err != nil {
						errsMu.Lock()
						errs = append(errs, err)
						errsMu.Unlock()
						return
					}
					committed[i] = time.Now().UnixNano()
				}
			})
		})
	}
	writers.Wait()
	if err := errors.Join(errs...); err != nil {
		return latencyResult{}, err
	}
	lastCommit := slices.Max(committed)
	achieved := float64(count) / time.Duration(lastCommit-start.UnixNano()).Seconds()
	if count == 1 {
		achieved = 0
	}
	last, lastProgress := publishedN.Load(), time.Now()
	for publishedN.Load() < int64(count) {
		if got := publishedN.Load(); got > last {
			last, lastProgress = got, time.Now()
		} else if time.Since(lastProgress) > benchStall {
			return latencyResult{}, fmt.Errorf("no progress for %s: %d of %d events published", benchStall, got, count)
		}
		time.Sleep(time.Millisecond)
	}
	lat := make([]time.Duration, count)
	for i := range lat {
		lat[i] = max(0, time.Duration(published[i].Load()-committed[i]))
	}
	slices.Sort(lat)
	toMS := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return latencyResult{
		achieved: achieved,
		p50:      toMS(percentile(lat, 50)),
		p99:      toMS(percentile(lat, 99)),
		max:      toMS(lat[len(lat)-1]),
	}, nil
}
