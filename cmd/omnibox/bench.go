package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

type benchConfig struct {
	dsn      string
	backlogs []int
	runs     int
	brokers  []string // "gochannel", "kafka"
	payload  int
}

func parseBenchFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	fs := flag.NewFlagSet("omnibox bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &benchConfig{}
	var backlogs, broker string
	fs.StringVar(&c.dsn, "dsn", "", "database: postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH (a fresh temporary file is used); empty runs PostgreSQL at postgres://postgres@127.0.0.1:5432/test?sslmode=disable and MySQL/MariaDB at mysql://root@tcp(127.0.0.1:3306)/test")
	fs.StringVar(&backlogs, "backlogs", "10000,100000", "comma-separated backlog sizes (events) to drain, each at most 1000000")
	fs.IntVar(&c.runs, "runs", 3, "runs of each measurement; the median is reported")
	fs.StringVar(&broker, "broker", "both", "gochannel, kafka (in-process kfake, or $"+kafkatest.BrokersEnv+" when set) or both")
	fs.IntVar(&c.payload, "payload", 200, "event payload size in bytes")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(backlogs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1_000_000 {
			return nil, fmt.Errorf("bench: -backlogs: %q is not a number between 1 and 1000000", s)
		}
		c.backlogs = append(c.backlogs, n)
	}
	switch broker {
	case "gochannel", "kafka":
		c.brokers = []string{broker}
	case "both":
		c.brokers = []string{"gochannel", "kafka"}
	default:
		return nil, fmt.Errorf("bench: -broker must be gochannel, kafka or both, got %q", broker)
	}
	switch {
	case c.runs < 1 || c.runs > 100:
		return nil, fmt.Errorf("bench: -runs must be between 1 and 100, got %d", c.runs)
	case c.payload < 1 || c.payload > 100_000:
		return nil, fmt.Errorf("bench: -payload must be between 1 and 100000 bytes, got %d", c.payload)
	}
	return c, nil
}

const (
	benchTopic     = "omnibox.bench"
	benchBatch     = 500  // relay BatchSize and the raw loops' batch
	benchFillTx    = 1000 // events per fill transaction
	benchWriterTx  = 2000 // business transactions of the writer-cost measurement
	benchWriters   = 8
	benchPartition = 4
)

// benchKey names one measured quantity; samples holds one value per run.
type benchKey struct {
	db, broker, metric string
	n                  int
}

type benchSamples struct {
	mu     sync.Mutex
	order  []benchKey
	values map[benchKey][]float64
}

