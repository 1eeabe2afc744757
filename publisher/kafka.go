package publisher

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omnibox-go/omnibox"
)

var _ message.Publisher = (*Kafka)(nil)

// DefaultMaxMessageBytes is Producer.MaxMessageBytes in
// [DefaultKafkaSaramaConfig]: 1 MiB, so that every record batch the producer
// builds fits Kafka's default broker limit message.max.bytes (1048588 bytes,
// which counts the 12-byte log overhead). The largest single message it
// allows is a little smaller (see [Kafka.Publish]).
const DefaultMaxMessageBytes = 1 << 20

// recordBatchOverhead is the size of a Kafka record batch header (v2, magic
// 2) without the 12-byte log overhead, as sarama counts it.
const recordBatchOverhead = 49

// KafkaConfig configures a [Kafka] publisher. Only Brokers is required.
type KafkaConfig struct {
	// Brokers are the host:port addresses of Kafka brokers to bootstrap from.
	// Required.
	Brokers []string
	// Logger receives debug logs of each Publish call. Defaults to a logger
	// that discards. (Sarama logs to its own package-level sarama.Logger.)
	Logger *slog.Logger
	// Marshaler turns Watermill messages into Kafka records. Defaults to
	// [KafkaMarshaler], which moves the event key ([omnibox.MetadataKey]) into
	// the record key.
	Marshaler kafka.Marshaler
	// OverwriteSaramaConfig is the sarama configuration of the producer.
	// Defaults to [DefaultKafkaSaramaConfig]; to change a setting, start from
	// that and modify it. Producer.Return.Successes and Producer.Return.Errors
	// must be true. It must not be modified after [NewKafka].
	OverwriteSaramaConfig *sarama.Config
}

// Validate reports the first missing or invalid setting. Nil fields are
// valid: they stand for the defaults.
func (c *KafkaConfig) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("publisher: KafkaConfig.Brokers is required")
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return fmt.Errorf("publisher: KafkaConfig.Brokers[%d] is empty", i)
		}
	}
	if sc := c.OverwriteSaramaConfig; sc != nil {
		if !sc.Producer.Return.Successes || !sc.Producer.Return.Errors {
			return errors.New("publisher: KafkaConfig.OverwriteSaramaConfig must set Producer.Return.Successes and Producer.Return.Errors")
		}
		if err := sc.Validate(); err != nil {
			return fmt.Errorf("publisher: KafkaConfig.OverwriteSaramaConfig: %w", err)
		}
	}
	return nil
}

func (c *KafkaConfig) withDefaults() *KafkaConfig {
	out := *c
	out.Brokers = append([]string(nil), c.Brokers...)
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.Marshaler == nil {
		out.Marshaler = KafkaMarshaler{}
	}
	if out.OverwriteSaramaConfig == nil {
		out.OverwriteSaramaConfig = DefaultKafkaSaramaConfig()
	}
	return &out
}

