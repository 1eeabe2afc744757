package omniboxtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaBrokersEnv is the environment variable that points the kit at a real
// Kafka cluster: a comma-separated list of host:port. When it is unset or
// empty, [StartKafka] and [NewKafka] start an in-process cluster instead.
const KafkaBrokersEnv = "OMNIBOX_KAFKA_BROKERS"

// DefaultPartitions is the number of partitions of the topics [StartKafka]
// creates, and the default of [KafkaConfig.Partitions].
const DefaultPartitions = 4

// kafkaTimeout bounds each call of the kit to a Kafka cluster: creating
// topics and waiting for them to show, deleting them.
const kafkaTimeout = 30 * time.Second

// KafkaConfig configures [NewKafka] and [StartKafkaConfig]. The zero value
// takes every default.
type KafkaConfig struct {
	// Topics are created before NewKafka returns, with Partitions
	// partitions each.
	Topics []string
	// Partitions is the number of partitions of each topic in Topics.
	// Defaults to [DefaultPartitions].
	Partitions int32
	// AutoCreateTopics makes the in-process cluster create a topic that a
	// client asks for and that does not exist, with Partitions partitions,
	// as a broker with auto.create.topics.enable does. Off by default, as on
	// many production clusters: a topic that was not created is an error,
	// which is what the omnibox publisher (which never asks for automatic
	// creation) meets anyway. It has no effect on a real cluster.
	AutoCreateTopics bool
}

// Validate reports the first setting that is out of range.
func (c *KafkaConfig) Validate() error {
	if c.Partitions < 0 {
		return fmt.Errorf("omniboxtest: KafkaConfig.Partitions is %d; want at least 1, or 0 for %d", c.Partitions, DefaultPartitions)
	}
	for _, topic := range c.Topics {
		if topic == "" {
			return errors.New("omniboxtest: KafkaConfig.Topics has an empty topic name")
		}
	}
	return nil
}

// Kafka is a Kafka cluster for tests and demo programs: an in-process kfake
// cluster (github.com/twmb/franz-go/pkg/kfake), which speaks the Kafka wire
// protocol on 127.0.0.1 so that real clients work against it unchanged, or
// the real cluster named by [KafkaBrokersEnv]. It is safe for concurrent use.
//
// The in-process cluster has one broker, keeps everything in memory and
// acknowledges acks=all writes at once (it does not replicate); idempotent
// producers, consumer groups and offset commits behave as on Kafka.
type Kafka struct {
	brokers []string
	cluster *kfake.Cluster // nil on a real cluster

	mu      sync.Mutex
	created []string // topics created on a real cluster, deleted by Close
	closed  bool
}

// NewKafka starts an in-process Kafka cluster, or connects to the one named
// by [KafkaBrokersEnv] when it is set, and creates config.Topics on it.
// config may be nil for the defaults. Call [Kafka.Close] when done. It does
// not depend on package testing, so programs can use it; tests use
// [StartKafka] or [StartKafkaConfig].
func NewKafka(ctx context.Context, config *KafkaConfig) (*Kafka, error) {
	if config == nil {
		config = &KafkaConfig{}
	}
	if err := config.Validate(); err != nil {
		return nil, err
	}
	partitions := config.Partitions
	if partitions == 0 {
		partitions = DefaultPartitions
	}
	k := &Kafka{brokers: kafkaBrokersFromEnv()}
	if len(k.brokers) == 0 {
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(int(partitions))}
		if config.AutoCreateTopics {
			opts = append(opts, kfake.AllowAutoTopicCreation())
		}
		cluster, err := kfake.NewCluster(opts...)
		if err != nil {
			return nil, fmt.Errorf("omniboxtest: starting an in-process Kafka cluster: %w", err)
		}
		k.cluster = cluster
		k.brokers = cluster.ListenAddrs()
	}
	if err := k.CreateTopics(ctx, partitions, config.Topics...); err != nil {
		return nil, errors.Join(err, k.Close())
	}
	return k, nil
}

// kafkaBrokersFromEnv returns the brokers listed in [KafkaBrokersEnv], or
// none.
func kafkaBrokersFromEnv() []string {
	var brokers []string
	for b := range strings.SplitSeq(os.Getenv(KafkaBrokersEnv), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return brokers
}

// Brokers returns the addresses (host:port) of the cluster's brokers, for
// the configuration of producers and consumers.
func (k *Kafka) Brokers() []string {
	return slices.Clone(k.brokers)
}

// InProcess reports whether the cluster is the in-process one (false when
// [KafkaBrokersEnv] named a real cluster).
func (k *Kafka) InProcess() bool {
	return k.cluster != nil
}

// CreateTopics creates topics with the given number of partitions and the
// cluster's default replication factor, and waits until the cluster's
// metadata shows all their partitions. A topic that exists already is an
// error: on a shared cluster, give each test topics of its own. On a real
// cluster, [Kafka.Close] deletes the topics created here.
func (k *Kafka) CreateTopics(ctx context.Context, partitions int32, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	if partitions < 1 {
		return fmt.Errorf("omniboxtest: creating topics %q with %d partitions: want at least 1", topics, partitions)
	}
	k.mu.Lock()
	closed := k.closed
	k.mu.Unlock()
	if closed {
		return fmt.Errorf("omniboxtest: creating topics %q: the Kafka cluster is closed", topics)
	}
	if err := createTopics(ctx, k.brokers, partitions, topics); err != nil {
		return err
	}
	if k.cluster == nil {
		k.mu.Lock()
		k.created = append(k.created, topics...)
		k.mu.Unlock()
	}
	return nil
}

// Close stops the in-process cluster, or deletes the topics created on the
// real one. It is safe to call more than once.
func (k *Kafka) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if k.cluster != nil {
		k.cluster.Close()
		return nil
	}
	if len(k.created) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTimeout)
	defer cancel()
	return deleteTopics(ctx, k.brokers, k.created)
}

