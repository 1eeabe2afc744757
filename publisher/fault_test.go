package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/kafkatest"
	"github.com/omnibox-go/omnibox/publisher"
)

// faultBundle is a kfake cluster reached through a toxiproxy proxy. kfake
// advertises its listener's address in metadata, so the listener reports
// the proxy's address: every client connection, bootstrap or not, goes
// through the proxy. direct is kfake's own address, for a checking consumer
// that goes around the proxy.
type faultBundle struct {
	brokers []string
	direct  string
	proxy   *toxiproxy.Proxy
}

// proxiedListener is kfake's listener with the proxy's address.
type proxiedListener struct {
	net.Listener
	addr net.Addr
}

func (l proxiedListener) Addr() net.Addr { return l.addr }

func setupFault(t *testing.T) *faultBundle {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	b := &faultBundle{}
	var setupErr error
	cluster := kafkatest.Kfake(t, kfake.NumBrokers(1), kfake.ListenFn(func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		b.direct = ln.Addr().String()
		b.proxy = toxiproxy.NewProxy(server, "kafka", "127.0.0.1:0", b.direct)
		if err := b.proxy.Start(); err != nil {
			setupErr = err
			return nil, errors.Join(err, ln.Close())
		}
		addr, err := net.ResolveTCPAddr("tcp", b.proxy.Listen)
		if err != nil {
			setupErr = err
			return nil, errors.Join(err, ln.Close())
		}
		return proxiedListener{Listener: ln, addr: addr}, nil
	}))
	require.NoError(t, setupErr)
	t.Cleanup(b.proxy.Stop)
	b.brokers = cluster.ListenAddrs()
	require.Equal(t, []string{b.proxy.Listen}, b.brokers)
	return b
}

// stored reads every record of topic with an independent franz-go client
// that dials kfake directly, once offsets show want records in all.
func (b *faultBundle) stored(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	want := totalRecords(topicOffsets(t, []string{b.direct}, topic))
	direct := b.direct
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(direct),
		kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, direct)
		}),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for int64(len(out)) < want {
		fetches := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read %d of %d records", len(out), want)
		fetches.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fetches.Records()...)
	}
	return out
}

// requirePrefixes checks what a Publish call of msgs left in Kafka (records,
// in offset order per partition, of this and other calls) with
// checkPrefixes, and returns how many distinct messages of the call are
// stored.
func requirePrefixes(t *testing.T, msgs []*message.Message, records []*kgo.Record, perr error) int {
	t.Helper()
	failed := map[string]error{}
	if perr != nil {
		var me omnibox.MessageErrors
		require.ErrorAs(t, perr, &me)
		failed = me.MessageErrors()
	}
	n, err := checkPrefixes(msgs, records, failed)
	require.NoError(t, err)
	return n
}

// checkPrefixes checks that for each key, the call's records stored are its
// first m messages, in order, where records may be stored again only as an
// in-order replay (1..m, then k.. with k ≤ m, each step +1), and that every
// message not in failed is stored.
func checkPrefixes(msgs []*message.Message, records []*kgo.Record, failed map[string]error) (int, error) {
	type pos struct {
		key string
		i   int
	}
	at := map[string]pos{} // UUID → key and position among the key's messages
	n := map[string]int{}
	for _, m := range msgs {
		key := m.Metadata.Get(omnibox.MetadataKey)
		at[m.UUID] = pos{key, n[key]}
		n[key]++
	}
	byPartition := map[int32][]*kgo.Record{}
	for _, r := range records {
		byPartition[r.Partition] = append(byPartition[r.Partition], r)
	}
	storedUUIDs := map[string]bool{}
	for p, rs := range byPartition {
		last, highest := map[string]int{}, map[string]int{}
		for _, r := range rs {
			if len(r.Headers) == 0 || r.Headers[0].Key != kafka.UUIDHeaderKey {
				return 0, fmt.Errorf("partition %d: a record without the UUID header first", p)
			}
			uuid := string(r.Headers[0].Value)
			ps, ok := at[uuid]
			if !ok {
				continue // another call's
			}
			if string(r.Key) != ps.key {
				return 0, fmt.Errorf("message %s: record key %q, want %q", uuid, r.Key, ps.key)
			}
			prev, seen := last[ps.key]
			switch {
			case !seen && ps.i != 0:
				return 0, fmt.Errorf("partition %d key %s: the first stored record is message %d, not the key's first", p, ps.key, ps.i)
			case !seen, ps.i == prev+1:
			case ps.i <= highest[ps.key]:
				// An in-order replay of records already stored.
			default:
				return 0, fmt.Errorf("partition %d key %s: message %d stored after message %d (highest %d): a gap", p, ps.key, ps.i, prev, highest[ps.key])
			}
			last[ps.key] = ps.i
			highest[ps.key] = max(highest[ps.key], ps.i)
			storedUUIDs[uuid] = true
		}
	}
	for _, m := range msgs {
		if _, isFailed := failed[m.UUID]; !isFailed && !storedUUIDs[m.UUID] {
			return 0, fmt.Errorf("message %s acknowledged but not stored", m.UUID)
		}
	}
	return len(storedUUIDs), nil
}

