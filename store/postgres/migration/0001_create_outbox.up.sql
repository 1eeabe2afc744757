{{if .Schema}}CREATE SCHEMA IF NOT EXISTS {{.Schema}};

{{end}}CREATE TABLE {{.Table}} (
    -- seq is the claim order: events are claimed in seq order. Delivered
    -- events are deleted, so every row is pending and the primary key index
    -- serves the claim.
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      text        NOT NULL,
    topic         text        NOT NULL,
    event_key     text        NOT NULL DEFAULT '',
    payload       bytea       NOT NULL,
    metadata      jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    claimed_by    text,
    claimed_until timestamptz,
    last_error    text,
    CONSTRAINT {{.EventIDKey}} UNIQUE (event_id)
);
