package kafkatest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// BrokersEnv is the environment variable that points tests at a real Kafka
// cluster: a comma-separated list of host:port. When it is unset or empty,
// tests run against an in-process kfake cluster.
const BrokersEnv = "OMNIBOX_KAFKA_BROKERS"

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
// it is set, or else those of a new kfake cluster from [Start], closed by
// t.Cleanup. It calls t.Fatal when the cluster cannot start.
func Brokers(t testing.TB) []string {
	t.Helper()
	if env := strings.TrimSpace(os.Getenv(BrokersEnv)); env != "" {
		var brokers []string
		for b := range strings.SplitSeq(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		if len(brokers) > 0 {
			return brokers
		}
	}
	brokers, closeFn, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return brokers
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

// adminConfig is the sarama configuration of the admin client used by
// [CreateTopic].
func adminConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.ClientID = "omnibox-kafkatest"
	config.Version = sarama.V2_8_0_0
	config.Admin.Timeout = 10 * time.Second
	return config
}

// CreateTopic creates topic with the given number of partitions and the
// cluster's default replication factor, waits until the cluster's metadata
// shows every partition, and deletes the topic again in t.Cleanup (a failed
// deletion is only logged). It calls t.Fatal on any error, including a topic
// that already exists: give each test its own topic, e.g. with [NewTopic].
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int32) {
	t.Helper()
	if err := createTopic(brokers, topic, partitions); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := deleteTopic(brokers, topic); err != nil {
			t.Logf("kafkatest: deleting topic %q: %v", topic, err)
		}
	})
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

func createTopic(brokers []string, topic string, partitions int32) (err error) {
	admin, err := sarama.NewClusterAdmin(brokers, adminConfig())
	if err != nil {
		return fmt.Errorf("kafkatest: connecting to %v: %w", brokers, err)
	}
	defer func() { err = errors.Join(err, admin.Close()) }()
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: -1}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		return fmt.Errorf("kafkatest: creating topic %q: %w", topic, err)
	}
	// A real cluster may answer before every broker knows the topic.
	deadline := time.Now().Add(30 * time.Second)
	for {
		meta, err := admin.DescribeTopics([]string{topic})
		if err == nil && len(meta) == 1 && errors.Is(meta[0].Err, sarama.ErrNoError) && len(meta[0].Partitions) == int(partitions) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kafkatest: topic %q was created but its metadata did not show %d partitions in time (last error: %v)", topic, partitions, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func deleteTopic(brokers []string, topic string) (err error) {
	admin, err := sarama.NewClusterAdmin(brokers, adminConfig())
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, admin.Close()) }()
	return admin.DeleteTopic(topic)
}