// bigEvents returns n events of key with payloads of size bytes, so that
// a Publish of them takes several produce requests.
func bigEvents(prefix string, n, keys, size int) []*message.Message {
	msgs := events(prefix, n, keys)
	for _, m := range msgs {
		m.Payload = []byte(strings.Repeat("x", size))
	}
	return msgs
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("OMNIBOX_TEST_KGO_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func withDeadline(t *testing.T, msgs []*message.Message, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	for _, m := range msgs {
		m.SetContext(ctx)
	}
}

// TestKafka_LinkDown is issue 10's smallest form: one Publish of 200
// records of one key while the link to the broker goes down for a few
// seconds. Whatever Publish reports, the key's stored records must be a
// prefix of the call's, in order, and every message it did not report
// failed must be stored. The sarama producer failed this: it failed one
// retry level's records and went on sending the later ones of the
// partition, storing a suffix.
func TestKafka_LinkDown(t *testing.T) {
	t.Parallel()

	for name, tc := range map[string]struct {
		deadline time.Duration // of the messages' context
		down     time.Duration // how long the link stays down
	}{
		// The link comes back during the call: everything is stored.
		"HealsDuringCall": {deadline: 60 * time.Second, down: 3 * time.Second},
		// The deadline passes while the link is down: some or all fail.
		"HealsAfterDeadline": {deadline: 3 * time.Second, down: 8 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupFault(t)
			topic := kafkatest.NewTopic(t, b.brokers, 4)
			k, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: b.brokers, Logger: testLogger(t)})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, k.Close()) })
			require.NoError(t, k.Publish(topic, events("warm", 1, 1)...)) // metadata, producer ID, connections

			// Slow the link, so that the call's records (200 × 20 KB) are
			// on the wire in several requests when it drops.
			_, err = b.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"slow","type":"bandwidth","stream":"upstream","attributes":{"rate":2000}}`))
			require.NoError(t, err)

			msgs := bigEvents("down", 200, 1, 20_000)
			withDeadline(t, msgs, tc.deadline)
			var (
				wg     sync.WaitGroup
				healed = make(chan struct{})
			)
			wg.Go(func() {
				time.Sleep(500 * time.Millisecond)
				b.proxy.Stop()
				time.Sleep(tc.down)
				require.NoError(t, b.proxy.Toxics.RemoveToxic(context.Background(), "slow"))
				require.NoError(t, b.proxy.Start())
				close(healed)
			})
			start := time.Now()
			perr := k.Publish(topic, msgs...)
			t.Logf("Publish returned after %v: %v", time.Since(start), perr)
			wg.Wait()
			<-healed

			if perr != nil {
				var pe *publisher.PublishError
				require.ErrorAs(t, perr, &pe)
				for uuid, err := range pe.Errors {
					require.ErrorIs(t, err, omnibox.ErrUnavailable, "message %s", uuid)
				}
			}
			n := requirePrefixes(t, msgs, b.stored(t, topic), perr)
			t.Logf("%d of 200 stored", n)

			// The relay publishes the failed messages again: now all are.
			if perr != nil {
				var retry []*message.Message
				for _, m := range msgs {
					if _, ok := perr.(*publisher.PublishError).Errors[m.UUID]; ok {
						m.SetContext(context.Background())
						retry = append(retry, m)
					}
				}
				require.NoError(t, k.Publish(topic, retry...))
				require.Equal(t, 200, requirePrefixes(t, msgs, b.stored(t, topic), nil))
			}
		})
	}
}

// TestKafka_HalfOpenLink stops the link from carrying anything without
// closing it (toxiproxy's timeout toxic with timeout 0), as a broker that
// died without a FIN or a network that drops packets: Publish must still
// return by the messages' deadline (2 s), every message failing with
// ErrUnavailable, and the publisher must work once the link heals, the
// stored records of each key still prefixes. That Publish returns at all is
// what the test checks; how long it took is logged, not asserted.
func TestKafka_HalfOpenLink(t *testing.T) {
	t.Parallel()

	b := setupFault(t)
	topic := kafkatest.NewTopic(t, b.brokers, 4)
	k, err := publisher.NewKafka(&publisher.KafkaConfig{Brokers: b.brokers})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, k.Close()) })
	first := events("before", 40, 4)
	require.NoError(t, k.Publish(topic, first...))

	_, err = b.proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`))
	require.NoError(t, err)
	held := events("held", 200, 4)
	withDeadline(t, held, 2*time.Second)
	start := time.Now()
	perr := k.Publish(topic, held...)
	t.Logf("Publish over a half-open link returned after %v", time.Since(start))
	var pe *publisher.PublishError
	require.ErrorAs(t, perr, &pe)
	require.Len(t, pe.Errors, len(held))
	for _, m := range held {
		require.ErrorIs(t, pe.Errors[m.UUID], omnibox.ErrUnavailable, "message %s", m.UUID)
		require.NotErrorIs(t, pe.Errors[m.UUID], omnibox.ErrRejected, "message %s", m.UUID)
	}

	// Heal: removing the toxic closes the held connections.
	require.NoError(t, b.proxy.Toxics.RemoveToxic(context.Background(), "blackhole"))
	after := events("after", 40, 4)
	withDeadline(t, after, 30*time.Second)
	require.NoError(t, k.Publish(topic, after...))

	records := b.stored(t, topic)
	require.Equal(t, 40, requirePrefixes(t, first, records, nil))
	n := requirePrefixes(t, held, records, perr)
	t.Logf("%d of the %d messages sent over the half-open link were stored", n, len(held))
	require.Equal(t, 40, requirePrefixes(t, after, records, nil))
}

