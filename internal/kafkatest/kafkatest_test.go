package kafkatest_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omnibox-go/omnibox/internal/kafkatest"
)

// producerConfig is the configuration the omnibox publisher uses, spelled
// out here so that this package checks kfake against it on its own.
func producerConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.Version = sarama.V2_8_0_0
	config.Producer.Idempotent = true
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Net.MaxOpenRequests = 1
	config.Producer.Return.Successes = true
	config.Producer.Return.Errors = true
	config.Producer.Partitioner = sarama.NewMurmur2Partitioner
	config.Metadata.AllowAutoTopicCreation = false
	return config
}

func consumerConfig() *sarama.Config {
	config := sarama.NewConfig()
	config.Version = sarama.V2_8_0_0
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	config.Consumer.Return.Errors = true
	return config
}

func TestStart(t *testing.T) {
	t.Parallel()

	brokers, closeFn, err := kafkatest.Start()
	require.NoError(t, err)
	require.Len(t, brokers, 1)
	host, port, err := net.SplitHostPort(brokers[0])
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	require.NotEqual(t, "0", port)

	// Unknown topics are created on first use with DefaultPartitions.
	client, err := sarama.NewClient(brokers, consumerConfig())
	require.NoError(t, err)
	partitions, err := client.Partitions("auto-created")
	require.NoError(t, err)
	require.Len(t, partitions, kafkatest.DefaultPartitions)
	require.NoError(t, client.Close())

	closeFn()
	closeFn() // idempotent
}

func TestStart_Options(t *testing.T) {
	t.Parallel()

	brokers, closeFn, err := kafkatest.Start(kfake.SeedTopics(3, "seeded"), kfake.DefaultNumPartitions(2))
	require.NoError(t, err)
	t.Cleanup(closeFn)

	client, err := sarama.NewClient(brokers, consumerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, client.Close()) })
	partitions, err := client.Partitions("seeded")
	require.NoError(t, err)
	require.Len(t, partitions, 3)
	partitions, err = client.Partitions("other")
	require.NoError(t, err)
	require.Len(t, partitions, 2)
}

func TestBrokers(t *testing.T) {
	// Not parallel: it sets an environment variable.

	t.Run("FromEnv", func(t *testing.T) {
		t.Setenv(kafkatest.BrokersEnv, " a:1, b:2 ,,")
		require.Equal(t, []string{"a:1", "b:2"}, kafkatest.Brokers(t))
	})
	t.Run("Kfake", func(t *testing.T) {
		t.Setenv(kafkatest.BrokersEnv, "")
		brokers := kafkatest.Brokers(t)
		require.Len(t, brokers, 1)
		conn, err := net.Dial("tcp", brokers[0])
		require.NoError(t, err)
		require.NoError(t, conn.Close())
	})
}

func TestCreateTopic(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		brokers []string
		client  sarama.Client
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		brokers := kafkatest.Brokers(t)
		client, err := sarama.NewClient(brokers, producerConfig())
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, client.Close()) })
		return &testBundle{brokers: brokers, client: client}
	}

	t.Run("Partitions", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		topic := kafkatest.NewTopic(t, b.brokers, 6)
		require.NoError(t, b.client.RefreshMetadata(topic))
		partitions, err := b.client.Partitions(topic)
		require.NoError(t, err)
		require.Len(t, partitions, 6)
	})
	t.Run("UniqueNames", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.NotEqual(t, kafkatest.NewTopic(t, b.brokers, 1), kafkatest.NewTopic(t, b.brokers, 1))
	})
	t.Run("DeletedOnCleanup", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var topic string
		t.Run("Create", func(t *testing.T) {
			topic = kafkatest.NewTopic(t, b.brokers, 2)
		})
		admin, err := sarama.NewClusterAdminFromClient(b.client)
		require.NoError(t, err)
		topics, err := admin.ListTopics()
		require.NoError(t, err)
		require.NotContains(t, topics, topic)
	})
}

