CREATE TABLE {{.Table}} (
    -- A row per message processed by a consumer. Lengths are in bytes, the
    -- limits of inbox.RecordParams; the default BINARY collation compares
    -- names byte for byte (case and trailing spaces count).
    consumer     TEXT    NOT NULL CHECK (length(CAST(consumer AS BLOB)) BETWEEN 1 AND 255),
    message_id   TEXT    NOT NULL CHECK (length(CAST(message_id AS BLOB)) BETWEEN 1 AND 128),
    -- When the row was recorded: microseconds since the Unix epoch, on the
    -- database's clock.
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
) STRICT;

-- Purge deletes the oldest rows first, through this index.
CREATE INDEX {{.ProcessedAtIndex}} ON {{.Table}} (processed_at);
