-- The nonce of the relay process that last recorded itself under a relay
-- ID: a claim whose relay ID is recorded as live with another nonce comes
-- from a second live process with the same ID, and fails (ErrRelayIDInUse).
-- Relays of the previous version, still running during an upgrade, record
-- themselves with the default, '', which conflicts with nothing. MySQL has
-- no ADD COLUMN IF NOT EXISTS: the ALTER TABLE runs only when the column is
-- missing, so that the migration can be run again after a failure.
SET @omnibox_migrate = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = {{.DatabaseLiteral}} AND TABLE_NAME = {{.RelaysTableLiteral}} AND COLUMN_NAME = 'nonce') = 0,
    'ALTER TABLE {{.RelaysTable}} ADD COLUMN nonce VARBINARY(255) NOT NULL DEFAULT ''''',
    'DO 0');
PREPARE omnibox_migrate FROM @omnibox_migrate;
EXECUTE omnibox_migrate;
DEALLOCATE PREPARE omnibox_migrate;
SET @omnibox_migrate = NULL;
