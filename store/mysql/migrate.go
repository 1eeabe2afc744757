package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/internal/migration"
)

// Migration is one step of the outbox tables' schema, its SQL rendered for
// the store's database and table names. Up and Down may each hold several
// statements, every one ending with a semicolon: [Store.Migrate] runs them
// one at a time, and a migration tool must run a file as a multi-statement
// script (with golang-migrate, open the database with multiStatements=true).
type Migration struct {
	// Down reverts the step.
	Down string
	// Name describes the step, as in its file name ("create_outbox").
	Name string
	// Up applies the step. Each of its statements is idempotent (CREATE
	// TABLE IF NOT EXISTS and the like), so a step that failed half way can
	// simply be run again.
	Up string
	// Version orders the steps, from 1.
	Version int
}

// migrationFiles are the templates of the outbox (migration/) and inbox
// (inbox_migration/) migrations.
//
//go:embed migration/*.sql inbox_migration/*.sql
var migrationFiles embed.FS

// templateData are the names a migration template may use, each already
// validated and quoted.
type templateData struct {
	// DatabaseLiteral is the database holding the tables as an SQL
	// expression, for queries on information_schema: the quoted string
	// literal of [Config.Database], or DATABASE() when it is empty.
	DatabaseLiteral string
	// EventIDKey names the unique key on event_id.
	EventIDKey string
	// LockTable is the quoted, qualified claim lock table.
	LockTable string
	// MetadataCheck names the CHECK constraint on metadata (CHECK constraint
	// names are unique per database in MySQL).
	MetadataCheck string
	// PartsTable is the quoted, qualified table of partition leases.
	PartsTable string
	// RelaysTable is the quoted, qualified table of live relays.
	RelaysTable string
	// RelaysTableLiteral is the relay table's unqualified name as a quoted
	// string literal, for queries on information_schema.
	RelaysTableLiteral string
	// Table is the quoted, qualified outbox table.
	Table string
	// TableLiteral is the outbox table's unqualified name as a quoted
	// string literal, for queries on information_schema.
	TableLiteral string
}

