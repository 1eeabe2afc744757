package kafkatest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omnibox-go/omnibox/omniboxtest"
)

// BrokersEnv is the environment variable that points tests at a real Kafka
// cluster: a comma-separated list of host:port. When it is unset or empty,
// tests run against an in-process kfake cluster.
const BrokersEnv = omniboxtest.KafkaBrokersEnv

// DefaultPartitions is how many partitions a topic that [Start]'s cluster
// creates on first use (auto-creation) gets.
const DefaultPartitions = 4

// Start starts an in-process Kafka cluster (kfake) of one broker listening on
// 127.0.0.1 at a random port, which creates unknown topics on first use with
// [DefaultPartitions] partitions when the client asks for it. opts are
// applied after these defaults and so override them (kfake.SeedTopics
// creates topics up front). closeFn stops the cluster; it is safe to call
// more than once.
//
// Start does not depend on package testing, so demo programs can use it.
func Start(opts ...kfake.Opt) (brokers []string, closeFn func(), err error) {
	cluster, err := kfake.NewCluster(defaultOpts(opts)...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafkatest: starting kfake cluster: %w", err)
	}
	var once sync.Once
	return cluster.ListenAddrs(), func() { once.Do(cluster.Close) }, nil
}

// defaultOpts returns this package's kfake defaults followed by opts.
func defaultOpts(opts []kfake.Opt) []kfake.Opt {
	return append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(DefaultPartitions),
	}, opts...)
}

// Brokers returns the brokers tests should use: those in [BrokersEnv] when
// it is set, or else those of a new in-process cluster that creates unknown
// topics on first use, closed by t.Cleanup (omniboxtest.StartKafkaConfig).
// It calls t.Fatal when the cluster cannot start.
func Brokers(t testing.TB) []string {
	t.Helper()
	return omniboxtest.StartKafkaConfig(t, &omniboxtest.KafkaConfig{AutoCreateTopics: true}).Brokers()
}

// Kfake starts a kfake cluster as [Start] does, whatever [BrokersEnv] says,
// closes it in t.Cleanup and returns it, for tests that inject failures with
// its Fault or Control methods. Get its brokers with ListenAddrs.
func Kfake(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	cluster, err := kfake.NewCluster(defaultOpts(opts)...)
	if err != nil {
		t.Fatalf("kafkatest: starting kfake cluster: %v", err)
	}
	t.Cleanup(cluster.Close)
	return cluster
}

// CreateTopic creates topic with the given number of partitions and the
// cluster's default replication factor, waits until the cluster's metadata
// shows every partition, and deletes the topic again in t.Cleanup (a failed
// deletion is only logged): omniboxtest.CreateTopics. It calls t.Fatal on
// any error, including a topic that already exists: give each test its own
// topic, e.g. with [NewTopic].
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int32) {
	t.Helper()
	omniboxtest.CreateTopics(t, brokers, partitions, topic)
}

var topicSeq atomic.Int64

// NewTopic creates a topic with a name unique to this test run (derived from
// t.Name()) and the given number of partitions, as [CreateTopic] does, and
// returns its name.
func NewTopic(t testing.TB, brokers []string, partitions int32) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		default:
			return '_'
		}
	}, t.Name())
	if len(name) > 150 {
		name = name[:150]
	}
	topic := fmt.Sprintf("omnibox-test.%s.%d-%d", name, time.Now().UnixNano(), topicSeq.Add(1))
	CreateTopic(t, brokers, topic, partitions)
	return topic
}
