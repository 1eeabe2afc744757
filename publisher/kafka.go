package publisher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
)

var _ message.Publisher = (*Kafka)(nil)

// DefaultMaxMessageBytes is the producer's ProducerBatchMaxBytes in
// [DefaultKafkaOptions]: 1 MiB, so that every record batch the producer
// builds fits Kafka's default broker limit message.max.bytes (1048588 bytes,
// which counts the 12-byte log overhead). The largest single message it
// allows is a little smaller (see [Kafka.Publish]).
const DefaultMaxMessageBytes = 1 << 20

// DefaultPublishTimeout is the default of [KafkaConfig.PublishTimeout].
const DefaultPublishTimeout = 10 * time.Second

// publishGrace is how long Publish waits, after its deadline, for the
// producer to fail the records it still holds. The producer fails them as
// soon as it sees the deadline, which is within milliseconds: the grace only
// covers a loaded machine.
const publishGrace = 3 * time.Second

// KafkaConfig configures a [Kafka] publisher. Only Brokers is required.
type KafkaConfig struct {
	// Brokers are the host:port addresses of Kafka brokers to bootstrap from.
	// Required.
	Brokers []string
	// Logger receives debug logs of each Publish call and the producer's
	// (franz-go's) warnings and errors. Defaults to a logger that discards.
	Logger *slog.Logger
	// Options are franz-go client options appended after [DefaultKafkaOptions]
	// and the seed brokers, so they override the defaults: e.g.
	// kgo.SASL(...) for authentication, kgo.ProducerBatchCompression(...) for
	// compression, kgo.ProducerBatchMaxBytes(...) together with a topic's
	// larger max.message.bytes. Options that consume (kgo.ConsumeTopics...)
	// or make the producer transactional (kgo.TransactionalID) are not
	// supported. A kgo.Dialer option replaces the default dialer, whose
	// connections close with a reset (see [DefaultKafkaOptions]): to keep
	// that with TLS, pass kgo.Dialer([Dialer](tlsConfig)) rather than
	// kgo.DialTLSConfig. kgo.DisableIdempotentWrite, kgo.RequiredAcks other
	// than all, or a partitioner other than murmur2 weaken the guarantees
	// documented on [Kafka]. Defaults to none.
	Options []kgo.Opt
	// PublishTimeout bounds a Publish call whose messages carry no deadline
	// in their context (the relay sets one on every message, from its lease,
	// so this applies to other callers). When it passes, Publish fails the
	// messages not yet acknowledged with [omnibox.ErrUnavailable]. It also
	// bounds the connection check of [NewKafka]. Defaults to
	// [DefaultPublishTimeout] (10 s).
	PublishTimeout time.Duration
}

// Validate reports the first missing or invalid setting, naming the field.
// Zero fields are valid: they stand for the defaults.
func (c *KafkaConfig) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("publisher: KafkaConfig.Brokers is required")
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return fmt.Errorf("publisher: KafkaConfig.Brokers[%d] is empty", i)
		}
	}
	for i, o := range c.Options {
		if o == nil {
			return fmt.Errorf("publisher: KafkaConfig.Options[%d] is nil", i)
		}
	}
	if c.PublishTimeout < 0 {
		return fmt.Errorf("publisher: KafkaConfig.PublishTimeout cannot be negative (%v)", c.PublishTimeout)
	}
	return nil
}

func (c *KafkaConfig) withDefaults() *KafkaConfig {
	out := *c
	out.Brokers = append([]string(nil), c.Brokers...)
	out.Options = append([]kgo.Opt(nil), c.Options...)
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	out.PublishTimeout = cmp.Or(out.PublishTimeout, DefaultPublishTimeout)
	return &out
}

// Timeouts of a request to a broker; see DefaultKafkaOptions.
const (
	defaultProduceRequestTimeout  = 5 * time.Second
	defaultRequestTimeoutOverhead = 3 * time.Second
)

