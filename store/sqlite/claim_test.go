package sqlite_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	msqlite "modernc.org/sqlite"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/sqlite"
)

// TestClaimReadsAboutLimitRows proves that a claim reads about Limit rows of
// the outbox table however large the backlog. SQLite has no EXPLAIN ANALYZE,
// so it counts the pages the claim reads: the connection's page cache hits
// plus misses (sqlite3_db_status), a counter that does not depend on timing.
// Over backlogs of 1,000 and 100,000 events spread over the 64 partitions
// (the second table 100 times the pages of the first), the claim reads about
// the same number of pages, a small fraction of the large table, while a
// full scan, as a control, reads every page. The query plan shows why: the
// heads are one probe of the pending index per partition, and each event
// claimed one more probe of it, from the previous event of its partition;
// the update looks rows up by rowid.
func TestClaimReadsAboutLimitRows(t *testing.T) {
	t.Parallel()
	const limit = 100
	db, _ := dbtest.SQLite(t)
	ctx := t.Context()

	type measures struct {
		claim, blocked, next, scan, table int
	}
	got := make(map[int]measures)
	for _, backlog := range []int{1_000, 100_000} {
		table := fmt.Sprintf("backlog_%d", backlog)
		s, err := sqlite.New(&sqlite.Config{Table: table})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		// 640 keys, 10 per partition, so that the claim checks for earlier
		// failed events of each key.
		_, err = db.ExecContext(ctx, `WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
			INSERT INTO `+s.QuotedTable()+` (event_id, topic, event_key, payload, created_at, part)
			SELECT 'event-' || n, 'topic', 'key-' || (n % 640), zeroblob(300), 0, (n % 640) % 64 FROM g`, backlog)
		require.NoError(t, err)

		pending, failed := table+"_pending_idx", table+"_failed_idx"
		plan := explainQueryPlan(t, db, s.ClaimSQL(), omnibox.Partitions, limit, "", "explain/1", false)
		t.Logf("backlog %d, query plan of the claim:\n%s", backlog, plan)
		require.Equal(t, []string{
			"SEARCH o USING INDEX " + pending + " (part=?)",
			"CORRELATED SCALAR SUBQUERY 1",
		}, planChildren(plan, "CORRELATED SCALAR SUBQUERY 2"), "a head must be one probe of the pending index")
		require.Equal(t, []string{
			"SEARCH o USING INDEX " + pending + " (part=? AND seq>?)",
			"CORRELATED SCALAR SUBQUERY 7",
		}, planChildren(plan, "CORRELATED SCALAR SUBQUERY 8"), "a step of the walk must be one probe of the pending index")
		require.Equal(t, 2, strings.Count(plan, "SEARCH b USING INDEX "+failed+" (part=? AND event_key=? AND seq<?)"),
			"the check for an earlier failed event of the key must probe the failed index")
		require.Contains(t, plan, "SEARCH "+table+" USING INTEGER PRIMARY KEY (rowid=?)", "the update must look rows up by rowid")
		require.NotContains(t, plan, "SCAN o", "the claim must not scan the table")
		require.NotContains(t, plan, "SCAN "+table, "the claim must not scan the table")

		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		var m measures
		var first []omnibox.ClaimedEvent
		m.claim = pagesRead(t, conn, func() {
			first = claimOn(t, conn, s, "a", "a/1")
			require.Len(t, first, limit)
		})
		// Every partition is leased to a/1 (the first 100 events span all
		// 64): reads the partitions, claims nothing.
		m.blocked = pagesRead(t, conn, func() {
			require.Empty(t, claimOn(t, conn, s, "b", "b/1"))
		})
		complete(t, conn, s, "a/1", first)
		// After the first claim was delivered: the heads walk past nothing.
		m.next = pagesRead(t, conn, func() {
			require.Len(t, claimOn(t, conn, s, "a", "a/2"), limit)
		})
		m.scan = pagesRead(t, conn, func() {
			var n int64
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT sum(length(payload)) FROM "+s.QuotedTable()).Scan(&n))
			require.EqualValues(t, (backlog-limit)*300, n)
		})
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM dbstat WHERE name = ?", table).Scan(&m.table))
		require.NoError(t, conn.Close())
		t.Logf("backlog %d: the table has %d pages; a claim of %d read %d pages, a blocked claim %d, the next claim %d, a full scan %d",
			backlog, m.table, limit, m.claim, m.blocked, m.next, m.scan)
		// The control: the counter sees every page a full read touches.
		require.GreaterOrEqual(t, m.scan, m.table)
		got[backlog] = m
	}

	small, large := got[1_000], got[100_000]
	require.GreaterOrEqual(t, large.table, 90*small.table)
	// The claim reads the same rows whatever the backlog (64 index probes
	// for the heads, one per event claimed): one more level in the B-trees
	// of the large table costs a page per probe, while reading rows past the
	// heads would cost thousands.
	for _, c := range []struct {
		name         string
		small, large int
	}{
		{"a claim", small.claim, large.claim},
		{"a blocked claim", small.blocked, large.blocked},
		{"the next claim", small.next, large.next},
	} {
		require.LessOrEqual(t, c.large, 2*c.small, "pages read by %s grow with the backlog", c.name)
		require.Less(t, 5*c.large, large.table, "%s read a sizeable part of the table", c.name)
	}
}

