-- s3orch metadata schema, version 6 (SQLite): an index on objects.last_modified, for the
-- location journal's refresh ("what changed since my watermark", s3orch.core.journal), which
-- every instance runs every few seconds and must not scan the whole table for.

CREATE INDEX IF NOT EXISTS objects_last_modified ON objects (last_modified);
