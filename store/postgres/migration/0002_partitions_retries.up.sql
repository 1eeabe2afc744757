-- Partitions, per-event retries, dead events and retention.
--
-- part is omnibox.PartitionOf(event): events of a key share a partition,
-- and a partition is leased to one claim at a time ({{.PartsTable}}).
-- state: 0 pending, 1 waiting for a retry at next_attempt_at, 2 dead,
-- 3 delivered (kept only when the store has a retention period).
-- The events already in the table are put in their partition below. part's
-- default, 0, only serves rows written by the previous version during an
-- upgrade (the order of their key is then not kept: stop writers of the
-- previous version before relays of this one start).
ALTER TABLE {{.Table}}
    ADD COLUMN part            smallint    NOT NULL DEFAULT 0,
    ADD COLUMN state           smallint    NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN dead_at         timestamptz,
    ADD COLUMN delivered_at    timestamptz,
    DROP COLUMN claimed_until,
    ADD CONSTRAINT {{.PartCheck}} CHECK (part BETWEEN 0 AND 63),
    ADD CONSTRAINT {{.StateCheck}} CHECK (state BETWEEN 0 AND 3);

-- The partition of the events already written, as omnibox.PartitionOf
-- computes it: FNV-1a (32 bits) of the UTF-8 bytes of the key, or of the ID
-- for an event without a key, modulo 64. So events of a key written before
-- and after the upgrade share a partition, and keep their order. Their
-- attempts counted claims, and now count failures: they start again at 0.
UPDATE {{.Table}} o SET attempts = 0, part = (
    WITH RECURSIVE fnv (i, h) AS (
        SELECT 0, 2166136261::bigint
        UNION ALL
        SELECT fnv.i + 1, ((fnv.h # get_byte(k.b, fnv.i)) * 16777619) % 4294967296
        FROM fnv, (SELECT convert_to(CASE WHEN o.event_key = '' THEN o.event_id ELSE o.event_key END, 'UTF8') AS b) k
        WHERE fnv.i < length(k.b)
    )
    SELECT h % 64 FROM fnv ORDER BY i DESC LIMIT 1
);

-- The claim walks a partition's pending events in seq order.
CREATE INDEX {{.PendingIndex}} ON {{.Table}} (part, seq) WHERE state IN (0, 1);
-- Failed events (waiting or dead) block the later events of their key.
CREATE INDEX {{.FailedIndex}} ON {{.Table}} (part, event_key, seq) WHERE state IN (1, 2);
-- Purging delivered events.
CREATE INDEX {{.DeliveredIndex}} ON {{.Table}} (delivered_at) WHERE state = 3;

-- One row per partition: the claim holding it, until when.
CREATE TABLE {{.PartsTable}} (
    part          smallint PRIMARY KEY,
    claimed_by    text,
    claimed_until timestamptz
);
INSERT INTO {{.PartsTable}} (part) SELECT generate_series(0, 63);

-- Relays that claimed within their lease: the partitions are shared among
-- them.
CREATE TABLE {{.RelaysTable}} (
    relay_id   text        PRIMARY KEY,
    seen_until timestamptz NOT NULL
);
