-- s3orch metadata schema, version 1 (SQLite).
--
-- Designed for the whole product: later issues fill tables that nothing writes yet.
-- Conventions:
--   * times are epoch seconds (REAL), except schema_version.applied_at (ISO 8601 text);
--   * sizes and counters are INTEGER bytes, never negative;
--   * JSON documents are TEXT;
--   * bucket names and object keys are TEXT compared with BINARY collation: SQLite
--     stores UTF-8, and UTF-8 byte order is S3 key order;
--   * a backend object is named by (backend_name, storage_key); every write uses a new
--     storage_key, so a cleanup can only ever reach the bytes of its own write.
-- Tables are STRICT so that a wrong type is an error instead of silent coercion.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
);

-- One row per configured backend.  available = bytes_limit - bytes_used - orphan_bytes
-- - reserved_bytes; bytes_limit 0 means unlimited.
CREATE TABLE backend_quotas (
    backend_name    TEXT PRIMARY KEY,
    bytes_limit     INTEGER NOT NULL DEFAULT 0 CHECK (bytes_limit >= 0),
    bytes_used      INTEGER NOT NULL DEFAULT 0 CHECK (bytes_used >= 0),
    orphan_bytes    INTEGER NOT NULL DEFAULT 0 CHECK (orphan_bytes >= 0),
    reserved_bytes  INTEGER NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),
    object_count    INTEGER NOT NULL DEFAULT 0 CHECK (object_count >= 0),
    updated_at      REAL NOT NULL
) STRICT;

-- The current version of every key (client-visible identity and metadata).
-- WITHOUT ROWID: the table is its primary-key b-tree, so listings are range scans.
CREATE TABLE objects (
    bucket              TEXT NOT NULL COLLATE BINARY,
    object_key          TEXT NOT NULL COLLATE BINARY,
    write_id            TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL CHECK (size_bytes >= 0),
    etag                TEXT NOT NULL,
    content_type        TEXT NOT NULL DEFAULT 'application/octet-stream',
    headers             TEXT NOT NULL DEFAULT '{}',
    user_metadata       TEXT NOT NULL DEFAULT '{}',
    checksum_algorithm  TEXT,
    checksum_value      TEXT,
    parts_count         INTEGER,
    part_sizes          TEXT,
    content_hash        TEXT,
    encrypted           INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),
    wrapped_dek         BLOB,
    base_nonce          BLOB,
    key_id              TEXT,
    plaintext_size      INTEGER,
    last_modified       REAL NOT NULL,
    created_at          REAL NOT NULL,
    PRIMARY KEY (bucket, object_key)
) STRICT, WITHOUT ROWID;

-- Where the copies of the current version live (one per backend).
CREATE TABLE object_locations (
    bucket          TEXT NOT NULL COLLATE BINARY,
    object_key      TEXT NOT NULL COLLATE BINARY,
    backend_name    TEXT NOT NULL,
    storage_key     TEXT NOT NULL,
    write_id        TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at      REAL NOT NULL,
    last_verified   REAL,
    PRIMARY KEY (bucket, object_key, backend_name),
    UNIQUE (backend_name, storage_key),
    FOREIGN KEY (bucket, object_key) REFERENCES objects (bucket, object_key) ON DELETE CASCADE
) STRICT;

-- Writes in flight (PUT before COMMIT): bytes reserved on backend_name, possibly
-- already uploaded at storage_key.  Resolved by commit, release, or the pending reaper.
CREATE TABLE pending_objects (
    write_id        TEXT PRIMARY KEY,
    bucket          TEXT NOT NULL COLLATE BINARY,
    object_key      TEXT NOT NULL COLLATE BINARY,
    backend_name    TEXT NOT NULL,
    storage_key     TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at      REAL NOT NULL,
    claimed_at      REAL,
    claimed_by      TEXT
) STRICT;
CREATE INDEX pending_objects_created ON pending_objects (created_at);
CREATE INDEX pending_objects_key ON pending_objects (bucket, object_key);

-- Backend objects no longer referenced, to delete with retries.  Their bytes are
-- counted in backend_quotas.orphan_bytes until the delete succeeds.
CREATE TABLE cleanup_queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    backend_name    TEXT NOT NULL,
    storage_key     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_retry      REAL NOT NULL,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    claimed_at      REAL,
    claimed_by      TEXT,
    UNIQUE (backend_name, storage_key)
) STRICT;
CREATE INDEX cleanup_queue_due ON cleanup_queue (next_retry);

-- Cleanups that failed too often; their bytes stay in orphan_bytes until an operator
-- requeues or resolves them.
CREATE TABLE cleanup_dlq (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    original_id         INTEGER NOT NULL,
    backend_name        TEXT NOT NULL,
    storage_key         TEXT NOT NULL,
    reason              TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL CHECK (size_bytes >= 0),
    attempts            INTEGER NOT NULL,
    last_error          TEXT,
    first_enqueued_at   REAL NOT NULL,
    moved_at            REAL NOT NULL
) STRICT;
CREATE INDEX cleanup_dlq_backend ON cleanup_dlq (backend_name, id);

-- Multipart uploads (backend-native: parts live in backend_upload_id on backend_name).
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
    state               TEXT NOT NULL DEFAULT 'open'
                        CHECK (state IN ('open', 'completing', 'completed', 'aborted')),
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL
) STRICT;
CREATE INDEX multipart_uploads_key ON multipart_uploads (bucket, object_key, created_at);
CREATE INDEX multipart_uploads_state ON multipart_uploads (state, updated_at);

CREATE TABLE multipart_parts (
    upload_id       TEXT NOT NULL REFERENCES multipart_uploads (upload_id) ON DELETE CASCADE,
    part_number     INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    etag            TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    plaintext_size  INTEGER,
    checksum_value  TEXT,
    backend_etag    TEXT,
    created_at      REAL NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) STRICT;

-- Monthly API and transfer counters per backend (period 'YYYY-MM').
CREATE TABLE backend_usage (
    backend_name    TEXT NOT NULL,
    period          TEXT NOT NULL,
    api_requests    INTEGER NOT NULL DEFAULT 0,
    egress_bytes    INTEGER NOT NULL DEFAULT 0,
    ingress_bytes   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (backend_name, period)
) STRICT;

-- Event notifications waiting for delivery (transactional outbox).
CREATE TABLE notification_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt    REAL NOT NULL,
    last_error      TEXT,
    created_at      REAL NOT NULL
) STRICT;
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt);

CREATE TABLE object_tags (
    bucket      TEXT NOT NULL COLLATE BINARY,
    object_key  TEXT NOT NULL COLLATE BINARY,
    tag_key     TEXT NOT NULL,
    tag_value   TEXT NOT NULL,
    PRIMARY KEY (bucket, object_key, tag_key),
    FOREIGN KEY (bucket, object_key) REFERENCES objects (bucket, object_key) ON DELETE CASCADE
) STRICT;

-- Persistent drain progress, so a restart resumes a drain instead of forgetting it.
CREATE TABLE drain_state (
    backend_name    TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    started_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    objects_moved   INTEGER NOT NULL DEFAULT 0,
    bytes_moved     INTEGER NOT NULL DEFAULT 0,
    error           TEXT
) STRICT;

-- Resumable cursors and last-run times of background workers (scrubber, lifecycle, ...).
CREATE TABLE worker_state (
    worker_name     TEXT PRIMARY KEY,
    cursor          TEXT,
    state           TEXT NOT NULL DEFAULT '{}',
    last_started_at REAL,
    last_finished_at REAL,
    updated_at      REAL NOT NULL
) STRICT;