// TestCheckPrefixes checks the checker on made-up partitions.
func TestCheckPrefixes(t *testing.T) {
	t.Parallel()

	msgs := events("p", 4, 1)
	rec := func(i int) *kgo.Record {
		return &kgo.Record{Key: []byte("key-0"), Headers: []kgo.RecordHeader{{Key: kafka.UUIDHeaderKey, Value: []byte(msgs[i].UUID)}}}
	}
	failedFrom := func(i int) map[string]error {
		errs := map[string]error{}
		for _, m := range msgs[i:] {
			errs[m.UUID] = omnibox.ErrUnavailable
		}
		return errs
	}
	for name, tc := range map[string]struct {
		records []*kgo.Record
		failed  map[string]error
		want    int
		wantErr string
	}{
		"Prefix":        {records: []*kgo.Record{rec(0), rec(1)}, failed: failedFrom(2), want: 2},
		"Replay":        {records: []*kgo.Record{rec(0), rec(1), rec(0), rec(1), rec(2)}, failed: failedFrom(3), want: 3},
		"All":           {records: []*kgo.Record{rec(0), rec(1), rec(2), rec(3)}, want: 4},
		"Suffix":        {records: []*kgo.Record{rec(2), rec(3)}, failed: failedFrom(0), wantErr: "not the key's first"},
		"Gap":           {records: []*kgo.Record{rec(0), rec(2)}, failed: failedFrom(0), wantErr: "a gap"},
		"ReplayGap":     {records: []*kgo.Record{rec(0), rec(1), rec(0), rec(2)}, failed: failedFrom(0), wantErr: "a gap"},
		"AckedNotThere": {records: []*kgo.Record{rec(0)}, failed: failedFrom(2), wantErr: "acknowledged but not stored"},
	} {
		n, err := checkPrefixes(msgs, tc.records, tc.failed)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, name)
			continue
		}
		require.NoError(t, err, name)
		require.Equal(t, tc.want, n, name)
	}
}
