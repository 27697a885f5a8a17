-- s3orch metadata schema, version 6 (PostgreSQL): an index on objects.last_modified, for the
-- location journal's refresh.  The same change as sql/sqlite/0006_objects_last_modified.sql.

CREATE INDEX IF NOT EXISTS objects_last_modified ON objects (last_modified);
