package publisher_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
)

func TestDefaultKafkaSaramaConfig(t *testing.T) {
	t.Parallel()

	c := publisher.DefaultKafkaSaramaConfig()
	require.NoError(t, c.Validate())
	require.Equal(t, sarama.WaitForAll, c.Producer.RequiredAcks)
	require.True(t, c.Producer.Idempotent)
	require.Equal(t, 1, c.Net.MaxOpenRequests)
	require.True(t, c.Producer.Return.Successes)
	require.True(t, c.Producer.Return.Errors)
	require.True(t, c.Version.IsAtLeast(sarama.V2_8_0_0))
	require.Equal(t, "omnibox", c.ClientID)
	require.Equal(t, 10, c.Producer.Retry.Max)
	require.False(t, c.Metadata.AllowAutoTopicCreation)
	require.Equal(t, publisher.DefaultMaxMessageBytes, c.Producer.MaxMessageBytes)
	// The broker default message.max.bytes (1048588) counts the 12-byte log
	// overhead; sarama keeps a partition's batch below MaxMessageBytes.
	require.LessOrEqual(t, c.Producer.MaxMessageBytes+12, 1048588)

	require.NotSame(t, c, publisher.DefaultKafkaSaramaConfig(), "each call returns a new config")
}

// TestDefaultKafkaSaramaConfig_Partitioner checks that a key picks the
// partition the Java client and franz-go pick (murmur2), not sarama's default
// FNV-1a.
func TestDefaultKafkaSaramaConfig_Partitioner(t *testing.T) {
	t.Parallel()

	ours := publisher.DefaultKafkaSaramaConfig().Producer.Partitioner("topic")
	franz := kgo.StickyKeyPartitioner(nil).ForTopic("topic") // murmur2, as Java's
	saramaDefault := sarama.NewHashPartitioner("topic")
	differs := 0
	for _, n := range []int{1, 2, 3, 4, 7, 12, 64, 1000} {
		for i := range 2000 {
			key := fmt.Sprintf("order-%d", i)
			p, err := ours.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, int32(n))
			require.NoError(t, err)
			require.Equal(t, franz.Partition(&kgo.Record{Key: []byte(key)}, n), int(p), "key %s, %d partitions", key, n)
			q, err := saramaDefault.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, int32(n))
			require.NoError(t, err)
			if p != q {
				differs++
			}
		}
	}
	require.Positive(t, differs, "sarama's default partitioner should disagree")
	require.True(t, ours.RequiresConsistency())
}

func TestKafkaConfig_Validate(t *testing.T) {
	t.Parallel()

	noSuccesses := publisher.DefaultKafkaSaramaConfig()
	noSuccesses.Producer.Return.Successes = false
	idempotentButConcurrent := publisher.DefaultKafkaSaramaConfig()
	idempotentButConcurrent.Net.MaxOpenRequests = 5

	for name, tc := range map[string]struct {
		config  publisher.KafkaConfig
		wantErr string
	}{
		"Minimal":             {config: publisher.KafkaConfig{Brokers: []string{"localhost:9092"}}},
		"NoBrokers":           {config: publisher.KafkaConfig{}, wantErr: "Brokers is required"},
		"EmptyBroker":         {config: publisher.KafkaConfig{Brokers: []string{"a:1", " "}}, wantErr: "Brokers[1] is empty"},
		"NoReturnSuccesses":   {config: publisher.KafkaConfig{Brokers: []string{"a:1"}, OverwriteSaramaConfig: noSuccesses}, wantErr: "Producer.Return.Successes"},
		"InvalidSaramaConfig": {config: publisher.KafkaConfig{Brokers: []string{"a:1"}, OverwriteSaramaConfig: idempotentButConcurrent}, wantErr: "MaxOpenRequests"},
	} {
		err := tc.config.Validate()
		if tc.wantErr == "" {
			require.NoError(t, err, name)
			continue
		}
		require.ErrorContains(t, err, tc.wantErr, name)
	}
}

func TestNewKafka(t *testing.T) {
	t.Parallel()

	t.Run("NilConfig", func(t *testing.T) {
		t.Parallel()
		_, err := publisher.NewKafka(nil)
		require.ErrorIs(t, err, omnibox.ErrNilConfig)
	})
	t.Run("InvalidConfig", func(t *testing.T) {
		t.Parallel()
		_, err := publisher.NewKafka(&publisher.KafkaConfig{})
		require.ErrorContains(t, err, "Brokers is required")
	})
	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		// A port nothing listens on: connections are refused at once.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		_, err = publisher.NewKafka(&publisher.KafkaConfig{Brokers: []string{addr}})
		require.ErrorIs(t, err, sarama.ErrOutOfBrokers)
	})
}
