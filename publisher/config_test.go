package publisher_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
)

func TestDefaultKafkaOptions(t *testing.T) {
	t.Parallel()

	// The client is not used: NewClient does not connect.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, publisher.DefaultKafkaOptions()...)...)
	require.NoError(t, err)
	defer cl.Close()
	require.Equal(t, kgo.AllISRAcks(), cl.OptValue(kgo.RequiredAcks))
	require.Equal(t, false, cl.OptValue(kgo.DisableIdempotentWrite))
	require.Equal(t, true, cl.OptValue(kgo.AllowIdempotentProduceCancellation))
	require.Equal(t, false, cl.OptValue(kgo.AllowAutoTopicCreation))
	require.Equal(t, "omnibox", cl.OptValue(kgo.ClientID))
	require.Equal(t, time.Duration(0), cl.OptValue(kgo.ProducerLinger))
	maxBytes := cl.OptValue(kgo.ProducerBatchMaxBytesFn).(func(string) int32)
	require.Equal(t, int32(publisher.DefaultMaxMessageBytes), maxBytes("any"))
	// The broker default message.max.bytes (1048588) counts the 12-byte log
	// overhead.
	require.LessOrEqual(t, publisher.DefaultMaxMessageBytes+12, 1048588)

	require.Len(t, publisher.DefaultKafkaOptions(), len(publisher.DefaultKafkaOptions()))
}

// TestDefaultKafkaOptions_Partitioner checks that a key picks the partition
// the Java client picks (murmur2, as sarama's NewMurmur2Partitioner), not
// sarama's default FNV-1a.
func TestDefaultKafkaOptions_Partitioner(t *testing.T) {
	t.Parallel()

	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, publisher.DefaultKafkaOptions()...)...)
	require.NoError(t, err)
	defer cl.Close()
	ours := cl.OptValue(kgo.RecordPartitioner).(kgo.Partitioner).ForTopic("topic")
	java := sarama.NewMurmur2Partitioner("topic")
	saramaDefault := sarama.NewHashPartitioner("topic")
	differs := 0
	for _, n := range []int{1, 2, 3, 4, 7, 12, 64, 1000} {
		for i := range 2000 {
			key := fmt.Sprintf("order-%d", i)
			p := ours.Partition(&kgo.Record{Key: []byte(key)}, n)
			want, err := java.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, int32(n))
			require.NoError(t, err)
			require.Equal(t, int(want), p, "key %s, %d partitions", key, n)
			q, err := saramaDefault.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(key)}, int32(n))
			require.NoError(t, err)
			if int(q) != p {
				differs++
			}
		}
	}
	require.Positive(t, differs, "sarama's default partitioner should disagree")
	require.True(t, ours.RequiresConsistency(&kgo.Record{Key: []byte("k")}))
}

func TestKafkaConfig_Validate(t *testing.T) {
	t.Parallel()

	for name, tc := range map[string]struct {
		config  publisher.KafkaConfig
		wantErr string
	}{
		"Minimal":         {config: publisher.KafkaConfig{Brokers: []string{"localhost:9092"}}},
		"WithOptions":     {config: publisher.KafkaConfig{Brokers: []string{"a:1"}, Options: []kgo.Opt{kgo.ProducerLinger(time.Millisecond)}, PublishTimeout: time.Second}},
		"NoBrokers":       {config: publisher.KafkaConfig{}, wantErr: "Brokers is required"},
		"EmptyBroker":     {config: publisher.KafkaConfig{Brokers: []string{"a:1", " "}}, wantErr: "Brokers[1] is empty"},
		"NilOption":       {config: publisher.KafkaConfig{Brokers: []string{"a:1"}, Options: []kgo.Opt{kgo.ClientID("x"), nil}}, wantErr: "Options[1] is nil"},
		"NegativeTimeout": {config: publisher.KafkaConfig{Brokers: []string{"a:1"}, PublishTimeout: -time.Second}, wantErr: "PublishTimeout cannot be negative"},
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
	t.Run("InvalidOption", func(t *testing.T) {
		t.Parallel()
		_, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: []string{"127.0.0.1:1"}, Options: []kgo.Opt{kgo.ProducerBatchMaxBytes(1)}})
		require.ErrorContains(t, err, "creating Kafka client")
	})
	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		// A port nothing listens on: connections are refused at once.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		_, err = publisher.NewKafka(&publisher.KafkaConfig{Brokers: []string{addr}, PublishTimeout: 2 * time.Second})
		require.ErrorContains(t, err, "connecting to Kafka at")
	})
}
