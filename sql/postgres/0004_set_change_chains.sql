-- prefsd schema for PostgreSQL, version 4: the columns of SQLite's set change chains.
--
-- SQLite chains a preference set's changes instead of indexing them (`sql/0008`), as the
-- index's random leaf was half a change's cost there. PostgreSQL keeps indexing every
-- change of a recipient: appending with and without `changes_by_recipient` measured the
-- same there (issue 17), and a daemon of a fleet cannot learn the newest seq of a set
-- before the identity hands it out. The columns exist so that both backends read a
-- recipient's changes with one statement (`store::log`); here they stay NULL, which that
-- statement reads as "every change is in the index". Adding a nullable column without a
-- default rewrites no row.
ALTER TABLE changes ADD COLUMN prev_seq bigint;
ALTER TABLE preference_sets ADD COLUMN last_seq bigint;
