package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

// received is a consumed message with what the subscriber put in its context.
type received struct {
	msg       *message.Message
	key       []byte
	partition int32
	offset    int64
}

// consume reads n messages of topic from the oldest offset with a
// watermill-kafka subscriber using KafkaMarshaler, in a consumer group when
// group is not empty, acking each. It fails the test if they do not arrive
// within 30 seconds.
func consume(t *testing.T, brokers []string, topic, group string, n int) []received {
	t.Helper()
	config := kafka.DefaultSaramaSubscriberConfig()
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               brokers,
		ConsumerGroup:         group,
		OverwriteSaramaConfig: config,
		Unmarshaler:           publisher.KafkaMarshaler{},
	}, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, sub.Close()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	require.NoError(t, err)

	out := make([]received, 0, n)
	for len(out) < n {
		select {
		case msg := <-ch:
			key, _ := kafka.MessageKeyFromCtx(msg.Context())
			partition, _ := kafka.MessagePartitionFromCtx(msg.Context())
			offset, _ := kafka.MessagePartitionOffsetFromCtx(msg.Context())
			out = append(out, received{msg: msg, key: key, partition: partition, offset: offset})
			msg.Ack()
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages before the timeout", len(out), n)
		}
	}
	return out
}

// topicOffsets returns the newest offset of each partition of topic: how many
// records it holds.
func topicOffsets(t *testing.T, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	client, err := sarama.NewClient(brokers, sarama.NewConfig())
	require.NoError(t, err)
	defer func() { require.NoError(t, client.Close()) }()
	partitions, err := client.Partitions(topic)
	require.NoError(t, err)
	out := map[int32]int64{}
	for _, p := range partitions {
		off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		require.NoError(t, err)
		out[p] = off
	}
	return out
}

func totalRecords(offsets map[int32]int64) int64 {
	var n int64
	for _, o := range offsets {
		n += o
	}
	return n
}

// events returns n messages as the relay would publish them: keys key-0 to
// key-(keys-1) in turn (keys == 0: no key), metadata with the sequence
// number.
func events(prefix string, n, keys int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		ev := omnibox.Event{
			ID:       fmt.Sprintf("%s-%04d", prefix, i),
			Metadata: map[string]string{"seq": strconv.Itoa(i), "source": "test"},
			Payload:  fmt.Appendf(nil, `{"n":%d}`, i),
		}
		if keys > 0 {
			ev.Key = "key-" + strconv.Itoa(i%keys)
		}
		msgs[i] = omnibox.ToMessage(ev)
	}
	return msgs
}

// partitionOf returns the partition of key in a topic of n partitions, as
// the Java client (murmur2) picks it.
func partitionOf(key string, n int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: []byte(key)}, n))
}

type testBundle struct {
	brokers []string
	kafka   *publisher.Kafka
}

func setup(t *testing.T, config *publisher.KafkaConfig) *testBundle {
	t.Helper()
	brokers := kafkatest.Brokers(t)
	config.Brokers = brokers
	k, err := publisher.NewKafka(config)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, k.Close()) })
	return &testBundle{brokers: brokers, kafka: k}
}

