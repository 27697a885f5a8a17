-- s3orch metadata schema, version 6 (PostgreSQL): drains are persisted, so a restart resumes
-- them.  The same change as sql/sqlite/0006_drain.sql (see there).

CREATE TABLE backend_drains (
    backend_name    TEXT PRIMARY KEY,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'completed', 'failed')),
    started_at      DOUBLE PRECISION NOT NULL,
    finished_at     DOUBLE PRECISION,
    objects_moved   BIGINT NOT NULL DEFAULT 0,
    bytes_moved     BIGINT NOT NULL DEFAULT 0,
    error           TEXT
);
