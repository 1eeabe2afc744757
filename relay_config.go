package omnibox

import (
	"cmp"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of [RelayConfig].
const (
	DefaultBatchSize        = 1000
	DefaultBreakerCooldown  = time.Second
	DefaultBreakerThreshold = 3
	DefaultConcurrency      = 2
	DefaultDatabaseTimeout  = 5 * time.Second
	DefaultLease            = 30 * time.Second
	DefaultMaxAttempts      = 10
	DefaultMaxBackoff       = 30 * time.Second
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultPollInterval     = 100 * time.Millisecond
	DefaultPurgeBatchSize   = 1000
	DefaultPurgeInterval    = time.Minute
	DefaultRetryMaxDelay    = 5 * time.Minute
	DefaultRetryMinDelay    = time.Second
)

// DeadPolicy says what a dead event means for the later events of its key.
type DeadPolicy int

const (
	// DeadBlocksKey, the default, holds the later events of a dead event's
	// key back until the dead event is requeued (it is then published
	// first) or discarded. Order per key is never broken; the key stalls
	// until an operator acts. Other keys flow.
	DeadBlocksKey DeadPolicy = iota
	// DeadSkipsKey publishes the later events of a dead event's key as if it
	// had been delivered: the key keeps flowing, with a gap; a requeued dead
	// event is then published after younger events of its key.
	DeadSkipsKey
)

// String returns the policy's name.
func (p DeadPolicy) String() string {
	switch p {
	case DeadBlocksKey:
		return "DeadBlocksKey"
	case DeadSkipsKey:
		return "DeadSkipsKey"
	}
	return "DeadPolicy(" + strconv.Itoa(int(p)) + ")"
}

// RelayConfig configures a [Relay]. The zero value takes every default.
type RelayConfig struct {
	// BatchSize is the most events claimed and published at once. Defaults
	// to [DefaultBatchSize].
	BatchSize int
	// BreakerCooldown is how long the relay pauses when its circuit breaker
	// opens (the broker looks down); it doubles with each failed probe, up to
	// MaxBackoff, with jitter. Defaults to [DefaultBreakerCooldown].
	BreakerCooldown time.Duration
	// BreakerThreshold is the number of consecutive batches that fail as a
	// whole (nothing of them published) after which the relay stops
	// publishing and pauses: the broker is taken to be down, and failures
	// while the breaker is open cost the events no attempts. After the
	// cooldown one batch probes the broker; its success closes the breaker.
	// Defaults to [DefaultBreakerThreshold].
	BreakerThreshold int
	// Concurrency is how many batches [Relay.Run] has in flight at once.
	// Each is claimed, published and recorded on its own, from partitions
	// leased to it alone (so events of a key stay in order), and counts as a
	// relay in the sharing of partitions: one batch's round trips to the
	// database overlap another's publishing. 1 relays one batch at a time.
	// When the outbox is idle the first lane polls every PollInterval and
	// the others every 10 PollIntervals; a lane that claims a full batch, or
	// [Relay.Notify], wakes another.
	// At most [Partitions]. Defaults to [DefaultConcurrency]; a store may
	// lower it ([RelayConcurrencyLimiter]: SQLite runs one).
	Concurrency int
	// DatabaseTimeout bounds each of the relay's calls to the database: a
	// claim (with the record that the relay is live), each attempt to record
	// a batch's outcome, a purge. A call that has not returned by then is
	// given up (a driver that ignores the context, such as lib/pq on a link
	// that stopped answering, is left to finish on its own), and the store
	// makes the server give up too (statement, lock and idle-in-transaction
	// timeouts), so that a relay cut off mid-transaction cannot hold locks
	// that stop the others. Defaults to [DefaultDatabaseTimeout], or Lease/6
	// when that is shorter.
	DatabaseTimeout time.Duration
	// ID names this relay in the outbox table (the owner of its claims, and
	// a live relay among which partitions are shared) and in logs. Give each
	// relay process a stable, unique ID (a pod name, say) and a restarted
	// relay takes over its dead predecessor's claims at once, instead of
	// waiting for them to expire. At most 100 bytes, without "/" (which
	// separates the relay, its lane and the batch in claim owners). Defaults
	// to the environment's OMNIBOX_RELAY_ID; in a Kubernetes pod, the pod's
	// name (stable across restarts of its containers); elsewhere
	// hostname-pid-random, which is unique but not stable. A second relay of
	// one process with a default ID gets "-2" appended, and so on.
	ID string
	// Lease is how long a claim holds. A relay that dies mid-batch leaves its
	// claim behind; after Lease another relay (or its own restart) claims the
	// events again, so they are published again: the duplicates a crash
	// causes. Publishing a batch must take less than Lease, or the events may
	// be published twice. Defaults to [DefaultLease].
	Lease time.Duration
	// Logger receives the relay's logs. Defaults to a logger that discards.
	Logger *slog.Logger
	// MaxAttempts is how many times an event may fail before it is dead:
	// kept in the table, no longer retried, listed by the store's ListDead.
	// Failures while the broker is down (the circuit breaker) do not count.
	// Defaults to [DefaultMaxAttempts].
	MaxAttempts int
	// MaxBackoff caps the relay's wait after consecutive failures of the
	// database, and the breaker's cooldown. Defaults to [DefaultMaxBackoff].
	MaxBackoff time.Duration
	// MinBackoff is the wait after the first failure to claim from or write
	// to the database; it doubles with each further consecutive failure, up
	// to MaxBackoff, with ±50 % jitter so that relays do not retry in
	// lockstep. Defaults to [DefaultMinBackoff].
	MinBackoff time.Duration
	// OnDead says what a dead event means for the later events of its key.
	// Defaults to [DeadBlocksKey].
	OnDead DeadPolicy
	// PublishTimeout bounds the publishing of a batch: the messages carry a
	// context with this deadline ([message.Message.Context]), and a Publish
	// call still running after it is given up and its events released
	// unpublished, without charging them an attempt. A claim, its publishing
	// and the record of its outcome must fit in the lease: DatabaseTimeout +
	// PublishTimeout + DatabaseTimeout must be less than Lease. Defaults to
	// Lease/2.
	PublishTimeout time.Duration
	// PollInterval is how long an idle relay waits before looking for new
	// events again. After a batch it claims again at once; [Relay.Notify]
	// (and [Outbox.WakeOnCommit]) cut the wait short. Defaults to
	// [DefaultPollInterval].
	PollInterval time.Duration
	// PurgeBatchSize is the most delivered events deleted by one statement
	// when the store keeps delivered events (it implements [Purger]).
	// Defaults to [DefaultPurgeBatchSize].
	PurgeBatchSize int
	// PurgeInterval is how often the relay purges delivered events past the
	// store's retention period, when the store keeps them. Defaults to
	// [DefaultPurgeInterval].
	PurgeInterval time.Duration
	// RetryMaxDelay caps the wait before an event that failed is tried
	// again. Defaults to [DefaultRetryMaxDelay].
	RetryMaxDelay time.Duration
	// RetryMinDelay is the wait before an event that failed once is tried
	// again; it doubles with each further failure, up to RetryMaxDelay, with
	// ±50 % jitter. Later events of its key wait with it. Defaults to
	// [DefaultRetryMinDelay].
	RetryMinDelay time.Duration
}

func (c *RelayConfig) withDefaults() *RelayConfig {
	out := *c
	out.BatchSize = cmp.Or(out.BatchSize, DefaultBatchSize)
	out.BreakerCooldown = cmp.Or(out.BreakerCooldown, DefaultBreakerCooldown)
	out.BreakerThreshold = cmp.Or(out.BreakerThreshold, DefaultBreakerThreshold)
	out.Concurrency = cmp.Or(out.Concurrency, DefaultConcurrency)
	out.Lease = cmp.Or(out.Lease, DefaultLease)
	out.DatabaseTimeout = cmp.Or(out.DatabaseTimeout, min(DefaultDatabaseTimeout, out.Lease/6))
	out.PublishTimeout = cmp.Or(out.PublishTimeout, out.Lease/2)
	out.MaxAttempts = cmp.Or(out.MaxAttempts, DefaultMaxAttempts)
	out.MaxBackoff = cmp.Or(out.MaxBackoff, DefaultMaxBackoff)
	out.MinBackoff = cmp.Or(out.MinBackoff, DefaultMinBackoff)
	out.PollInterval = cmp.Or(out.PollInterval, DefaultPollInterval)
	out.PurgeBatchSize = cmp.Or(out.PurgeBatchSize, DefaultPurgeBatchSize)
	out.PurgeInterval = cmp.Or(out.PurgeInterval, DefaultPurgeInterval)
	out.RetryMaxDelay = cmp.Or(out.RetryMaxDelay, DefaultRetryMaxDelay)
	out.RetryMinDelay = cmp.Or(out.RetryMinDelay, DefaultRetryMinDelay)
	out.MaxBackoff = max(out.MaxBackoff, out.MinBackoff, out.BreakerCooldown)
	out.RetryMaxDelay = max(out.RetryMaxDelay, out.RetryMinDelay)
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.ID == "" {
		out.ID = defaultRelayID()
	}
	return &out
}

// Validate reports the first setting that is out of range. Zero values are
// valid: they stand for the defaults.
func (c *RelayConfig) Validate() error {
	negative := func(name string, d time.Duration) error {
		if d < 0 {
			return fmt.Errorf("omnibox: RelayConfig.%s must not be negative, got %s", name, d)
		}
		return nil
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"BreakerCooldown", c.BreakerCooldown}, {"DatabaseTimeout", c.DatabaseTimeout}, {"Lease", c.Lease},
		{"MaxBackoff", c.MaxBackoff}, {"PublishTimeout", c.PublishTimeout},
		{"MinBackoff", c.MinBackoff}, {"PollInterval", c.PollInterval}, {"PurgeInterval", c.PurgeInterval},
		{"RetryMaxDelay", c.RetryMaxDelay}, {"RetryMinDelay", c.RetryMinDelay},
	} {
		if err := negative(d.name, d.d); err != nil {
			return err
		}
	}
	switch {
	case c.BatchSize < 0:
		return fmt.Errorf("omnibox: RelayConfig.BatchSize must not be negative, got %d", c.BatchSize)
	case c.Concurrency < 0 || c.Concurrency > Partitions:
		return fmt.Errorf("omnibox: RelayConfig.Concurrency must be between 0 (the default) and %d, got %d", Partitions, c.Concurrency)
	case c.BreakerThreshold < 0:
		return fmt.Errorf("omnibox: RelayConfig.BreakerThreshold must not be negative, got %d", c.BreakerThreshold)
	case c.MaxAttempts < 0:
		return fmt.Errorf("omnibox: RelayConfig.MaxAttempts must not be negative, got %d", c.MaxAttempts)
	case c.PurgeBatchSize < 0:
		return fmt.Errorf("omnibox: RelayConfig.PurgeBatchSize must not be negative, got %d", c.PurgeBatchSize)
	case c.Lease > 0 && c.Lease < time.Second:
		return fmt.Errorf("omnibox: RelayConfig.Lease must be at least 1s, got %s", c.Lease)
	case c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("omnibox: RelayConfig.MinBackoff (%s) must not exceed MaxBackoff (%s)", c.MinBackoff, c.MaxBackoff)
	case c.RetryMinDelay > 0 && c.RetryMaxDelay > 0 && c.RetryMinDelay > c.RetryMaxDelay:
		return fmt.Errorf("omnibox: RelayConfig.RetryMinDelay (%s) must not exceed RetryMaxDelay (%s)", c.RetryMinDelay, c.RetryMaxDelay)
	case c.OnDead != DeadBlocksKey && c.OnDead != DeadSkipsKey:
		return fmt.Errorf("omnibox: RelayConfig.OnDead must be DeadBlocksKey or DeadSkipsKey, got %s", c.OnDead)
	case len(c.ID) > 100:
		return fmt.Errorf("omnibox: RelayConfig.ID must be at most 100 bytes, got %d", len(c.ID))
	case strings.Contains(c.ID, "/"):
		return fmt.Errorf("omnibox: RelayConfig.ID must not contain %q, got %q", "/", c.ID)
	case !validText(c.ID):
		return fmt.Errorf("omnibox: RelayConfig.ID must be valid UTF-8 without NUL bytes, got %q", c.ID)
	}
	return c.validateBudget()
}