// DefaultKafkaOptions returns the franz-go producer settings [NewKafka] uses
// by default, before [KafkaConfig.Options]. Each call returns a new slice.
//
//   - kgo.RequiredAcks(kgo.AllISRAcks()): a record counts as published only
//     when every in-sync replica has it, so acknowledged events survive the
//     loss of the partition leader (with the topic's min.insync.replicas).
//   - Idempotent writes (franz-go's default): the broker drops the records a
//     retry sends twice, and refuses a record whose predecessors of the
//     partition it does not have, so the producer's own retries neither
//     duplicate nor reorder records.
//   - kgo.AllowIdempotentProduceCancellation: the deadline of a Publish
//     call can fail records that are in flight, so that a broker that
//     stops answering cannot hold Publish (and the relay's lease) for long.
//     Without it, franz-go waits for the outcome of an in-flight record
//     however long that takes. The price: a record failed in flight may
//     have been written, and the relay's retry then writes it again (a
//     duplicate, in order). The producer bumps its epoch before it writes
//     anything more, so the broker fences a late copy of the abandoned
//     request rather than writing it after newer records.
//   - A dialer ([Dialer]) whose connections close with SO_LINGER 0: closing
//     sends a TCP reset and discards what the kernel had not yet sent, so
//     that a produce request the client abandoned (at the deadline, on a
//     link that stopped answering) cannot reach the broker later, after the
//     records were reported as failed and the relay moved on. Bytes already
//     on the wire can still arrive; the epoch bump above covers those.
//   - kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)): a key goes to
//     the partition the Java client (murmur2) chooses for it, so other
//     producers of the same topic and Kafka Streams joins agree with the
//     relay. Records without a key stick to a partition per batch.
//   - kgo.ProducerBatchMaxBytes([DefaultMaxMessageBytes]): record batches
//     fit a default broker's message.max.bytes. To publish bigger events,
//     raise the topic's max.message.bytes and this limit together.
//   - kgo.ProducerLinger(0): the publisher hands a whole batch to the
//     producer at once, so waiting for more records only delays it
//     (BenchmarkPublish measured no gain from a linger).
//   - kgo.ProducerBatchCompression(kgo.NoCompression()), as the sarama
//     producer had: consumers need no codec, and relay payloads are small.
//   - Topics are not created automatically (franz-go's default): a Publish
//     to a topic that does not exist fails with [omnibox.ErrRejected] once
//     franz-go has looked the topic up kgo.UnknownTopicRetries (4) times,
//     within a few seconds, rather than creating it with the broker's
//     default partition count (which would also fix how keys map to
//     partitions).
//   - kgo.MetadataMinAge(500 ms) and kgo.RetryBackoffFn from 100 ms doubling
//     up to 1 s (Java's retry.backoff.ms and retry.backoff.max.ms; franz-go's
//     defaults are 5 s and 250 ms up to 5 s). When a broker cannot be
//     reached, franz-go holds the partition's records until a metadata
//     refresh fails, and only then fails those past their deadline: with
//     its defaults that took about 6 s, which would keep Publish seconds
//     past its deadline. A missing topic fails sooner too.
//   - kgo.ProduceRequestTimeout(5 s) and kgo.RequestTimeoutOverhead(3 s)
//     (franz-go's defaults: 10 s each): a connection on which a request has
//     gone unanswered for 8 s is closed and a new one dialed. On a link that
//     stopped answering without closing, franz-go otherwise kept writing to
//     the dead connection for up to 20 s after the link had healed, and each
//     Publish in that time failed at its deadline (the fault test "broker
//     half-open" drained nothing for 20 s after a 3 s freeze).
//   - kgo.ClientID("omnibox"), to tell the relay apart in broker logs and
//     quotas.
//
// Retries are unlimited (franz-go's default) and bounded by the deadline of
// each Publish call instead.
func DefaultKafkaOptions() []kgo.Opt {
	return []kgo.Opt{
		kgo.AllowIdempotentProduceCancellation(),
		kgo.ClientID("omnibox"),
		kgo.Dialer(Dialer(nil)),
		kgo.MetadataMinAge(500 * time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(DefaultMaxMessageBytes),
		kgo.ProducerLinger(0),
		kgo.ProduceRequestTimeout(defaultProduceRequestTimeout),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RequestTimeoutOverhead(defaultRequestTimeoutOverhead),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RetryBackoffFn(retryBackoff),
	}
}

// retryBackoff is the backoff of franz-go's retries after fails failures:
// 100 ms doubling up to 1 s, ±20 %.
func retryBackoff(fails int) time.Duration {
	backoff := time.Second
	if fails < 4 {
		backoff = 100 * time.Millisecond << max(fails-1, 0)
	}
	return time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
}

// Kafka is a Watermill publisher for Kafka built on franz-go (kgo): it
// hands all the messages of a Publish call to the producer at once, bounds
// the call by a deadline, and reports which messages failed, with prefix
// semantics per key. It is safe for concurrent use.
//
// What a fault can do, and what it cannot:
//
//   - It cannot reorder a key's events within a call: Publish never leaves
//     a later message of a key stored without every earlier one of that
//     call. When a record of a partition fails (deadline, retries, refusal),
//     franz-go fails every record of that partition it still holds, in
//     order; the publisher's own checks hold back the later messages of a
//     key whose message fails them ([ErrNotSent]).
//   - It can duplicate: a record whose produce request was in flight when
//     the deadline hit is reported failed although the broker may have
//     written it, and so is one whose acknowledgement was lost; publishing
//     it again (as the relay does) writes it twice. The copies are in order:
//     the key's stored records read 1..m, then a replay from some k ≤ m+1.
//     Consumers deduplicate on the message UUID.
type Kafka struct {
	client *kgo.Client
	closed bool
	config *KafkaConfig
	mu     sync.RWMutex // held for reading by Publish, for writing by Close
}

// NewKafka creates a producer for config.Brokers, checks that a broker
// answers within config.PublishTimeout, and returns a publisher. A nil
// config returns [omnibox.ErrNilConfig]; an invalid one, the error of
// [KafkaConfig.Validate]. Close the publisher when done.
func NewKafka(config *KafkaConfig) (*Kafka, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	config = config.withDefaults()
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(config.Brokers...),
		kgo.WithLogger(kgoLogger{config.Logger}),
	}, DefaultKafkaOptions()...)
	opts = append(opts, config.Options...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("publisher: creating Kafka client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), config.PublishTimeout)
	defer cancel()
	if err := client.Ping(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("publisher: connecting to Kafka at %v: %w", config.Brokers, err)
	}
	return &Kafka{client: client, config: config}, nil
}

// Publish sends msgs to topic and returns when Kafka has acknowledged all of
// them (with the default options: written to all in-sync replicas), or when
// the rest have failed. Records with the same key go to the same partition
// in the order given. After [Kafka.Close] it returns [ErrClosed].
//
// The deadline is that of msgs[0].Context() (the relay sets one on every
// message); without one, [KafkaConfig.PublishTimeout]. Publish returns by
// then (give or take a moment for the producer to fail what it holds), even
// when a broker stops answering without closing the connection.
//
// Publish first checks each message without sending it: the topic must be a
// valid topic name, the message must marshal ([ErrReservedHeader]) and fit
// in a record batch counting the key, the headers and Kafka's overhead
// ([ErrMessageTooLarge]; with the defaults a payload can be a little under
// 1 MiB). A message that fails a check is not sent, nor are the later
// messages of its key ([ErrNotSent]); the other keys' messages are. Then it
// hands every record to the producer at once, which batches them per
// partition: a batch of hundreds of messages costs a produce request or two
// rather than a round trip per message.
//
// When some messages fail, Publish returns a *[PublishError], which
// implements [omnibox.MessageErrors]: the error of each failed message
// wraps [omnibox.ErrRejected] (refused for good: too large, invalid, an
// unknown topic, no permission) or [omnibox.ErrUnavailable] (the deadline,
// the network, a leader election: may succeed later as it is). The others
// were acknowledged. See [Kafka] for what a fault can duplicate and what it
// cannot reorder.
func (k *Kafka) Publish(topic string, msgs ...*message.Message) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	start := time.Now()
	ctx := msgs[0].Context()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, k.config.PublishTimeout)
		defer cancel()
	}

	errs := make([]error, len(msgs))
	records := make([]*kgo.Record, len(msgs))
	if err := checkTopic(topic); err != nil {
		for i := range msgs {
			errs[i] = err
		}
		return k.publishError(topic, msgs, records, errs)
	}
	limit := k.batchLimit(topic)
	failedKey := map[string]string{} // key → UUID of its first message that failed a check
	for i, msg := range msgs {
		key := msg.Metadata.Get(omnibox.MetadataKey)
		if first, ok := failedKey[key]; ok {
			errs[i] = notSent(first)
			continue
		}
		record, err := KafkaMarshaler{}.Record(topic, msg)
		if err == nil {
			if size := batchSize(record); size > limit {
				err = fmt.Errorf("%w: message %d takes %d bytes in a record batch, the producer's ProducerBatchMaxBytes allows %d",
					ErrMessageTooLarge, i, size, limit)
			}
		}
		if err != nil {
			errs[i] = rejected(fmt.Errorf("publisher: message %s for topic %q: %w", msg.UUID, topic, err))
			if key != "" {
				failedKey[key] = msg.UUID
			}
			continue
		}
		records[i] = record
	}

	var wg sync.WaitGroup
	for i, r := range records {
		if r == nil {
			continue
		}
		wg.Add(1)
		k.client.Produce(ctx, r, func(_ *kgo.Record, err error) {
			errs[i] = err // each promise writes its own index; wg.Wait orders the reads
			wg.Done()
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// The producer fails what it holds as soon as it sees the
		// deadline; wait for that, a little.
		grace := time.NewTimer(publishGrace)
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
			// Never seen in tests. The records still held may yet be
			// written (in order, after those acknowledged): report
			// them as failed with an unknown outcome, a duplicate for
			// the relay's retry at worst.
			k.config.Logger.Warn("omnibox publisher: the producer did not fail records after the deadline",
				slog.String("topic", topic), slog.Duration("grace", publishGrace))
			return k.pendingError(topic, msgs, records)
		}
	}

	for _, err := range errs {
		if err != nil {
			return k.publishError(topic, msgs, records, errs)
		}
	}
	k.config.Logger.Debug("omnibox publisher: published",
		slog.String("topic", topic), slog.Int("messages", len(msgs)), slog.Duration("took", time.Since(start)))
	return nil
}