// TestKafka_PublishAndConsume publishes 1,000 keyed and 100 unkeyed messages
// in a few Publish calls and reads them back with a watermill-kafka consumer
// group: every message arrives once, intact, on its key's partition, and each
// key's messages in order.
func TestKafka_PublishAndConsume(t *testing.T) {
	t.Parallel()

	b := setup(t, &publisher.KafkaConfig{})
	topic := kafkatest.NewTopic(t, b.brokers, 4)

	const keys = 10
	keyed := events("keyed", 1000, keys)
	unkeyed := events("unkeyed", 100, 0)
	for i := 0; i < len(keyed); i += 250 {
		require.NoError(t, b.kafka.Publish(topic, keyed[i:i+250]...))
	}
	// Records without a key stick to one partition per batch
	// (kgo.StickyKeyPartitioner): several calls spread them.
	for i := 0; i < len(unkeyed); i += 10 {
		require.NoError(t, b.kafka.Publish(topic, unkeyed[i:i+10]...))
	}

	sent := map[string]*message.Message{}
	for _, m := range append(keyed, unkeyed...) {
		sent[m.UUID] = m
	}
	got := consume(t, b.brokers, topic, "group-"+topic, len(sent))

	seen := map[string]bool{}
	lastSeq := map[string]int{}
	unkeyedPartitions := map[int32]bool{}
	for _, r := range got {
		want, ok := sent[r.msg.UUID]
		require.True(t, ok, "unexpected message %q", r.msg.UUID)
		require.False(t, seen[r.msg.UUID], "message %s received twice", r.msg.UUID)
		seen[r.msg.UUID] = true
		require.Equal(t, want.Payload, r.msg.Payload)
		require.Equal(t, want.Metadata, r.msg.Metadata) // including omnibox.MetadataKey

		key := want.Metadata.Get(omnibox.MetadataKey)
		if key == "" {
			require.Empty(t, r.key)
			unkeyedPartitions[r.partition] = true
			continue
		}
		require.Equal(t, key, string(r.key))
		require.Equal(t, partitionOf(key, 4), r.partition, "key %s on an unexpected partition", key)
		seq, err := strconv.Atoi(want.Metadata.Get("seq"))
		require.NoError(t, err)
		if last, ok := lastSeq[key]; ok {
			require.Greater(t, seq, last, "key %s out of order", key)
		}
		lastSeq[key] = seq
	}
	require.Len(t, seen, len(sent))
	require.Len(t, lastSeq, keys)
	require.Greater(t, len(unkeyedPartitions), 1, "messages without a key should be spread over partitions (all on one: 1 in 4^9)")
}

// TestKafka_Order checks per-key order across many small concurrent-free
// Publish calls and one large one, reading the partitions directly.
func TestKafka_Order(t *testing.T) {
	t.Parallel()

	b := setup(t, &publisher.KafkaConfig{})
	topic := kafkatest.NewTopic(t, b.brokers, 4)
	msgs := events("order", 600, 3)
	for _, m := range msgs[:100] {
		require.NoError(t, b.kafka.Publish(topic, m))
	}
	require.NoError(t, b.kafka.Publish(topic, msgs[100:]...))

	got := consume(t, b.brokers, topic, "", len(msgs))
	byPartition := map[int32][]received{}
	for _, r := range got {
		byPartition[r.partition] = append(byPartition[r.partition], r)
	}
	for p, rs := range byPartition {
		lastSeq := map[string]int{}
		for i, r := range rs {
			require.Equal(t, int64(i), r.offset, "partition %d: offsets are contiguous, no duplicates", p)
			seq, err := strconv.Atoi(r.msg.Metadata.Get("seq"))
			require.NoError(t, err)
			key := string(r.key)
			if last, ok := lastSeq[key]; ok {
				require.Equal(t, last+3, seq, "key %s: every message, in order", key)
			}
			lastSeq[key] = seq
		}
	}
}