// DefaultKafkaSaramaConfig returns the producer settings [NewKafka] uses by
// default: watermill-kafka's DefaultSaramaSyncPublisherConfig with the
// changes an outbox needs. Each call returns a new config.
//
//   - Producer.RequiredAcks = WaitForAll: a record counts as published only
//     when every in-sync replica has it, so acknowledged events survive the
//     loss of the partition leader. (With the topic's min.insync.replicas,
//     this is what makes an acknowledgement durable.)
//   - Producer.Idempotent = true, with Net.MaxOpenRequests = 1 (sarama
//     requires it for idempotence): the broker drops records a retry sends
//     twice, and retries cannot reorder records, so records of one key stay in
//     order even when a produce request fails and is retried.
//   - Producer.Retry.Max = 10 with exponential backoff from 100 ms up to 1 s
//     (sarama.NewExponentialBackoff): about 7 s of producer retries, enough
//     to ride out a leader election, before Publish fails and the relay's own
//     backoff takes over. Retries are safe because of idempotence.
//   - Producer.Flush.Frequency = 1 ms (like the Java client's linger.ms):
//     the producer collects records for up to 1 ms before it sends a
//     request, so that the records of one Publish go out together. Without
//     it, sarama sends the first record at once and the rest in the requests
//     that follow, one at a time per broker (MaxOpenRequests = 1): about six
//     round trips for 500 records instead of one or two. It adds up to 1 ms
//     to each Publish.
//   - Producer.Partitioner = sarama.NewMurmur2Partitioner: a key goes to the
//     partition the Java client, librdkafka's murmur2 partitioners and
//     franz-go choose for it, so other producers of the same topic (and Kafka
//     Streams joins) agree with the relay. Sarama's default, and
//     NewReferenceHashPartitioner too, hash with FNV-1a and pick different
//     partitions.
//   - Producer.MaxMessageBytes = [DefaultMaxMessageBytes] (1 MiB). Sarama uses
//     the same limit for the batch of records it sends to one partition, so a
//     larger value would let it build batches a default broker refuses
//     (MESSAGE_TOO_LARGE) even from small messages. To publish bigger events,
//     raise the topic's max.message.bytes and this limit together.
//   - Metadata.AllowAutoTopicCreation = false: publishing to a topic that
//     does not exist fails (sarama.ErrUnknownTopicOrPartition) instead of
//     creating it with the broker's default partition count, which also fixes
//     how keys map to partitions. A misspelt topic shows up as a relay error
//     and is retried until the topic is created.
//   - Metadata.Retry.Backoff = 250 ms (sarama's default; watermill-kafka
//     uses 2 s), so that a Publish to a missing topic fails within about a
//     second rather than several.
//   - Version = sarama.V2_8_0_0, the newest version sarama claims full
//     protocol coverage for; idempotence needs 0.11 and headers 0.11. Sarama
//     negotiates down to older brokers' API versions.
//   - ClientID = "omnibox", to tell the relay apart in broker logs and quotas.
//   - Producer.Return.Successes and Errors = true, as sarama's SyncProducer
//     requires.
//
// Compression stays off (sarama's default); enable it with
// Producer.Compression for large, compressible payloads.
//
// These settings suit [Kafka], which hands the producer a whole batch at
// once. With a publisher that waits for each message before sending the
// next, such as watermill-kafka's, the 1 ms linger makes every message take
// at least 1 ms; set Producer.Flush.Frequency back to 0 there.
func DefaultKafkaSaramaConfig() *sarama.Config {
	config := kafka.DefaultSaramaSyncPublisherConfig()
	config.ClientID = "omnibox"
	config.Version = sarama.V2_8_0_0
	config.Metadata.AllowAutoTopicCreation = false
	config.Metadata.Retry.Backoff = 250 * time.Millisecond
	config.Net.MaxOpenRequests = 1
	config.Producer.Flush.Frequency = time.Millisecond
	config.Producer.Idempotent = true
	config.Producer.MaxMessageBytes = DefaultMaxMessageBytes
	config.Producer.Partitioner = sarama.NewMurmur2Partitioner
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Retry.Max = 10
	config.Producer.Retry.Backoff = 100 * time.Millisecond
	config.Producer.Retry.BackoffFunc = sarama.NewExponentialBackoff(100*time.Millisecond, time.Second)
	config.Producer.Return.Errors = true
	config.Producer.Return.Successes = true
	return config
}

// Kafka is a Watermill publisher for Kafka that sends all messages of a
// Publish call in one go. It is safe for concurrent use.
type Kafka struct {
	client   sarama.Client
	closed   bool
	config   *KafkaConfig
	mu       sync.RWMutex // held for reading by Publish, for writing by Close
	producer sarama.SyncProducer
}

