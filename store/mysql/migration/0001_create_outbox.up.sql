-- The outbox table. seq is the claim order: events are claimed in seq order.
-- Delivered events are deleted, so every row is pending and the primary key
-- serves the claim. Times are UTC (DATETIME does not depend on the session
-- time zone); leases are measured with UTC_TIMESTAMP(6), the database's clock.
-- event_id is binary so that IDs compare byte for byte (case and trailing
-- spaces count); text columns are utf8mb4 with a binary collation.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    seq           BIGINT         NOT NULL AUTO_INCREMENT,
    event_id      VARBINARY(128) NOT NULL,
    topic         VARCHAR(255)   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    event_key     VARCHAR(255)   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
    payload       LONGBLOB       NOT NULL,
    metadata      LONGTEXT       CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT ('{}'),
    created_at    DATETIME(6)    NOT NULL,
    attempts      INT            NOT NULL DEFAULT 0,
    claimed_by    VARCHAR(255)   CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    claimed_until DATETIME(6)    NULL,
    last_error    TEXT           CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    PRIMARY KEY (seq),
    UNIQUE KEY {{.EventIDKey}} (event_id),
    CONSTRAINT {{.MetadataCheck}} CHECK (JSON_VALID(metadata))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The claim lock: its one row is locked by each claim (FOR UPDATE SKIP
-- LOCKED) until the claim's transaction ends, so claims run one at a time.
CREATE TABLE IF NOT EXISTS {{.LockTable}} (
    id TINYINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;

INSERT INTO {{.LockTable}} (id) VALUES (1) ON DUPLICATE KEY UPDATE id = id;
