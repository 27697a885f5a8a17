-- s3orch metadata schema, version 8 (PostgreSQL): an index on object_locations by backend and
-- storage key in byte order (COLLATE "C"), for the reconciler (s3orch.store.txn.reconcile), which
-- pages through one backend's copies in the order S3 lists keys.  storage_key has the database's
-- collation, so the UNIQUE (backend_name, storage_key) index cannot give that order and every page
-- would sort all of the backend's copies.  SQLite needs nothing (see its 0008).

CREATE INDEX IF NOT EXISTS object_locations_backend_key_bytes
    ON object_locations (backend_name, storage_key COLLATE "C");
