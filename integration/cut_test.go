package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// TestRelayConnectionCut runs a relay on a connection pool of its own and
// kills its database connections, from another connection, at every stage
// of a batch: inside the claim transaction (the claim is lost), between the
// claim and the outcome (the pool's idle connections), inside the outcome's
// transaction before and after its statements (the batch was published but
// is not recorded, so it is published again). Meanwhile a writer keeps
// writing. Nothing may be lost and each key's first deliveries must stay in
// order; the test reports the duplicates.
func TestRelayConnectionCut(t *testing.T) {
	t.Parallel()
	forDialects(t, []string{"postgres", "pgx", "mysql"}, testRelayConnectionCut)
}

// Stages of a batch at which cutStore cuts the relay's connections, by the
// batch number modulo cutStages.
const (
	cutNone          = iota // the batch goes through
	cutInClaim              // the claim transaction's connection, after the claim
	cutBeforePublish        // every connection of the relay, between claim and outcome
	cutInComplete           // the outcome transaction's connection, before its statements
	cutBeforeCommit         // the outcome transaction's connection, after its statements
	cutStages
)

// cutStore wraps the relay's store to cut the relay's database connections
// at the stages above, for the first maxBatches batches. It learns the
// connections' IDs from inside the relay's transactions and kills them
// through killer, another pool.
type cutStore struct {
	omnibox.RelayStore
	d          dialect
	appName    string
	killer     *sql.DB
	maxBatches int64

	batch       atomic.Int64 // claims that returned events
	lastPublish int64        // the batch whose publication cut last; the relay's goroutine only
	mu          sync.Mutex
	ids         map[int64]bool // connection IDs seen in the relay's transactions
	cuts        [cutStages]atomic.Int64
}

func (s *cutStore) stage() int {
	n := s.batch.Load()
	if n > s.maxBatches {
		return cutNone
	}
	return int(n % cutStages)
}

// connID returns the ID of the connection tx runs on.
func (s *cutStore) connID(ctx context.Context, tx omnibox.DBTX) (int64, error) {
	query := "SELECT CONNECTION_ID()"
	if s.d.driver != "mysql" {
		query = "SELECT pg_backend_pid()"
	}
	var id int64
	if err := tx.QueryRowContext(ctx, query).Scan(&id); err != nil {
		return 0, fmt.Errorf("cutStore: reading the connection ID: %w", err)
	}
	s.mu.Lock()
	s.ids[id] = true
	s.mu.Unlock()
	return id, nil
}

// kill kills the connection id and waits for it to be gone.
func (s *cutStore) kill(ctx context.Context, id int64) error {
	if s.d.driver == "mysql" {
		_, err := s.killer.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id))
		var me *gomysql.MySQLError
		if errors.As(err, &me) && me.Number == 1094 { // unknown thread: gone already
			return nil
		}
		return err
	}
	_, err := s.killer.ExecContext(ctx, "SELECT pg_terminate_backend($1, 5000)", id)
	return err
}

// killAll kills every connection of the relay's pool.
func (s *cutStore) killAll(ctx context.Context) error {
	if s.d.driver == "mysql" {
		s.mu.Lock()
		var ids []int64
		for id := range s.ids {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			if err := s.kill(ctx, id); err != nil {
				return err
			}
		}
		return nil
	}
	_, err := s.killer.ExecContext(ctx,
		"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1", s.appName)
	return err
}

// cutOwn kills the connection tx runs on.
func (s *cutStore) cutOwn(ctx context.Context, tx omnibox.DBTX, stage int) error {
	id, err := s.connID(ctx, tx)
	if err != nil {
		return err
	}
	if err := s.kill(ctx, id); err != nil {
		return fmt.Errorf("cutStore: killing connection %d: %w", id, err)
	}
	s.cuts[stage].Add(1)
	return nil
}