// pendingError builds the error of a call whose producer promises did not
// all complete in time: every message is reported as unavailable, with an
// unknown outcome (the promises still write to the call's own slice, which
// nothing reads any more).
func (k *Kafka) pendingError(topic string, msgs []*message.Message, records []*kgo.Record) error {
	errs := make([]error, len(msgs))
	for i := range msgs {
		errs[i] = fmt.Errorf("publisher: message %s: the producer did not report an outcome by the deadline: %w",
			msgs[i].UUID, omnibox.ErrUnavailable)
	}
	return k.publishError(topic, msgs, make([]*kgo.Record, len(records)), errs)
}

// publishError turns the errors of the messages of a call into a
// *PublishError, classifying the producer's errors.
func (k *Kafka) publishError(topic string, msgs []*message.Message, records []*kgo.Record, errs []error) error {
	out := &PublishError{Errors: map[string]error{}, Topic: topic, Total: len(msgs)}
	// The first refusal of a single record (or its batch) in each
	// partition: franz-go fails the later records it holds for the
	// partition with the same error, although the broker never saw them.
	firstRefused := map[int32]string{}
	for i, err := range errs {
		if err == nil {
			continue
		}
		if r := records[i]; r != nil { // sent to the producer: classify
			if recordLevel(err) {
				if first, ok := firstRefused[r.Partition]; ok {
					err = notSent(first)
				} else {
					firstRefused[r.Partition] = msgs[i].UUID
					err = classify(topic, msgs[i].UUID, err)
				}
			} else {
				err = classify(topic, msgs[i].UUID, err)
			}
		}
		if out.Err == nil {
			out.Err = err
		}
		out.Errors[msgs[i].UUID] = err
		out.FailedUUIDs = append(out.FailedUUIDs, msgs[i].UUID)
	}
	k.config.Logger.Debug("omnibox publisher: publish failed",
		slog.String("topic", topic), slog.Int("messages", len(msgs)), slog.Int("failed", len(out.FailedUUIDs)), slog.Any("error", out.Err))
	return out
}

