-- The inbox table: a row per message processed by a consumer. consumer and
-- message_id are binary so that they compare byte for byte (case and trailing
-- spaces count; utf8mb4_bin is a PAD SPACE collation); their lengths are the
-- limits of inbox.RecordParams, in bytes. processed_at is UTC, from
-- UTC_TIMESTAMP(6), the database's clock. Purge deletes the oldest rows first
-- through the index on processed_at (which InnoDB extends with the primary
-- key, so the order is total).
CREATE TABLE IF NOT EXISTS {{.Table}} (
    consumer     VARBINARY(255) NOT NULL,
    message_id   VARBINARY(128) NOT NULL,
    processed_at DATETIME(6)    NOT NULL,
    PRIMARY KEY (consumer, message_id),
    KEY {{.ProcessedAtIndex}} (processed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
