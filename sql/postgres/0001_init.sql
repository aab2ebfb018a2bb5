-- prefsd schema for PostgreSQL, version 1: the SQLite schema of sql/0001–0005 in one file
-- (fleet.md; ../shared/design/fleet.md §4 has the mapping).
--
-- Keys (recipient, set, tenant and audience ids) are `bytea` holding their UTF-8: they
-- sort bytewise as SQLite's BINARY does, so keyset pages and cursors answer the same on
-- both backends, and an id may hold any character, NUL among them, as on SQLite (`text`
-- cannot hold NUL). JSON columns stay `text` holding the
-- validated, normalised JSON prefsd wrote (it parses them itself; `jsonb` would reorder
-- keys and cost a conversion per read). `recipients.version` and `tenants.version` are
-- bumped by every write that touches the row, under its lock (no lost updates between
-- daemons). Every table lives in the daemon's schema (`[store] schema`), set as the
-- connection's search_path.

CREATE TABLE recipients (
    collection  bytea NOT NULL,
    id          bytea NOT NULL,
    properties  text NOT NULL DEFAULT '{}',
    created_at  text NOT NULL,
    updated_at  text NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (collection, id)
) WITH (fillfactor = 90);

CREATE TABLE preference_sets (
    collection    bytea NOT NULL,
    recipient_id  bytea NOT NULL,
    set_id        bytea NOT NULL,
    preferences   text NOT NULL,
    updated_at    text NOT NULL,
    PRIMARY KEY (collection, recipient_id, set_id),
    FOREIGN KEY (collection, recipient_id) REFERENCES recipients (collection, id) ON DELETE CASCADE
);

CREATE TABLE tenants (
    id              bytea PRIMARY KEY NOT NULL,
    name            text,
    properties      text NOT NULL DEFAULT '{}',
    preference_set  text,
    created_at      text NOT NULL,
    updated_at      text NOT NULL,
    branding        text,
    version         bigint NOT NULL DEFAULT 1
) WITH (fillfactor = 90);

CREATE TABLE audience_members (
    audience_key  bytea NOT NULL,
    collection    bytea NOT NULL,
    recipient_id  bytea NOT NULL,
    added_at      text NOT NULL,
    PRIMARY KEY (audience_key, collection, recipient_id),
    FOREIGN KEY (collection, recipient_id) REFERENCES recipients (collection, id) ON DELETE CASCADE
);
CREATE INDEX audience_members_by_recipient ON audience_members (collection, recipient_id);

CREATE TABLE bulk_operations (
    seq                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- bytea, as the keys are: a client's id or key may hold any character, NUL too.
    id                    bytea NOT NULL UNIQUE,
    name                  text NOT NULL,
    status                text NOT NULL CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    payload               text NOT NULL,
    idempotency_key       bytea UNIQUE,
    estimated_total_rows  bigint NOT NULL,
    processed_rows        bigint NOT NULL DEFAULT 0,
    success_count         bigint NOT NULL DEFAULT 0,
    error_count           bigint NOT NULL DEFAULT 0,
    error_items           text NOT NULL DEFAULT '[]',
    inserted_at           text NOT NULL,
    updated_at            text NOT NULL,
    started_at            text,
    completed_at          text,
    failed_at             text,
    kind                  text NOT NULL DEFAULT 'users.bulkSetPreferences',
    -- The daemon running the job and until when (the server's clock): another daemon
    -- takes the job over only once the lease has run out.
    lease_owner           text,
    lease_until           timestamptz
);
CREATE INDEX bulk_operations_by_status ON bulk_operations (status, seq);

-- The change log (history.md). `seq` is drawn under the log's advisory lock, held to the
-- commit, so seq order is commit order across daemons (fleet.md); the identity keeps
-- CACHE 1, since cached values are handed out per session, out of order.
CREATE TABLE change_values (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash   bytea NOT NULL UNIQUE,
    refs   bigint NOT NULL,
    value  text NOT NULL
);

CREATE TABLE changes (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              bigint NOT NULL,
    kind            text NOT NULL,
    collection      bytea,
    recipient_id    bytea,
    preference_set  bytea,
    tenant          bytea,
    audience        bytea,
    actor           text NOT NULL,
    method          text NOT NULL,
    bulk_operation  text,
    value           bigint REFERENCES change_values (id),
    before          bigint REFERENCES change_values (id)
);
CREATE INDEX changes_by_recipient ON changes (collection, recipient_id, seq)
    WHERE recipient_id IS NOT NULL;
CREATE INDEX changes_by_tenant ON changes (tenant, seq) WHERE tenant IS NOT NULL;
CREATE INDEX changes_by_kind ON changes (kind, seq) WHERE recipient_id IS NULL;

CREATE TABLE configs (
    hash   text PRIMARY KEY NOT NULL,
    files  text NOT NULL
);

CREATE TABLE change_log_state (
    id          bigint PRIMARY KEY CHECK (id = 1),
    pruned_seq  bigint NOT NULL,
    pruned_at   bigint NOT NULL
);

-- Lists in insertion order (rest.md §4.2).
CREATE INDEX recipients_by_insertion ON recipients (collection, created_at, id);
CREATE INDEX tenants_by_insertion ON tenants (created_at, id);

-- The row counts of daemon.status, kept by triggers as on SQLite.
CREATE TABLE row_counts (
    name  text PRIMARY KEY NOT NULL,
    n     bigint NOT NULL
);
INSERT INTO row_counts (name, n) VALUES
    ('users', 0), ('objects', 0), ('tenants', 0), ('preference_sets', 0);

CREATE FUNCTION row_counts_bump() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counted text;
    delta bigint := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
    row_collection bytea;
BEGIN
    IF TG_TABLE_NAME = 'recipients' THEN
        row_collection := CASE WHEN TG_OP = 'INSERT' THEN NEW.collection ELSE OLD.collection END;
        counted := CASE WHEN row_collection = ''::bytea THEN 'users' ELSE 'objects' END;
    ELSE
        counted := TG_TABLE_NAME;
    END IF;
    UPDATE row_counts SET n = n + delta WHERE name = counted;
    RETURN NULL;
END
$$;

CREATE TRIGGER row_counts_recipients AFTER INSERT OR DELETE ON recipients
    FOR EACH ROW EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_tenants AFTER INSERT OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_preference_sets AFTER INSERT OR DELETE ON preference_sets
    FOR EACH ROW EXECUTE FUNCTION row_counts_bump();
