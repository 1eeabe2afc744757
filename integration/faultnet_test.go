package integration

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/faultnet"
	"github.com/omnibox-go/omnibox/publisher"
)

// faultLink is one relay's connection to a server (its database or its
// broker) through two proxies in a row: an in-process toxiproxy, whose
// toxics add latency, resets, a bandwidth limit or a blackhole and which can
// be taken down, and behind it a faultnet proxy, which can freeze the link
// half-open. The relay dials addr.
type faultLink struct {
	addr   string
	freeze *faultnet.Proxy
	tox    *toxiproxy.Proxy
	once   sync.Once
}

// toxServer is the toxiproxy server the links' proxies belong to: only its
// logger and (disabled) metrics are used; no HTTP API is started. The
// bandwidth toxic logs to zerolog's global logger, silenced here.
var toxServer = sync.OnceValue(func() *toxiproxy.ApiServer {
	zlog.Logger = zerolog.Nop()
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
})

// newFaultLink starts a link to upstream, closed by t.Cleanup.
func newFaultLink(t *testing.T, name, upstream string) *faultLink {
	t.Helper()
	freeze, err := faultnet.Listen("127.0.0.1:0", upstream)
	require.NoError(t, err)
	tox := toxiproxy.NewProxy(toxServer(), name, "127.0.0.1:0", freeze.Addr())
	if err := tox.Start(); err != nil {
		_ = freeze.Close()
		require.NoError(t, err)
	}
	l := &faultLink{addr: tox.Listen, freeze: freeze, tox: tox}
	t.Cleanup(l.close)
	return l
}

// close closes both proxies and every connection through them, frozen or
// not, so that calls hung on the link return. It is idempotent.
func (l *faultLink) close() {
	l.once.Do(func() {
		_ = l.freeze.Close()
		l.tox.Stop()
	})
}

// addToxic adds a toxiproxy toxic of kind typ on stream ("upstream":
// towards the server, "downstream": towards the relay) with the JSON
// attributes attrs, and returns a function that removes it.
func (l *faultLink) addToxic(typ, stream, attrs string) (remove func() error, err error) {
	name := typ + "-" + stream
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := l.tox.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		return nil, fmt.Errorf("adding toxic %s: %w", name, err)
	}
	return func() error { return l.tox.Toxics.RemoveToxic(context.Background(), name) }, nil
}

// toxic returns a fault that adds a toxic of kind typ with attrs on each of
// streams, and heals by removing them.
func toxic(typ, attrs string, streams ...string) func(*faultLink) (func() error, error) {
	return func(l *faultLink) (func() error, error) {
		var removes []func() error
		heal := func() error {
			for _, remove := range removes {
				if err := remove(); err != nil {
					return err
				}
			}
			return nil
		}
		for _, stream := range streams {
			remove, err := l.addToxic(typ, stream, attrs)
			if err != nil {
				return nil, err
			}
			removes = append(removes, remove)
		}
		return heal, nil
	}
}

// takeDown closes the link's listener and every connection through it
// (connections are refused) until the heal starts it again, on the same
// address.
func takeDown(l *faultLink) (func() error, error) {
	l.tox.Stop()
	return l.tox.Start, nil
}

// freezeLink freezes the link half-open until the heal, which lets new
// connections through; frozen ones stay frozen.
func freezeLink(l *faultLink) (func() error, error) {
	l.freeze.Freeze()
	return func() error { l.freeze.Thaw(); return nil }, nil
}

// openVia opens another handle on the environment's database, with a pool
// of its own whose connections go through a new link. The link closes
// before the pool does (see faultLink.close).
func (e *env) openVia(t *testing.T, name string) (*sql.DB, *faultLink) {
	t.Helper()
	dsn := e.childSetting(t, "OMNIBOX_CHILD_DSN")
	var (
		upstream string
		dial     func(addr string) string
	)
	switch e.dialect.driver {
	case "postgres", "pgx":
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		upstream = u.Host
		dial = func(addr string) string { u.Host = addr; return u.String() }
	case "mysql":
		cfg, err := gomysql.ParseDSN(dsn)
		require.NoError(t, err)
		upstream = cfg.Addr
		dial = func(addr string) string { cfg.Addr = addr; return cfg.FormatDSN() }
	default:
		t.Fatalf("openVia: no network link to a %s database", e.dialect.name)
	}
	link := newFaultLink(t, name+"-db", upstream)
	db, err := sql.Open(e.dialect.driver, dial(link.addr))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	t.Cleanup(link.close)
	return db, link
}

