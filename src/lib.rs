//! prefsd stores and evaluates notification preferences.
//!
//! # Bird's-eye view
//!
//! Apps that send notifications ask, for every message: *may this recipient get this
//! workflow on this channel?* prefsd answers with Knock's model — per-recipient preference
//! sets over tenant defaults over an environment default, with conditions, commercial
//! unsubscribe and admin locks — as a local daemon: JSON-RPC 2.0 over HTTP/1.1 (and
//! WebSocket) on a Unix socket, state in SQLite, defaults and the workflow catalog in a
//! hot-reloaded config directory. One binary: `prefsd serve` is the daemon, every other
//! subcommand is a client of it.
//!
//! The contract is the spec in `../shared/spec/` (beside the repository): `preferences.md`
//! (model, writes, defaults, evaluation, conditions), `rpc.md` (methods, shapes, errors),
//! `config.md`, `access.md`, and the specs of the capabilities still to come.
//!
//! A request flows `server` (connection) → `rpc` (method table, params, error mapping) →
//! `api` (one async function per method) → `store` (one transaction on a database thread)
//! and the pure core (`model`, `resolve`, `eval`) → back out as JSON.
//!
//! # Code map (in reading order)
//!
//! - `duration`: the one syntax of durations on the command line (jiff's friendly format).
//! - `model`: the nouns — `PreferenceSet` (validated, normalised JSON), write requests and
//!   RFC 7396 merge, channels, workflows, field-named validation errors; `model::condition`
//!   is the condition language (operators, argument kinds, namespaces, the coercions of
//!   §6.1, the literal-argument check), `model::validate`
//!   the walk that checks a set as written; `model::change` the nouns of the change log
//!   (`Actor`, `Origin`, `ChangeKind`); `model::compact` a valid set in a quarter of the
//!   memory, the form the read cache keeps recipients' sets in.
//! - `resolve`: the default hierarchy (environment ⊕ tenant default ⊕ recipient set), admin
//!   locks and provenance, as a lazy merged view (`Stack`, `Node`) and its materialisation,
//!   over sets in either form (`SetRef`: `serde_json`'s or compact).
//! - `eval`: `decide(workflow, channel, stack, recipient default, context) -> Decision` with
//!   its reason; conditions and their coercions.
//! - `config`: the config directory parsed as one immutable `Config`, the live
//!   `ConfigHandle` and the watcher that swaps it on valid edits.
//! - `logs`: the logger: format (`[log] format`, `PREFSD_LOG_FORMAT`; JSON unless on a
//!   terminal), level (`[log] level`, `PREFSD_LOG`), colour only on a terminal.
//! - `store`: SQLite by default, PostgreSQL in fleet mode — the domain operations written
//!   once over `store::sql` (`Conn`: SQLite's dialect, rewritten for PostgreSQL once per
//!   connection, with the few statements whose dialects differ chosen by `Conn::pick`);
//!   `store::postgres` the PostgreSQL connections, migrations from `sql/postgres/`, the
//!   fleet's write lock and the listener thread that keeps the cache coherent with the
//!   other daemons' writes (fleet.md). On SQLite: migrations from `sql/`, one writer thread that owns the only write
//!   connection (`store::writer`: its queue, and group commit of the writes queued
//!   together, each in a savepoint of its own), two reader threads (WAL: reads never wait for writes) and a checkpointer
//!   thread (commits never wait for the WAL to be copied back), the domain
//!   operations on one transaction (`Read`, `Write`), keyset pages of users, objects and
//!   tenants (`store::pages`), the job table, and the read cache
//!   (`Cache`: recipient inputs in compact form, `Inputs`, and tenant rows, bounded by the
//!   memory they take, so hot reads never leave the async worker) with its protocol for the two shapes of read the methods make
//!   (`store::reads`: `Db::cached_snapshot`, `read_snapshot`, `snapshot_queued`,
//!   `recipient_for_read`); `store::log` the change log (appended by every `Write`
//!   operation, read by `changes.*` and the history methods, pruned, erased; a
//!   recipient's changes are the entries of `changes_by_recipient` plus its sets' chains,
//!   each `preferences.set` naming its set's previous change, `sql/0008`),
//!   `store::past` the state at an instant, from the state now and the log;
//!   `store::pcache` SQLite's page cache behind a wrapper that spares commits a scan of
//!   the whole cache after a B-tree split; `store::lock` (one daemon per database), `store::backup`
//!   (online backup, verification, offline restore) and `store::export` (the NDJSON
//!   snapshot), each on a connection and thread of its own.
//! - `writes`: the write steps a method and a bulk job item share (identify a recipient
//!   with inline sets, set a tenant, the size checks), each checking everything before its
//!   first write, over `store::Write`.
//! - `jobs`: the bulk worker that runs the jobs of the bulk methods (`jobs::Kind`: bulk
//!   set, identify, delete of users, objects and tenants) chunk by chunk, in smaller chunks
//!   while the daemon serves other calls.
//! - `metrics`: the Prometheus metrics (ops.md §2), one registry per daemon, counted where
//!   calls and decisions happen (`record_request`, `record_decisions`), gauges read when
//!   scraped; `PREFSD_METRICS=off` turns the counting off (the benchmark's baseline).
//! - `api`: the methods of rpc.md as plain async functions over `Context`;
//!   `api::evaluate` orchestrates `preferences.evaluate` over `params` (validation) and
//!   `answer` (the JSON writer); `api::history` the change log's methods, `api::past` the
//!   `as_of` param and the config of the past.
//! - `auth`: who may call what — the `Caller` from peer credentials, secret keys and user
//!   tokens, and `authorize`; pure, applied by the RPC middleware `rpc::auth` before dispatch.
//! - `rpc`: the JSON-RPC surface — method table, params parsing, the one error mapping,
//!   HTTP shims, the envelope check (`id`s jsonrpsee cannot read), the WebSocket framing
//!   read before jsonrpsee's (`rpc::ws`), the bulk progress subscription; `rpc::ops`
//!   answers the operators' `GET /healthz`, `/readyz` and `/metrics` for any listener, and
//!   `rpc::observe` counts and logs every call; `rpc::discover` makes the OpenRPC document
//!   of `rpc.discover` from the params types as the method table registers them.
//! - `rest`: Knock's REST API (rest.md) — an axum router of the `/v1` routes, each turning
//!   Knock's request into the params of a JSON-RPC method, authorized by `auth` and run by
//!   the same `api` function; Knock's representations (`rest::shapes`), wire conventions
//!   and error envelope (`rest::wire`), CORS and `x-request-id` (`rest::handle`).
//! - `server`: binding the socket, the accept loop, background tasks, graceful shutdown;
//!   `server::connections` holds the open connections and sheds them under pressure;
//!   `server::rest_hook` sends `/v1/` on the socket to `rest`, `server::tcp` serves `rest`
//!   on the optional TCP listener;
//!   `server::systemd` speaks systemd's notify and socket-activation protocols.
//! - `sched`: the scheduler hint (short time slices) for the threads that serve requests,
//!   and the allocator's purge delay.
//! - `client`: the client side of the protocol, shared by `cli` and `bench`: the socket to
//!   talk to, credential headers, a JSON-RPC client over a WebSocket on the socket.
//! - `cli`: the command line client (and `check-config`, `init`), one function per
//!   subcommand, and the one mapping of outcomes to exit codes; `cli::args` is the grammar
//!   clap reads; `main.rs` only dispatches.
//! - `bench`: `prefsd bench`, a load generator against a running daemon, and `bench seed`,
//!   which fills a database with deterministic data through `store`.
//! - `Error` (in `error.rs`): the crate's one error type; `rpc::error` maps it to the wire.
//!
//! # Invariants
//!
//! - `model`, `resolve` and `eval` do no I/O and name no tokio, rusqlite or jsonrpsee type;
//!   evaluation takes `now` as a value and never fails: a condition it cannot read is false
//!   with a reason that says why.
//! - SQLite never runs on an async worker thread: the store's own threads run every query
//!   and the caller awaits a oneshot reply.
//! - A write is answered only after its transaction committed, and is all-or-nothing on
//!   its own even when committed with others (`store::writer`: each in a savepoint; a
//!   failed commit answers every write of its group with the error).
//! - A change is in the log if and only if it committed: every `Write` operation that
//!   changes stored state records its change, and the store appends them, with the call's
//!   `Origin`, just before the commit of the same transaction (`Db::write_as`). A write
//!   without an origin that changes something is refused (`store::Error::NoOrigin`), so no
//!   change is logged without its actor; `Db::write` is for the job table alone.
//! - The read cache never serves what a write replaced: every `Write` operation records the
//!   rows it touched, the writer drops them from the cache after commit and before the
//!   caller is answered, and a read inserts only if no invalidation happened since it began
//!   (`store::cache`). Nothing else writes the tables the cache mirrors, and only
//!   `store::reads` takes tickets and offers reads to the cache: `api` asks for a read.
//! - Arrows run down the code map, never up: `model` imports nothing from the crate outside
//!   `model` (the condition language and its coercions are `model::condition`, which `eval`
//!   imports); `jobs` never imports `api` (the stored time
//!   format is `store::time`; what a job item and a method both write is `writes`);
//!   `cli` and `bench` share only `client`, and neither imports
//!   `api` or `server` (`bench seed` writes through `store`'s `Write`, as the daemon does);
//!   `api` never imports `rpc` (the protocol version is `rpc::PROTOCOL`, handed to
//!   `api::daemon::status`); inside `rpc`, the outer layers (`http`, `ws`) import the inner
//!   (`wire`) and what they hand it (`envelope`), never the reverse.
//! - Only `store` names rusqlite or postgres, and only `store::sql` and `store::postgres`
//!   (plus the SQLite-only `backup`, `export`, `migrate`, `writer` and the threads in
//!   `store`'s root)
//!   tell the two apart; `api` does not change per backend.
//! - PostgreSQL's client never runs on an async worker thread either: it blocks on a
//!   runtime of its own, which cannot start inside the daemon's.
//! - On PostgreSQL, every write transaction holds the fleet's write lock from its start
//!   to its commit: the change log's `seq` order is commit order fleet-wide, and the
//!   listener's reads of the log never skip a change. Only `rpc` and `server` name jsonrpsee server types; the
//!   CLI uses jsonrpsee's client.
//! - No SQL outside `store/` and `sql/`; no preference rule outside `model`, `resolve` and
//!   `eval`; `api` holds neither, only the order of steps of each method.
//! - Every method is all-or-nothing: params are validated before the first write, and all
//!   writes of one call are one transaction, committed before the reply.
//! - Only `server` spawns long-lived tasks (connections, config watcher, SIGHUP, bulk
//!   worker); each is tracked in one `TaskTracker`, cancelled by one token and awaited
//!   before `server::run` returns. The bulk worker wakes on a `Notify`, never on a poll.
//!   (`rpc::ws` spawns one short task per WebSocket upgrade, as jsonrpsee does: it ends once
//!   jsonrpsee has taken the connection, or the client has gone.)
//! - `unsafe` appears only in `sched` (the system calls getpriority, sched_setattr,
//!   setpriority, ioprio_set and sync_file_range, mimalloc's option setter, and its getter
//!   in a test), in `main`'s one call of the
//!   `unsafe fn` `sched::return_freed_memory_sooner`, before any other thread exists, and
//!   in `server::systemd`, which takes ownership of the sockets systemd passed
//!   (`from_raw_fd` of `LISTEN_FDS`' descriptors), and in `store::pcache` (SQLite's page
//!   cache methods, forwarded through `sqlite3_config` before SQLite initializes).
//! - JSON text reaches the wire unparsed only through `api::Json`, whose writers are
//!   tested against serde's own output (jsonrpsee parses every response once more).
//! - Config is read through `ConfigHandle::current()` once per call or job chunk, as an
//!   `Arc<Config>` snapshot: a call sees one whole config, old or new, never a mix.
//!
//! # Decisions where the spec is silent
//!
//! - A user's collection is stored as `''` in the one `recipients` table; object
//!   collections are validated non-empty, so the two never collide.
//! - `getPreferences` with both `preference_set` and `tenant` naming different tenants is
//!   `invalid_params`; with only one, it names the set (a tenant id means that tenant).
//! - An admin lock (`__strategy__: "replace"`) protects the node it is on. A recipient that
//!   replaces an *ancestor* of a locked node with a boolean (e.g. `workflows.w: true` over a
//!   lock on `workflows.w.channel_types`) replaces the lock with it; put the lock on the
//!   workflow or category itself to prevent that.
//! - A condition's reason carries the condition as written plus `resolved_variable`,
//!   `resolved_argument` and, when a dynamic argument was unreadable, `error`.
//! - Every reason also lists `considered`: the layers §4.2 looked at, lowest first, as
//!   `layer` names them, one without a set marked `(none)` (`["environment", "tenant:acme",
//!   "recipient:acme (none)"]`); with a tenant that has neither, the fallback's four; none
//!   for `override_preferences`. An addition to preferences.md's reason shape, so that an
//!   `opted_in` says where it did not find an opt-out.
//! - Inline tenants and actors given as objects in `preferences.evaluate` are persisted
//!   (merged), like inline recipients (Knock's inline identify).
//! - A tenant-scoped user token reading a tenant with no tenant default and no stored set
//!   gets `env` alone, not the §4.2 fallback `env ⊕ recipient["default"]`: the scope
//!   forbids the `default` set (access.md), and an answer is friendlier than a refusal.
//! - `users.bulkSetPreferences` always replaces; a body asking to merge is refused.
//! - A bulk item that fails (`users.bulkIdentify` properties over the limit once merged, a
//!   merged set that does not validate) is an error item with the message the single
//!   method would answer, its field named from the bulk params (`users.3.properties`), and
//!   nothing of it is written. Duplicate ids in one bulk list are applied in order, each
//!   counted. An idempotency key past its 24 h passes to the new job; the old job keeps
//!   everything else until the retention removes it.
//! - A bulk job whose writes fail (e.g. the disk is full) is marked `failed` with the reason
//!   in `error_items`; it is not retried.
//! - Under connection pressure (at `limits.max_connections` or out of file descriptors) the
//!   least recently active connections are closed after their call in flight (10 s at
//!   most), so idle clients never lock out new ones; one whose request body is still
//!   arriving is closed at once.
//! - A request body must arrive within 10 s of the headers (which have 10 s): a stalled one
//!   is answered HTTP 408 `limit_exceeded`, field `body`.
//! - A peer whose uid is refused is checked at accept as well as per call: its connection
//!   serves one request, its WebSocket upgrade is answered 403 with the `unauthenticated`
//!   error, and past 32 such connections open it is closed at accept without an answer
//!   (access.md says each call gets `unauthenticated`; a flood of them may not take every
//!   file descriptor). Refusals are logged once per peer uid per second with a count.
//! - Answers of 256 KiB or more share one 32 MiB budget until written to their clients; one
//!   that does not fit is refused with `limit_exceeded` (the call has run: a write it made
//!   stays). Calls with a body of 4 KiB or more run one at a time once their body is in. A
//!   client that reads nothing of such an answer for 10 s is disconnected.
//! - A database damaged inside is refused at start (`PRAGMA quick_check`, about 1 s per GB)
//!   rather than served with internal errors.
//! - Relative paths in `prefsd.toml` (`socket`, `database`, `public_key_file`) are relative
//!   to the config directory (ops.md §4; until issue 19 they were relative to the working
//!   directory); those of flags and environment variables stay relative to the working
//!   directory. Not set, the socket and the database are `prefsd.sock` and `prefsd.db` in
//!   `$RUNTIME_DIRECTORY` and `$STATE_DIRECTORY` when systemd sets them, else in the
//!   working directory; either inside the config directory stops `serve` with a message.
//! - `strict_workflows` not set is strict whenever the catalog defines a workflow, lenient
//!   with an empty catalog (ops.md §5 via issue 19; an explicit value is kept).
//! - `GET /healthz`, `/readyz` and `/metrics` need no credentials, from any peer: they
//!   reveal no id, property or preference, and probes and scrapers carry none. `/readyz`
//!   is 503 once the graceful stop has begun. Each call of a batch is counted with its
//!   own method and outcome, and the whole batch's duration. `PREFSD_METRICS=off` stops
//!   the counting (the benchmark's baseline); `/metrics` still answers.
//! - Under systemd, RELOADING=1 … READY=1 goes around every reload, however asked for
//!   (watcher, SIGHUP, `config.reload`), applied or refused.
//! - The change log's notifications are `changes.change` (unsubscribe:
//!   `changes.unsubscribe`); a subscriber blocked for 5 s is ended with an error.
//! - A change's `at` is the time its transaction appended it (just before the commit),
//!   rounded to the millisecond like the store's other times. `config.applied` is appended
//!   at every start (method `config.reload`, actor `config`) and before each reloaded config
//!   is in force, so a point-in-time answer never uses a config before its change.
//! - `as_of` answers use the limits in force now; everything else of the config is the
//!   one in force then. `getPreferenceHistory` returns the stored sets raw (no `id`,
//!   `__typename`), as `changes.list` does.
//! - `history_truncated` also carries `data.retained_seq`: the smallest `after` that can be
//!   answered.
//! - A change's value is kept in its own row when it is the only change of its transaction
//!   to name it and at most 1 KiB, and stored once by content otherwise and for every bulk
//!   job (history.md §6 asks this of bulk jobs only): a single write then commits 4.3
//!   pages instead of 6.7. Many single writes of the same small set store it once each.
//! - Reads of recipients read more than once come from a bounded in-memory cache
//!   (`limits.read_cache_mb`, default 8, 0 turns it off, hot-reloaded; not in config.md).
//!   An entry is admitted on its second read, so uniform reads over a large database do
//!   not churn it; one estimated at more than an eighth of the budget is never admitted.
//!   `daemon.status` shows it under `cache` (an addition to rpc.md's shape).
//! - `properties` (of users, objects, tenants, inline actors) are at most
//!   `limits.max_properties_bytes` of JSON after the merge (default 64 KiB; not in
//!   config.md), else `limit_exceeded` naming the field.
//! - A `preferences.evaluate` of more than 100 recipients that the cache cannot answer whole
//!   is read in chunks, each in its own read transaction: consistent in itself, as a call
//!   of its own would be, not across chunks (the spec asks nothing across recipients).
//! - `tenants.get` of a tenant that is not stored but has a template in the config returns
//!   the template as the tenant, with `"source": "config"`, no name, no properties and no
//!   timestamps: evaluation uses it, so a read must not say it does not exist.
//! - List conditions (`contains` and its kin) compare through hash sets of normalised
//!   values past 64 pairs (pair by pair below), so they cost the two lists' lengths. A
//!   literal list argument holds at most 1000 items (`model::condition::MAX_LIST_ITEMS`,
//!   refused at write time), and the conditions of one `preferences.evaluate` may read at
//!   most `limits.max_list_items_per_call` list items (default ten million, about a quarter
//!   of a second; not in config.md): past it the call is refused with `limit_exceeded`, and
//!   the work stops when the caller goes away. A call of at most 50 recipients whose lists
//!   pass 50 000 items leaves the async worker for a blocking thread. A graceful stop
//!   cancels the evaluations running off the async worker (`Context::stopping`) instead of
//!   waiting for them; their callers get `internal_error`.
//! - A config file may be at most 2 MiB (`config::MAX_FILE_BYTES`, not read past it) and
//!   `workflows.toml` at most 10 000 workflows (`config::MAX_WORKFLOWS`); more is an
//!   invalid config with a message, so a reload is bounded. The watcher stops waiting for a
//!   reload in progress when the daemon shuts down.
//! - The config watch follows the directory's path, not the directory first found there:
//!   one replaced by a rename is watched anew, and while the path is missing its parent is
//!   watched (entries other than the config directory ignored) until one is back.
//! - A request whose `id` jsonrpsee cannot read (any number but a non-negative integer, an
//!   object, `id` given twice) is refused with `invalid_request`, `id: null`, and not run,
//!   on every transport and inside batches; JSON-RPC allows any number as an id, but running
//!   it unanswered, as jsonrpsee would, is worse than refusing it.
//! - A key given twice anywhere in params is `invalid_params` naming the key's path
//!   (`preferences.__persistence_strategy__`); a repeated params field names the field.
//! - A WebSocket message over `limits.max_request_bytes` is answered `limit_exceeded`
//!   (field `body`, `id: null`) and the connection stays open; a 1025th live subscription
//!   on one connection is `limit_exceeded` (field `subscriptions`).
//! - A timestamp may be an ISO 8601 date (§6.1) only in its complete extended form
//!   `YYYY-MM-DD`, midnight UTC; `is_timestamp` holds for one too (§6.2's row names only
//!   RFC 3339 and unix seconds, §6.1 counts dates among timestamps). A date with a time but
//!   no offset stays unreadable: which instant it names is unknown. (`20250101` is a number,
//!   so unix seconds, as before.)
//! - The `run` param of `preferences.evaluate` must be an object when given; its contents
//!   are not checked (Knock names `total_activities` and `total_actors`; any key reads as
//!   written). It is not persisted and not part of any cache.
//! - `recipient.updated_at` is the recipient's own `updated_at`, as `users.get` shows it:
//!   set by each identify (`users.identify`, `objects.set`, an inline recipient of
//!   `preferences.evaluate`), not by `setPreferences` and the other preference writes, as
//!   in Knock, where preferences are a resource of their own. `__typename`, `updated_at`
//!   and `created_at` read the same way for an `actor`, which is a stored user too. Both
//!   timestamps come from the `recipients` row that the schema has kept since version 1,
//!   so no migration was needed.
//! - `users.merge` answers `limit_exceeded` naming `from_user_id` when the merged
//!   properties pass `limits.max_properties_bytes`, and changes nothing. A source that is
//!   also in an audience the target is in leaves one membership, the target's.
//! - The legacy granular set (rest.md A7, `api::recipients::granular_set`) names its errors
//!   under `preferences.` as `setPreferences` does; `{"subscribed": b}` is recognised only
//!   as the whole body of a one-key write.
//! - `users.list`, `objects.list` and `tenants.list` page in insertion order as
//!   `(created_at, id)`: rows inserted in the same millisecond (a bulk chunk) list by id. A
//!   cursor is the key of a row, so rows inserted or deleted meanwhile never make a page
//!   skip or repeat one; an empty page has neither `next` nor `prev`. `tenants.list` has no
//!   `order` (rest.md gives it none).
//! - REST routes match static segments before ids (axum's router): `/v1/users/bulk/…` and
//!   `/v1/objects/{c}/bulk/…` are the bulk routes, so a user or object whose id is `bulk`
//!   cannot be reached through the routes that would collide with them (`GET
//!   /v1/users/bulk/preferences` is 405); JSON-RPC reaches it.
//! - A REST body that repeats a key is 422 naming `body`, as a repeated key in JSON-RPC
//!   params is `invalid_params`; field names of errors inside bulk items keep the RPC's
//!   path (`users.0.properties.plan`), not the body's (`users.0.plan`).
//! - REST requests are logged at debug level with their `x-request-id` (warn for a 5xx);
//!   `X-Knock-Branch` is logged at debug level and otherwise ignored.
//! - A REST body must arrive within 10 s of the headers (as on JSON-RPC), else 408
//!   `request_timeout`; the REST TCP listener has no connection cap of its own and does
//!   not shed connections (the socket's `limits.max_connections` does not count it).
//! - On the REST TCP listener, which has no peer uid, a caller counts as the daemon's own
//!   uid in logs; `access.allowed_uids` does not apply there, a secret key does.
//! - One daemon per database is enforced with an advisory `flock` on `DATABASE.lock` beside
//!   the file (symlinks resolved), holding the holder's pid; `prefsd restore` takes the same
//!   lock. `daemon.backup`'s `path` must be absolute (the daemon's working directory is not
//!   the caller's; the CLI makes it so), may replace an existing file (only once the new
//!   copy is verified) and may not be the live database or one of its files. `daemon.status`
//!   shows the newest backup as `last_backup` (`{path, bytes, seq, at, age_s}` or null).
//!   Scheduled backups are named `prefsd-<UTC time>.db`; a failed one is retried after a
//!   minute.
//! - `daemon.export` is a WebSocket subscription: `daemon.exportLines` notifications of
//!   `{"lines": [...]}`, ended by `{"lines": [], "done": true, "count": N}` (or `"error"`),
//!   so a client tells a whole export from a cut one. Export lines carry `"type"` (`tenant`,
//!   `user`, `object`, `audience_member`); tenants keep Knock's `settings.preference_set`,
//!   members are named as `audiences.addMembers` names them, and stored timestamps go along.
//! - `prefsd import` is a client of the bulk methods (`tenants.bulkSet`,
//!   `users.bulkIdentify`, `objects.bulkSet`; members by `audiences.addMembers`): a line the
//!   daemon refuses is left out and its batch resubmitted without it, each batch's
//!   idempotency key is a hash of its items (so a repeated import queues nothing new), and
//!   imported rows get the import's time as their timestamps, as an identify does. A run
//!   with lines left out exits 1. Its jobs hold 250 lines each (the spec's "up to 1000"),
//!   and it keeps at most two of them queued or running in the daemon, following the oldest
//!   before it submits the next: the daemon's memory during an import stays within ops.md's
//!   64 MiB. While bulk jobs run (until none came for 10 s), the writer's page cache is
//!   4 MiB instead of 32.
//! - Fleet mode (fleet.md): writes are serialised fleet-wide by one advisory lock held
//!   for the whole write transaction (not only around the log append, as the design notes
//!   sketch): it gives the no-lost-update and commit-ordered-log guarantees with one
//!   mechanism and no per-key locks or deadlock handling, at the price of one fleet-wide
//!   writer — acceptable because writes are rare next to reads, which the caches take.
//! - On PostgreSQL, ids (recipients, sets, tenants, audiences, jobs, idempotency keys) are
//!   `bytea` holding their UTF-8, so that an id may hold NUL as on SQLite and sorts
//!   bytewise; JSON stays `text` (prefsd parses it; `jsonb` would reorder keys).
//! - A fleet daemon that loses its change feed turns its cache off at once rather than
//!   serving entries up to `max_staleness_ms` old: stricter than fleet.md §5 allows, and
//!   simpler to reason about.
//! - In a fleet, a job queued on a daemon whose bulk worker is idle is held for that
//!   daemon for up to 2 s (`jobs::SUBMIT_GRACE`, a lease on PostgreSQL's clock written
//!   with the job): "any daemon may run any queued job" (fleet.md §4) still holds, but the
//!   daemon the caller follows the job on runs it, and its end reaches the caller without
//!   a NOTIFY hop through another daemon. If that daemon dies first, another takes the
//!   job over when the hold runs out, as from a killed runner.

// The modules in the code map's reading order; the blank lines keep rustfmt from sorting
// them.
pub mod model;

pub mod duration;

pub mod resolve;

pub mod eval;

pub mod config;

pub mod logs;

pub mod store;

pub mod metrics;
pub mod writes;

pub mod jobs;

pub mod api;

pub mod auth;

pub mod rpc;

/// The Knock-compatible REST API over `api` (rest.md).
pub mod rest;

pub mod server;

pub mod sched;

pub mod client;

pub mod cli;

pub mod bench;

mod error;

pub use error::Error;
