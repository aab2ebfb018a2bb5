-- The row counts `daemon.status` shows, kept up to date by triggers in the writing
-- transaction, so reading them costs one small table whatever the size of the store
-- (counting a million users took a quarter of a second per call). Recipients never
-- change collection, so inserts and deletes are all that move them; a recipient's
-- preference sets deleted by ON DELETE CASCADE fire their DELETE trigger too.
CREATE TABLE row_counts (
    name  TEXT PRIMARY KEY NOT NULL,
    n     INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO row_counts (name, n) VALUES
    ('users', (SELECT count(*) FROM recipients WHERE collection = '')),
    ('objects', (SELECT count(*) FROM recipients WHERE collection <> '')),
    ('tenants', (SELECT count(*) FROM tenants)),
    ('preference_sets', (SELECT count(*) FROM preference_sets));

CREATE TRIGGER row_counts_recipient_in AFTER INSERT ON recipients BEGIN
    UPDATE row_counts SET n = n + 1
     WHERE name = CASE WHEN NEW.collection = '' THEN 'users' ELSE 'objects' END;
END;

CREATE TRIGGER row_counts_recipient_out AFTER DELETE ON recipients BEGIN
    UPDATE row_counts SET n = n - 1
     WHERE name = CASE WHEN OLD.collection = '' THEN 'users' ELSE 'objects' END;
END;

CREATE TRIGGER row_counts_tenant_in AFTER INSERT ON tenants BEGIN
    UPDATE row_counts SET n = n + 1 WHERE name = 'tenants';
END;

CREATE TRIGGER row_counts_tenant_out AFTER DELETE ON tenants BEGIN
    UPDATE row_counts SET n = n - 1 WHERE name = 'tenants';
END;

CREATE TRIGGER row_counts_set_in AFTER INSERT ON preference_sets BEGIN
    UPDATE row_counts SET n = n + 1 WHERE name = 'preference_sets';
END;

CREATE TRIGGER row_counts_set_out AFTER DELETE ON preference_sets BEGIN
    UPDATE row_counts SET n = n - 1 WHERE name = 'preference_sets';
END;