func TestKafka_Publish_Errors(t *testing.T) {
	t.Parallel()

	t.Run("MissingTopic", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &publisher.KafkaConfig{})
		topic := "omnibox-test.missing-" + strconv.FormatInt(time.Now().UnixNano(), 10)
		for range 2 { // the second time as the first
			msgs := events("missing", 3, 1)
			start := time.Now()
			err := b.kafka.Publish(topic, msgs...)
			t.Logf("Publish to a missing topic failed after %v", time.Since(start))
			require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)
			require.ErrorIs(t, err, omnibox.ErrRejected)
			require.ErrorContains(t, err, fmt.Sprintf("topic %q does not exist; create it", topic))
			var me omnibox.MessageErrors
			require.ErrorAs(t, err, &me)
			require.Len(t, me.MessageErrors(), 3)
			for _, m := range msgs {
				require.ErrorIs(t, me.MessageErrors()[m.UUID], omnibox.ErrRejected)
			}
		}
	})

	t.Run("PartialFailure", func(t *testing.T) {
		t.Parallel()
		// kfake only: the broker refuses the records of partition 1 once.
		cluster := kafkatest.Kfake(t)
		brokers := cluster.ListenAddrs()
		topic := kafkatest.NewTopic(t, brokers, 4)
		k, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, k.Close()) })
		fault := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{1}, Err: kerr.PolicyViolation, Count: -1})

		msgs := events("partial", 100, 10)
		var wantFailed []string
		for _, m := range msgs {
			if partitionOf(m.Metadata.Get(omnibox.MetadataKey), 4) == 1 {
				wantFailed = append(wantFailed, m.UUID)
			}
		}
		require.NotEmpty(t, wantFailed)

		err = k.Publish(topic, msgs...)
		require.ErrorIs(t, err, kerr.PolicyViolation)
		require.ErrorIs(t, err, omnibox.ErrRejected)
		var pe *publisher.PublishError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, topic, pe.Topic)
		require.Equal(t, 100, pe.Total)
		require.Equal(t, wantFailed, pe.FailedUUIDs)
		require.Len(t, pe.MessageErrors(), len(wantFailed))
		for _, uuid := range wantFailed {
			require.ErrorIs(t, pe.MessageErrors()[uuid], omnibox.ErrRejected, "a refused topic-wide policy charges every message")
		}
		require.ErrorContains(t, err, fmt.Sprintf("%d of 100 message(s)", len(wantFailed)))
		require.Equal(t, int64(100-len(wantFailed)), totalRecords(topicOffsets(t, brokers, topic)))

		// The producer recovers: publishing the batch again (as the relay
		// does) works, duplicating the messages written the first time.
		fault.Remove()
		require.NoError(t, k.Publish(topic, msgs...))
		require.Equal(t, int64(200-len(wantFailed)), totalRecords(topicOffsets(t, brokers, topic)))
	})

	t.Run("InvalidTopic", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &publisher.KafkaConfig{})
		for _, topic := range []string{"", "not a valid topic!", strings.Repeat("x", 300), ".."} {
			err := b.kafka.Publish(topic, events("invalid", 2, 1)...)
			require.ErrorIs(t, err, kerr.InvalidTopicException, "topic %q", topic)
			require.ErrorIs(t, err, omnibox.ErrRejected, "topic %q", topic)
			var me omnibox.MessageErrors
			require.ErrorAs(t, err, &me)
			require.Len(t, me.MessageErrors(), 2)
		}
	})

	// A message that fails the publisher's checks is not sent, nor are the
	// later messages of its key; the other keys' messages are.
	t.Run("MarshalErrorHoldsBackItsKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &publisher.KafkaConfig{})
		topic := kafkatest.NewTopic(t, b.brokers, 2)
		msgs := events("marshal", 6, 2) // key-0: 0, 2, 4; key-1: 1, 3, 5
		msgs[3].Metadata.Set(kafka.UUIDHeaderKey, "x")
		err := b.kafka.Publish(topic, msgs...)
		require.ErrorIs(t, err, publisher.ErrReservedHeader)
		require.ErrorIs(t, err, omnibox.ErrRejected)
		require.ErrorContains(t, err, msgs[3].UUID)
		var pe *publisher.PublishError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, []string{msgs[3].UUID, msgs[5].UUID}, pe.FailedUUIDs)
		require.ErrorIs(t, pe.Errors[msgs[5].UUID], publisher.ErrNotSent)
		require.ErrorIs(t, pe.Errors[msgs[5].UUID], omnibox.ErrUnavailable)
		require.NotErrorIs(t, pe.Errors[msgs[5].UUID], omnibox.ErrRejected)
		require.ErrorContains(t, pe.Errors[msgs[5].UUID], msgs[3].UUID)
		require.Equal(t, int64(4), totalRecords(topicOffsets(t, b.brokers, topic)))
	})

	t.Run("TooLargeHoldsBackItsKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &publisher.KafkaConfig{})
		topic := kafkatest.NewTopic(t, b.brokers, 2)
		msgs := events("large", 6, 2) // key-0: 0, 2, 4; key-1: 1, 3, 5
		msgs[2].Payload = make([]byte, publisher.DefaultMaxMessageBytes)
		err := b.kafka.Publish(topic, msgs...)
		require.ErrorIs(t, err, publisher.ErrMessageTooLarge)
		require.ErrorIs(t, err, omnibox.ErrRejected)
		var pe *publisher.PublishError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, []string{msgs[2].UUID, msgs[4].UUID}, pe.FailedUUIDs)
		require.ErrorIs(t, pe.Errors[msgs[4].UUID], publisher.ErrNotSent)
		require.NotErrorIs(t, pe.Errors[msgs[4].UUID], omnibox.ErrRejected)
		require.Equal(t, int64(4), totalRecords(topicOffsets(t, b.brokers, topic)))
		got := consume(t, b.brokers, topic, "", 4)
		var uuids []string
		for _, r := range got {
			uuids = append(uuids, r.msg.UUID)
		}
		require.ElementsMatch(t, []string{msgs[0].UUID, msgs[1].UUID, msgs[3].UUID, msgs[5].UUID}, uuids)

		// A payload a little under the limit is accepted by a broker
		// with Kafka's default message.max.bytes.
		msgs[2].Payload = make([]byte, publisher.DefaultMaxMessageBytes-200)
		require.NoError(t, b.kafka.Publish(topic, msgs...))

		// Whatever the outbox accepts by default, with a key and a few
		// kilobytes of metadata, the publisher and a default broker accept.
		largest := omnibox.ToMessage(omnibox.Event{
			ID:       "largest",
			Key:      strings.Repeat("k", omnibox.MaxKeyLen),
			Metadata: map[string]string{"trace": strings.Repeat("t", 4096), "type": "LargestAccepted"},
			Payload:  make([]byte, omnibox.DefaultMaxPayloadBytes),
		})
		require.NoError(t, b.kafka.Publish(topic, largest))
	})

	t.Run("Closed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &publisher.KafkaConfig{})
		topic := kafkatest.NewTopic(t, b.brokers, 1)
		require.NoError(t, b.kafka.Publish(topic, events("closed", 1, 1)...))
		require.NoError(t, b.kafka.Close())
		require.NoError(t, b.kafka.Close(), "Close is idempotent")
		require.ErrorIs(t, b.kafka.Publish(topic, events("closed", 1, 1)...), publisher.ErrClosed)
		require.ErrorIs(t, b.kafka.Publish(topic), publisher.ErrClosed)
	})
}

