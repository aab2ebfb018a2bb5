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
//! A request flows `server` (connection) → `rpc` (method table, params, error mapping) →
//! `api` (one async function per method) → `store` (one transaction on a database thread)
//! and the pure core (`model`, `resolve`, `eval`) → back out as JSON.
//!
//! # Code map (in reading order)
//!
//! - `model`: the nouns — `PreferenceSet` (validated, normalised JSON), write requests and
//!   RFC 7396 merge, channels, workflows, condition operators, field-named validation errors.
//! - `resolve`: the default hierarchy (environment ⊕ tenant default ⊕ recipient set), admin
//!   locks and provenance, as a lazy merged view (`Stack`, `Node`) and its materialisation.
//! - `eval`: `decide(workflow, channel, stack, recipient default, context) -> Decision` with
//!   its reason; conditions and their coercions.
//! - `config`: the config directory parsed as one immutable `Config`, the live
//!   `ConfigHandle` and the watcher that swaps it on valid edits.
//! - `store`: SQLite — migrations from `sql/`, one writer thread that owns the only write
//!   connection, two reader threads (WAL: reads never wait for writes) and a checkpointer
//!   thread (commits never wait for the WAL to be copied back), the domain
//!   operations on one transaction (`Read`, `Write`), the job table, and the read cache
//!   (`Cache`: parsed recipient inputs and tenant rows, bounded, so hot reads never leave
//!   the async worker).
//! - `jobs`: the bulk worker that runs `users.bulkSetPreferences` jobs chunk by chunk, in
//!   smaller chunks while the daemon serves other calls.
//! - `api`: the methods of rpc.md as plain async functions over `Context`.
//! - `auth`: who may call what — the `Caller` from peer credentials, secret keys and user
//!   tokens, and `authorize`; pure, applied by the RPC middleware `rpc::auth` before dispatch.
//! - `rpc`: the JSON-RPC surface — method table, params parsing, the one error mapping,
//!   HTTP shims, the bulk progress subscription.
//! - `server`: binding the socket, the accept loop, background tasks, graceful shutdown.
//! - `sched`: the scheduler hint (short time slices) for the threads that serve requests,
//!   and the allocator's purge delay.
//! - `cli`: the command line client (and `check-config`); `main.rs` only dispatches.
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
//! - The read cache never serves what a write replaced: every `Write` operation records the
//!   rows it touched, the writer drops them from the cache after commit and before the
//!   caller is answered, and a read inserts only if no invalidation happened since it began
//!   (`store::cache`). Nothing else writes the tables the cache mirrors.
//! - Only `store` names rusqlite. Only `rpc` and `server` name jsonrpsee server types; the
//!   CLI uses jsonrpsee's client.
//! - No SQL outside `store/` and `sql/`; no preference rule outside `model`, `resolve` and
//!   `eval`; `api` holds neither, only the order of steps of each method.
//! - Every method is all-or-nothing: params are validated before the first write, and all
//!   writes of one call are one transaction, committed before the reply.
//! - Only `server` spawns long-lived tasks (connections, config watcher, SIGHUP, bulk
//!   worker); each is tracked in one `TaskTracker`, cancelled by one token and awaited
//!   before `server::run` returns. The bulk worker wakes on a `Notify`, never on a poll.
//! - `unsafe` appears only in `sched` (one system call, sched_setattr, and mimalloc's
//!   option setter).
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
//! - Inline tenants and actors given as objects in `preferences.evaluate` are persisted
//!   (merged), like inline recipients (Knock's inline identify).
//! - A tenant-scoped user token reading a tenant with no tenant default and no stored set
//!   gets `env` alone, not the §4.2 fallback `env ⊕ recipient["default"]`: the scope
//!   forbids the `default` set (access.md), and an answer is friendlier than a refusal.
//! - `users.bulkSetPreferences` always replaces; a body asking to merge is refused.
//! - A bulk job whose writes fail (e.g. the disk is full) is marked `failed` with the reason
//!   in `error_items`; it is not retried.
//! - Under connection pressure (at `limits.max_connections` or out of file descriptors) the
//!   least recently active connections are closed after their call in flight, so idle
//!   clients never lock out new ones.
//! - A database damaged inside is refused at start (`PRAGMA quick_check`, about 1 s per GB)
//!   rather than served with internal errors.
//! - Relative paths in `prefsd.toml` (`socket`, `database`) are relative to the working
//!   directory of `prefsd serve`.
//! - Reads of recipients read more than once come from a bounded in-memory cache
//!   (`limits.read_cache_mb`, default 8, 0 turns it off, hot-reloaded; not in config.md).
//!   An entry is admitted on its second read, so uniform reads over a large database do
//!   not churn it; one estimated at more than an eighth of the budget is never admitted.
//! - `properties` (of users, objects, tenants, inline actors) are at most
//!   `limits.max_properties_bytes` of JSON after the merge (default 64 KiB; not in
//!   config.md), else `limit_exceeded` naming the field. `daemon.status` shows it under `cache` (an addition to rpc.md's shape).
//! - `prefsd serve` runs one async worker fewer than the cores (at least one; tokio's
//!   `TOKIO_WORKER_THREADS` overrides): the database threads and the app beside the daemon
//!   need the rest, and on 2 cores a second worker quadrupled the p99.
//! - `preferences.evaluate` with more than 50 recipients decides on a blocking thread, so
//!   one large batch does not hold up the calls behind it on the async worker. With more
//!   than 100 that the cache cannot answer whole, it is read and decided in chunks of 100
//!   on both reader threads, each chunk in its own read transaction: consistent in itself,
//!   as a call of its own would be, not across chunks (the spec asks nothing across
//!   recipients).
//! - List conditions (`contains` and its kin) compare through hash sets of normalised
//!   values past 64 pairs (pair by pair below), so they cost the two lists' lengths. A literal list argument holds at most
//!   1000 items (`eval::MAX_LIST_ITEMS`, refused at write time), and the conditions of one
//!   `preferences.evaluate` may read at most `limits.max_list_items_per_call` list items
//!   (default ten million, about a quarter of a second; not in config.md): past it the call
//!   is refused with `limit_exceeded`, and the work stops when the caller goes away. A call
//!   of at most 50 recipients whose lists pass 50 000 items leaves the async worker for a
//!   blocking thread. A graceful stop cancels the evaluations running off the async worker
//!   (`Context::stopping`) instead of waiting for them; their callers get `internal_error`.
//! - The config watch follows the directory's path, not the directory first found there:
//!   one replaced by a rename is watched anew, and while the path is missing its parent is
//!   watched (entries other than the config directory ignored) until one is back.
//! - A config file may be at most 2 MiB (`config::MAX_FILE_BYTES`, not read past it) and
//!   `workflows.toml` at most 10 000 workflows (`config::MAX_WORKFLOWS`); more is an
//!   invalid config with a message, so a reload is bounded. The watcher stops waiting for a
//!   reload in progress when the daemon shuts down.
//! - The WAL is checkpointed by a thread of its own, woken by the writer past 1000 pages,
//!   not inside a commit; a graceful stop still leaves no WAL behind.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
mod error;
pub mod eval;
pub mod jobs;
pub mod model;
pub mod resolve;
pub mod rpc;
pub mod sched;
pub mod server;
pub mod store;

pub use error::Error;