// TestKfake_IdempotentProducer checks kfake against sarama's idempotent
// producer with acks=all (the omnibox publisher's settings): every record is
// acknowledged, offsets per partition are contiguous, records of one key land
// on one partition in order, and a consumer reads them back.
func TestKfake_IdempotentProducer(t *testing.T) {
	t.Parallel()

	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, brokers, 4)

	producer, err := sarama.NewSyncProducer(brokers, producerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, producer.Close()) })

	const n, keys = 400, 8
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{
			Topic: topic,
			Key:   sarama.StringEncoder("key-" + strconv.Itoa(i%keys)),
			Value: sarama.StringEncoder(strconv.Itoa(i)),
		}
	}
	// Two batches, so the second continues the producer's sequences.
	require.NoError(t, producer.SendMessages(msgs[:n/2]))
	require.NoError(t, producer.SendMessages(msgs[n/2:]))

	partitionOf := map[string]int32{}
	offsets := map[int32][]int64{}
	for _, m := range msgs {
		key := string(m.Key.(sarama.StringEncoder))
		if p, ok := partitionOf[key]; ok {
			require.Equal(t, p, m.Partition, "key %s changed partition", key)
		}
		partitionOf[key] = m.Partition
		offsets[m.Partition] = append(offsets[m.Partition], m.Offset)
	}
	for p, offs := range offsets {
		for i, off := range offs {
			require.Equal(t, int64(i), off, "partition %d", p)
		}
	}

	consumer, err := sarama.NewConsumer(brokers, consumerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, consumer.Close()) })
	lastByKey := map[string]int{}
	received := 0
	for p, offs := range offsets {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		for range offs {
			select {
			case m := <-pc.Messages():
				i, err := strconv.Atoi(string(m.Value))
				require.NoError(t, err)
				key := string(m.Key)
				if last, ok := lastByKey[key]; ok {
					require.Greater(t, i, last, "key %s out of order", key)
				}
				lastByKey[key] = i
				received++
			case <-time.After(10 * time.Second):
				t.Fatalf("partition %d: timed out", p)
			}
		}
		require.NoError(t, pc.Close())
	}
	require.Equal(t, n, received)
}

type groupHandler struct {
	mu       sync.Mutex
	received map[string]int
	total    int
	done     chan struct{}
	once     sync.Once
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.mu.Lock()
			h.received[string(m.Value)]++
			if len(h.received) == h.total {
				h.once.Do(func() { close(h.done) })
			}
			h.mu.Unlock()
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

// TestKfake_ConsumerGroup checks kfake against a sarama consumer group (what
// the watermill-kafka subscriber uses when ConsumerGroup is set): a member
// joins, is assigned every partition, reads everything and commits offsets.
func TestKfake_ConsumerGroup(t *testing.T) {
	t.Parallel()

	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, brokers, 4)

	producer, err := sarama.NewSyncProducer(brokers, producerConfig())
	require.NoError(t, err)
	const n = 200
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(strconv.Itoa(i))}
	}
	require.NoError(t, producer.SendMessages(msgs))
	require.NoError(t, producer.Close())

	groupID := "group-" + topic
	group, err := sarama.NewConsumerGroup(brokers, groupID, consumerConfig())
	require.NoError(t, err)

	h := &groupHandler{received: map[string]int{}, total: n, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	consumeDone := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := group.Consume(ctx, []string{topic}, h); err != nil {
				consumeDone <- err
				return
			}
		}
		consumeDone <- nil
	}()
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the consumer group")
	}
	cancel()
	require.NoError(t, <-consumeDone)
	require.NoError(t, group.Close()) // the session commits the marked offsets as it ends

	h.mu.Lock()
	require.Len(t, h.received, n)
	for v, count := range h.received {
		require.Equal(t, 1, count, "value %s", v)
	}
	h.mu.Unlock()

	admin, err := sarama.NewClusterAdmin(brokers, consumerConfig())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, admin.Close()) })
	committed, err := admin.ListConsumerGroupOffsets(groupID, map[string][]int32{topic: {0, 1, 2, 3}})
	require.NoError(t, err)
	var total int64
	for p := range int32(4) {
		block := committed.GetBlock(topic, p)
		require.NotNil(t, block, "partition %d", p)
		require.NoError(t, errorOrNil(block.Err))
		total += max(block.Offset, 0)
	}
	require.Equal(t, int64(n), total)
}

func errorOrNil(err sarama.KError) error {
	if errors.Is(err, sarama.ErrNoError) {
		return nil
	}
	return err
}

// TestKfake_MessageMaxBytes checks that kfake refuses a record batch larger
// than the broker's message.max.bytes (Kafka's default: 1048588 bytes) as
// Kafka does, even when the producer would allow it.
func TestKfake_MessageMaxBytes(t *testing.T) {
	t.Parallel()
	if os.Getenv(kafkatest.BrokersEnv) != "" {
		t.Skip("depends on the broker's message.max.bytes")
	}

	brokers := kafkatest.Brokers(t)
	topic := kafkatest.NewTopic(t, brokers, 1)
	config := producerConfig()
	config.Producer.MaxMessageBytes = 2 << 20
	producer, err := sarama.NewSyncProducer(brokers, config)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, producer.Close()) })

	_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(make([]byte, 1<<20))})
	require.ErrorIs(t, err, sarama.ErrMessageSizeTooLarge)
	_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(make([]byte, 1<<20-100))})
	require.NoError(t, err, "the producer must work again after a refused record")
}