func TestKafka_Publish_Empty(t *testing.T) {
	t.Parallel()

	b := setup(t, &publisher.KafkaConfig{})
	require.NoError(t, b.kafka.Publish("no-such-topic"))
}

// TestKafka_ConcurrentPublishAndClose checks that Close waits for Publish
// calls in progress and later ones fail with ErrClosed.
func TestKafka_ConcurrentPublishAndClose(t *testing.T) {
	t.Parallel()

	b := setup(t, &publisher.KafkaConfig{})
	topic := kafkatest.NewTopic(t, b.brokers, 4)
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				errs <- b.kafka.Publish(topic, events(fmt.Sprintf("c%d-%d", g, i), 10, 4)...)
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, b.kafka.Close())
	wg.Wait()
	close(errs)
	published := 0
	for err := range errs {
		if err == nil {
			published++
			continue
		}
		require.ErrorIs(t, err, publisher.ErrClosed)
	}
	require.Equal(t, int64(published*10), totalRecords(topicOffsets(t, b.brokers, topic)))
}

// TestKafka_BatchOfSmallMessagesOnOnePartition checks that a Publish of more
// than MaxMessageBytes worth of small messages to one partition works: the
// producer splits it into batches the broker accepts.
func TestKafka_BatchOfSmallMessagesOnOnePartition(t *testing.T) {
	t.Parallel()

	b := setup(t, &publisher.KafkaConfig{})
	topic := kafkatest.NewTopic(t, b.brokers, 1)
	msgs := events("big-batch", 700, 1)
	for _, m := range msgs {
		m.Payload = make([]byte, 2000)
	}
	require.NoError(t, b.kafka.Publish(topic, msgs...)) // ~1.4 MB
	require.Equal(t, int64(700), totalRecords(topicOffsets(t, b.brokers, topic)))

	// Why ProducerBatchMaxBytes is not above the broker's limit: a larger
	// value makes batches of small messages that a default broker refuses.
	// The broker refuses a batch; the producer fails the partition's later
	// records with it, which the publisher reports as not sent.
	if os.Getenv(kafkatest.BrokersEnv) == "" {
		k, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: b.brokers, Options: []kgo.Opt{
			kgo.ProducerBatchMaxBytes(publisher.DefaultMaxMessageBytes + 64<<10),
			// Let the producer fill a batch up to the limit before it sends.
			kgo.ProducerLinger(200 * time.Millisecond),
		}})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, k.Close()) })
		err = k.Publish(topic, msgs...)
		require.ErrorIs(t, err, kerr.MessageTooLarge)
		var pe *publisher.PublishError
		require.ErrorAs(t, err, &pe)
		require.ErrorIs(t, pe.Errors[pe.FailedUUIDs[0]], omnibox.ErrRejected)
		for _, uuid := range pe.FailedUUIDs[1:] {
			require.ErrorIs(t, pe.Errors[uuid], publisher.ErrNotSent)
		}
	}
}