// splitStatements splits a migration script into its statements, at the
// semicolons outside comments, quoted strings and quoted identifiers.
// Statements that hold nothing but comments and space are dropped (the
// server rejects an empty query).
func splitStatements(script string) []string {
	var (
		stmts   []string
		start   int
		content bool // the current statement has more than comments
	)
	flush := func(end int) {
		if content {
			stmts = append(stmts, strings.TrimSpace(script[start:end]))
		}
		start, content = end+1, false
	}
	for i := 0; i < len(script); i++ {
		switch c := script[i]; {
		case c == '#', c == '-' && lineComment(script[i:]):
			if j := strings.IndexByte(script[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(script)
			}
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			if j := strings.Index(script[i+2:], "*/"); j >= 0 {
				i += j + 3
			} else {
				i = len(script)
			}
		case c == '\'' || c == '"' || c == '`':
			content = true
			for i++; i < len(script) && script[i] != c; i++ {
				if script[i] == '\\' && c != '`' {
					i++
				}
			}
		case c == ';':
			flush(i)
		case c != ' ' && c != '\t' && c != '\n' && c != '\r':
			content = true
		}
	}
	flush(len(script))
	return stmts
}

// lineComment reports whether s starts with a "--" comment, which MySQL
// recognizes only when a space or control character (or the end) follows.
func lineComment(s string) bool {
	return strings.HasPrefix(s, "--") && (len(s) == 2 || s[2] <= ' ')
}

// Migrations returns the migrations of the outbox tables, rendered for the
// configured database and table, in version order. Apply them with
// [Store.Migrate] or with any migration tool.
func (s *Store) Migrations() []Migration {
	return migration.Export[Migration](s.migrator.migrations)
}

// MigrationFS returns the migrations as files in the layout of
// golang-migrate (and goose and most other tools): for each version,
// NNNN_name.up.sql and NNNN_name.down.sql at the root, rendered for the
// configured database and table. Each call returns a new file system. The
// files hold several statements each: golang-migrate's MySQL driver runs
// them only on a connection opened with multiStatements=true.
func (s *Store) MigrationFS() fs.FS {
	return migration.FS(s.migrator.migrations)
}

// migrateLockWait is how long one GET_LOCK call waits, in seconds; Migrate
// calls it again until it gets the lock or its context ends.
const migrateLockWait = 1

// Migrate brings the outbox tables up to date. MySQL's DDL is not
// transactional (each statement commits on its own), so Migrate works on
// one connection taken from db's pool:
//
//  1. It checks the server (MySQL 8.0.16 or later, MariaDB 10.6 or later)
//     and the session: a current database when [Config.Database] is empty,
//     a utf8mb4 connection character set and autocommit on. Each failed
//     check returns an error that says how to fix the DSN.
//  2. It takes the named lock GET_LOCK("omnibox_migrate_<hash of database
//     and table>"), waiting for as long as ctx allows, so that processes
//     that migrate at once run one after the other.
//  3. It checks that the tables already there use InnoDB (the claim
//     relies on its row locks and transactions).
//  4. It creates the migrations table (Table + "_migrations") when
//     missing, then runs the statements of each migration not recorded
//     there, one at a time (multiStatements is never needed), in order,
//     and records it. Every statement is idempotent (a schema change that
//     MySQL cannot make conditional, like adding columns, is one atomic
//     ALTER TABLE run through PREPARE only when information_schema shows it
//     missing), so a migration that failed half way (a crash, a lost
//     connection) is completed by the next Migrate. It then restores the
//     claim lock row and the 64 partition rows, should they have been
//     deleted.
//  5. It checks that all the tables exist and use InnoDB, then releases the
//     lock with RELEASE_LOCK before the connection goes back to the pool; a
//     connection whose lock could not be released is closed instead.
//
// Migrate is idempotent. The database must exist. A nil db returns
// [omnibox.ErrNilDB].
func (s *Store) Migrate(ctx context.Context, db *sql.DB) error {
	return s.migrator.migrate(ctx, db)
}

// restoreRows inserts the claim lock row and the partition rows should they
// have been deleted: without the lock row every claim fails, and the events
// of a missing partition would never be claimed.
func (s *Store) restoreRows(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "INSERT INTO "+s.lockTable+" (id) VALUES (1) ON DUPLICATE KEY UPDATE id = id"); err != nil {
		return fmt.Errorf("restoring the claim lock row: %w", err)
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + s.partsTable + " (part) VALUES ")
	for part := range omnibox.Partitions {
		if part > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(" + strconv.Itoa(part) + ")")
	}
	b.WriteString(" ON DUPLICATE KEY UPDATE part = part")
	if _, err := conn.ExecContext(ctx, b.String()); err != nil {
		return fmt.Errorf("restoring the partition rows: %w", err)
	}
	return nil
}

// migrator applies the migrations of one store's tables (the outbox's or
// the inbox's), recording them in the table's migrations table.
type migrator struct {
	// after, when not nil, runs once the migrations are applied, before
	// the engines are checked.
	after func(ctx context.Context, conn *sql.Conn) error
	// checkSession reports a session setting the store cannot work with.
	checkSession func(session) error
	configName   string // "Config" or "InboxConfig", for messages
	database     string // as configured, empty when unqualified
	migrations   []migration.Migration
	owner        string   // "outbox" or "inbox", for messages
	tableBare    string   // unquoted, unqualified
	tableName    string   // qualified, unquoted, for messages
	tables       []string // unquoted, unqualified: the tables that must use InnoDB
	tracking     migration.Tracking
}

// newMigrator renders the migrations in dir for data, for the table named
// table in database (both unquoted, database empty when unqualified). The
// caller sets the fields that differ between the outbox and the inbox.
func newMigrator(dir string, data any, database, table string) (*migrator, error) {
	migrations, err := migration.Render("mysql", migrationFiles, dir, data)
	if err != nil {
		return nil, err
	}
	m := &migrator{database: database, migrations: migrations, tableBare: table, tableName: table}
	migrationsTable := quote(table + "_migrations")
	if database != "" {
		m.tableName = database + "." + table
		migrationsTable = quote(database) + "." + migrationsTable
	}
	m.tracking = migration.Tracking{
		Create: "CREATE TABLE IF NOT EXISTS " + migrationsTable + ` (
    version    INT          NOT NULL,
    name       VARCHAR(255) NOT NULL,
    applied_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin`,
		Insert: "INSERT INTO " + migrationsTable + " (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
		List:   "SELECT version FROM " + migrationsTable,
	}
	return m, nil
}

