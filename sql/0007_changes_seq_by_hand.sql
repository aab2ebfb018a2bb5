-- prefsd schema, version 7: the writer hands out `changes.seq` itself.
--
-- `changes.seq` was `INTEGER PRIMARY KEY AUTOINCREMENT`, so that a seq is never reused
-- after erasure deleted the newest rows. AUTOINCREMENT keeps the largest seq in
-- `sqlite_sequence` and rewrites that table's page in every transaction that appends a
-- change: one of the four pages a `users.setPreferences` commit wrote (the set's page,
-- the change's page, its `changes_by_recipient` page and this one; measured with strace
-- on the writer thread), for a guarantee the writer can keep on its own. The writer now
-- reads the newest seq once (`store::log::Memo`, before a transaction's first statement,
-- as erasure deletes within it) and numbers each appended change one past the last.
--
-- Dropping the keyword changes nothing SQLite stores in the table's pages: AUTOINCREMENT
-- only decides how a new rowid is chosen. So the table's definition is edited in place,
-- as SQLite's documentation describes for changes that leave the stored format alone
-- (https://sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema
-- Changes"), instead of copying every row of a log that may hold tens of millions; the
-- store moves the schema version on after it (`store::migrate`), so that every connection
-- reads the new definition. `sqlite_sequence` keeps its last value, which the writer also
-- reads when it learns the newest seq.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'INTEGER PRIMARY KEY AUTOINCREMENT', 'INTEGER PRIMARY KEY')
 WHERE type = 'table' AND name = 'changes';
PRAGMA writable_schema = RESET;
