package dbtest

import (
	"cmp"
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql" // also registers the "mysql" driver
)

// MySQLDSNEnv is the environment variable that overrides [MySQLDSN].
const MySQLDSNEnv = "OMNIBOX_TEST_MYSQL_DSN"

// DefaultMySQLDSN is the test server used when [MySQLDSNEnv] is unset: the
// local MariaDB (or MySQL) as root, without parseTime or any other option,
// since the MySQL store needs none.
const DefaultMySQLDSN = "root@tcp(127.0.0.1:3306)/test"

// MySQLDSN returns the DSN (go-sql-driver/mysql format) of the MySQL test
// server: the value of [MySQLDSNEnv], or [DefaultMySQLDSN] when that is
// unset or empty. Its database is where [MySQL] connects to create the
// tests' databases.
func MySQLDSN() string {
	return cmp.Or(os.Getenv(MySQLDSNEnv), DefaultMySQLDSN)
}

// MySQL connects to the MySQL test server named by [MySQLDSN] and creates a
// database with a random name (omnibox_test_<hex>) for the test alone. It
// returns a handle whose connections use that database (the DSN's other
// parameters are kept) and the database's name. It fails the test when the
// server cannot be reached. A cleanup drops the database and closes db.
//
// Use [MySQLConfig] to open more handles on the same database, with other
// DSN parameters.
func MySQL(t testing.TB) (db *sql.DB, database string) {
	t.Helper()
	dsn := MySQLDSN()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("dbtest: parsing the MySQL DSN %q: %v (fix %s)", dsn, err, MySQLDSNEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("dbtest: opening MySQL at %s: %v (set %s to point the tests at another server)", dsn, err, MySQLDSNEnv)
	}
	defer func() { _ = admin.Close() }()
	if err := admin.PingContext(ctx); err != nil {
		t.Fatalf("dbtest: MySQL is not reachable at %s: %v (start the server or set %s)", dsn, err, MySQLDSNEnv)
	}

	database = "omnibox_test_" + randomHex(8)
	// database is [a-z0-9_] only, so quoting it is enough. It takes the
	// server's default character set: code under test must not depend on it.
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+database+"`"); err != nil {
		t.Fatalf("dbtest: creating database %s: %v", database, err)
	}
	cfg.DBName = database
	db, err = sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("dbtest: opening database %s: %v", database, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+database+"`"); err != nil {
			t.Errorf("dbtest: dropping database %s: %v", database, err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("dbtest: closing database: %v", err)
		}
	})
	return db, database
}

// MySQLConfig returns the parsed [MySQLDSN] with its database set to
// database, for a test to change parameters (parseTime, loc, charset, ...)
// and open another handle with sql.Open("mysql", cfg.FormatDSN()).
func MySQLConfig(t testing.TB, database string) *mysql.Config {
	t.Helper()
	cfg, err := mysql.ParseDSN(MySQLDSN())
	if err != nil {
		t.Fatalf("dbtest: parsing the MySQL DSN %q: %v (fix %s)", MySQLDSN(), err, MySQLDSNEnv)
	}
	cfg.DBName = database
	return cfg
}
