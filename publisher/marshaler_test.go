package publisher_test

import (
	"testing"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/publisher"
)

// consumed turns a produced record into the record a consumer would read.
func consumed(t *testing.T, pm *sarama.ProducerMessage) *sarama.ConsumerMessage {
	t.Helper()
	cm := &sarama.ConsumerMessage{Topic: pm.Topic}
	if pm.Key != nil {
		key, err := pm.Key.Encode()
		require.NoError(t, err)
		cm.Key = key
	}
	value, err := pm.Value.Encode()
	require.NoError(t, err)
	cm.Value = value
	for i := range pm.Headers {
		cm.Headers = append(cm.Headers, &pm.Headers[i])
	}
	return cm
}

func headerKeys(pm *sarama.ProducerMessage) []string {
	var keys []string
	for _, h := range pm.Headers {
		keys = append(keys, string(h.Key))
	}
	return keys
}

func TestKafkaMarshaler_Marshal(t *testing.T) {
	t.Parallel()

	t.Run("KeyBecomesRecordKey", func(t *testing.T) {
		t.Parallel()
		msg := omnibox.ToMessage(omnibox.Event{
			ID:       "evt-1",
			Key:      "order-42",
			Metadata: map[string]string{"zeta": "z", "alpha": "a", "mid": "m"},
			Payload:  []byte(`{"total":10}`),
		})
		pm, err := publisher.KafkaMarshaler{}.Marshal("orders", msg)
		require.NoError(t, err)
		require.Equal(t, "orders", pm.Topic)
		require.NotNil(t, pm.Key)
		key, err := pm.Key.Encode()
		require.NoError(t, err)
		require.Equal(t, []byte("order-42"), key)
		value, err := pm.Value.Encode()
		require.NoError(t, err)
		require.Equal(t, []byte(`{"total":10}`), value)
		// UUID header first, then metadata sorted; the key is not a header.
		require.Equal(t, []string{kafka.UUIDHeaderKey, "alpha", "mid", "zeta"}, headerKeys(pm))
		require.Equal(t, []byte("evt-1"), pm.Headers[0].Value)
		// The caller's message is left alone.
		require.Equal(t, "order-42", msg.Metadata.Get(omnibox.MetadataKey))
	})

	t.Run("NoKey", func(t *testing.T) {
		t.Parallel()
		for name, msg := range map[string]*message.Message{
			"NoMetadata": message.NewMessage("evt-2", []byte("x")),
			"EmptyKey":   {UUID: "evt-3", Metadata: message.Metadata{omnibox.MetadataKey: "", "a": "b"}, Payload: []byte("x")},
		} {
			pm, err := publisher.KafkaMarshaler{}.Marshal("orders", msg)
			require.NoError(t, err, name)
			// A nil interface, so that sarama's partitioners see "no key".
			require.Nil(t, pm.Key, name)
			require.NotContains(t, headerKeys(pm), omnibox.MetadataKey, name)
		}
	})

	t.Run("EmptyPayloadIsNotATombstone", func(t *testing.T) {
		t.Parallel()
		for _, payload := range [][]byte{nil, {}} {
			pm, err := publisher.KafkaMarshaler{}.Marshal("orders", message.NewMessage("evt-4", payload))
			require.NoError(t, err)
			value, err := pm.Value.Encode()
			require.NoError(t, err)
			require.NotNil(t, value, "a nil value is sent as null, a tombstone")
			require.Empty(t, value)
		}
	})

	t.Run("ReservedUUIDHeader", func(t *testing.T) {
		t.Parallel()
		msg := message.NewMessage("evt-5", nil)
		msg.Metadata.Set(kafka.UUIDHeaderKey, "other")
		_, err := publisher.KafkaMarshaler{}.Marshal("orders", msg)
		require.ErrorIs(t, err, publisher.ErrReservedHeader)

		msg.Metadata.Set(kafka.UUIDHeaderKey, "") // present, even if empty
		_, err = publisher.KafkaMarshaler{}.Marshal("orders", msg)
		require.ErrorIs(t, err, publisher.ErrReservedHeader)
	})
}

