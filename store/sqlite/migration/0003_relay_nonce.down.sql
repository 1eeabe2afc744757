ALTER TABLE {{.RelaysTable}} DROP COLUMN nonce;