// migrate applies the pending migrations on one connection taken from db's
// pool, under a named lock; see [Store.Migrate].
func (m *migrator) migrate(ctx context.Context, db *sql.DB) error {
	if db == nil {
		return omnibox.ErrNilDB
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysql: migrate %s: connecting: %w", m.tableName, err)
	}
	defer func() { _ = conn.Close() }()
	if err := m.migrateConn(ctx, conn); err != nil {
		return fmt.Errorf("mysql: migrate %s: %w", m.tableName, err)
	}
	return nil
}

func (m *migrator) migrateConn(ctx context.Context, conn *sql.Conn) error {
	database, err := m.checkServer(ctx, conn)
	if err != nil {
		return err
	}
	lockName := migrateLockName(database, m.tableBare)
	if err := getLock(ctx, conn, lockName); err != nil {
		return err
	}
	defer releaseLock(ctx, conn, lockName)

	// Tables already there are checked first: the migrations would
	// otherwise alter a table of another engine, or fail on it with a
	// less helpful error.
	if err := m.checkEngines(ctx, conn, database, true); err != nil {
		return err
	}
	if err := migration.Apply(ctx, conn, m.tracking, m.migrations, splitStatements); err != nil {
		return err
	}
	if m.after != nil {
		if err := m.after(ctx, conn); err != nil {
			return err
		}
	}
	return m.checkEngines(ctx, conn, database, false)
}

// checkServer checks the server version and the session's settings, and
// returns the database holding the tables.
func (m *migrator) checkServer(ctx context.Context, conn *sql.Conn) (string, error) {
	var (
		version    string
		current    sql.NullString
		sess       session
		autocommit int64
	)
	if err := conn.QueryRowContext(ctx, "SELECT VERSION(), DATABASE(), @@character_set_client, @@character_set_connection, @@character_set_results, @@autocommit").
		Scan(&version, &current, &sess.charsetClient, &sess.charsetConnection, &sess.charsetResults, &autocommit); err != nil {
		return "", fmt.Errorf("reading the server's version and session settings: %w", err)
	}
	if err := checkVersion(version); err != nil {
		return "", err
	}
	sess.autocommit = autocommit == 1
	if err := m.checkSession(sess); err != nil {
		return "", err
	}
	if m.database != "" {
		return m.database, nil
	}
	if !current.Valid || current.String == "" {
		return "", fmt.Errorf("no database selected: name one in the DSN (user@tcp(host:3306)/dbname) or set %s.Database", m.configName)
	}
	return current.String, nil
}

// checkVersion accepts MySQL 8.0.16 and later (expression defaults,
// enforced CHECK constraints) and MariaDB 10.6 and later (the oldest
// release the store supports; the inbox's waiters are tested there). A version it cannot read fully is accepted
// when its major and minor numbers qualify.
func checkVersion(version string) error {
	nums := make([]int, 0, 3)
	for _, part := range strings.SplitN(version, ".", 3) {
		end := strings.IndexFunc(part, func(r rune) bool { return r < '0' || r > '9' })
		if end == 0 {
			break
		}
		if end > 0 {
			part = part[:end]
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			break
		}
		nums = append(nums, n)
		if end > 0 {
			break
		}
	}
	if len(nums) < 2 {
		return fmt.Errorf("cannot read the server version %q", version)
	}
	atLeast := func(want ...int) bool {
		for i, w := range want {
			if i >= len(nums) {
				return true // unknown patch level: assume it qualifies
			}
			if nums[i] != w {
				return nums[i] > w
			}
		}
		return true
	}
	if isMariaDB(version) {
		if !atLeast(10, 6) {
			return fmt.Errorf("MariaDB %s is not supported: the outbox needs MariaDB 10.6 or later", version)
		}
		return nil
	}
	if !atLeast(8, 0, 16) {
		return fmt.Errorf("MySQL %s is not supported: the outbox needs MySQL 8.0.16 or later (expression defaults, CHECK constraints)", version)
	}
	return nil
}

