-- prefsd schema, version 6: a change's value (and `before`) may be kept in its own row.
--
-- A single write's value is almost always new content, and storing it by hash in
-- `change_values` cost every such write two more pages in the commit (the value's row and
-- its hash index, at a random place) on top of the change's own: about 6.7 pages written
-- per `users.setPreferences` instead of 4.3. So a value of at most 1 KiB that one change
-- alone names is kept in `value_text` / `before_text`; a value several changes of one
-- transaction share, a longer one, and every value a bulk job writes, is still stored once
-- by content in `change_values` and named by `value` / `before`. At most one of each pair
-- is set. Both columns are added empty: no row is rewritten.
ALTER TABLE changes ADD COLUMN value_text TEXT;
ALTER TABLE changes ADD COLUMN before_text TEXT;
