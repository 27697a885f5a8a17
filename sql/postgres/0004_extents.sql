-- s3orch metadata schema, version 4 (PostgreSQL): objects made of extents; multipart
-- parts placed one by one; write conditions of any form.
--
-- The same change as sql/sqlite/0004_extents.sql: see there for the data model (an
-- object is an ordered list of extents, each with its copies; a multipart upload's parts
-- are placed one by one) and for what happens to data written by version 3.  PostgreSQL
-- changes the tables in place.

-- 1. object_locations: part_number joins the primary key (existing rows: extent 0).
ALTER TABLE object_locations
    ADD COLUMN part_number INTEGER NOT NULL DEFAULT 0 CHECK (part_number BETWEEN 0 AND 10000);
ALTER TABLE object_locations DROP CONSTRAINT object_locations_pkey;
ALTER TABLE object_locations ADD PRIMARY KEY (bucket, object_key, part_number, backend_name);

-- 2. The extents of multi-extent objects (one row per part; none for part 0).
CREATE TABLE object_parts (
    bucket          TEXT COLLATE "C" NOT NULL,
    object_key      TEXT COLLATE "C" NOT NULL,
    part_number     INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    write_id        TEXT NOT NULL,
    offset_bytes    BIGINT NOT NULL CHECK (offset_bytes >= 0),
    size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
    etag            TEXT NOT NULL,
    checksum_value  TEXT,
    PRIMARY KEY (bucket, object_key, part_number),
    FOREIGN KEY (bucket, object_key) REFERENCES objects (bucket, object_key) ON DELETE CASCADE
);

-- 3. Multipart uploads without a backend of their own; parts and attempts with theirs.
ALTER TABLE multipart_uploads
    ALTER COLUMN backend_name DROP NOT NULL,
    ALTER COLUMN storage_key DROP NOT NULL,
    ALTER COLUMN state SET DEFAULT 'open',
    ADD COLUMN checksum_type TEXT CHECK (checksum_type IN ('COMPOSITE', 'FULL_OBJECT')),
    ADD COLUMN origin TEXT NOT NULL DEFAULT 'client' CHECK (origin IN ('client', 'copy'));
UPDATE multipart_uploads SET checksum_type =
    CASE WHEN upper(checksum_algorithm) = 'CRC64NVME' THEN 'FULL_OBJECT' ELSE 'COMPOSITE' END
    WHERE checksum_algorithm IS NOT NULL;
-- Native uploads in progress cannot be completed by this version: the stale-upload
-- cleanup aborts them at its next pass.
UPDATE multipart_uploads SET state = 'aborting', updated_at = 0
    WHERE state IN ('creating', 'open', 'completing');

ALTER TABLE multipart_parts
    ALTER COLUMN backend_etag DROP NOT NULL,
    ADD COLUMN backend_name TEXT,
    ADD COLUMN storage_key TEXT,
    ADD CONSTRAINT multipart_parts_backend_name_storage_key_key UNIQUE (backend_name, storage_key);

ALTER TABLE multipart_part_attempts
    ADD COLUMN backend_name TEXT,
    ADD COLUMN storage_key TEXT;

-- 4. Pending intents: the write's conditions as one JSON document (see the SQLite file).
ALTER TABLE pending_objects ADD COLUMN conditions TEXT;
UPDATE pending_objects SET conditions = json_build_object(
        'if_match', CASE WHEN if_match IS NULL THEN NULL
                         ELSE json_build_array(btrim(if_match, '"')) END,
        'if_none_match', CASE WHEN if_none_match THEN json_build_array('*') ELSE NULL END)::text
    WHERE if_none_match OR if_match IS NOT NULL;
