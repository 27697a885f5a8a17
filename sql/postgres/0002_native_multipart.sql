-- s3orch metadata schema, version 2 (PostgreSQL): backend-native multipart uploads.
--
-- The same change as sql/sqlite/0002_native_multipart.sql (see there for the life
-- cycle of an upload and how its parts hold quota).  Version 1 sketched the multipart
-- tables before anything wrote them; nothing did, so they are dropped, not copied.
-- upload_id is COLLATE "C" as well: ListMultipartUploads orders by (key, upload id)
-- in byte order on both engines.

DROP TABLE multipart_parts;
DROP TABLE multipart_uploads;

CREATE TABLE multipart_uploads (
    upload_id           TEXT COLLATE "C" PRIMARY KEY,
    bucket              TEXT COLLATE "C" NOT NULL,
    object_key          TEXT COLLATE "C" NOT NULL,
    backend_name        TEXT NOT NULL,
    backend_upload_id   TEXT,
    storage_key         TEXT NOT NULL,
    content_type        TEXT NOT NULL DEFAULT 'application/octet-stream',
    headers             TEXT NOT NULL DEFAULT '{}',
    user_metadata       TEXT NOT NULL DEFAULT '{}',
    checksum_algorithm  TEXT,
    encrypted           BOOLEAN NOT NULL DEFAULT FALSE,
    wrapped_dek         BYTEA,
    key_id              TEXT,
    state               TEXT NOT NULL DEFAULT 'creating'
                        CHECK (state IN ('creating', 'open', 'completing', 'completed',
                                         'aborting', 'aborted')),
    complete_parts      TEXT,
    etag                TEXT,
    created_at          DOUBLE PRECISION NOT NULL,
    updated_at          DOUBLE PRECISION NOT NULL,
    UNIQUE (backend_name, storage_key)
);
-- ListMultipartUploads: open uploads of a bucket in (key, upload id) order.
CREATE INDEX multipart_uploads_listing ON multipart_uploads (bucket, state, object_key, upload_id);
-- Stale-upload cleanup and tombstone purge.
CREATE INDEX multipart_uploads_state ON multipart_uploads (state, updated_at);

-- Parts as the client sees them: etag is the MD5 of the part (our ETag), backend_etag
-- what the backend answered (sent back to it on Complete).
CREATE TABLE multipart_parts (
    upload_id           TEXT COLLATE "C" NOT NULL
                        REFERENCES multipart_uploads (upload_id) ON DELETE CASCADE,
    part_number         INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    etag                TEXT NOT NULL,
    size_bytes          BIGINT NOT NULL CHECK (size_bytes >= 0),
    plaintext_size      BIGINT,
    checksum_algorithm  TEXT,
    checksum_value      TEXT,
    backend_etag        TEXT NOT NULL,
    created_at          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

-- Part uploads in flight: bytes reserved before the backend call (see the SQLite file).
CREATE TABLE multipart_part_attempts (
    attempt_id      TEXT PRIMARY KEY,
    upload_id       TEXT COLLATE "C" NOT NULL
                    REFERENCES multipart_uploads (upload_id) ON DELETE CASCADE,
    part_number     INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
    created_at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX multipart_part_attempts_upload ON multipart_part_attempts (upload_id);
