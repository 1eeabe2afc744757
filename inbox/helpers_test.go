package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/inbox"
	"github.com/omnibox-go/omnibox/store/postgres"
)

// newPostgresStore returns the PostgreSQL inbox store with its table
// migrated into schema.
func newPostgresStore(t *testing.T, db *sql.DB, schema string) inbox.Store {
	t.Helper()
	st, err := postgres.NewInbox(&postgres.InboxConfig{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, st.Migrate(context.Background(), db))
	return st
}

// countingStore wraps a store and records the Purge calls it forwards.
type countingStore struct {
	inbox.Store
	mu     sync.Mutex
	purges []purgeCall
}

type purgeCall struct {
	Deleted   int
	Limit     int
	OlderThan time.Duration
}

func (s *countingStore) Purge(ctx context.Context, db omnibox.DBTX, p inbox.PurgeParams) (int, error) {
	n, err := s.Store.Purge(ctx, db, p)
	s.mu.Lock()
	s.purges = append(s.purges, purgeCall{Deleted: n, Limit: p.Limit, OlderThan: p.OlderThan})
	s.mu.Unlock()
	return n, err
}

func (s *countingStore) calls() []purgeCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]purgeCall(nil), s.purges...)
}

func (s *countingStore) deleted() int {
	total := 0
	for _, c := range s.calls() {
		total += c.Deleted
	}
	return total
}

// recordN records n messages (id-0 ... id-(n-1) after prefix) for consumer,
// in one committed transaction.
func recordN(t *testing.T, db *sql.DB, in *inbox.Inbox, consumer, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	for i := range n {
		isNew, err := in.RecordOnceTx(ctx, tx, consumer, fmt.Sprintf("%s-%d", prefix, i))
		require.NoError(t, err)
		require.True(t, isNew)
	}
	require.NoError(t, tx.Commit())
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline (the condition is expected within milliseconds).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
