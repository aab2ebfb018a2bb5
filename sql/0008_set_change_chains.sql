-- prefsd schema, version 8: a preference set's changes are chained, not indexed.
--
-- Every change of a recipient went into `changes_by_recipient`, whose key (collection,
-- recipient id, seq) puts each `users.setPreferences` at a random leaf of an index as
-- large as the log: a page more in every commit, and the half of a change's cost that
-- kept the log at 0.71x of the same build without it. A `preferences.set` change now
-- names its set's previous change instead (`prev_seq`), and the set's row names its
-- newest change (`preference_sets.last_seq`), which the write rewrites anyway; the
-- index keeps every other change, and the start of each chain (a `preferences.set`
-- whose `prev_seq` is NULL: a set's first change, its first after an unset, its first
-- after this migration). `store::log` reads a recipient's changes as the index's
-- entries and the chains walked back from the sets' rows and the indexed changes'
-- `prev_seq`.
--
-- Both columns are added empty, and the index's definition is edited in place (as
-- `0007` edits the log's, and as SQLite's documentation describes for changes that leave
-- the stored format alone): every row already stored has a NULL `prev_seq`, so the new
-- condition holds exactly for the rows the index holds, and no row is rewritten or
-- re-indexed on a database of any size.
ALTER TABLE changes ADD COLUMN prev_seq INTEGER;
ALTER TABLE preference_sets ADD COLUMN last_seq INTEGER;
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'WHERE recipient_id IS NOT NULL',
                     'WHERE recipient_id IS NOT NULL AND (kind <> ''preferences.set'' OR prev_seq IS NULL)')
 WHERE type = 'index' AND name = 'changes_by_recipient';
PRAGMA writable_schema = RESET;