// NewKafka connects to config.Brokers and returns a publisher. A nil config
// returns [omnibox.ErrNilConfig]; an invalid one, the error of
// [KafkaConfig.Validate]. It fails when no broker can be reached. Close the
// publisher when done.
func NewKafka(config *KafkaConfig) (*Kafka, error) {
	if config == nil {
		return nil, omnibox.ErrNilConfig
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	config = config.withDefaults()
	client, err := sarama.NewClient(config.Brokers, config.OverwriteSaramaConfig)
	if err != nil {
		return nil, fmt.Errorf("publisher: connecting to Kafka at %v: %w", config.Brokers, err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("publisher: creating Kafka producer: %w", err), client.Close())
	}
	return &Kafka{client: client, config: config, producer: producer}, nil
}

// Publish sends msgs to topic and returns when Kafka has acknowledged all of
// them (with the default config: written to all in-sync replicas) or some
// failed. Records with the same key go to the same partition in the order
// given.
//
// Publish first checks what it can without sending anything: the topic must
// not be empty (sarama.ErrInvalidTopic), every message must marshal and fit
// Producer.MaxMessageBytes counting the key, the headers and Kafka's record
// overhead ([ErrMessageTooLarge]; with the defaults a payload can be a
// little under 1 MiB), and the topic must exist (an error wrapping
// sarama.ErrUnknownTopicOrPartition; known topics are looked up in the
// client's metadata cache, without a round trip). If any check fails,
// nothing is sent. Then it hands every record to the producer at once,
// which batches them per partition: a batch of hundreds of messages costs
// one or two produce requests rather than one round trip per message.
//
// When Kafka refuses some records, the others may have been written:
// Publish returns a *[PublishError] that says how many failed and why. After
// [Kafka.Close] it returns [ErrClosed].
func (k *Kafka) Publish(topic string, msgs ...*message.Message) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	if topic == "" {
		return fmt.Errorf("publisher: topic is empty: %w", sarama.ErrInvalidTopic)
	}
	limit := k.config.OverwriteSaramaConfig.Producer.MaxMessageBytes
	records := make([]*sarama.ProducerMessage, len(msgs))
	for i, msg := range msgs {
		record, err := k.config.Marshaler.Marshal(topic, msg)
		if err != nil {
			return fmt.Errorf("publisher: marshaling message %d (%s) for topic %q: %w", i, msg.UUID, topic, err)
		}
		if record == nil {
			return fmt.Errorf("publisher: marshaling message %d (%s) for topic %q: the marshaler returned no record", i, msg.UUID, topic)
		}
		if size := record.ByteSize(2) + recordBatchOverhead; size > limit {
			return fmt.Errorf("%w: message %d (%s) for topic %q takes %d bytes in a record batch, Producer.MaxMessageBytes is %d",
				ErrMessageTooLarge, i, msg.UUID, topic, size, limit)
		}
		records[i] = record
	}

	// Look the topic up first (in the client's metadata cache once known):
	// a missing topic fails here, with a clear cause and nothing sent,
	// instead of failing every record and tripping the producer's circuit
	// breaker for the topic (which then fails it for 10 s).
	if _, err := k.client.Partitions(topic); err != nil {
		return fmt.Errorf("publisher: topic lookup: %w", err)
	}

	start := time.Now()
	err := k.producer.SendMessages(records)
	if err == nil {
		k.config.Logger.Debug("omnibox publisher: published",
			slog.String("topic", topic), slog.Int("messages", len(msgs)), slog.Duration("took", time.Since(start)))
		return nil
	}
	return k.publishError(topic, msgs, records, err)
}

// publishError turns the error of SendMessages into a *PublishError.
func (k *Kafka) publishError(topic string, msgs []*message.Message, records []*sarama.ProducerMessage, err error) error {
	var perrs sarama.ProducerErrors
	if !errors.As(err, &perrs) || len(perrs) == 0 {
		return fmt.Errorf("publisher: publishing %d message(s) to topic %q: %w", len(msgs), topic, err)
	}
	index := make(map[*sarama.ProducerMessage]int, len(records))
	for i, r := range records {
		index[r] = i
	}
	cause := make(map[int]error, len(perrs))
	for _, pe := range perrs {
		if i, ok := index[pe.Msg]; ok {
			cause[i] = pe.Err
		}
	}
	if len(cause) == 0 {
		return fmt.Errorf("publisher: publishing %d message(s) to topic %q: %w", len(msgs), topic, err)
	}
	failed := slices.Sorted(maps.Keys(cause))
	out := &PublishError{Err: cause[failed[0]], Topic: topic, Total: len(msgs)}
	for _, i := range failed {
		out.FailedUUIDs = append(out.FailedUUIDs, msgs[i].UUID)
	}
	k.config.Logger.Debug("omnibox publisher: publish failed",
		slog.String("topic", topic), slog.Int("messages", len(msgs)), slog.Int("failed", len(failed)), slog.Any("error", out.Err))
	return out
}

// Close flushes and closes the producer. It waits for Publish calls in
// progress. It is idempotent; Publish returns [ErrClosed] afterwards.
func (k *Kafka) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	if err := k.producer.Close(); err != nil {
		errs = append(errs, fmt.Errorf("publisher: closing Kafka producer: %w", err))
	}
	if err := k.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		errs = append(errs, fmt.Errorf("publisher: closing Kafka client: %w", err))
	}
	return errors.Join(errs...)
}