// isMariaDB reports whether version, as VERSION() returns it, is a MariaDB
// server's (for example "10.11.6-MariaDB-0+deb12u1").
func isMariaDB(version string) bool {
	return strings.Contains(strings.ToLower(version), "mariadb")
}

// session holds the session settings the store depends on.
type session struct {
	autocommit        bool
	charsetClient     sql.NullString
	charsetConnection sql.NullString
	charsetResults    sql.NullString
}

// check reports a setting of the session that the store cannot work with,
// and how to fix it.
func (s session) check() error {
	if !s.autocommit {
		return errors.New("autocommit is off on the connection, so statements outside transactions would never commit: " +
			"remove autocommit=0 (or false) from the DSN and from the server's init_connect")
	}
	// Results may also come unconverted (character_set_results NULL or
	// binary): they are then the stored utf8mb4 bytes.
	results := s.charsetResults.String
	if s.charsetClient.String != "utf8mb4" || s.charsetConnection.String != "utf8mb4" ||
		(results != "" && results != "utf8mb4" && results != "binary") {
		return fmt.Errorf("the connection's character set is not utf8mb4 (character_set_client=%s, character_set_connection=%s, character_set_results=%s), "+
			"so text would not round-trip exactly: remove charset= from the DSN (the driver defaults to utf8mb4) or set charset=utf8mb4, "+
			"and use no collation= of another character set",
			s.charsetClient.String, s.charsetConnection.String, orNULL(s.charsetResults))
	}
	return nil
}

func orNULL(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	return s.String
}

// migrateLockName returns the GET_LOCK name of the migrations of the table
// in database. Lock names are server-wide and at most 64 characters, so the
// qualified name is hashed.
func migrateLockName(database, table string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(database + "." + table))
	return "omnibox_migrate_" + hex.EncodeToString(h.Sum(nil))
}

// getLock takes the named lock for conn's session, waiting as long as ctx
// allows.
func getLock(ctx context.Context, conn *sql.Conn, name string) error {
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, migrateLockWait).Scan(&got); err != nil {
			return fmt.Errorf("taking the migration lock %s: %w", name, err)
		}
		switch {
		case !got.Valid:
			return fmt.Errorf("taking the migration lock %s: GET_LOCK returned NULL", name)
		case got.Int64 == 1:
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("taking the migration lock %s: %w", name, err)
		}
	}
}

// releaseLock releases the named lock of conn's session. When it cannot, it
// makes database/sql close the connection rather than return it to the
// pool: the server releases a session's locks when the session ends.
func releaseLock(ctx context.Context, conn *sql.Conn, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var released sql.NullInt64
	err := conn.QueryRowContext(ctx, "SELECT RELEASE_LOCK(?)", name).Scan(&released)
	if err != nil || released.Int64 != 1 {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
}

// checkEngines checks that the tables exist in database (unless missingOK)
// and use InnoDB: a table created earlier with another engine (or by a
// server that substituted one) would leave claims and Record without row
// locks or transactions.
func (m *migrator) checkEngines(ctx context.Context, conn *sql.Conn, database string, missingOK bool) error {
	args := make([]any, 0, 1+len(m.tables))
	args = append(args, database)
	for _, table := range m.tables {
		args = append(args, table)
	}
	rows, err := conn.QueryContext(ctx,
		"SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?"+strings.Repeat(", ?", len(m.tables)-1)+")",
		args...)
	if err != nil {
		return fmt.Errorf("checking the tables' engine: %w", err)
	}
	defer rows.Close()
	engines := make(map[string]string, len(m.tables))
	for rows.Next() {
		var name string
		var engine sql.NullString
		if err := rows.Scan(&name, &engine); err != nil {
			return fmt.Errorf("checking the tables' engine: %w", err)
		}
		engines[name] = engine.String
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("checking the tables' engine: %w", err)
	}
	for _, table := range m.tables {
		engine, ok := engines[table]
		switch {
		case !ok && missingOK:
		case !ok:
			return fmt.Errorf("table %s.%s is missing after migrating", database, table)
		case !strings.EqualFold(engine, "InnoDB"):
			return fmt.Errorf("table %s.%s uses the %q engine; the %s needs InnoDB (row locks and transactions): ALTER TABLE %s.%s ENGINE = InnoDB",
				database, table, engine, m.owner, quote(database), quote(table))
		}
	}
	return nil
}
