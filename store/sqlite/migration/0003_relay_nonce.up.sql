-- The nonce of the relay process that last recorded itself under a relay
-- ID: a claim whose relay ID is recorded as live with another nonce comes
-- from a second live process with the same ID, and fails (ErrRelayIDInUse).
-- Relays recorded before, with the default '', conflict with nothing.
ALTER TABLE {{.RelaysTable}} ADD COLUMN nonce TEXT NOT NULL DEFAULT '';
