DROP TABLE IF EXISTS {{.RelaysTable}};
DROP TABLE IF EXISTS {{.PartsTable}};
DROP INDEX IF EXISTS {{.DeliveredIndex}};
DROP INDEX IF EXISTS {{.FailedIndex}};
DROP INDEX IF EXISTS {{.PendingIndex}};
DELETE FROM {{.Table}} WHERE state = 3;
ALTER TABLE {{.Table}}
    DROP CONSTRAINT IF EXISTS {{.StateCheck}},
    DROP CONSTRAINT IF EXISTS {{.PartCheck}},
    ADD COLUMN claimed_until timestamptz,
    DROP COLUMN IF EXISTS delivered_at,
    DROP COLUMN IF EXISTS dead_at,
    DROP COLUMN IF EXISTS next_attempt_at,
    DROP COLUMN IF EXISTS state,
    DROP COLUMN IF EXISTS part;