// Complete looks the delivered and released events up by rowid, one lookup
// per seq given, however large the backlog.
func TestCompleteLooksUpByRowid(t *testing.T) {
	t.Parallel()
	db, _ := dbtest.SQLite(t)
	for _, retention := range []time.Duration{0, time.Hour} {
		s, err := sqlite.New(&sqlite.Config{Retention: retention})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(t.Context(), db))
		for _, query := range []string{s.DeliverSQL(), s.ReleaseSQL()} {
			plan := explainQueryPlan(t, db, query, "[1,2,3]", "owner/1", "error")
			t.Logf("%s\n%s", query, plan)
			require.Contains(t, plan, "SEARCH omnibox_outbox USING INTEGER PRIMARY KEY (rowid=?)")
			require.NotContains(t, plan, "SCAN omnibox_outbox\n", "the outbox table must not be scanned (the 64 rows of the partitions may)")
		}
	}
}

// explainQueryPlan returns the plan of query with args as indented lines,
// one per node.
func explainQueryPlan(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	require.NoError(t, err)
	defer rows.Close()
	depth := make(map[int]int)
	var b strings.Builder
	for rows.Next() {
		var (
			id, parent, unused int
			detail             string
		)
		require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
		depth[id] = depth[parent] + 1
		b.WriteString(strings.Repeat("  ", depth[id]) + detail + "\n")
	}
	require.NoError(t, rows.Err())
	return b.String()
}

// pagesRead returns the number of pages conn read (from its cache or the
// file) while fn ran.
func pagesRead(t *testing.T, conn *sql.Conn, fn func()) int {
	t.Helper()
	status := func(reset bool) int {
		total := 0
		require.NoError(t, conn.Raw(func(dc any) error {
			for _, op := range []msqlite.DBStatusOp{msqlite.DBStatusCacheHit, msqlite.DBStatusCacheMiss} {
				n, _, err := dc.(msqlite.DBStatus).Status(op, reset)
				if err != nil {
					return err
				}
				total += n
			}
			return nil
		}))
		return total
	}
	status(true)
	fn()
	return status(false)
}

// claimOn runs one claim of up to 100 events by relay on conn, in a
// committed transaction.
func claimOn(t *testing.T, conn *sql.Conn, s *sqlite.Store, relay, owner string) []omnibox.ClaimedEvent {
	t.Helper()
	tx, err := conn.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, err := s.Claim(t.Context(), tx, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: owner, Relay: relay})
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	return res.Events
}

// complete delivers the events of owner on conn, in a committed
// transaction.
func complete(t *testing.T, conn *sql.Conn, s *sqlite.Store, owner string, events []omnibox.ClaimedEvent) {
	t.Helper()
	tx, err := conn.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, err := s.Complete(t.Context(), tx, omnibox.CompleteParams{Delivered: seqsOf(events), Owner: owner})
	require.NoError(t, err)
	require.Equal(t, len(events), res.Delivered)
	require.NoError(t, tx.Commit())
}

// planChildren returns the nodes right under the first node detail of plan,
// as returned by explainQueryPlan.
func planChildren(plan, detail string) []string {
	var (
		children []string
		indent   = -1
	)
	for line := range strings.Lines(plan) {
		line = strings.TrimSuffix(line, "\n")
		d := strings.TrimLeft(line, " ")
		depth := len(line) - len(d)
		switch {
		case indent < 0 && d == detail:
			indent = depth
		case indent >= 0 && depth <= indent:
			return children
		case indent >= 0 && depth == indent+2:
			children = append(children, d)
		}
	}
	return children
}