// TestKafkaMarshaler_Record checks that the franz-go record Kafka produces is
// the sarama record Marshal builds for a watermill-kafka Publisher.
func TestKafkaMarshaler_Record(t *testing.T) {
	t.Parallel()

	for name, msg := range map[string]*message.Message{
		"KeyAndMetadata": omnibox.ToMessage(omnibox.Event{ID: "evt-1", Key: "order-42", Metadata: map[string]string{"zeta": "z", "alpha": "a"}, Payload: []byte("p")}),
		"NoKey":          message.NewMessage("evt-2", []byte("x")),
		"EmptyKey":       {UUID: "evt-3", Metadata: message.Metadata{omnibox.MetadataKey: "", "a": "b"}, Payload: []byte("x")},
		"NilPayload":     message.NewMessage("evt-4", nil),
	} {
		r, err := publisher.KafkaMarshaler{}.Record("orders", msg)
		require.NoError(t, err, name)
		pm, err := publisher.KafkaMarshaler{}.Marshal("orders", msg)
		require.NoError(t, err, name)
		require.Equal(t, "orders", r.Topic, name)
		cm := consumed(t, pm)
		if cm.Key == nil {
			require.Nil(t, r.Key, name)
		} else {
			require.Equal(t, cm.Key, r.Key, name)
		}
		require.NotNil(t, r.Value, "%s: a nil value is sent as null, a tombstone", name)
		require.Equal(t, cm.Value, r.Value, name)
		require.Len(t, r.Headers, len(pm.Headers), name)
		for i, h := range r.Headers {
			require.Equal(t, string(pm.Headers[i].Key), h.Key, name)
			require.Equal(t, pm.Headers[i].Value, h.Value, name)
		}
		require.Equal(t, kafka.UUIDHeaderKey, r.Headers[0].Key, name)
	}

	msg := message.NewMessage("evt-5", nil)
	msg.Metadata.Set(kafka.UUIDHeaderKey, "")
	_, err := publisher.KafkaMarshaler{}.Record("orders", msg)
	require.ErrorIs(t, err, publisher.ErrReservedHeader)
}

func TestKafkaMarshaler_Unmarshal(t *testing.T) {
	t.Parallel()

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		for name, ev := range map[string]omnibox.Event{
			"KeyAndMetadata": {ID: "evt-1", Key: "k", Metadata: map[string]string{"a": "1", "b": "2"}, Payload: []byte("p")},
			"KeyOnly":        {ID: "evt-2", Key: "k", Payload: []byte("p")},
			"MetadataOnly":   {ID: "evt-3", Metadata: map[string]string{"a": "1"}, Payload: []byte("p")},
			"Bare":           {ID: "evt-4", Payload: []byte("p")},
		} {
			sent := omnibox.ToMessage(ev)
			pm, err := publisher.KafkaMarshaler{}.Marshal("t", sent)
			require.NoError(t, err, name)
			got, err := publisher.KafkaMarshaler{}.Unmarshal(consumed(t, pm))
			require.NoError(t, err, name)
			require.Equal(t, sent.UUID, got.UUID, name)
			require.Equal(t, sent.Payload, got.Payload, name)
			want := sent.Metadata
			if want == nil {
				want = message.Metadata{}
			}
			require.Equal(t, want, got.Metadata, name)
		}
	})

	t.Run("RecordKeyWinsOverHeader", func(t *testing.T) {
		t.Parallel()
		got, err := publisher.KafkaMarshaler{}.Unmarshal(&sarama.ConsumerMessage{
			Key:   []byte("from-key"),
			Value: []byte("v"),
			Headers: []*sarama.RecordHeader{
				{Key: []byte(kafka.UUIDHeaderKey), Value: []byte("evt")},
				{Key: []byte(omnibox.MetadataKey), Value: []byte("from-header")},
			},
		})
		require.NoError(t, err)
		require.Equal(t, "evt", got.UUID)
		require.Equal(t, message.Metadata{omnibox.MetadataKey: "from-key"}, got.Metadata)
	})

	t.Run("ForeignRecordWithoutHeaders", func(t *testing.T) {
		t.Parallel()
		got, err := publisher.KafkaMarshaler{}.Unmarshal(&sarama.ConsumerMessage{Key: []byte{}, Value: []byte("v")})
		require.NoError(t, err)
		require.Empty(t, got.UUID)
		require.Empty(t, got.Metadata)
		require.Equal(t, message.Payload("v"), got.Payload)
	})
}
