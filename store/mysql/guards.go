package mysql

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/omnibox-go/omnibox"
)

// Server flavors, as [Store.guard] caches them.
const (
	serverUnknown int32 = iota
	serverMySQL
	serverMariaDB
)

// guard sets the server-side guards of ctx's deadline on db's session, in
// one statement; it does nothing when ctx has no deadline. It reads the
// server's version once per store, the first time, to know which variables
// the server has (see [guardSQL]).
func (s *Store) guard(ctx context.Context, db omnibox.DBTX) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		return nil
	}
	flavor := s.flavor.Load()
	if flavor == serverUnknown {
		var version string
		if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
			return fmt.Errorf("reading the server's version: %w", err)
		}
		flavor = serverMySQL
		if isMariaDB(version) {
			flavor = serverMariaDB
		}
		s.flavor.Store(flavor)
	}
	if _, err := db.ExecContext(ctx, guardSQL(flavor, time.Until(deadline))); err != nil {
		return fmt.Errorf("setting the lock wait, statement and idle timeouts: %w", err)
	}
	return nil
}

// guardSQL returns the statement that sets the guards of a deadline left
// away, for the rest of the session (they are session variables: see
// docs/mysql.md): innodb_lock_wait_timeout, in whole seconds rounded up;
// on MariaDB max_statement_time (seconds, to the microsecond) and
// idle_transaction_timeout (whole seconds), which ends the session of a
// transaction left idle that long; on MySQL, which has no idle timeout for
// transactions, max_execution_time (milliseconds, SELECT only) and
// wait_timeout (whole seconds), which ends any session idle that long. It
// holds numbers only and takes no parameter, so the driver sends it as it
// is, in one round trip.
func guardSQL(flavor int32, left time.Duration) string {
	left = max(left, time.Millisecond)
	secs := strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10)
	if flavor == serverMariaDB {
		return "SET SESSION innodb_lock_wait_timeout = " + secs +
			", max_statement_time = " + strconv.FormatFloat(left.Seconds(), 'f', 6, 64) +
			", idle_transaction_timeout = " + secs
	}
	return "SET SESSION innodb_lock_wait_timeout = " + secs +
		", max_execution_time = " + strconv.FormatInt(left.Milliseconds()+1, 10) +
		", wait_timeout = " + secs
}
