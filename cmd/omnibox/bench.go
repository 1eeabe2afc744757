package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

// The sections of the benchmark, in the order they run.
var benchSections = []string{"ceiling", "drain", "forwarder", "latency", "writer"}

// The latency modes: how the relay learns of a commit.
var benchModes = []string{"poll", "wake", "notify", "notify-tx"}

// The writer-cost variants: what a business transaction writes besides its
// row, and how it wakes relays.
var benchWriterVariants = []string{"business", "outbox", "wake", "notify-tx", "notifier"}

type benchConfig struct {
	backlogs   []int
	brokers    []string // "gochannel", "kafka"
	cpuProfile string
	dsn        string
	fwdBudget  time.Duration
	batch      int // the relays' BatchSize
	keys       int
	lanes      []int // RelayConfig.Concurrency values of the drain
	latencyFor time.Duration
	modes      []string
	payload    int
	rates      []int
	relays     []int
	runs       int
	sections   []string
	variants   []string
	writerFor  time.Duration
	writers    int
	quick      bool
}

func parseBenchFlags(args []string, stderr io.Writer) (*benchConfig, error) {
	fs := flag.NewFlagSet("omnibox bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &benchConfig{}
	var backlogs, broker, concurrency, modes, rates, relays, sections, variants string
	fs.StringVar(&c.dsn, "dsn", "", "database: postgres://…, mysql://USER@tcp(HOST:PORT)/DB or sqlite:PATH (a fresh temporary file is used); empty runs PostgreSQL at postgres://postgres@127.0.0.1:5432/test?sslmode=disable and MySQL/MariaDB at mysql://root@tcp(127.0.0.1:3306)/test")
	fs.StringVar(&backlogs, "backlogs", "10000,100000,1000000", "comma-separated backlog sizes (events) to drain, each at most 1000000; the first is the denominator of the backlog ratios")
	fs.StringVar(&relays, "relays", "1,2,4", "comma-separated numbers of relays draining one outbox together, each at most 64")
	fs.IntVar(&c.batch, "batch", omnibox.DefaultBatchSize, "the relays' RelayConfig.BatchSize in the drain and latency sections (the raw loops keep batches of 500)")
	fs.StringVar(&concurrency, "concurrency", strconv.Itoa(omnibox.DefaultConcurrency), "drain: comma-separated RelayConfig.Concurrency values (batches in flight per relay), each at most 64; every number of relays is drained with each")
	fs.IntVar(&c.runs, "runs", 3, "runs of each measurement; the median is reported")
	fs.StringVar(&broker, "broker", "both", "gochannel, kafka (in-process kfake, or $"+kafkatest.BrokersEnv+" when set) or both")
	fs.IntVar(&c.payload, "payload", 200, "event payload size in bytes")
	fs.IntVar(&c.keys, "keys", 1000, "distinct event keys; event i has key i mod keys")
	fs.StringVar(&sections, "sections", "all", "comma-separated sections to run: "+strings.Join(benchSections, ", ")+" (or all)")
	fs.StringVar(&rates, "rates", "100,1000,5000", "latency: comma-separated commit rates (events/s), each at most 50000")
	fs.StringVar(&modes, "modes", "all", "latency: comma-separated modes: "+strings.Join(benchModes, ", ")+" (or all; the notify modes run on PostgreSQL only)")
	fs.DurationVar(&c.latencyFor, "latency-duration", 5*time.Second, "latency: how long the writers commit at each rate")
	fs.StringVar(&variants, "writer-variants", "all", "writer cost: comma-separated variants: "+strings.Join(benchWriterVariants, ", ")+" (or all; the notify variants run on PostgreSQL only)")
	fs.DurationVar(&c.writerFor, "writer-duration", 5*time.Second, "writer cost: how long the writers commit, after a warm-up of a tenth of it")
	fs.IntVar(&c.writers, "writers", 32, "writer cost and latency: concurrent writers")
	fs.DurationVar(&c.fwdBudget, "forwarder-budget", 10*time.Minute, "forwarder: skip a backlog whose drain, predicted from the smaller backlog's rate in the same run, would take longer")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (samples are labelled bench=fill, relay, forwarder, writer)")
	fs.BoolVar(&c.quick, "quick", false, "a smoke run of a minute or two: -runs 1 -backlogs 1000,5000 -relays 1,2 -rates 100,1000 -latency-duration 1s -writer-duration 1s, unless given explicitly")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]string{"runs": "1", "backlogs": "1000,5000", "relays": "1,2", "rates": "100,1000", "latency-duration": "1s", "writer-duration": "1s"}
		for name, v := range quick {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	var err error
	if c.backlogs, err = parseInts("backlogs", backlogs, 1, 1_000_000); err != nil {
		return nil, err
	}
	if c.relays, err = parseInts("relays", relays, 1, 64); err != nil {
		return nil, err
	}
	if c.lanes, err = parseInts("concurrency", concurrency, 1, omnibox.Partitions); err != nil {
		return nil, err
	}
	if c.rates, err = parseInts("rates", rates, 1, 50_000); err != nil {
		return nil, err
	}
	if c.sections, err = parseWords("sections", sections, benchSections); err != nil {
		return nil, err
	}
	if c.modes, err = parseWords("modes", modes, benchModes); err != nil {
		return nil, err
	}
	if c.variants, err = parseWords("writer-variants", variants, benchWriterVariants); err != nil {
		return nil, err
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
	case c.batch < 1 || c.batch > 100_000:
		return nil, fmt.Errorf("bench: -batch must be between 1 and 100000 events, got %d", c.batch)
	case c.payload < 1 || c.payload > 100_000:
		return nil, fmt.Errorf("bench: -payload must be between 1 and 100000 bytes, got %d", c.payload)
	case c.keys < 1:
		return nil, fmt.Errorf("bench: -keys must be positive, got %d", c.keys)
	case c.writers < 1 || c.writers > 64:
		return nil, fmt.Errorf("bench: -writers must be between 1 and 64, got %d", c.writers)
	case c.latencyFor <= 0 || c.writerFor <= 0 || c.fwdBudget <= 0:
		return nil, errors.New("bench: -latency-duration, -writer-duration and -forwarder-budget must be positive")
	}
	return c, nil
}

// effective renders the settings in force, defaults included.
func (c *benchConfig) effective() string {
	return fmt.Sprintf("-dsn=%q -sections=%s -backlogs=%s -relays=%s -concurrency=%s -batch=%d -runs=%d -broker=%s -payload=%d -keys=%d -rates=%s -modes=%s -latency-duration=%s -writer-variants=%s -writer-duration=%s -writers=%d -forwarder-budget=%s",
		c.dsn, strings.Join(c.sections, ","), joinInts(c.backlogs), joinInts(c.relays), joinInts(c.lanes), c.batch, c.runs, strings.Join(c.brokers, ","), c.payload, c.keys,
		joinInts(c.rates), strings.Join(c.modes, ","), c.latencyFor, strings.Join(c.variants, ","), c.writerFor, c.writers, c.fwdBudget)
}

func (c *benchConfig) has(section string) bool { return slices.Contains(c.sections, section) }

const (
	benchTopic       = "omnibox.bench"
	benchBatch       = 500    // the raw loops' batch
	benchFillTx      = 50_000 // events per fill transaction
	benchFillChunk   = 10_000 // events per Insert call of the fill
	benchFillWorkers = 2      // fill transactions at a time
	benchPartition   = 4      // partitions of a Kafka topic
	benchRawWorker   = 4      // workers of the raw claim-and-delete loop
	// benchStall is how long a drain or a latency run may go without
	// progress before it is given up.
	benchStall = time.Minute
)

// bench is one benchmark session.
type bench struct {
	cfg      *benchConfig
	brokers  []string // Kafka bootstrap addresses, when Kafka is measured
	logger   *slog.Logger
	payload  []byte
	progress io.Writer
	samples  *benchSamples
	topicN   atomic.Int64
	// fwdSkip says why a Forwarder measurement is not taken (again).
	fwdSkip map[benchKey]string
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return errors.Join(fmt.Errorf("bench: -cpuprofile: %w", err), f.Close())
		}
		defer func() {
			pprof.StopCPUProfile()
			err = errors.Join(err, f.Close())
		}()
	}
	b := &bench{
		cfg:      cfg,
		logger:   slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		payload:  bytes.Repeat([]byte{'x'}, cfg.payload),
		progress: stderr,
		samples:  newBenchSamples(),
		fwdSkip:  map[benchKey]string{},
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
			kafkaDesc = "in-process kfake (internal/kafkatest.Start), sharing the CPUs"
		}
	}

	fmt.Fprintf(stdout, "omnibox bench\n  command   %s\n", strings.Join(append([]string{"omnibox", "bench"}, args...), " "))
	fmt.Fprintf(stdout, "  effective %s\n", cfg.effective())
	fmt.Fprintf(stdout, "  machine   %s, %d CPUs (runtime.NumCPU), GOMAXPROCS %d, %s %s/%s\n", cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(stdout, "  load      %s at the start (/proc/loadavg: 1, 5, 15 min)\n", loadAvg())
	for _, t := range targets {
		fmt.Fprintf(stdout, "  database  %s %s\n", t.name, t.version)
	}
	fmt.Fprintf(stdout, "  kafka     %s; topics of %d partitions; publisher.NewKafka (acks=all, idempotent)\n", kafkaDesc, benchPartition)
	fmt.Fprintf(stdout, "  relays    Relay.Run, BatchSize %d, other settings default (Concurrency %d, PollInterval %s); backlog of %d-byte events over %d keys, filled with Store.Insert in transactions of %d, %d at a time (not timed)\n\n",
		cfg.batch, omnibox.DefaultConcurrency, 100*time.Millisecond, cfg.payload, cfg.keys, benchFillTx, benchFillWorkers)

	start := time.Now()
	for _, t := range targets {
		for run := range cfg.runs {
			if err := b.runOnce(ctx, t, run); err != nil {
				return fmt.Errorf("bench: %s, run %d: %w", t.name, run+1, err)
			}
		}
	}
	fmt.Fprintf(b.progress, "bench: done in %s\n", time.Since(start).Round(time.Second))
	fmt.Fprintf(stdout, "whole run: %s; load %s at the end\n\n", time.Since(start).Round(time.Second), loadAvg())
	return b.report(stdout, targets)
}

