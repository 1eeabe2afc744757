-- The nonce of the relay process that last recorded itself under a relay
-- ID: a claim whose relay ID is recorded as live with another nonce comes
-- from a second live process with the same ID, and fails (ErrRelayIDInUse).
-- Relays of the previous version, still running during an upgrade, record
-- themselves with the default, '', which conflicts with nothing.
ALTER TABLE {{.RelaysTable}} ADD COLUMN IF NOT EXISTS nonce text NOT NULL DEFAULT '';