func (s *cutStore) Claim(ctx context.Context, tx omnibox.DBTX, params omnibox.ClaimParams) (*omnibox.ClaimResult, error) {
	if _, err := s.connID(ctx, tx); err != nil {
		return nil, err
	}
	res, err := s.RelayStore.Claim(ctx, tx, params)
	if err != nil || len(res.Events) == 0 {
		return res, err
	}
	s.batch.Add(1)
	if s.stage() == cutInClaim {
		if err := s.cutOwn(ctx, tx, cutInClaim); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *cutStore) Complete(ctx context.Context, tx omnibox.DBTX, params omnibox.CompleteParams) (*omnibox.CompleteResult, error) {
	stage := s.stage()
	if stage == cutInComplete {
		if err := s.cutOwn(ctx, tx, stage); err != nil {
			return nil, err
		}
	}
	res, err := s.RelayStore.Complete(ctx, tx, params)
	if err != nil {
		return nil, err
	}
	if stage == cutBeforeCommit {
		if err := s.cutOwn(ctx, tx, stage); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// beforePublish is the publisher hook: between claim and outcome it kills
// every connection of the relay, once per batch.
func (s *cutStore) beforePublish(string, []*message.Message) error {
	n := s.batch.Load()
	if s.stage() != cutBeforePublish || s.lastPublish == n {
		return nil
	}
	s.lastPublish = n
	if err := s.killAll(context.Background()); err != nil {
		return fmt.Errorf("cutStore: killing the relay's connections: %w", err)
	}
	s.cuts[cutBeforePublish].Add(1)
	return nil
}

func testRelayConnectionCut(t *testing.T, d dialect) {
	const (
		keys    = 20
		perTx   = 10
		backlog = 600
		live    = 1_400
		batches = 30 // batches with cuts: 6 of each kind
	)
	ctx := t.Context()
	e := setupEnv(t, d)
	consumer := startCollector(t, e.brokers, e.topic)

	appName := "omnibox-cut-relay"
	relayDB := e.openAgain(t, appName)
	cut := &cutStore{RelayStore: e.store, d: d, appName: appName, killer: e.db, maxBatches: batches, ids: map[int64]bool{}}
	pub := &hookedPublisher{Publisher: e.newKafkaPublisher(t), hook: cut.beforePublish}
	relay, err := omnibox.NewRelay(relayDB, cut, pub, &omnibox.RelayConfig{
		BatchSize:    50,
		ID:           "relay-cut",
		Lease:        time.Second,
		Logger:       testLogger(t, slog.LevelWarn),
		MaxBackoff:   100 * time.Millisecond,
		MinBackoff:   10 * time.Millisecond,
		PollInterval: 10 * time.Millisecond,
	})
	require.NoError(t, err)

	written := newLedger()
	write := func(n int) error {
		for i := 0; i < n; i += perTx {
			key := fmt.Sprintf("key-%02d", (written.count()/perTx)%keys)
			if err := e.commit(ctx, written, newEvents(e.topic, repeat(key, perTx)...)); err != nil {
				return err
			}
		}
		return nil
	}
	require.NoError(t, write(backlog))
	stop := runRelay(t, relay)
	require.NoError(t, write(live))

	consumer.waitUnique(t, backlog+live, time.Minute)
	require.Eventually(t, func() bool { return e.pending(t) == 0 }, 30*time.Second, 10*time.Millisecond)
	stop()
	time.Sleep(200 * time.Millisecond)

	got := consumer.snapshot()
	dups := checkKeyOrder(t, got, written.snapshot())
	require.Len(t, got, backlog+live+dups)
	stats := relay.Stats()
	require.Positive(t, stats.Failures, "the cuts made the relay's database work fail")
	for stage := cutInClaim; stage < cutStages; stage++ {
		require.Positive(t, cut.cuts[stage].Load(), "no cut at stage %d", stage)
	}
	t.Logf("%s: %d events, %d deliveries, %d duplicates; cuts in claim %d, before publish %d, in complete %d, before commit %d; relay failures %d, lost leases %d",
		d.name, backlog+live, len(got), dups, cut.cuts[cutInClaim].Load(), cut.cuts[cutBeforePublish].Load(),
		cut.cuts[cutInComplete].Load(), cut.cuts[cutBeforeCommit].Load(), stats.Failures, stats.LostLeases)
}
