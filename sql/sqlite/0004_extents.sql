-- s3orch metadata schema, version 4 (SQLite): objects made of extents; multipart parts
-- placed one by one; write conditions of any form.
--
-- The data model from this version on:
--
--   An object (objects row) is an ordered list of EXTENTS; each extent has one or more
--   COPIES (object_locations rows), each copy one backend object (backend_name,
--   storage_key).
--   * A PUT or a copy of a single-extent object is ONE extent, part_number 0, holding
--     the whole object: exactly what every object was before this version.
--   * A completed multipart upload is one extent per part, part_number = the part's
--     number in the upload (1..10000, possibly with gaps), in ascending order.  Each part
--     is its own backend object, placed by the routing strategy when it was uploaded,
--     so the parts of one object may live on different backends and an object may be
--     larger than any backend's free space.  object_parts describes those extents
--     (offset, size, MD5, checksum), so ?partNumber=, HEAD and GetObjectAttributes are
--     answered from the database.  objects.parts_count/part_sizes keep the part sizes
--     in order, as they do for native multipart objects of older builds (which stay
--     single-extent objects: their one backend object was assembled by the backend).
--   Quota: every copy's bytes count in bytes_used of its backend, and in object_count
--   as one backend object.
--
--   A multipart upload of this version has no backend of its own (backend_name,
--   storage_key and backend_upload_id are NULL): each part, and each part upload in
--   flight (multipart_part_attempts), records the backend the routing strategy chose
--   for it and its own storage key, and reserves its bytes there.  Complete is one
--   transaction (open -> completed): the listed parts become the extents (reserved ->
--   used where each part lives), the parts not listed and the attempts in flight are
--   queued for cleanup (reserved -> orphan).  Abort: open -> aborting -> aborted, every
--   part and attempt queued for cleanup.  The states creating and completing, and the
--   backend_* columns, belong to the native uploads of older builds only.
--
-- Migration of data written by version 3:
--   * every object location becomes the copy of extent 0 (part_number 0);
--   * native uploads still creating, open or completing are marked aborting (updated_at
--     0), so the stale-upload cleanup aborts them on their backend at its next pass and
--     releases their reservations: their parts live inside a backend upload that this
--     version can no longer complete;
--   * pending intents get their conditions as a JSON document (conditions), from the
--     if_none_match/if_match columns, which are no longer written.
--
-- SQLite cannot change a primary key or drop NOT NULL in place, so the tables are
-- rebuilt and renamed; the renames rewrite the foreign keys that point at them.

-- 1. object_locations: part_number joins the primary key.
CREATE TABLE object_locations_v4 (
    bucket          TEXT NOT NULL COLLATE BINARY,
    object_key      TEXT NOT NULL COLLATE BINARY,
    part_number     INTEGER NOT NULL DEFAULT 0 CHECK (part_number BETWEEN 0 AND 10000),
    backend_name    TEXT NOT NULL,
    storage_key     TEXT NOT NULL,
    write_id        TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at      REAL NOT NULL,
    last_verified   REAL,
    PRIMARY KEY (bucket, object_key, part_number, backend_name),
    UNIQUE (backend_name, storage_key),
    FOREIGN KEY (bucket, object_key) REFERENCES objects (bucket, object_key) ON DELETE CASCADE
) STRICT;
INSERT INTO object_locations_v4 (bucket, object_key, part_number, backend_name, storage_key,
                                 write_id, size_bytes, created_at, last_verified)
    SELECT bucket, object_key, 0, backend_name, storage_key, write_id, size_bytes, created_at,
           last_verified
    FROM object_locations;
DROP TABLE object_locations;
ALTER TABLE object_locations_v4 RENAME TO object_locations;

