{{if .Schema}}CREATE SCHEMA IF NOT EXISTS {{.Schema}};

{{end}}CREATE TABLE {{.Table}} (
    -- A row per message processed by a consumer. COLLATE "C" compares the
    -- names byte for byte (case and trailing spaces count), whatever the
    -- database's collation. Lengths are in bytes, the limits of
    -- inbox.RecordParams.
    consumer     text        COLLATE "C" NOT NULL CHECK (octet_length(consumer) BETWEEN 1 AND 255),
    message_id   text        COLLATE "C" NOT NULL CHECK (octet_length(message_id) BETWEEN 1 AND 128),
    -- When the row was recorded, on the database's clock.
    processed_at timestamptz NOT NULL,
    CONSTRAINT {{.PrimaryKey}} PRIMARY KEY (consumer, message_id)
);

-- Purge deletes the oldest rows first, through this index.
CREATE INDEX {{.ProcessedAtIndex}} ON {{.Table}} (processed_at);
