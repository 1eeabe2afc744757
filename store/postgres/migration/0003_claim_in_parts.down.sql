ALTER TABLE {{.Table}} ADD COLUMN claimed_by text;
ALTER TABLE {{.PartsTable}} DROP COLUMN IF EXISTS claimed_seqs;
