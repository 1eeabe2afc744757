DROP TABLE IF EXISTS {{.RelaysTable}};

DROP TABLE IF EXISTS {{.PartsTable}};

-- Delivered events kept for retention go; waiting and dead events become
-- pending again. Like the up migration, each step runs only when
-- information_schema shows it is not done yet: first the generated columns
-- and the indexes, then the columns they were computed from.
SET @omnibox_migrate = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = {{.DatabaseLiteral}} AND TABLE_NAME = {{.TableLiteral}} AND COLUMN_NAME = 'part') = 1,
    'DELETE FROM {{.Table}} WHERE state = 3',
    'DO 0');
PREPARE omnibox_migrate FROM @omnibox_migrate;
EXECUTE omnibox_migrate;
DEALLOCATE PREPARE omnibox_migrate;

SET @omnibox_migrate = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = {{.DatabaseLiteral}} AND TABLE_NAME = {{.TableLiteral}} AND COLUMN_NAME = 'failed_key') = 1,
    'ALTER TABLE {{.Table}}
    DROP INDEX delivered_idx,
    DROP INDEX failed_idx,
    DROP INDEX pending_idx,
    DROP COLUMN failed_key,
    DROP COLUMN pending',
    'DO 0');
PREPARE omnibox_migrate FROM @omnibox_migrate;
EXECUTE omnibox_migrate;
DEALLOCATE PREPARE omnibox_migrate;

SET @omnibox_migrate = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = {{.DatabaseLiteral}} AND TABLE_NAME = {{.TableLiteral}} AND COLUMN_NAME = 'part') = 1,
    'ALTER TABLE {{.Table}}
    DROP COLUMN delivered_at,
    DROP COLUMN dead_at,
    DROP COLUMN next_attempt_at,
    DROP COLUMN state,
    DROP COLUMN part,
    MODIFY COLUMN event_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '''',
    ADD COLUMN claimed_until DATETIME(6) NULL',
    'DO 0');
PREPARE omnibox_migrate FROM @omnibox_migrate;
EXECUTE omnibox_migrate;
DEALLOCATE PREPARE omnibox_migrate;
SET @omnibox_migrate = NULL;
