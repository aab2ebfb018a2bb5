-- prefsd schema, version 3: the change log (history.md).
--
-- Every committed change to stored state appends a row to `changes` in the same
-- transaction. `seq` is the rowid with AUTOINCREMENT, so a seq is never reused, even after
-- erasure or pruning deleted the newest rows: one writer commits transactions one at a time,
-- so seq order is commit order. `at` is milliseconds since the Unix epoch, never smaller
-- than the previous row's.
--
-- Values (the state after a change, and for the keyed kinds the state before it) are JSON
-- text stored once per distinct content in `change_values`, counted by `refs`: a bulk job
-- that writes one set to 1000 users stores it once. A value is deleted when its last
-- change is erased or pruned, so erasure leaves no copy of a person's data behind.
--
-- Changes made before this migration are not in the log: the first change of a key after
-- it carries the state before it in `before`, which is what a point-in-time answer uses for
-- the time before that change.

CREATE TABLE change_values (
    id     INTEGER PRIMARY KEY,
    -- SHA-256 of `value`.
    hash   BLOB NOT NULL UNIQUE,
    refs   INTEGER NOT NULL,
    value  TEXT NOT NULL
);

CREATE TABLE changes (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    -- The recipient: collection ('' for users) and id, both NULL when there is none.
    collection      TEXT,
    recipient_id    TEXT,
    preference_set  TEXT,
    tenant          TEXT,
    audience        TEXT,
    -- JSON: {"type": "peer", "uid": n} and the other actors of history.md §1.
    actor           TEXT NOT NULL,
    method          TEXT NOT NULL,
    bulk_operation  TEXT,
    value           INTEGER REFERENCES change_values (id),
    before          INTEGER REFERENCES change_values (id)
);

-- A recipient's history (getPreferenceHistory, as_of, erasure).
CREATE INDEX changes_by_recipient ON changes (collection, recipient_id, seq)
    WHERE recipient_id IS NOT NULL;
-- A tenant's history (as_of of tenants.get and evaluation).
CREATE INDEX changes_by_tenant ON changes (tenant, seq) WHERE tenant IS NOT NULL;
-- The config's history, and changes.list filtered by kind.
CREATE INDEX changes_by_kind ON changes (kind, seq) WHERE recipient_id IS NULL;

-- Every config applied, once per distinct content: the files of the config directory as a
-- JSON array of [path, content] pairs, so that a point-in-time answer can parse the config
-- that was in force.
CREATE TABLE configs (
    hash   TEXT PRIMARY KEY NOT NULL,
    files  TEXT NOT NULL
) WITHOUT ROWID;

-- How far pruning (`[history] retention_days`) has cut the log: changes below `pruned_seq`
-- may be gone, and no answer can be given for an instant before `pruned_at` (ms).
CREATE TABLE change_log_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_seq  INTEGER NOT NULL,
    pruned_at   INTEGER NOT NULL
);
