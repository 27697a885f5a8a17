-- s3orch metadata schema, version 7 (SQLite): an index on object_locations.last_verified, so the
-- integrity scrubber (s3orch.core.integrity) takes its least recently verified copies (never
-- verified first: SQLite sorts NULL first) from the index instead of sorting every copy.

CREATE INDEX IF NOT EXISTS object_locations_last_verified ON object_locations (last_verified);
