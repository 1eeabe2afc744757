package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/omnibox-go/omnibox"
)

// guardSQL returns the select-list items that set, for the rest of the
// transaction (set_config with is_local), the server-side guards of a
// call's deadline: statement_timeout, lock_timeout and
// idle_in_transaction_session_timeout, all to param, the milliseconds the
// deadline leaves (see [guardMillis]). A statement running longer, a lock
// wait longer, or the session sitting idle inside the transaction longer
// (the relay cut off between two statements, or before COMMIT) makes the
// server cancel the statement or end the session, so that a relay whose
// link stopped answering does not keep its locks. param 0 (no deadline)
// leaves the session's settings alone.
func guardSQL(param string) string {
	ms := param + "::bigint"
	set := func(name string) string {
		return "CASE WHEN " + ms + " > 0 THEN set_config('" + name + "', " + ms + "::text, true) END AS " + name
	}
	return set("statement_timeout") + ", " + set("lock_timeout") + ", " + set("idle_in_transaction_session_timeout")
}

// guardMillis returns the milliseconds that ctx's deadline leaves, rounded
// up and at least 1, or 0 when ctx has no deadline.
func guardMillis(ctx context.Context) int64 {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(deadline).Milliseconds()+1, 1)
}

// guard sets the guards of ctx's deadline for the rest of tx's transaction,
// in a statement of its own; it does nothing when ctx has no deadline.
func (s *Store) guard(ctx context.Context, tx omnibox.DBTX) error {
	ms := guardMillis(ctx)
	if ms == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, s.guardSQL, ms); err != nil {
		return fmt.Errorf("setting the statement, lock and idle timeouts: %w", err)
	}
	return nil
}