// StartKafka starts a Kafka cluster for the test, creates topics on it with
// [DefaultPartitions] partitions each, and returns the brokers' addresses.
// The cluster is the in-process one, or the real cluster named by
// [KafkaBrokersEnv] when that is set; the test's cleanup stops it (or
// deletes the topics from the real cluster). It fails the test on any error.
//
// The in-process cluster does not create topics on first use: create every
// topic the code under test produces to or consumes from, here or later with
// [CreateTopics] (for other partition counts, or topics such as the inbox's
// poison queue).
func StartKafka(t testing.TB, topics ...string) []string {
	t.Helper()
	return StartKafkaConfig(t, &KafkaConfig{Topics: topics}).Brokers()
}

// StartKafkaConfig is [StartKafka] with a configuration, and returns the
// cluster. config may be nil for the defaults.
func StartKafkaConfig(t testing.TB, config *KafkaConfig) *Kafka {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTimeout)
	defer cancel()
	k, err := NewKafka(ctx, config)
	if err != nil {
		t.Fatalf("%v%s", err, realClusterHint())
	}
	t.Cleanup(func() {
		if err := k.Close(); err != nil {
			t.Errorf("omniboxtest: closing the Kafka cluster: %v", err)
		}
	})
	return k
}

// CreateTopics creates topics with the given number of partitions on the
// cluster at brokers (from [StartKafka]), waits until its metadata shows
// them, and deletes them in the test's cleanup. It fails the test on any
// error, a topic that exists already included.
func CreateTopics(t testing.TB, brokers []string, partitions int32, topics ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaTimeout)
	defer cancel()
	if partitions < 1 {
		t.Fatalf("omniboxtest: creating topics %q with %d partitions: want at least 1", topics, partitions)
	}
	if err := createTopics(ctx, brokers, partitions, topics); err != nil {
		t.Fatalf("%v%s", err, realClusterHint())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), kafkaTimeout)
		defer cancel()
		if err := deleteTopics(ctx, brokers, topics); err != nil {
			t.Logf("omniboxtest: deleting topics %q: %v", topics, err)
		}
	})
}

// realClusterHint explains a failure on the cluster of [KafkaBrokersEnv].
func realClusterHint() string {
	if brokers := kafkaBrokersFromEnv(); len(brokers) > 0 {
		return fmt.Sprintf(" (the cluster is the one %s names: %v; unset it to use an in-process cluster)", KafkaBrokersEnv, brokers)
	}
	return ""
}

// withAdmin runs fn with an admin client of the cluster at brokers.
func withAdmin(brokers []string, fn func(*kadm.Client) error) error {
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...), kgo.ClientID("omniboxtest"))
	if err != nil {
		return fmt.Errorf("omniboxtest: connecting to Kafka at %v: %w", brokers, err)
	}
	defer adm.Close()
	return fn(adm)
}

func createTopics(ctx context.Context, brokers []string, partitions int32, topics []string) error {
	return withAdmin(brokers, func(adm *kadm.Client) error {
		resps, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
		if err != nil {
			return fmt.Errorf("omniboxtest: creating topics %q on Kafka at %v: %w", topics, brokers, err)
		}
		for _, topic := range topics {
			r := resps[topic]
			switch {
			case errors.Is(r.Err, kerr.TopicAlreadyExists):
				return fmt.Errorf("omniboxtest: topic %q exists already on Kafka at %v: give each test topics of its own", topic, brokers)
			case r.Err != nil:
				return fmt.Errorf("omniboxtest: creating topic %q on Kafka at %v: %w %s", topic, brokers, r.Err, r.ErrMessage)
			}
		}
		return waitForTopics(ctx, adm, partitions, topics)
	})
}

// waitForTopics waits until the cluster's metadata shows every topic with
// all its partitions: a real cluster may answer the creation before every
// broker knows the topic.
func waitForTopics(ctx context.Context, adm *kadm.Client, partitions int32, topics []string) error {
	for {
		details, err := adm.ListTopics(ctx, topics...)
		missing := slices.DeleteFunc(slices.Clone(topics), func(topic string) bool {
			d, ok := details[topic]
			return ok && d.Err == nil && len(d.Partitions) == int(partitions)
		})
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("omniboxtest: topics %q were created, but the metadata did not show %d partitions of %q in time (last error: %v)", topics, partitions, missing, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func deleteTopics(ctx context.Context, brokers []string, topics []string) error {
	return withAdmin(brokers, func(adm *kadm.Client) error {
		resps, err := adm.DeleteTopics(ctx, topics...)
		if err != nil {
			return fmt.Errorf("omniboxtest: deleting topics %q from Kafka at %v: %w", topics, brokers, err)
		}
		return resps.Error()
	})
}
