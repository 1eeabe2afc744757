package mysql_test

import (
	"database/sql"
	"fmt"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// A relay's own pool on MySQL or MariaDB, with client-side I/O deadlines: a
// read or a write that waits longer fails and the connection is closed, so a
// link that stops answering cannot hold a call past them even when no
// context deadline reaches the driver. Keep them above the relay's
// RelayConfig.DatabaseTimeout (5 s by default) and give the relay a pool of
// its own: they apply to every statement on the pool, and so do the session
// variables the store sets (see docs/mysql.md). The driver turns TCP
// keepalives on by itself.
func Example_relayPool() {
	// snippet-start: relay-pool
	config := gomysql.NewConfig()
	config.Net, config.Addr, config.User, config.DBName = "tcp", "127.0.0.1:3306", "root", "test"
	config.Timeout = 5 * time.Second       // connecting
	config.ReadTimeout = 30 * time.Second  // each read
	config.WriteTimeout = 30 * time.Second // each write
	connector, err := gomysql.NewConnector(config)
	if err != nil {
		fmt.Println(err)
		return
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	// snippet-end: relay-pool
	db.SetMaxOpenConns(4)
	fmt.Println("ready")
	// Output: ready
}
