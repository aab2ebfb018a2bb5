-- prefsd schema for PostgreSQL, version 3: cheaper bulk writes.
--
-- The row counts of daemon.status are kept by statement-level triggers over the
-- statement's transition table, not by one trigger per row. A bulk job inserts 250
-- recipients and sets per statement; a row trigger ran a PL/pgSQL call and updated the
-- same `row_counts` row 250 times, leaving 250 dead versions of it in one transaction.
-- Now each statement updates each count once, and not at all when it inserted or
-- deleted nothing.
DROP TRIGGER row_counts_recipients ON recipients;
DROP TRIGGER row_counts_tenants ON tenants;
DROP TRIGGER row_counts_preference_sets ON preference_sets;
DROP FUNCTION row_counts_bump();

-- One function for both events: the transition table is named `changed_rows` in each
-- trigger, the new rows of an INSERT and the old rows of a DELETE.
CREATE FUNCTION row_counts_bump() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END;
    counted bigint;
BEGIN
    IF TG_TABLE_NAME = 'recipients' THEN
        UPDATE row_counts r SET n = r.n + sign * c.n
          FROM (SELECT CASE WHEN collection = ''::bytea THEN 'users' ELSE 'objects' END AS name,
                       count(*) AS n
                  FROM changed_rows GROUP BY 1) c
         WHERE r.name = c.name;
    ELSE
        SELECT count(*) INTO counted FROM changed_rows;
        IF counted > 0 THEN
            UPDATE row_counts SET n = n + sign * counted WHERE name = TG_TABLE_NAME;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER row_counts_recipients_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_recipients_delete AFTER DELETE ON recipients
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_tenants_insert AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_tenants_delete AFTER DELETE ON tenants
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_preference_sets_insert AFTER INSERT ON preference_sets
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_bump();
CREATE TRIGGER row_counts_preference_sets_delete AFTER DELETE ON preference_sets
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION row_counts_bump();

-- A change names a value stored by content by its id; the writer keeps `refs` and deletes a
-- value only when no change names it (`store::log`). The foreign keys checked that again
-- for every change appended, one trigger call and row lock per change: about a third of
-- the cost of appending a bulk chunk's changes. SQLite keeps them: there the check is an
-- index probe in the same statement.
ALTER TABLE changes DROP CONSTRAINT changes_value_fkey;
ALTER TABLE changes DROP CONSTRAINT changes_before_fkey;
