-- s3orch metadata schema, version 7 (PostgreSQL): an index on object_locations.last_verified for
-- the integrity scrubber, never verified copies first.  The same change as
-- sql/sqlite/0007_integrity_last_verified.sql.

CREATE INDEX IF NOT EXISTS object_locations_last_verified ON object_locations (last_verified NULLS FIRST);