// TestKafka_RetryAfterAppend makes the broker answer the first produce
// requests with REQUEST_TIMED_OUT after writing the records, as a broker
// that lost its response would. The producer retries; idempotence makes the
// broker drop the resent records, so each message is written once and in
// order. Runs on kfake only, which can inject the failure.
func TestKafka_RetryAfterAppend(t *testing.T) {
	t.Parallel()

	type testBundle struct {
		brokers []string
		cluster *kfake.Cluster
		topic   string
	}
	setup := func(t *testing.T) *testBundle {
		t.Helper()
		cluster := kafkatest.Kfake(t)
		brokers := cluster.ListenAddrs()
		topic := kafkatest.NewTopic(t, brokers, 2)
		return &testBundle{brokers: brokers, cluster: cluster, topic: topic}
	}
	publish := func(t *testing.T, b *testBundle, opts ...kgo.Opt) (faults int, records int64) {
		t.Helper()
		k, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: b.brokers, Options: opts})
		require.NoError(t, err)
		defer func() { require.NoError(t, k.Close()) }()
		fault := b.cluster.Fault(kfake.Fault{
			Keys:  []kmsg.Key{kmsg.Produce},
			Topic: b.topic,
			Err:   kerr.RequestTimedOut,
			Count: 3,
		})
		defer fault.Remove()
		require.NoError(t, k.Publish(b.topic, events("retry", 300, 3)...))
		return fault.Hits(), totalRecords(topicOffsets(t, b.brokers, b.topic))
	}

	t.Run("Idempotent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		faults, records := publish(t, b)
		require.Positive(t, faults)
		require.Equal(t, int64(300), records, "no duplicates")
		got := consume(t, b.brokers, b.topic, "", 300)
		lastSeq := map[string]int{}
		for _, r := range got {
			seq, err := strconv.Atoi(r.msg.Metadata.Get("seq"))
			require.NoError(t, err)
			if last, ok := lastSeq[string(r.key)]; ok {
				require.Equal(t, last+3, seq, "key %s", r.key)
			}
			lastSeq[string(r.key)] = seq
		}
	})

	// The same failure without idempotence duplicates records: the test
	// above would notice if the producer were not idempotent.
	t.Run("NotIdempotent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		faults, records := publish(t, b, kgo.DisableIdempotentWrite())
		require.Positive(t, faults)
		require.Greater(t, records, int64(300))
	})
}

func TestPublishError(t *testing.T) {
	t.Parallel()

	cause := errors.New("boom")
	errs := map[string]error{"a": cause, "b": errors.New("bang")}
	err := error(&publisher.PublishError{Err: cause, Errors: errs, FailedUUIDs: []string{"a", "b"}, Topic: "t", Total: 5})
	require.ErrorIs(t, err, cause)
	require.EqualError(t, err, `publisher: 2 of 5 message(s) to topic "t" not acknowledged by Kafka; first failure (message a): boom`)
	var me omnibox.MessageErrors
	require.ErrorAs(t, err, &me)
	require.Equal(t, errs, me.MessageErrors())
}