// cpuModel returns the CPU model from /proc/cpuinfo, or GOARCH elsewhere.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// loadAvg returns the first three fields of /proc/loadavg, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// runOnce takes one sample of every selected measurement on t. The
// measurements are interleaved, so that the ratios of a run compare figures
// taken close together in time.
func (b *bench) runOnce(ctx context.Context, t *benchTarget, run int) error {
	logf := func(format string, a ...any) {
		fmt.Fprintf(b.progress, "bench: %s %s run %d/%d: %s\n", time.Now().Format("15:04:05"), t.name, run+1, b.cfg.runs, fmt.Sprintf(format, a...))
	}
	// failed records a measurement that failed and lets the run go on
	// without it (a run of hours is not lost to one failure), unless ctx
	// ended.
	failed := func(what string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		b.samples.fail(fmt.Sprintf("%s, run %d, %s: %v", t.name, run+1, what, err))
		logf("%s FAILED: %v", what, err)
		return nil
	}
	for i, n := range b.cfg.backlogs {
		if b.cfg.has("ceiling") {
			if v, err := b.dbCeiling(ctx, t, n); err != nil {
				if err := failed(fmt.Sprintf("raw claim-and-delete loop, %d rows", n), err); err != nil {
					return err
				}
			} else {
				b.samples.add(benchKey{t.name, "-", "db ceiling", "", n}, run, v)
				logf("raw claim-and-delete loop, %d workers, %d rows: %.0f rows/s", benchRawWorker, n, v)
			}
			for _, broker := range b.cfg.brokers {
				v, err := b.brokerCeiling(ctx, broker, n)
				if err != nil {
					if err := failed(fmt.Sprintf("raw %s produce loop, %d messages", broker, n), err); err != nil {
						return err
					}
					continue
				}
				b.samples.add(benchKey{t.name, broker, "broker ceiling", "", n}, run, v)
				logf("raw %s produce loop, %d messages: %.0f msg/s", broker, n, v)
			}
		}
		for _, broker := range b.cfg.brokers {
			if b.cfg.has("drain") {
				for _, k := range b.cfg.cases() {
					res, err := b.drain(ctx, t, broker, n, k)
					if err != nil {
						if err := failed(fmt.Sprintf("drain of %d events to %s, %s", n, broker, k), err); err != nil {
							return err
						}
						continue
					}
					res.record(b.samples, benchKey{t.name, broker, "drain", k.String(), n}, run)
					logf("drain %d events to %s, %s: %.0f events/s (%s)", n, broker, k, res.rate, res.breakdown())
				}
			}
			if b.cfg.has("forwarder") && t.dialect != "sqlite" {
				if err := b.forwarderStep(ctx, t, broker, i, run, logf, failed); err != nil {
					return err
				}
			}
		}
	}
	if b.cfg.has("latency") {
		for _, broker := range b.cfg.brokers {
			for _, mode := range b.cfg.modes {
				if strings.HasPrefix(mode, "notify") && t.dialect != "postgres" {
					continue
				}
				for _, rate := range b.cfg.rates {
					res, err := b.latency(ctx, t, broker, mode, rate)
					if err != nil {
						if err := failed(fmt.Sprintf("latency to %s, %s, %d events/s", broker, mode, rate), err); err != nil {
							return err
						}
						continue
					}
					res.record(b.samples, t.name, broker, mode, rate, run)
					logf("latency to %s, %s, %d events/s (achieved %.0f): p50 %s ms, p99 %s ms, max %s ms",
						broker, mode, rate, res.achieved, ms(res.p50), ms(res.p99), ms(res.max))
				}
			}
		}
	}
	if b.cfg.has("writer") {
		for _, variant := range b.cfg.variants {
			if strings.HasPrefix(variant, "notif") && t.dialect != "postgres" {
				continue
			}
			v, err := b.writer(ctx, t, variant)
			if err != nil {
				if err := failed("writer cost, "+variant, err); err != nil {
					return err
				}
				continue
			}
			b.samples.add(benchKey{t.name, "-", "writer", variant, b.cfg.writers}, run, v)
			logf("writer cost, %s, %d writers: %.0f commits/s", variant, b.cfg.writers, v)
		}
	}
	return nil
}