// recordLevel reports whether err is the broker's refusal of a record batch
// for what is in it, rather than of the topic or the producer.
func recordLevel(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

// classify wraps the producer's error for one message with
// [omnibox.ErrRejected] or [omnibox.ErrUnavailable].
func classify(topic, uuid string, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return unavailable(fmt.Errorf("publisher: message %s: not acknowledged by the deadline (its outcome may be unknown): %w", uuid, err))
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return rejected(fmt.Errorf("publisher: message %s: topic %q does not exist; create it (topics are not created automatically): %w", uuid, topic, err))
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return rejected(fmt.Errorf("publisher: message %s: not authorized to write to topic %q: %w", uuid, topic, err))
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return rejected(fmt.Errorf("publisher: message %s: too large for topic %q on the broker (max.message.bytes): %w", uuid, topic, errors.Join(ErrMessageTooLarge, err)))
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage),
		errors.Is(err, kerr.InvalidTopicException), errors.Is(err, kerr.PolicyViolation):
		return rejected(fmt.Errorf("publisher: message %s for topic %q: %w", uuid, topic, err))
	default:
		// kgo.ErrRecordTimeout, kgo.ErrRecordRetries, network errors,
		// retriable broker errors (leader elections, not enough
		// replicas), a closed client, and anything else.
		return unavailable(fmt.Errorf("publisher: message %s: %w", uuid, err))
	}
}