func (s *benchSamples) add(k benchKey, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.values[k]; !ok {
		s.order = append(s.order, k)
	}
	s.values[k] = append(s.values[k], v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// bench is one benchmark session.
type bench struct {
	cfg      *benchConfig
	brokers  []string // Kafka bootstrap addresses, when Kafka is measured
	logger   *slog.Logger
	payload  []byte
	progress io.Writer
	samples  *benchSamples
	topicN   atomic.Int64
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{
		cfg:      cfg,
		logger:   slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		payload:  bytes.Repeat([]byte{'x'}, cfg.payload),
		progress: stderr,
		samples:  &benchSamples{values: map[benchKey][]float64{}},
	}
	targets, err := openBenchTargets(ctx, cfg.dsn)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range targets {
			_ = t.close()
		}
	}()
	kafkaDesc := "not measured"
	if slices.Contains(cfg.brokers, "kafka") {
		if env := os.Getenv(kafkatest.BrokersEnv); env != "" {
			b.brokers = strings.Split(env, ",")
			kafkaDesc = "external, " + env
		} else {
			brokers, closeKafka, err := kafkatest.Start()
			if err != nil {
				return fmt.Errorf("bench: start in-process Kafka: %w", err)
			}
			defer closeKafka()
			b.brokers = brokers
			kafkaDesc = "in-process kfake (internal/kafkatest.Start)"
		}
	}

	fmt.Fprintf(stdout, "omnibox bench\n  command   %s\n", strings.Join(append([]string{"omnibox", "bench"}, args...), " "))
	fmt.Fprintf(stdout, "  effective -dsn=%q -backlogs=%s -runs=%d -broker=%s -payload=%d\n", cfg.dsn, joinInts(cfg.backlogs), cfg.runs, strings.Join(cfg.brokers, ","), cfg.payload)
	fmt.Fprintf(stdout, "  machine   %d CPUs (runtime.NumCPU), %s %s/%s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, t := range targets {
		fmt.Fprintf(stdout, "  database  %s %s\n", t.name, t.version)
	}
	fmt.Fprintf(stdout, "  kafka     %s\n", kafkaDesc)
	fmt.Fprintf(stdout, "  relay     one Relay, BatchSize %d, Drain; backlog filled with WriteTx in transactions of %d\n\n", benchBatch, benchFillTx)

	start := time.Now()
	for _, t := range targets {
		for run := range cfg.runs {
			if err := b.runOnce(ctx, t, run); err != nil {
				return fmt.Errorf("bench: %s, run %d: %w", t.name, run+1, err)
			}
		}
	}
	fmt.Fprintf(b.progress, "bench: done in %s\n", time.Since(start).Round(time.Second))
	return b.report(stdout, targets)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// runOnce takes one sample of every measurement on t. The measurements are
// interleaved, so that the ratios of a run compare figures taken close
// together in time.
func (b *bench) runOnce(ctx context.Context, t *benchTarget, run int) error {
	logf := func(format string, a ...any) {
		fmt.Fprintf(b.progress, "bench: %s run %d/%d: %s\n", t.name, run+1, b.cfg.runs, fmt.Sprintf(format, a...))
	}
	for _, n := range b.cfg.backlogs {
		v, err := b.dbCeiling(ctx, t, n)
		if err != nil {
			return fmt.Errorf("raw delete loop, %d rows: %w", n, err)
		}
		b.samples.add(benchKey{t.name, "-", "db ceiling", n}, v)
		logf("raw delete loop %d rows: %.0f rows/s", n, v)
		for _, broker := range b.cfg.brokers {
			v, err := b.brokerCeiling(broker, n)
			if err != nil {
				return fmt.Errorf("raw %s publish loop, %d messages: %w", broker, n, err)
			}
			b.samples.add(benchKey{t.name, broker, "broker ceiling", n}, v)
			logf("raw %s publish loop %d messages: %.0f msg/s", broker, n, v)
			v, err = b.drain(ctx, t, broker, n)
			if err != nil {
				return fmt.Errorf("drain to %s, %d events: %w", broker, n, err)
			}
			b.samples.add(benchKey{t.name, broker, "drain", n}, v)
			logf("drain %d events to %s: %.0f events/s", n, broker, v)
			if broker == "gochannel" && t.dialect != "sqlite" {
				v, err := b.forwarderDrain(ctx, t, n)
				if err != nil {
					return fmt.Errorf("watermill Forwarder drain, %d messages: %w", n, err)
				}
				b.samples.add(benchKey{t.name, broker, "forwarder drain", n}, v)
				logf("Watermill Forwarder drain %d messages to gochannel: %.0f msg/s", n, v)
			}
		}
	}
	for _, withOutbox := range []bool{false, true} {
		v, err := b.writer(ctx, t, withOutbox)
		if err != nil {
			return fmt.Errorf("writer cost (outbox %t): %w", withOutbox, err)
		}
		metric := "writer, no outbox"
		if withOutbox {
			metric = "writer, with outbox"
		}
		b.samples.add(benchKey{t.name, "-", metric, benchWriterTx}, v)
		logf("%s: %.0f tx/s", metric, v)
	}
	return nil
}

// fill writes n events into env's outbox with WriteTx, benchFillTx per
// transaction.
func (b *bench) fill(ctx context.Context, env *benchEnv, topic string, n int) error {
	outbox, err := omnibox.New(env.store, &omnibox.Config{})
	if err != nil {
		return err
	}
	events := make([]omnibox.Event, 0, benchFillTx)
	for done := 0; done < n; done += len(events) {
		events = events[:0]
		for i := done; i < min(n, done+benchFillTx); i++ {
			events = append(events, omnibox.Event{Topic: topic, Key: strconv.Itoa(i % 1000), Payload: b.payload})
		}
		if err := outbox.InTx(ctx, env.db, nil, func(ctx context.Context, tx *sql.Tx) error {
			return outbox.WriteTx(ctx, tx, events...)
		}); err != nil {
			return err
		}
	}
	return nil
}

// drain fills a backlog of n events on fresh tables and times Relay.Drain
// publishing it to broker. It returns events/s.
func (b *bench) drain(ctx context.Context, t *benchTarget, broker string, n int) (float64, error) {
	env, err := t.fresh(ctx)
	if err != nil {
		return 0, err
	}
	defer env.close()
	pub, topic, closePub, err := b.publisher(ctx, broker)
	if err != nil {
		return 0, err
	}
	defer closePub()
	if err := b.fill(ctx, env, topic, n); err != nil {
		return 0, fmt.Errorf("fill: %w", err)
	}
	relay, err := omnibox.NewRelay(env.db, env.store, pub, &omnibox.RelayConfig{BatchSize: benchBatch, Logger: b.logger})
	if err != nil {
		return 0, err
	}
	defer relay.Close()
	start := time.Now()
	got, err := relay.Drain(ctx)
	elapsed := time.Since(start)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("drained %d events, want %d", got, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// publisher returns a publisher to broker (for a GoChannel, with a
// subscriber goroutine acking every message), the topic to publish on (for
// Kafka, a new topic of benchPartition partitions), and a function that
// closes them (and deletes the Kafka topic).
func (b *bench) publisher(ctx context.Context, broker string) (message.Publisher, string, func(), error) {
	switch broker {
	case "gochannel":
		ch := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: int64(benchBatch)}, watermill.NopLogger{})
		msgs, err := ch.Subscribe(context.WithoutCancel(ctx), benchTopic)
		if err != nil {
			return nil, "", nil, err
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for m := range msgs {
				m.Ack()
			}
		}()
		return ch, benchTopic, func() { _ = ch.Close(); <-done }, nil
	case "kafka":
		topic := fmt.Sprintf("%s.%d.%d", benchTopic, time.Now().UnixNano(), b.topicN.Add(1))
		if err := createBenchTopic(b.brokers, topic); err != nil {
			return nil, "", nil, err
		}
		pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: b.brokers, Logger: b.logger})
		if err != nil {
			return nil, "", nil, err
		}
		return pub, topic, func() {
			_ = pub.Close()
			if err := deleteBenchTopic(b.brokers, topic); err != nil {
				fmt.Fprintf(b.progress, "bench: deleting topic %s: %v\n", topic, err)
			}
		}, nil
	}
	return nil, "", nil, fmt.Errorf("unknown broker %q", broker)
}

func benchAdminConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.ClientID = "omnibox-bench"
	config.Version = sarama.V2_8_0_0
	config.Admin.Timeout = 10 * time.Second
	return config
}

func createBenchTopic(brokers []string, topic string) (err error) {
	admin, err := sarama.NewClusterAdmin(brokers, benchAdminConfig())
	if err != nil {
		return fmt.Errorf("connecting to Kafka at %v: %w", brokers, err)
	}
	defer func() { err = errors.Join(err, admin.Close()) }()
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: benchPartition, ReplicationFactor: -1}, false); err != nil {
		return fmt.Errorf("creating topic %q: %w", topic, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		meta, err := admin.DescribeTopics([]string{topic})
		if err == nil && len(meta) == 1 && errors.Is(meta[0].Err, sarama.ErrNoError) && len(meta[0].Partitions) == benchPartition {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %q was created but did not show %d partitions in time (last error: %v)", topic, benchPartition, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func deleteBenchTopic(brokers []string, topic string) (err error) {
	admin, err := sarama.NewClusterAdmin(brokers, benchAdminConfig())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, admin.Close()) }()
	return admin.DeleteTopic(topic)
}

// dbCeiling fills a bare table of n rows and times a single worker deleting
// the oldest benchBatch rows at a time until it is empty: rows/s.
func (b *bench) dbCeiling(ctx context.Context, t *benchTarget, n int) (float64, error) {
	env, err := t.fresh(ctx)
	if err != nil {
		return 0, err
	}
	defer env.close()
	const chunk = 1000
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
	start := time.Now()
	deleted := 0
	for {
		res, err := env.db.ExecContext(ctx, env.rawDelete)
		if err != nil {
			return 0, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		if k == 0 {
			break
		}
		deleted += int(k)
	}
	elapsed := time.Since(start)
	if deleted != n {
		return 0, fmt.Errorf("deleted %d rows, want %d", deleted, n)
	}
	return float64(n) / elapsed.Seconds(), nil
}

// brokerCeiling times a bare loop publishing n messages to broker,
// benchBatch per Publish call: messages/s.
func (b *bench) brokerCeiling(broker string, n int) (float64, error) {
	ctx := context.Background()
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
			batch = append(batch, omnibox.ToMessage(omnibox.Event{ID: id, Topic: topic, Key: strconv.Itoa(i % 1000), Payload: b.payload}))
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

// writer runs benchWriterTx business transactions (one users row each, and
// with withOutbox one outbox event too) from benchWriters goroutines: tx/s.
func (b *bench) writer(ctx context.Context, t *benchTarget, withOutbox bool) (float64, error) {
	env, err := t.fresh(ctx)
	if err != nil {
		return 0, err
	}
	defer env.close()
	outbox, err := omnibox.New(env.store, &omnibox.Config{})
	if err != nil {
		return 0, err
	}
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		errsMu sync.Mutex
		errs   []error
	)
	start := time.Now()
	for range benchWriters {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > benchWriterTx {
					return
				}
				id := "user-" + strconv.FormatInt(i, 10)
				err := outbox.InTx(ctx, env.db, nil, func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, env.insertUser, id, id+"@example.com"); err != nil {
						return err
					}
					if !withOutbox {
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
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return benchWriterTx / elapsed.Seconds(), nil
}

// report prints the medians and the ratios, each ratio the median of the
// per-run ratios.
func (b *bench) report(w io.Writer, targets []*benchTarget) error {
	s := b.samples
	perRun := func(num, den benchKey, f func(a, b float64) float64) float64 {
		a, c := s.values[num], s.values[den]
		var r []float64
		for i := range min(len(a), len(c)) {
			if c[i] > 0 {
				r = append(r, f(a[i], c[i]))
			}
		}
		return median(r)
	}
	div := func(a, c float64) float64 { return a / c }

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "medians of %d runs; ratios are medians of per-run ratios\n\n", b.cfg.runs)
	fmt.Fprintln(tw, "database\tbroker\tmeasurement\t      N\t   median\tunit")
	for _, k := range s.order {
		unit := "events/s"
		switch k.metric {
		case "db ceiling":
			unit = "rows/s"
		case "broker ceiling":
			unit = "msg/s"
		case "writer, no outbox", "writer, with outbox":
			unit = "tx/s"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%7d\t%9.0f\t%s\n", k.db, k.broker, k.metric, k.n, median(s.values[k]), unit)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "database\tbroker\tratio\t      N\t    value")
	for _, t := range targets {
		for _, broker := range b.cfg.brokers {
			for i := 1; i < len(b.cfg.backlogs); i++ {
				lo, hi := b.cfg.backlogs[0], b.cfg.backlogs[i]
				fmt.Fprintf(tw, "%s\t%s\tdrain %d / drain %d\t       \t%9.2f\n", t.name, broker, hi, lo,
					perRun(benchKey{t.name, broker, "drain", hi}, benchKey{t.name, broker, "drain", lo}, div))
			}
			for _, n := range b.cfg.backlogs {
				drainK := benchKey{t.name, broker, "drain", n}
				dbK := benchKey{t.name, "-", "db ceiling", n}
				brK := benchKey{t.name, broker, "broker ceiling", n}
				d, db, br := s.values[drainK], s.values[dbK], s.values[brK]
				var r []float64
				for i := range min(len(d), len(db), len(br)) {
					r = append(r, d[i]/min(db[i], br[i]))
				}
				if broker == "gochannel" && t.dialect != "sqlite" {
					fmt.Fprintf(tw, "%s\t%s\tdrain / Forwarder drain\t%7d\t%9.2f\n", t.name, broker, n,
						perRun(drainK, benchKey{t.name, broker, "forwarder drain", n}, div))
				}
				fmt.Fprintf(tw, "%s\t%s\tdrain / min(db, broker ceiling)\t%7d\t%9.2f\n", t.name, broker, n, median(r))
			}
		}
		fmt.Fprintf(tw, "%s\t-\twriter with outbox / without\t%7d\t%9.2f\n", t.name, benchWriterTx,
			perRun(benchKey{t.name, "-", "writer, with outbox", benchWriterTx}, benchKey{t.name, "-", "writer, no outbox", benchWriterTx}, div))
	}
	return tw.Flush()
}