// forwarderStep measures the Forwarder baseline of the i-th backlog to
// broker, unless an earlier measurement showed it would not finish within
// -forwarder-budget: a drain predicted, from the smaller backlog's rate in the
// same run, to take longer is skipped; a drain still running at the budget is
// stopped, its rate over the part it forwarded recorded (an upper bound,
// noted), and not repeated in later runs.
func (b *bench) forwarderStep(ctx context.Context, t *benchTarget, broker string, i, run int, logf func(string, ...any), failed func(string, error) error) error {
	n := b.cfg.backlogs[i]
	key := benchKey{t.name, broker, "forwarder", "", n}
	if why := b.fwdSkip[key]; why != "" {
		logf("Watermill Forwarder %d messages to %s: %s", n, broker, why)
		return nil
	}
	res, err := b.forwarderDrain(ctx, t, broker, n)
	if err != nil {
		return failed(fmt.Sprintf("Watermill Forwarder drain of %d messages to %s", n, broker), err)
	}
	b.samples.add(key, run, res.rate)
	if res.forwarded < n {
		note := fmt.Sprintf("stopped at -forwarder-budget %s in run %d, after %d of %d messages; the rate is that of the part forwarded, and the drain was not repeated in later runs",
			b.cfg.fwdBudget, run+1, res.forwarded, n)
		b.samples.note(key, note)
		b.fwdSkip[key] = note
		logf("Watermill Forwarder drain %d messages to %s: %.0f msg/s, %s", n, broker, res.rate, note)
	} else {
		logf("Watermill Forwarder drain %d messages to %s: %.0f msg/s", n, broker, res.rate)
	}
	if i+1 < len(b.cfg.backlogs) {
		next := b.cfg.backlogs[i+1]
		nextKey := benchKey{t.name, broker, "forwarder", "", next}
		if predicted := time.Duration(float64(next) / res.rate * float64(time.Second)); predicted > b.cfg.fwdBudget && b.fwdSkip[nextKey] == "" {
			note := fmt.Sprintf("skipped: predicted to take %s at the %.0f msg/s of %d messages in run %d, over -forwarder-budget %s",
				predicted.Round(time.Second), res.rate, n, run+1, b.cfg.fwdBudget)
			b.samples.note(nextKey, note)
			b.fwdSkip[nextKey] = note
		}
	}
	return nil
}

