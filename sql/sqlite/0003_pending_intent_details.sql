-- s3orch metadata schema, version 3 (SQLite): what the pending reaper needs to finish a write.
--
-- A pending_objects row is written before the backend PUT and deleted by the commit.  When
-- the commit fails (the database went away after the bytes were stored) the row stays, and
-- the pending reaper resolves it once it is min_age old: if the backend holds the bytes it
-- *promotes* the write (the same effect as the commit), otherwise it drops it.  Promoting
-- needs the object row the commit would have written, so the reserve step now records it:
--   etag ... part_sizes   the object's client-visible metadata (JSON as in objects);
--                         etag NULL means unknown (an intent written before this version,
--                         or by a path that does not record it): such an intent can only
--                         be dropped
--   if_none_match,        the write's conditions, re-checked when promoting, so a write
--   if_match              whose condition no longer holds is dropped, never committed
--   superseded_at         set when a later commit or delete of the same key made this
--                         write obsolete: a write that failed must never come back over a
--                         newer one, so the reaper drops it without promoting
-- claimed_at/claimed_by (version 1) are the reaper's claims: an instance claims a stale
-- intent before its backend HEAD; an ambiguous HEAD clears claimed_by and keeps claimed_at
-- as the time of the last try (least recently tried first, so a dead backend's intents
-- never starve the others).

ALTER TABLE pending_objects ADD COLUMN etag TEXT;
ALTER TABLE pending_objects ADD COLUMN content_type TEXT;
ALTER TABLE pending_objects ADD COLUMN headers TEXT;
ALTER TABLE pending_objects ADD COLUMN user_metadata TEXT;
ALTER TABLE pending_objects ADD COLUMN checksum_algorithm TEXT;
ALTER TABLE pending_objects ADD COLUMN checksum_value TEXT;
ALTER TABLE pending_objects ADD COLUMN content_hash TEXT;
ALTER TABLE pending_objects ADD COLUMN parts_count INTEGER;
ALTER TABLE pending_objects ADD COLUMN part_sizes TEXT;
ALTER TABLE pending_objects ADD COLUMN if_none_match INTEGER NOT NULL DEFAULT 0
    CHECK (if_none_match IN (0, 1));
ALTER TABLE pending_objects ADD COLUMN if_match TEXT;
ALTER TABLE pending_objects ADD COLUMN superseded_at REAL;
