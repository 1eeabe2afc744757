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
// Over backlogs of 1,000 and 100,000 events (the second table 100 times the
// pages of the first), the claim reads about the same number of pages, a
// small fraction of the large table, while a full scan, as a control, reads
// every page. The query plan shows why: the head is a scan of the rowid
// B-tree in seq order with no sort (stopped by the LIMIT), and the update
// looks rows up by rowid.
func TestClaimReadsAboutLimitRows(t *testing.T) {
	t.Parallel()
	const limit = 100
	db, _ := dbtest.SQLite(t)
	ctx := t.Context()

	type measures struct {
		claim, blocked, scan, table int
	}
	got := make(map[int]measures)
	for _, backlog := range []int{1_000, 100_000} {
		table := fmt.Sprintf("backlog_%d", backlog)
		s, err := sqlite.New(&sqlite.Config{Table: table})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx, db))
		_, err = db.ExecContext(ctx, `WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
			INSERT INTO `+s.QuotedTable()+` (event_id, topic, payload, created_at)
			SELECT 'event-' || n, 'topic', zeroblob(100), 0 FROM g`, backlog)
		require.NoError(t, err)

		plan := explainQueryPlan(t, db, s.ClaimSQL(), limit, "", "explain/1", time.Minute.Microseconds())
		t.Logf("backlog %d, query plan:\n%s", backlog, plan)
		require.Equal(t, []string{"SCAN " + table}, planChildren(plan, "MATERIALIZE head"), "the head must scan the table in rowid order")
		require.Contains(t, plan, "SEARCH "+table+" USING INTEGER PRIMARY KEY (rowid=?)", "the update must look rows up by rowid")
		require.NotContains(t, plan, "TEMP B-TREE", "the claim must not sort the table")

		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		var m measures
		m.claim = pagesRead(t, conn, func() {
			require.Len(t, claimOn(t, conn, s, "a/1"), limit)
		})
		// Blocked by the live lease at the head: reads the head, claims
		// nothing.
		m.blocked = pagesRead(t, conn, func() {
			require.Empty(t, claimOn(t, conn, s, "b/1"))
		})
		m.scan = pagesRead(t, conn, func() {
			var n int64
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT sum(length(payload)) FROM "+s.QuotedTable()).Scan(&n))
			require.EqualValues(t, backlog*100, n)
		})
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM dbstat WHERE name = ?", table).Scan(&m.table))
		require.NoError(t, conn.Close())
		t.Logf("backlog %d: the table has %d pages; a claim of %d read %d pages, a blocked claim %d, a full scan %d",
			backlog, m.table, limit, m.claim, m.blocked, m.scan)
		// The control: the counter sees every page a full read touches.
		require.GreaterOrEqual(t, m.scan, m.table)
		got[backlog] = m
	}

	small, large := got[1_000], got[100_000]
	require.GreaterOrEqual(t, large.table, 90*small.table)
	// One more level in the B-tree of the large table costs a few pages;
	// reading rows past the head would cost thousands.
	require.LessOrEqual(t, large.claim, small.claim+10, "pages read by a claim grow with the backlog")
	require.LessOrEqual(t, large.blocked, small.blocked+10, "pages read by a blocked claim grow with the backlog")
	require.Less(t, 20*large.claim, large.table, "a claim read a sizeable part of the table")
}

// MarkDelivered and Release look their events up by rowid, one lookup per
// seq given, however large the backlog.
func TestDeliverAndReleaseLookUpByRowid(t *testing.T) {
	t.Parallel()
	db, _ := dbtest.SQLite(t)
	s, err := sqlite.New(&sqlite.Config{})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(t.Context(), db))
	for _, query := range []string{s.DeliverSQL(), s.ReleaseSQL()} {
		plan := explainQueryPlan(t, db, query, "[1,2,3]", "owner/1", "error")
		t.Logf("%s\n%s", query, plan)
		require.Contains(t, plan, "SEARCH omnibox_outbox USING INTEGER PRIMARY KEY (rowid=?)")
		require.NotContains(t, plan, "SCAN omnibox_outbox")
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

// planChildren returns the nodes right under the node detail of plan, as
// returned by explainQueryPlan.
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

// claimOn runs one claim of up to 100 events on conn, in a committed
// transaction.
func claimOn(t *testing.T, conn *sql.Conn, s *sqlite.Store, owner string) []omnibox.ClaimedEvent {
	t.Helper()
	tx, err := conn.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	res, err := s.Claim(t.Context(), tx, omnibox.ClaimParams{Lease: time.Hour, Limit: 100, Owner: owner})
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	return res.Events
}
