-- prefsd schema for PostgreSQL, version 2: a change's value (and `before`) may be kept in
-- its own row, as sql/0006_inline_change_values.sql does on SQLite (see there).
ALTER TABLE changes ADD COLUMN value_text text;
ALTER TABLE changes ADD COLUMN before_text text;
