package omniboxtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/omniboxtest"
	"github.com/omnibox-go/omnibox/publisher"
)

// topicsOf returns the topics of the cluster at brokers with their
// partition counts.
func topicsOf(t *testing.T, brokers []string) map[string]int {
	t.Helper()
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	details, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	topics := map[string]int{}
	for name, d := range details {
		topics[name] = len(d.Partitions)
	}
	return topics
}

func publishOne(t *testing.T, brokers []string, topic string) error {
	t.Helper()
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers, PublishTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer func() { require.NoError(t, pub.Close()) }()
	return pub.Publish(topic, omnibox.ToMessage(omnibox.Event{ID: "e1", Key: "k", Topic: topic, Payload: []byte("x")}))
}

func TestStartKafka(t *testing.T) {
	t.Setenv(omniboxtest.KafkaBrokersEnv, "") // not parallel: it sets the environment

	brokers := omniboxtest.StartKafka(t, "orders", "payments")
	require.Len(t, brokers, 1)
	require.Equal(t, map[string]int{"orders": omniboxtest.DefaultPartitions, "payments": omniboxtest.DefaultPartitions}, topicsOf(t, brokers))

	// The publisher works on a created topic and is refused on another:
	// the cluster does not create topics on first use.
	require.NoError(t, publishOne(t, brokers, "orders"))
	err := publishOne(t, brokers, "unknown")
	require.ErrorIs(t, err, omnibox.ErrRejected)
	require.NotContains(t, topicsOf(t, brokers), "unknown")

	// More topics later, with their own partition counts.
	omniboxtest.CreateTopics(t, brokers, 1, "orders.poison")
	require.Equal(t, 1, topicsOf(t, brokers)["orders.poison"])
	require.NoError(t, publishOne(t, brokers, "orders.poison"))
}

// The in-process cluster is stopped at the test's cleanup.
func TestStartKafka_Cleanup(t *testing.T) {
	t.Setenv(omniboxtest.KafkaBrokersEnv, "")

	var brokers []string
	t.Run("Start", func(t *testing.T) {
		brokers = omniboxtest.StartKafka(t, "orders")
	})
	adm, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...), kgo.DialTimeout(time.Second), kgo.RetryTimeout(2*time.Second))
	require.NoError(t, err)
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = adm.ListTopics(ctx)
	require.Error(t, err, "the cluster outlived its test")
}

func TestStartKafkaConfig(t *testing.T) {
	t.Setenv(omniboxtest.KafkaBrokersEnv, "") // not parallel: it sets the environment

	t.Run("Partitions", func(t *testing.T) {
		k := omniboxtest.StartKafkaConfig(t, &omniboxtest.KafkaConfig{Topics: []string{"a", "b"}, Partitions: 7})
		require.True(t, k.InProcess())
		require.Equal(t, map[string]int{"a": 7, "b": 7}, topicsOf(t, k.Brokers()))
		require.NoError(t, k.CreateTopics(t.Context(), 2, "c"))
		require.Equal(t, 2, topicsOf(t, k.Brokers())["c"])
	})
	t.Run("AutoCreateTopics", func(t *testing.T) {
		k := omniboxtest.StartKafkaConfig(t, &omniboxtest.KafkaConfig{AutoCreateTopics: true, Partitions: 3})
		adm, err := kadm.NewOptClient(kgo.SeedBrokers(k.Brokers()...), kgo.AllowAutoTopicCreation())
		require.NoError(t, err)
		defer adm.Close()
		_, err = adm.ListTopics(t.Context(), "auto")
		require.NoError(t, err)
		require.Equal(t, 3, topicsOf(t, k.Brokers())["auto"])
	})
	t.Run("NilConfig", func(t *testing.T) {
		k := omniboxtest.StartKafkaConfig(t, nil)
		require.Empty(t, topicsOf(t, k.Brokers()))
	})
}

func TestKafkaConfig_Validate(t *testing.T) {
	t.Parallel()
	require.NoError(t, (&omniboxtest.KafkaConfig{}).Validate())
	require.ErrorContains(t, (&omniboxtest.KafkaConfig{Partitions: -1}).Validate(), "Partitions")
	require.ErrorContains(t, (&omniboxtest.KafkaConfig{Topics: []string{""}}).Validate(), "empty topic")
	_, err := omniboxtest.NewKafka(t.Context(), &omniboxtest.KafkaConfig{Partitions: -1})
	require.Error(t, err)
}

func TestNewKafka(t *testing.T) {
	t.Setenv(omniboxtest.KafkaBrokersEnv, "") // not parallel: it sets the environment

	k, err := omniboxtest.NewKafka(t.Context(), &omniboxtest.KafkaConfig{Topics: []string{"orders"}})
	require.NoError(t, err)
	brokers := k.Brokers()
	require.Equal(t, map[string]int{"orders": omniboxtest.DefaultPartitions}, topicsOf(t, brokers))

	err = k.CreateTopics(t.Context(), 1, "orders")
	require.ErrorContains(t, err, `topic "orders" exists already`)
	require.ErrorContains(t, k.CreateTopics(t.Context(), 0, "other"), "at least 1")
	require.NoError(t, k.CreateTopics(t.Context(), 1)) // nothing to create

	require.NoError(t, k.Close())
	require.NoError(t, k.Close()) // idempotent
	require.ErrorContains(t, k.CreateTopics(t.Context(), 1, "late"), "closed")
}

// With OMNIBOX_KAFKA_BROKERS set, the kit uses that cluster: it creates the
// topics there and deletes them at cleanup. The "real" cluster here is
// another in-process one.
func TestStartKafka_RealCluster(t *testing.T) {
	t.Setenv(omniboxtest.KafkaBrokersEnv, "")
	real, err := omniboxtest.NewKafka(t.Context(), &omniboxtest.KafkaConfig{Topics: []string{"existing"}})
	require.NoError(t, err)
	defer func() { require.NoError(t, real.Close()) }()
	realBrokers := real.Brokers()
	t.Setenv(omniboxtest.KafkaBrokersEnv, " "+realBrokers[0]+" ,,")

	t.Run("Use", func(t *testing.T) {
		k := omniboxtest.StartKafkaConfig(t, &omniboxtest.KafkaConfig{Topics: []string{"orders"}, Partitions: 2})
		require.False(t, k.InProcess())
		require.Equal(t, realBrokers, k.Brokers())
		require.NoError(t, k.CreateTopics(t.Context(), 1, "more"))
		omniboxtest.CreateTopics(t, k.Brokers(), 3, "evenmore")
		require.Equal(t, map[string]int{"existing": 4, "orders": 2, "more": 1, "evenmore": 3}, topicsOf(t, realBrokers))
		require.NoError(t, publishOne(t, k.Brokers(), "orders"))
	})
	require.Equal(t, map[string]int{"existing": 4}, topicsOf(t, realBrokers), "the test's topics outlived it")

	t.Run("ExistingTopicFails", func(t *testing.T) {
		rec := runRecorded(t, func(tb testing.TB) { omniboxtest.StartKafka(tb, "existing") })
		require.True(t, rec.failed)
		require.Contains(t, rec.msg, `topic "existing" exists already`)
		require.Contains(t, rec.msg, omniboxtest.KafkaBrokersEnv)
	})
}

func TestStartKafka_UnreachableRealClusterFails(t *testing.T) {
	t.Setenv(omniboxtest.KafkaBrokersEnv, "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := omniboxtest.NewKafka(ctx, &omniboxtest.KafkaConfig{Topics: []string{"orders"}})
	require.ErrorContains(t, err, "127.0.0.1:1")
}
