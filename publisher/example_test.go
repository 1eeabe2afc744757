package publisher_test

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

// ExampleNewKafka publishes what the relay would publish for three events of
// one order, then reads them back with a watermill-kafka subscriber using
// the same marshaler. The broker is an in-process kfake cluster; in a
// service, Brokers would be the Kafka cluster's addresses and the publisher
// would be passed to omnibox.NewRelay.
func ExampleNewKafka() {
	brokers, stop, err := kafkatest.Start(kfake.SeedTopics(4, "orders"))
	if err != nil {
		panic(err)
	}
	defer stop()

	pub, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers})
	if err != nil {
		panic(err)
	}
	defer pub.Close()

	var msgs []*message.Message
	for i, status := range []string{"created", "paid", "shipped"} {
		msgs = append(msgs, omnibox.ToMessage(omnibox.Event{
			ID:       fmt.Sprintf("evt-%d", i+1),
			Key:      "order-42", // one key: one partition, in order
			Metadata: map[string]string{"type": "order." + status},
			Payload:  []byte(`{"order":42}`),
		}))
	}
	// One call, one round trip (or two) for the whole batch.
	if err := pub.Publish("orders", msgs...); err != nil {
		panic(err)
	}

	config := kafka.DefaultSaramaSubscriberConfig()
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               brokers,
		OverwriteSaramaConfig: config,
		Unmarshaler:           publisher.KafkaMarshaler{},
	}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	received, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		panic(err)
	}
	for range len(msgs) {
		msg, ok := <-received
		if !ok {
			panic("timed out")
		}
		key, _ := kafka.MessageKeyFromCtx(msg.Context())
		fmt.Printf("%s key=%s %s=%s type=%s %s\n", msg.UUID, key,
			omnibox.MetadataKey, msg.Metadata.Get(omnibox.MetadataKey), msg.Metadata.Get("type"), msg.Payload)
		msg.Ack()
	}
	// Output:
	// evt-1 key=order-42 omnibox_key=order-42 type=order.created {"order":42}
	// evt-2 key=order-42 omnibox_key=order-42 type=order.paid {"order":42}
	// evt-3 key=order-42 omnibox_key=order-42 type=order.shipped {"order":42}
}