// publisherVia returns a Kafka publisher whose connections to the broker,
// whatever address the cluster's metadata gives, all go through a new link
// to the environment's one broker.
func (e *env) publisherVia(t *testing.T, name string) (*publisher.Kafka, *faultLink) {
	t.Helper()
	require.Len(t, e.brokers, 1, "the broker link leads to one broker")
	link := newFaultLink(t, name+"-broker", e.brokers[0])
	dial := publisher.Dialer(nil)
	pub, err := publisher.NewKafka(&publisher.KafkaConfig{
		Brokers: e.brokers,
		Options: []kgo.Opt{kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial(ctx, network, link.addr)
		})},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	t.Cleanup(link.close)
	return pub, link
}

// readTopic reads topic from its start with a franz-go consumer of its own
// (no consumer group, straight to the brokers), until it has seen every ID
// in want and then nothing new for half a second, or until within has
// passed. It returns every record read, duplicates included.
func readTopic(t *testing.T, brokers []string, topic string, want map[string]bool, within time.Duration) []received {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	var (
		got      []received
		seen     = map[string]bool{}
		missing  = len(want)
		lastNew  = time.Now()
		deadline = time.Now().Add(within)
	)
	for time.Now().Before(deadline) && (missing > 0 || time.Since(lastNew) < 500*time.Millisecond) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		fetches.EachRecord(func(r *kgo.Record) {
			m := fromRecord(r)
			got = append(got, m)
			lastNew = time.Now()
			if !seen[m.UUID] {
				seen[m.UUID] = true
				if want[m.UUID] {
					missing--
				}
			}
		})
	}
	return got
}

// fromRecord turns a Kafka record written by publisher.Kafka back into what
// the relay published.
func fromRecord(r *kgo.Record) received {
	m := received{Key: string(r.Key), Metadata: map[string]string{}, Partition: r.Partition, Payload: r.Value}
	for _, h := range r.Headers {
		if h.Key == kafka.UUIDHeaderKey {
			m.UUID = string(h.Value)
			continue
		}
		m.Metadata[h.Key] = string(h.Value)
	}
	delete(m.Metadata, omnibox.MetadataKey)
	return m
}

// tally is what a fault run counts in the topic, against what the writers
// committed and rolled back.
type tally struct {
	Duplicates          int // deliveries of an ID seen before
	Events              int // committed events
	Lost                int // committed events never delivered
	OrderViolations     int // first deliveries that came after a later event of their key
	RolledBackPublished int // rolled-back events delivered
}

// tallyRun counts got against committed (the IDs of each key in commit
// order) and rolledBack.
func tallyRun(got []received, committed map[string][]string, rolledBack map[string][]string) tally {
	firsts, seen, duplicates := firstDeliveries(got)
	out := tally{Duplicates: duplicates}
	for _, ids := range rolledBack {
		for _, id := range ids {
			if seen[id] {
				out.RolledBackPublished++
			}
		}
	}
	for key, ids := range committed {
		out.Events += len(ids)
		index := make(map[string]int, len(ids))
		for i, id := range ids {
			index[id] = i
			if !seen[id] {
				out.Lost++
			}
		}
		last := -1
		for _, id := range firsts[key] {
			i, ok := index[id]
			switch {
			case !ok:
			case i < last:
				out.OrderViolations++
			default:
				last = i
			}
		}
	}
	return out
}

// relayLog is a relay's log: it counts the records that report
// [omnibox.ErrRelayIDInUse], passes the first lines to t.Log, and drops
// everything once closed (a relay hung past the end of its test must not
// log to it).
type relayLog struct {
	t         *testing.T
	mu        sync.Mutex
	closed    bool
	conflicts int
	dropped   int
	lines     int
}

// maxLogLines is how many lines of a fault run's relay logs reach t.Log.
const maxLogLines = 40

func newRelayLog(t *testing.T) *relayLog {
	l := &relayLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.closed = true
		if l.dropped > 0 {
			t.Logf("(%d more lines of relay logs not shown)", l.dropped)
		}
	})
	return l
}

func (l *relayLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.Contains(string(p), omnibox.ErrRelayIDInUse.Error()) {
		l.conflicts++
	}
	switch {
	case l.closed:
	case l.lines < maxLogLines:
		l.lines++
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	default:
		l.dropped++
	}
	return len(p), nil
}

// idConflicts returns how many log records reported the relay ID in use.
func (l *relayLog) idConflicts() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conflicts
}
