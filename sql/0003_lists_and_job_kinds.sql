-- prefsd schema, version 3: listing users, objects and tenants (rest.md §4.2), bulk job
-- kinds, and tenant branding.
--
-- Lists are keyset-paged in insertion order: `created_at` (set once, at insert, to the
-- millisecond), then `id` for rows inserted in the same millisecond. These indexes make a
-- page a range scan, in either direction.
CREATE INDEX recipients_by_insertion ON recipients (collection, created_at, id);
CREATE INDEX tenants_by_insertion ON tenants (created_at, id);

-- Which bulk method queued a job: the JSON-RPC method's name, so that an idempotency key
-- compares the method as well as the params. Every job before this version was a bulk set.
ALTER TABLE bulk_operations ADD COLUMN kind TEXT NOT NULL DEFAULT 'users.bulkSetPreferences';

-- settings.branding of a tenant: a JSON object stored as given, or NULL.
ALTER TABLE tenants ADD COLUMN branding TEXT;
