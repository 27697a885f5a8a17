-- s3orch metadata schema, version 6 (SQLite): drains are persisted, so a restart resumes them.
--
-- backend_drains holds one row per backend being (or done being) drained.  state 'active':
-- the drain worker moves the backend's copies away; 'completed': nothing is left on it;
-- 'failed': a pass could not move everything (error says why; the next pass retries).
-- Writes avoid a backend with any row here; cancelling deletes the row (moved copies stay).

CREATE TABLE backend_drains (
    backend_name    TEXT PRIMARY KEY,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'completed', 'failed')),
    started_at      REAL NOT NULL,
    finished_at     REAL,
    objects_moved   INTEGER NOT NULL DEFAULT 0,
    bytes_moved     INTEGER NOT NULL DEFAULT 0,
    error           TEXT
) STRICT;
