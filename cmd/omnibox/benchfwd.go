package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
)

// The Forwarder baseline's tables: watermill-sql's messages and offsets
// tables for the forwarder topic.
const (
	benchFwdTopic          = "omnibox_bench_fwd"
	benchFwdMessagesTable  = "omnibox_bench_wm_messages"
	benchFwdOffsetsTable   = "omnibox_bench_wm_offsets"
	benchFwdFillTx         = 1000 // messages per fill transaction
	benchFwdSubscribeBatch = benchBatch
)

// forwarderAdapters returns watermill-sql's default schema and offsets
// adapters for t's dialect, naming the benchmark's own tables.
func forwarderAdapters(t *benchTarget) (watermillsql.SchemaAdapter, watermillsql.OffsetsAdapter, error) {
	switch t.dialect {
	case "postgres":
		msgs, offs := benchSchema+"."+benchFwdMessagesTable, benchSchema+"."+benchFwdOffsetsTable
		return watermillsql.DefaultPostgreSQLSchema{
				GenerateMessagesTableName: func(string) string { return msgs },
				SubscribeBatchSize:        benchFwdSubscribeBatch,
			}, watermillsql.DefaultPostgreSQLOffsetsAdapter{
				GenerateMessagesOffsetsTableName: func(string) string { return offs },
			}, nil
	case "mysql":
		return watermillsql.DefaultMySQLSchema{
				GenerateMessagesTableName: func(string) string { return benchFwdMessagesTable },
				SubscribeBatchSize:        benchFwdSubscribeBatch,
			}, watermillsql.DefaultMySQLOffsetsAdapter{
				GenerateMessagesOffsetsTableName: func(string) string { return benchFwdOffsetsTable },
			}, nil
	}
	return nil, nil, fmt.Errorf("the Forwarder baseline supports PostgreSQL and MySQL, not %s", t.name)
}

// fwdResult is one Forwarder drain: messages/s, and how many it forwarded
// (fewer than asked when it was stopped at -forwarder-budget).
type fwdResult struct {
	forwarded int
	rate      float64
}

// forwarderDrain is the Watermill baseline of drain: n messages (the same
// payload and keys as the events of drain) written with
// forwarder.NewPublisher over a watermill-sql publisher in transactions of
// benchFwdFillTx (not timed), then a Forwarder reading them with a
// watermill-sql subscriber and publishing them to broker, timed from its
// start until its Publish calls have returned for all n, or until
// -forwarder-budget has passed.
func (b *bench) forwarderDrain(ctx context.Context, t *benchTarget, broker string, n int) (fwdResult, error) {
	var none fwdResult
	env, err := t.fresh(ctx, freshOptions{})
	if err != nil {
		return none, err
	}
	defer env.close()
	schema, offsets, err := forwarderAdapters(t)
	if err != nil {
		return none, err
	}
	logger := watermill.NopLogger{}
	sub, err := watermillsql.NewSubscriber(watermillsql.BeginnerFromStdSQL(env.db), watermillsql.SubscriberConfig{
		SchemaAdapter:  schema,
		OffsetsAdapter: offsets,
		PollInterval:   100 * time.Millisecond,
	}, logger)
	if err != nil {
		return none, err
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(benchFwdTopic); err != nil {
		return none, fmt.Errorf("initializing watermill-sql tables: %w", err)
	}
	pub, topic, closePub, err := b.publisher(ctx, broker)
	if err != nil {
		return none, err
	}
	defer closePub()

	// Fill.
	err = nil
	pprof.Do(ctx, pprof.Labels("bench", "fill"), func(ctx context.Context) {
		msgs := make([]*message.Message, 0, benchFwdFillTx)
		for done := 0; done < n && err == nil; done += len(msgs) {
			msgs = msgs[:0]
			for i := done; i < min(n, done+benchFwdFillTx); i++ {
				msg := message.NewMessage(watermill.NewUUID(), b.payload)
				msg.Metadata.Set(omnibox.MetadataKey, strconv.Itoa(i%b.cfg.keys))
				msgs = append(msgs, msg)
			}
			var tx *sql.Tx
			if tx, err = env.db.BeginTx(ctx, nil); err != nil {
				return
			}
			var sqlPub *watermillsql.Publisher
			sqlPub, err = watermillsql.NewPublisher(watermillsql.TxFromStdSQL(tx), watermillsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err == nil {
				err = forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: benchFwdTopic}).Publish(topic, msgs...)
			}
			if err == nil {
				err = tx.Commit()
			}
			if err != nil {
				err = fmt.Errorf("fill: %w", errors.Join(err, ignoreTxDone(tx.Rollback())))
			}
		}
	})
	if err != nil {
		return none, err
	}

	counted := &countingPublisher{Publisher: pub}
	fwd, err := forwarder.NewForwarder(sub, counted, logger, forwarder.Config{ForwarderTopic: benchFwdTopic})
	if err != nil {
		return none, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	runErr := make(chan error, 1)
	go pprof.Do(runCtx, pprof.Labels("bench", "forwarder"), func(ctx context.Context) { runErr <- fwd.Run(ctx) })
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	last, lastProgress := int64(0), start
	for counted.msgs.Load() < int64(n) {
		now := time.Now()
		if now.Sub(start) > b.cfg.fwdBudget {
			break
		}
		if got := counted.msgs.Load(); got > last {
			last, lastProgress = got, now
		} else if now.Sub(lastProgress) > benchStall {
			return none, fmt.Errorf("forwarder made no progress for %s: %d of %d messages forwarded", benchStall, got, n)
		}
		select {
		case <-tick.C:
		case err := <-runErr:
			return none, fmt.Errorf("forwarder stopped after %d of %d messages: %v", counted.msgs.Load(), n, err)
		case <-ctx.Done():
			return none, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	forwarded := int(min(counted.msgs.Load(), int64(n)))
	cancel()
	_ = fwd.Close()
	<-runErr
	return fwdResult{forwarded: forwarded, rate: float64(forwarded) / elapsed.Seconds()}, nil
}

func ignoreTxDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}
