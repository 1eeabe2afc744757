-- Partitions, per-event retries, dead events and retention.
--
-- part is omnibox.PartitionOf(event): events of a key share a partition, and
-- a partition is leased to one claim at a time ({{.PartsTable}}). state: 0
-- pending, 1 waiting for a retry at next_attempt_at, 2 dead, 3 delivered
-- (kept only when the store has a retention period). Events pending when
-- this migration runs are put in partition 0. Times are UTC.
--
-- MySQL has no partial indexes, so two stored generated columns stand in
-- for them: pending (1 for states 0 and 1) leads the claim's index, which
-- walks a partition's pending events in seq order without reading the
-- delivered ones kept for retention; failed_key (the key of a waiting or
-- dead event, NULL otherwise) finds the failed events that block the later
-- events of their key.
--
-- event_key becomes binary, like event_id, so that keys compare byte for
-- byte: utf8mb4_bin ignores trailing spaces, which would make "k" and "k "
-- one key when a failed event blocks the later events of its key (and
-- MariaDB's subquery cache compares by the column's collation even where
-- the query compares bytes).
--
-- MySQL has no ADD COLUMN IF NOT EXISTS, so the ALTER TABLE, a single
-- atomic statement, runs only when the part column is missing: the
-- migration can be run again after a failure.
SET @omnibox_migrate = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = {{.DatabaseLiteral}} AND TABLE_NAME = {{.TableLiteral}} AND COLUMN_NAME = 'part') = 0,
    'ALTER TABLE {{.Table}}
    ADD COLUMN part            SMALLINT     NOT NULL DEFAULT 0,
    ADD COLUMN state           TINYINT      NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at DATETIME(6)  NULL,
    ADD COLUMN dead_at         DATETIME(6)  NULL,
    ADD COLUMN delivered_at    DATETIME(6)  NULL,
    ADD COLUMN pending         TINYINT      AS (state < 2) STORED,
    MODIFY COLUMN event_key    VARBINARY(255) NOT NULL DEFAULT '''',
    ADD COLUMN failed_key      VARBINARY(255)
        AS (IF(state IN (1, 2) AND LENGTH(event_key) > 0, event_key, NULL)) STORED,
    DROP COLUMN claimed_until,
    ADD INDEX pending_idx (part, pending, seq),
    ADD INDEX failed_idx (part, failed_key, state, seq),
    ADD INDEX delivered_idx (delivered_at)',
    'DO 0');
PREPARE omnibox_migrate FROM @omnibox_migrate;
EXECUTE omnibox_migrate;
DEALLOCATE PREPARE omnibox_migrate;
SET @omnibox_migrate = NULL;

-- One row per partition: the claim holding it, until when. Owners and relay
-- IDs are binary, compared byte for byte.
CREATE TABLE IF NOT EXISTS {{.PartsTable}} (
    part          SMALLINT       NOT NULL,
    claimed_by    VARBINARY(255) NULL,
    claimed_until DATETIME(6)    NULL,
    PRIMARY KEY (part)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO {{.PartsTable}} (part) VALUES
    (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15),
    (16), (17), (18), (19), (20), (21), (22), (23), (24), (25), (26), (27), (28), (29), (30), (31),
    (32), (33), (34), (35), (36), (37), (38), (39), (40), (41), (42), (43), (44), (45), (46), (47),
    (48), (49), (50), (51), (52), (53), (54), (55), (56), (57), (58), (59), (60), (61), (62), (63)
ON DUPLICATE KEY UPDATE part = part;

-- Relays that claimed within their lease: the partitions are shared among
-- them.
CREATE TABLE IF NOT EXISTS {{.RelaysTable}} (
    relay_id   VARBINARY(255) NOT NULL,
    seen_until DATETIME(6)    NOT NULL,
    PRIMARY KEY (relay_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
