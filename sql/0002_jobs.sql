-- prefsd schema, version 2: bulk operations (users.bulkSetPreferences) as durable jobs.
--
-- A job row holds its whole request (`payload`), so a job survives a crash and resumes
-- from `processed_rows`: each chunk's preference writes and the counters below commit in
-- one transaction, so no user is written twice or skipped.

CREATE TABLE bulk_operations (
    -- Insertion order; pagination runs newest first on it.
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    name                  TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    -- {"user_ids": [...], "preference_set": "...", "preferences": {...}}, validated at submit.
    payload               TEXT NOT NULL,
    idempotency_key       TEXT UNIQUE,
    estimated_total_rows  INTEGER NOT NULL,
    processed_rows        INTEGER NOT NULL DEFAULT 0,
    success_count         INTEGER NOT NULL DEFAULT 0,
    error_count           INTEGER NOT NULL DEFAULT 0,
    -- A JSON array of {"id", "collection"?, "message"}.
    error_items           TEXT NOT NULL DEFAULT '[]',
    inserted_at           TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    started_at            TEXT,
    completed_at          TEXT,
    failed_at             TEXT
);

CREATE INDEX bulk_operations_by_status ON bulk_operations (status, seq);