// validateBudget checks that a claim, its publishing and the record of its
// outcome fit in the lease, with the defaults applied.
func (c *RelayConfig) validateBudget() error {
	lease := cmp.Or(c.Lease, DefaultLease)
	db := cmp.Or(c.DatabaseTimeout, min(DefaultDatabaseTimeout, lease/6))
	pub := cmp.Or(c.PublishTimeout, lease/2)
	if db+pub+db >= lease {
		return fmt.Errorf("omnibox: RelayConfig.DatabaseTimeout (%s) + PublishTimeout (%s) + DatabaseTimeout must be less than Lease (%s), "+
			"so that a batch is claimed, published and recorded inside its lease: lower the timeouts or raise Lease", db, pub, lease)
	}
	return nil
}

// defaultRelays counts the relays of this process that took a default ID.
var defaultRelays atomic.Int64

// defaultRelayID returns the ID of a relay configured without one: the
// environment's OMNIBOX_RELAY_ID; in a Kubernetes pod the pod's name (the
// hostname), which is stable across restarts of its containers, so that a
// restarted relay takes its predecessor's claims over at once; elsewhere
// hostname-pid-random, unique but not stable. The second relay of a process
// with a default ID gets "-2" appended, and so on.
func defaultRelayID() string {
	host, _ := os.Hostname()
	host = strings.ReplaceAll(strings.ToValidUTF8(host, ""), "/", "-")
	id := os.Getenv("OMNIBOX_RELAY_ID")
	switch {
	case id != "":
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "" && host != "":
		id = host
	default:
		var b [4]byte
		_, _ = crand.Read(b[:])
		id = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "relay"), os.Getpid(), hex.EncodeToString(b[:]))
	}
	id = strings.ReplaceAll(strings.ReplaceAll(strings.ToValidUTF8(id, ""), "/", "-"), "\x00", "")
	if n := defaultRelays.Add(1); n > 1 {
		id += "-" + strconv.FormatInt(n, 10)
	}
	if len(id) > 100 {
		id = strings.ToValidUTF8(id[len(id)-100:], "")
	}
	return id
}

// newNonce returns a random value that tells this process's relay from
// another that uses the same ID (ClaimParams.Nonce).
func newNonce() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