// drainCase is a number of relays draining together, each with
// RelayConfig.Concurrency lanes.
type drainCase struct{ relays, lanes int }

// String names the case: "2 relays", with the lanes when they are not the
// default ("1 relay, Concurrency 1").
func (k drainCase) String() string {
	name := fmt.Sprintf("%d relays", k.relays)
	if k.relays == 1 {
		name = "1 relay"
	}
	if k.lanes != omnibox.DefaultConcurrency {
		name += fmt.Sprintf(", Concurrency %d", k.lanes)
	}
	return name
}

// cases returns the drain cases: every number of relays with each
// Concurrency.
func (c *benchConfig) cases() []drainCase {
	var out []drainCase
	for _, lanes := range c.lanes {
		for _, k := range c.relays {
			out = append(out, drainCase{k, lanes})
		}
	}
	return out
}

// countingPublisher wraps a publisher: it counts the messages published, the
// Publish calls and their time, and calls onPublished (when set) with the
// messages of each successful call and the time it returned.
type countingPublisher struct {
	message.Publisher
	calls       atomic.Int64
	msgs        atomic.Int64
	nanos       atomic.Int64
	onPublished func(msgs []*message.Message, at time.Time)
}

func (p *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	start := time.Now()
	err := p.Publisher.Publish(topic, msgs...)
	end := time.Now()
	p.calls.Add(1)
	p.nanos.Add(int64(end.Sub(start)))
	if err == nil {
		p.msgs.Add(int64(len(msgs)))
		if p.onPublished != nil {
			p.onPublished(msgs, end)
		}
	}
	return err
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
		topic, err := b.kafkaTopic()
		if err != nil {
			return nil, "", nil, err
		}
		pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: b.brokers, Logger: b.logger})
		if err != nil {
			return nil, "", nil, err
		}
		return pub, topic, func() {
			_ = pub.Close()
			b.dropKafkaTopic(topic)
		}, nil
	}
	return nil, "", nil, fmt.Errorf("unknown broker %q", broker)
}

// kafkaTopic creates a new topic of benchPartition partitions.
func (b *bench) kafkaTopic() (string, error) {
	topic := fmt.Sprintf("%s.%d.%d", benchTopic, time.Now().UnixNano(), b.topicN.Add(1))
	return topic, createBenchTopic(b.brokers, topic)
}

func (b *bench) dropKafkaTopic(topic string) {
	if err := deleteBenchTopic(b.brokers, topic); err != nil {
		fmt.Fprintf(b.progress, "bench: deleting topic %s: %v\n", topic, err)
	}
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