func rejected(err error) error { return fmt.Errorf("%w (%w)", err, omnibox.ErrRejected) }

func unavailable(err error) error { return fmt.Errorf("%w (%w)", err, omnibox.ErrUnavailable) }

func notSent(firstUUID string) error {
	return fmt.Errorf("%w: message %s failed (%w)", ErrNotSent, firstUUID, omnibox.ErrUnavailable)
}

// checkTopic checks topic against Kafka's rules for topic names, so that an
// invalid one fails at once, as the broker would refuse it.
func checkTopic(topic string) error {
	reason := ""
	switch {
	case topic == "":
		reason = "is empty"
	case topic == "." || topic == "..":
		reason = "cannot be . or .."
	case len(topic) > 249:
		reason = "is longer than 249 characters"
	case strings.IndexFunc(topic, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '_' && r != '-'
	}) >= 0:
		reason = "has characters other than ASCII letters, digits, '.', '_' and '-'"
	default:
		return nil
	}
	return rejected(fmt.Errorf("publisher: topic %q %s: %w", topic, reason, kerr.InvalidTopicException))
}

// batchLimit is the largest record batch the producer builds for topic, as
// franz-go computes it (ProducerBatchMaxBytes, capped by BrokerMaxWriteBytes
// less a produce request's overhead).
func (k *Kafka) batchLimit(topic string) int {
	limit := DefaultMaxMessageBytes
	if fn, ok := k.client.OptValue(kgo.ProducerBatchMaxBytesFn).(func(string) int32); ok && fn != nil {
		limit = int(fn(topic))
	}
	if w, ok := k.client.OptValue(kgo.BrokerMaxWriteBytes).(int32); ok && w > 0 {
		// franz-go's request overhead is under 100 bytes plus the topic.
		limit = min(limit, int(w)-100-max(len(topic), 16))
	}
	return limit
}

// batchSize is an upper bound of the size of a record batch holding only r,
// as franz-go counts it against ProducerBatchMaxBytes: its 65-byte batch
// overhead and the record, counting the varints of the timestamp and offset
// deltas at their widest.
func batchSize(r *kgo.Record) int {
	l := 1 + 10 + 5 + // attributes, timestamp delta, offset delta
		varintLen(len(r.Key)) + len(r.Key) +
		varintLen(len(r.Value)) + len(r.Value) +
		varintLen(len(r.Headers))
	for _, h := range r.Headers {
		l += varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value)
	}
	return 65 + varintLen(l) + l
}

// varintLen is the length of n as a zigzag varint.
func varintLen(n int) int {
	u := uint64(n) << 1
	size := 1
	for u >= 0x80 {
		u >>= 7
		size++
	}
	return size
}

// Close closes the producer. It waits for Publish calls in progress. It is
// idempotent; Publish returns [ErrClosed] afterwards.
func (k *Kafka) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	k.client.Close()
	return nil
}

// kgoLogger passes franz-go's logs to a slog.Logger.
type kgoLogger struct{ l *slog.Logger }

func (g kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case g.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelDebug
	case g.l.Enabled(ctx, slog.LevelInfo):
		return kgo.LogLevelInfo
	case g.l.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelWarn
	case g.l.Enabled(ctx, slog.LevelError):
		return kgo.LogLevelError
	default:
		return kgo.LogLevelNone
	}
}

func (g kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		l = slog.LevelError
	case kgo.LogLevelWarn:
		l = slog.LevelWarn
	case kgo.LogLevelInfo:
		l = slog.LevelInfo
	}
	g.l.Log(context.Background(), l, "franz-go: "+msg, keyvals...)
}
