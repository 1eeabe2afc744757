-- Partitions, per-event retries, dead events and retention.
--
-- part is omnibox.PartitionOf(event): events of a key share a partition,
-- and a partition is leased to one claim at a time ({{.PartsTable}}).
-- state: 0 pending, 1 waiting for a retry at next_attempt_at, 2 dead,
-- 3 delivered (kept only when the store has a retention period).
-- Times are INTEGER microseconds since the Unix epoch, on the database's
-- clock. Events pending when this migration runs are put in partition 0.
ALTER TABLE {{.Table}} ADD COLUMN part INTEGER NOT NULL DEFAULT 0 CHECK (part BETWEEN 0 AND 63);
ALTER TABLE {{.Table}} ADD COLUMN state INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3);
ALTER TABLE {{.Table}} ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE {{.Table}} ADD COLUMN dead_at INTEGER;
ALTER TABLE {{.Table}} ADD COLUMN delivered_at INTEGER;
ALTER TABLE {{.Table}} DROP COLUMN claimed_until;

-- The claim walks a partition's pending events in seq order.
CREATE INDEX {{.PendingIndex}} ON {{.Table}} (part, seq) WHERE state IN (0, 1);
-- Failed events (waiting or dead) block the later events of their key.
CREATE INDEX {{.FailedIndex}} ON {{.Table}} (part, event_key, seq) WHERE state IN (1, 2);
-- Purging delivered events.
CREATE INDEX {{.DeliveredIndex}} ON {{.Table}} (delivered_at) WHERE state = 3;

-- One row per partition: the claim holding it, until when (microseconds
-- since the Unix epoch, on the database's clock).
CREATE TABLE {{.PartsTable}} (
    part          INTEGER PRIMARY KEY CHECK (part BETWEEN 0 AND 63),
    claimed_by    TEXT,
    claimed_until INTEGER
) STRICT;
WITH RECURSIVE g(part) AS (SELECT 0 UNION ALL SELECT part + 1 FROM g WHERE part < 63)
INSERT INTO {{.PartsTable}} (part) SELECT part FROM g;

-- Relays that claimed within their lease: the partitions are shared among
-- them.
CREATE TABLE {{.RelaysTable}} (
    relay_id   TEXT    PRIMARY KEY,
    seen_until INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
