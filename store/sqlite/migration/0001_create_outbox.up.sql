CREATE TABLE {{.Table}} (
    -- seq is the claim order: events are claimed in seq order. It is the
    -- table's rowid, and AUTOINCREMENT keeps it from ever being reused, even
    -- after the newest events were delivered and deleted. Delivered events
    -- are deleted, so every row is pending and the rowid B-tree serves the
    -- claim.
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Lengths are in bytes, the limits of omnibox.Event; the default BINARY
    -- collation makes event_id case-sensitive.
    event_id      TEXT    NOT NULL CHECK (length(CAST(event_id AS BLOB)) BETWEEN 1 AND 128),
    topic         TEXT    NOT NULL CHECK (length(CAST(topic AS BLOB)) BETWEEN 1 AND 255),
    event_key     TEXT    NOT NULL DEFAULT '' CHECK (length(CAST(event_key AS BLOB)) <= 255),
    payload       BLOB    NOT NULL,
    -- A JSON object of strings.
    metadata      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    -- Microseconds since the Unix epoch, UTC.
    created_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    claimed_by    TEXT,
    -- Microseconds since the Unix epoch, on the database's clock.
    claimed_until INTEGER,
    last_error    TEXT
) STRICT;

CREATE UNIQUE INDEX {{.EventIDKey}} ON {{.Table}} (event_id);
