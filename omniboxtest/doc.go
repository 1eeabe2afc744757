// Package omniboxtest is a test kit for services that use omnibox, in the
// spirit of River's rivertest: what a test needs to run the outbox for real,
// in-process or against the test servers, and to check what it did.
//
//   - Kafka: [StartKafka] starts an in-process Kafka cluster (kfake, from
//     franz-go; no server needed) with the topics the test names, and returns
//     its brokers for the publisher and the subscribers; [CreateTopics] adds
//     topics later (the inbox's poison queue). The omnibox publisher never
//     creates topics, and neither does the cluster: create every topic
//     used. With [KafkaBrokersEnv] set, the kit uses that real cluster
//     instead. [NewKafka] does the same without package testing, for demo
//     programs.
//   - GoChannel: [NewGoChannel] is an in-process Watermill Pub/Sub that
//     delivers one message at a time in publish order and keeps what is
//     published before a subscriber exists, so a relay publishing to it keeps
//     each key's order; Watermill's own gochannel.GoChannel does neither.
//   - Databases: [SQLite] gives a migrated store on a fresh SQLite file;
//     [Postgres] a fresh PostgreSQL schema and a DSN that opens it;
//     [MySQL] a fresh MySQL or MariaDB database and its DSN. Each is
//     dropped at the test's cleanup; an unreachable server fails the test,
//     naming the environment variable to set ([PostgresURLEnv],
//     [MySQLDSNEnv]).
//   - Drain: [Drain] publishes everything pending now, for a test that wants
//     the events of what it just did delivered without a background relay.
//
// docs/testing.md shows how to test a service with the kit.
package omniboxtest
