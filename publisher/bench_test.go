package publisher_test

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

// BenchmarkPublish publishes batches of 500 messages (10 keys, 100-byte
// payloads, 4 partitions), as the relay does with its default batch size,
// with watermill-kafka's Publisher (one blocking round trip per message) and
// with publisher.Kafka (the whole batch handed to franz-go at once), on loopback and
// with 1 ms added to every request's trip to the broker (as across a data
// center network). The kfake broker discards the records
// (kfake.BlackholeProduce) so that memory stays flat; produce-reqs/op counts
// the produce requests it received per batch. Set OMNIBOX_KAFKA_BROKERS to measure
// against a real cluster instead.
//
//	go test -run '^$' -bench Publish -benchtime 2s ./publisher/
func BenchmarkPublish(b *testing.B) {
	batch := events("bench", 500, 10)
	for _, m := range batch {
		m.Payload = make([]byte, 100)
	}
	pubs := []struct {
		name string
		new  func(brokers []string) (message.Publisher, error)
	}{
		{"watermill-kafka/defaults", func(brokers []string) (message.Publisher, error) {
			return kafka.NewPublisher(kafka.PublisherConfig{Brokers: brokers, Marshaler: kafka.DefaultMarshaler{}}, nil)
		}},
		{"omnibox", func(brokers []string) (message.Publisher, error) {
			return publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers})
		}},
		// The linger the defaults do without (ProducerLinger(0)).
		{"omnibox/linger=1ms", func(brokers []string) (message.Publisher, error) {
			return publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers, Options: []kgo.Opt{kgo.ProducerLinger(time.Millisecond)}})
		}},
		{"omnibox/acks=leader,not-idempotent", func(brokers []string) (message.Publisher, error) {
			return publisher.NewKafka(&publisher.KafkaConfig{Brokers: brokers, Options: []kgo.Opt{
				kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(),
			}})
		}},
	}

	for _, rtt := range []time.Duration{0, time.Millisecond} {
		var (
			brokers         []string
			cluster         *kfake.Cluster
			produceRequests atomic.Int64
		)
		switch {
		case os.Getenv(kafkatest.BrokersEnv) != "":
			if rtt > 0 {
				continue
			}
			brokers = kafkatest.Brokers(b)
		default:
			cluster = kafkatest.Kfake(b, kfake.BlackholeProduce(), kfake.ListenFn(slowListen(rtt)))
			brokers = cluster.ListenAddrs()
			// Count produce requests; not handling them lets kfake answer.
			cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				produceRequests.Add(1)
				return nil, nil, false
			})
		}
		topic := kafkatest.NewTopic(b, brokers, 4)

		for _, p := range pubs {
			b.Run("rtt="+rtt.String()+"/"+p.name, func(b *testing.B) {
				pub, err := p.new(brokers)
				require.NoError(b, err)
				b.Cleanup(func() { require.NoError(b, pub.Close()) })
				require.NoError(b, pub.Publish(topic, batch...)) // warm up: metadata, producer ID
				before := produceRequests.Load()
				b.ResetTimer()
				for b.Loop() {
					if err := pub.Publish(topic, batch...); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "msgs/s")
				if cluster != nil {
					b.ReportMetric(float64(produceRequests.Load()-before)/float64(b.N), "produce-reqs/op")
				}
			})
		}
	}
}

// slowListen returns a kfake.ListenFn whose connections deliver what the
// client sends delay late: a round trip takes delay longer.
func slowListen(delay time.Duration) func(network, address string) (net.Listener, error) {
	return func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil || delay == 0 {
			return ln, err
		}
		return slowListener{Listener: ln, delay: delay}, nil
	}
}

type slowListener struct {
	net.Listener
	delay time.Duration
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newSlowConn(c, l.delay), nil
}

type chunk struct {
	at   time.Time
	data []byte
}

// slowConn delays what is read from it by delay, keeping the order and
// without limiting throughput (chunks in flight overlap).
type slowConn struct {
	net.Conn
	buf       []byte
	chunks    chan chunk
	closeOnce sync.Once
	done      chan struct{}
	readErr   error // set before chunks is closed
}

func newSlowConn(c net.Conn, delay time.Duration) *slowConn {
	s := &slowConn{Conn: c, chunks: make(chan chunk, 256), done: make(chan struct{})}
	go func() {
		defer close(s.chunks)
		for {
			buf := make([]byte, 64<<10)
			n, err := c.Read(buf)
			if n > 0 {
				select {
				case s.chunks <- chunk{at: time.Now().Add(delay), data: buf[:n]}:
				case <-s.done:
					return
				}
			}
			if err != nil {
				s.readErr = err
				return
			}
		}
	}()
	return s
}

func (s *slowConn) Read(p []byte) (int, error) {
	if len(s.buf) == 0 {
		c, ok := <-s.chunks
		if !ok {
			if s.readErr != nil {
				return 0, s.readErr
			}
			return 0, io.EOF
		}
		time.Sleep(time.Until(c.at))
		s.buf = c.data
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *slowConn) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return s.Conn.Close()
}
