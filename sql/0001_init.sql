-- prefsd schema, version 1.
--
-- Users and objects are both recipients: one table, keyed by (collection, id), where the
-- empty collection names users (object collections are validated non-empty). This lets
-- preference sets and audience memberships reference any recipient with one foreign key.
-- Timestamps are RFC 3339 UTC strings. JSON columns hold validated, normalised JSON text.

CREATE TABLE recipients (
    collection  TEXT NOT NULL,
    id          TEXT NOT NULL,
    properties  TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;

-- What a recipient chose, per set id ("default" or a tenant id). Defaults are never copied
-- in: a row exists only for a set the recipient wrote.
CREATE TABLE preference_sets (
    collection    TEXT NOT NULL,
    recipient_id  TEXT NOT NULL,
    set_id        TEXT NOT NULL,
    preferences   TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (collection, recipient_id, set_id),
    FOREIGN KEY (collection, recipient_id) REFERENCES recipients (collection, id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT,
    properties      TEXT NOT NULL DEFAULT '{}',
    -- settings.preference_set: the stored tenant default, or NULL.
    preference_set  TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE audience_members (
    audience_key  TEXT NOT NULL,
    collection    TEXT NOT NULL,
    recipient_id  TEXT NOT NULL,
    added_at      TEXT NOT NULL,
    PRIMARY KEY (audience_key, collection, recipient_id),
    FOREIGN KEY (collection, recipient_id) REFERENCES recipients (collection, id) ON DELETE CASCADE
) WITHOUT ROWID;

-- Evaluation asks "which audiences is this recipient in?".
CREATE INDEX audience_members_by_recipient ON audience_members (collection, recipient_id);
