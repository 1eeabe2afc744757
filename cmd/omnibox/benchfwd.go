package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	watermillsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// The Forwarder baseline's tables: watermill-sql's messages and offsets
// tables for the forwarder topic.
const (
	benchFwdTopic          = "omnibox_bench_fwd"
	benchFwdMessagesTable  = "omnibox_bench_wm_messages"
	benchFwdOffsetsTable   = "omnibox_bench_wm_offsets"
	benchFwdDrainTimeout   = 10 * time.Minute
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

// forwarderDrain is the Watermill baseline of drain: n messages written with
// forwarder.NewPublisher over a watermill-sql publisher (transactions of
// benchFillTx, as fill does), then a Forwarder reading them with a
// watermill-sql subscriber and publishing them to a GoChannel, timed from
// its start until the GoChannel subscriber has received all n: messages/s.
func (b *bench) forwarderDrain(ctx context.Context, t *benchTarget, n int) (float64, error) {
	env, err := t.fresh(ctx)
	if err != nil {
		return 0, err
	}
	defer env.close()
	schema, offsets, err := forwarderAdapters(t)
	if err != nil {
		return 0, err
	}
	logger := watermill.NopLogger{}
	sub, err := watermillsql.NewSubscriber(watermillsql.BeginnerFromStdSQL(env.db), watermillsql.SubscriberConfig{
		SchemaAdapter:  schema,
		OffsetsAdapter: offsets,
		PollInterval:   100 * time.Millisecond,
	}, logger)
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(benchFwdTopic); err != nil {
		return 0, fmt.Errorf("initializing watermill-sql tables: %w", err)
	}

	// Fill.
	msgs := make([]*message.Message, 0, benchFillTx)
	for done := 0; done < n; done += len(msgs) {
		msgs = msgs[:0]
		for i := done; i < min(n, done+benchFillTx); i++ {
			msg := message.NewMessage(watermill.NewUUID(), b.payload)
			msg.Metadata.Set("key", strconv.Itoa(i%1000))
			msgs = append(msgs, msg)
		}
		tx, err := env.db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		pub, err := watermillsql.NewPublisher(watermillsql.TxFromStdSQL(tx), watermillsql.PublisherConfig{SchemaAdapter: schema}, logger)
		if err == nil {
			err = forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: benchFwdTopic}).Publish(benchTopic, msgs...)
		}
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			return 0, fmt.Errorf("fill: %w", errors.Join(err, ignoreTxDone(tx.Rollback())))
		}
	}

	// The destination: a GoChannel and a subscriber that counts.
	ch := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: int64(benchBatch)}, logger)
	defer ch.Close()
	out, err := ch.Subscribe(context.WithoutCancel(ctx), benchTopic)
	if err != nil {
		return 0, err
	}
	var received atomic.Int64
	all := make(chan struct{})
	go func() {
		for m := range out {
			m.Ack()
			if received.Add(1) == int64(n) {
				close(all)
			}
		}
	}()

	fwd, err := forwarder.NewForwarder(sub, ch, logger, forwarder.Config{ForwarderTopic: benchFwdTopic})
	if err != nil {
		return 0, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- fwd.Run(runCtx) }()
	select {
	case <-all:
	case err := <-runErr:
		return 0, fmt.Errorf("forwarder stopped after %d of %d messages: %v", received.Load(), n, err)
	case <-time.After(benchFwdDrainTimeout):
		return 0, fmt.Errorf("forwarder forwarded %d of %d messages in %s", received.Load(), n, benchFwdDrainTimeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	elapsed := time.Since(start)
	cancel()
	_ = fwd.Close()
	<-runErr
	return float64(n) / elapsed.Seconds(), nil
}

func ignoreTxDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}
