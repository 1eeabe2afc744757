-- A claim records the seqs it took in the rows of the partitions it leased,
-- not in the events: marking each claimed event rewrote its row (a
-- non-HOT update, new entries in every index of the table), which cost most
-- of a claim. Complete touches only the seqs recorded for the owner's
-- partitions.
ALTER TABLE {{.PartsTable}} ADD COLUMN claimed_seqs bigint[];
ALTER TABLE {{.Table}} DROP COLUMN claimed_by;
