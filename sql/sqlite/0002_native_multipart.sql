-- s3orch metadata schema, version 2 (SQLite): backend-native multipart uploads.
--
-- Version 1 sketched the multipart tables before anything wrote them; this replaces
-- them with the shape the native-multipart write path needs.  Nothing wrote the old
-- tables, so they are dropped rather than copied.
--
-- An upload's life (state):
--   creating    row written, backend CreateMultipartUpload not confirmed yet
--               (backend_upload_id NULL: the stale-upload cleanup finds the backend
--               upload by listing the backend's uploads under storage_key)
--   open        parts may be uploaded
--   completing  a Complete is running: complete_parts holds the part numbers it sent
--               to the backend, so a retried Complete can finish it after a crash
--   completed   the object row (write_id = upload_id) was committed; etag kept so a
--               repeated Complete answers the same
--   aborting    an Abort (or the stale-upload cleanup) is aborting the backend upload
--   aborted     gone on the backend; every reservation released
-- Completed and aborted rows stay a while as tombstones, then the cleanup purges them.
--
-- Quota: the bytes of every part row and every in-flight part attempt are counted in
-- backend_quotas.reserved_bytes of the upload's backend until Complete (-> bytes_used)
-- or Abort (released).

DROP TABLE multipart_parts;
DROP TABLE multipart_uploads;

CREATE TABLE multipart_uploads (
    upload_id           TEXT PRIMARY KEY,
    bucket              TEXT NOT NULL COLLATE BINARY,
    object_key          TEXT NOT NULL COLLATE BINARY,
    backend_name        TEXT NOT NULL,
    backend_upload_id   TEXT,
    storage_key         TEXT NOT NULL,
    content_type        TEXT NOT NULL DEFAULT 'application/octet-stream',
    headers             TEXT NOT NULL DEFAULT '{}',
    user_metadata       TEXT NOT NULL DEFAULT '{}',
    checksum_algorithm  TEXT,
    encrypted           INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),
    wrapped_dek         BLOB,
    key_id              TEXT,
    state               TEXT NOT NULL DEFAULT 'creating'
                        CHECK (state IN ('creating', 'open', 'completing', 'completed',
                                         'aborting', 'aborted')),
    complete_parts      TEXT,
    etag                TEXT,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    UNIQUE (backend_name, storage_key)
) STRICT;
-- ListMultipartUploads: open uploads of a bucket in (key, upload id) order.
CREATE INDEX multipart_uploads_listing ON multipart_uploads (bucket, state, object_key, upload_id);
-- Stale-upload cleanup and tombstone purge.
CREATE INDEX multipart_uploads_state ON multipart_uploads (state, updated_at);

-- Parts as the client sees them: etag is the MD5 of the part (our ETag), backend_etag
-- what the backend answered (sent back to it on Complete).
CREATE TABLE multipart_parts (
    upload_id           TEXT NOT NULL REFERENCES multipart_uploads (upload_id) ON DELETE CASCADE,
    part_number         INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    etag                TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL CHECK (size_bytes >= 0),
    plaintext_size      INTEGER,
    checksum_algorithm  TEXT,
    checksum_value      TEXT,
    backend_etag        TEXT NOT NULL,
    created_at          REAL NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) STRICT;

-- Part uploads in flight: bytes reserved before the backend call, so a full backend
-- refuses the part (507) instead of being overfilled.  Resolved by commit_part (the
-- reservation passes to the part row) or release_part; Complete and Abort release
-- whatever is left.
CREATE TABLE multipart_part_attempts (
    attempt_id      TEXT PRIMARY KEY,
    upload_id       TEXT NOT NULL REFERENCES multipart_uploads (upload_id) ON DELETE CASCADE,
    part_number     INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at      REAL NOT NULL
) STRICT;
CREATE INDEX multipart_part_attempts_upload ON multipart_part_attempts (upload_id);