-- 2. The extents of multi-extent objects (one row per part; none for part 0).
--    offset_bytes: where the part starts in the object.
CREATE TABLE object_parts (
    bucket          TEXT NOT NULL COLLATE BINARY,
    object_key      TEXT NOT NULL COLLATE BINARY,
    part_number     INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    write_id        TEXT NOT NULL,
    offset_bytes    INTEGER NOT NULL CHECK (offset_bytes >= 0),
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    etag            TEXT NOT NULL,
    checksum_value  TEXT,
    PRIMARY KEY (bucket, object_key, part_number),
    FOREIGN KEY (bucket, object_key) REFERENCES objects (bucket, object_key) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- 3. Multipart uploads, parts and attempts (rebuilt: children first, then the parent).
--    checksum_type: COMPOSITE or FULL_OBJECT when checksum_algorithm is set.
--    origin: 'client' (CreateMultipartUpload) or 'copy' (the gateway's own upload behind
--    a CopyObject of a multi-extent object: not listed, not counted toward
--    max_multipart_uploads).
CREATE TABLE multipart_uploads_v4 (
    upload_id           TEXT PRIMARY KEY,
    bucket              TEXT NOT NULL COLLATE BINARY,
    object_key          TEXT NOT NULL COLLATE BINARY,
    backend_name        TEXT,
    backend_upload_id   TEXT,
    storage_key         TEXT,
    content_type        TEXT NOT NULL DEFAULT 'application/octet-stream',
    headers             TEXT NOT NULL DEFAULT '{}',
    user_metadata       TEXT NOT NULL DEFAULT '{}',
    checksum_algorithm  TEXT,
    checksum_type       TEXT CHECK (checksum_type IN ('COMPOSITE', 'FULL_OBJECT')),
    origin              TEXT NOT NULL DEFAULT 'client' CHECK (origin IN ('client', 'copy')),
    encrypted           INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),
    wrapped_dek         BLOB,
    key_id              TEXT,
    state               TEXT NOT NULL DEFAULT 'open'
                        CHECK (state IN ('creating', 'open', 'completing', 'completed',
                                         'aborting', 'aborted')),
    complete_parts      TEXT,
    etag                TEXT,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    UNIQUE (backend_name, storage_key)
) STRICT;
INSERT INTO multipart_uploads_v4 (upload_id, bucket, object_key, backend_name, backend_upload_id,
                                  storage_key, content_type, headers, user_metadata,
                                  checksum_algorithm, checksum_type, origin, encrypted, wrapped_dek,
                                  key_id, state, complete_parts, etag, created_at, updated_at)
    SELECT upload_id, bucket, object_key, backend_name, backend_upload_id, storage_key,
           content_type, headers, user_metadata, checksum_algorithm,
           CASE WHEN checksum_algorithm IS NULL THEN NULL
                WHEN upper(checksum_algorithm) = 'CRC64NVME' THEN 'FULL_OBJECT'
                ELSE 'COMPOSITE' END,
           'client', encrypted, wrapped_dek, key_id,
           CASE WHEN state IN ('creating', 'open', 'completing') THEN 'aborting' ELSE state END,
           complete_parts, etag, created_at,
           CASE WHEN state IN ('creating', 'open', 'completing') THEN 0 ELSE updated_at END
    FROM multipart_uploads;

-- Parts: backend_name/storage_key name the part's own backend object (NULL: a part inside
-- the native upload of an older build, on the upload's backend; backend_etag is then the
-- backend's ETag of it).
CREATE TABLE multipart_parts_v4 (
    upload_id           TEXT NOT NULL REFERENCES multipart_uploads_v4 (upload_id) ON DELETE CASCADE,
    part_number         INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    etag                TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL CHECK (size_bytes >= 0),
    plaintext_size      INTEGER,
    checksum_algorithm  TEXT,
    checksum_value      TEXT,
    backend_name        TEXT,
    storage_key         TEXT,
    backend_etag        TEXT,
    created_at          REAL NOT NULL,
    PRIMARY KEY (upload_id, part_number),
    UNIQUE (backend_name, storage_key)
) STRICT;
INSERT INTO multipart_parts_v4 (upload_id, part_number, etag, size_bytes, plaintext_size,
                                checksum_algorithm, checksum_value, backend_name, storage_key,
                                backend_etag, created_at)
    SELECT upload_id, part_number, etag, size_bytes, plaintext_size, checksum_algorithm,
           checksum_value, NULL, NULL, backend_etag, created_at
    FROM multipart_parts;

-- Part uploads in flight: size_bytes reserved on backend_name (NULL: the upload's backend,
-- native uploads of older builds) before the bytes go to storage_key.
CREATE TABLE multipart_part_attempts_v4 (
    attempt_id      TEXT PRIMARY KEY,
    upload_id       TEXT NOT NULL REFERENCES multipart_uploads_v4 (upload_id) ON DELETE CASCADE,
    part_number     INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    backend_name    TEXT,
    storage_key     TEXT,
    created_at      REAL NOT NULL
) STRICT;
INSERT INTO multipart_part_attempts_v4 (attempt_id, upload_id, part_number, size_bytes,
                                        backend_name, storage_key, created_at)
    SELECT attempt_id, upload_id, part_number, size_bytes, NULL, NULL, created_at
    FROM multipart_part_attempts;

DROP TABLE multipart_part_attempts;
DROP TABLE multipart_parts;
DROP TABLE multipart_uploads;
ALTER TABLE multipart_uploads_v4 RENAME TO multipart_uploads;
ALTER TABLE multipart_parts_v4 RENAME TO multipart_parts;
ALTER TABLE multipart_part_attempts_v4 RENAME TO multipart_part_attempts;
CREATE INDEX multipart_uploads_listing ON multipart_uploads (bucket, state, object_key, upload_id);
CREATE INDEX multipart_uploads_state ON multipart_uploads (state, updated_at);
CREATE INDEX multipart_part_attempts_upload ON multipart_part_attempts (upload_id);

-- 4. Pending intents: the write's conditions as one JSON document
--    {"if_match": [etag | "*", ...] | null, "if_none_match": [etag | "*", ...] | null};
--    NULL when the write had none.
ALTER TABLE pending_objects ADD COLUMN conditions TEXT;
UPDATE pending_objects SET conditions =
    json_object('if_match', CASE WHEN if_match IS NULL THEN NULL
                                 ELSE json_array(trim(if_match, '"')) END,
                'if_none_match', CASE WHEN if_none_match = 1 THEN json_array('*') ELSE NULL END)
    WHERE if_none_match = 1 OR if_match IS NOT NULL;
