-- s3orch metadata schema, version 3 (PostgreSQL): what the pending reaper needs to finish
-- a write.  The same change as sql/sqlite/0003_pending_intent_details.sql (see there for
-- what each column means and how the reaper claims intents).

ALTER TABLE pending_objects
    ADD COLUMN etag                TEXT,
    ADD COLUMN content_type        TEXT,
    ADD COLUMN headers             TEXT,
    ADD COLUMN user_metadata       TEXT,
    ADD COLUMN checksum_algorithm  TEXT,
    ADD COLUMN checksum_value      TEXT,
    ADD COLUMN content_hash        TEXT,
    ADD COLUMN parts_count         INTEGER,
    ADD COLUMN part_sizes          TEXT,
    ADD COLUMN if_none_match       BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN if_match            TEXT,
    ADD COLUMN superseded_at       DOUBLE PRECISION;
