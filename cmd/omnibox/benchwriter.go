package main

import (
	"context"
	"database/sql"
	"errors"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// discardPublisher publishes nowhere; the relay that the "wake" writer
// variant wakes never runs.
type discardPublisher struct{}

func (discardPublisher) Publish(string, ...*message.Message) error { return nil }
func (discardPublisher) Close() error                              { return nil }

// writer measures the writers' commit rate: b.cfg.writers goroutines each
// commit business transactions (one omnibox_bench_users row each) through
// Outbox.InTx as fast as they can for -writer-duration, after a warm-up of
// a tenth of it (at least 200 ms) that is not counted: commits/s. No relay
// runs. The variant says what else each transaction does:
//
//	business   nothing: the baseline (a)
//	outbox     writes one outbox event (b)
//	wake       (b), and the Outbox wakes a relay in-process on commit
//	           (WakeOnCommit; the relay is not running, so a channel send)
//	notify-tx  (b), and NOTIFY in the transaction by the store
//	           (postgres.Config.NotifyChannel) (c); a Listener listens
//	notifier   (b), and a coalescing postgres.Notifier registered with
//	           WakeOnCommit sends NOTIFY outside the transactions (d); a
//	           Listener listens
func (b *bench) writer(ctx context.Context, t *benchTarget, variant string) (float64, error) {
	env, err := t.fresh(ctx, freshOptions{notifyInTx: variant == "notify-tx"})
	if err != nil {
		return 0, err
	}
	defer env.close()
	outbox, err := omnibox.New(env.store, &omnibox.Config{})
	if err != nil {
		return 0, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	switch variant {
	case "wake":
		relay, err := omnibox.NewRelay(env.db, env.store, discardPublisher{}, &omnibox.RelayConfig{Logger: b.logger})
		if err != nil {
			return 0, err
		}
		if err := outbox.WakeOnCommit(relay); err != nil {
			return 0, err
		}
	case "notify-tx", "notifier":
		if variant == "notifier" {
			notifier, err := postgres.NewNotifier(env.db, &postgres.NotifierConfig{Channel: benchNotifyChannel})
			if err != nil {
				return 0, err
			}
			if err := outbox.WakeOnCommit(notifier); err != nil {
				return 0, err
			}
			wg.Go(func() { _ = notifier.Run(runCtx) })
		}
		if err := startListener(runCtx, t, &countingWaker{}, &wg); err != nil {
			return 0, err
		}
	}
	withEvent := variant != "business"

	var (
		next    atomic.Int64
		commits atomic.Int64
		writers sync.WaitGroup
		errsMu  sync.Mutex
		errs    []error
	)
	warmUp := max(b.cfg.writerFor/10, 200*time.Millisecond)
	start := time.Now()
	end := start.Add(warmUp + b.cfg.writerFor)
	for range b.cfg.writers {
		writers.Go(func() {
			pprof.Do(ctx, pprof.Labels("bench", "writer"), func(ctx context.Context) {
				for time.Now().Before(end) {
					id := "user-" + strconv.FormatInt(next.Add(1), 10)
					err := outbox.InTx(ctx, env.db, nil, func(ctx context.Context, tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, env.insertUser, id, id+"@example.com"); err != nil {
							return err
						}
						if !withEvent {
							return nil
						}
						return outbox.WriteTx(ctx, tx, omnibox.Event{Topic: benchTopic, Key: id, Payload: b.payload})
					})
					if err != nil {
						errsMu.Lock()
						errs = append(errs, err)
						errsMu.Unlock()
						return
					}
					commits.Add(1)
				}
			})
		})
	}
	time.Sleep(warmUp)
	atWarm, warmAt := commits.Load(), time.Now()
	writers.Wait()
	atEnd, endAt := commits.Load(), time.Now()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(atEnd-atWarm) / endAt.Sub(warmAt).Seconds(), nil
}
