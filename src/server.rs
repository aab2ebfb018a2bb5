//! Wiring and lifecycle of the daemon: the accept loop, one jsonrpsee service per
//! connection, the background tasks (config watcher, SIGHUP), and graceful shutdown.
//! No business logic.
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis): `main` binds the
//! configured socket and passes SIGTERM/SIGINT; tests bind a temp socket and pass a token,
//! so no test waits for the server to come up.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{Methods, Server, ServerConfig, stop_channel};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Context;
use crate::auth::Peer;
use crate::config::ConfigWatcher;
use crate::model::change::{Actor, Origin};
use crate::rpc;
use crate::rpc::auth::{AuthLayer, PeerLayer};
use crate::rpc::http::{AnswerBudget, Exchange, JsonLayer};
use crate::rpc::observe::ObserveLayer;
use crate::rpc::wire::WireLayer;

mod connections;
mod rest_hook;
pub mod systemd;
mod tcp;

use connections::{
    Activity, Connections, RefusedSlot, Registered, SHED_BATCH, Tracked, connection_cap, now_ms,
};

/// How long a client may take to send a request's headers once it has started. It stops
/// a slow client from holding a connection forever; idle keep-alive connections between
/// requests are not affected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and headers): larger is 431. Without it hyper
/// refuses a head only when its read buffer fills before the head ends (about 400 KB),
/// and one read may fill more than that when the whole request has already arrived, so a
/// 500 KB header was sometimes served (seen in the end-to-end suite under load).
const MAX_HEADER_BYTES: usize = 256 * 1024;

/// The largest response: 1000 recipients × 6 channels of decisions fit many times over.
const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;

/// The memory that answers not yet read by their clients may hold in all (see
/// [`AnswerBudget`]): beside the daemon's own 30–60 MiB, it keeps it within 128 MiB.
const UNREAD_ANSWERS_BYTES: usize = 32 * 1024 * 1024;

/// How long a client may go without reading any of a large answer being written to it
/// before its connection is closed, giving its share of the answer budget back: a client
/// that never reads cannot keep the budget from everyone else.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shed connection may take to finish its call in flight and write the answer.
/// A client that does not read its answer is cut off after this, not kept forever.
const SHED_GRACE: Duration = Duration::from_secs(10);

/// Serves JSON-RPC on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight calls finish, stops the background tasks and returns once every task spawned
/// here has ended.
pub async fn run(
    listener: UnixListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_tcp(listener, None, ctx, shutdown).await
}

/// [`run`], also serving the REST API on `tcp` (rest.md §2.2) when given.
pub async fn run_with_tcp(
    listener: UnixListener,
    tcp: Option<tokio::net::TcpListener>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    record_configs(&ctx).await?;
    let limits = ctx.config().settings.limits.clone();
    let module = rpc::module(Arc::clone(&ctx)).context("registering the RPC methods")?;
    ctx.metrics.set_methods(module.method_names());
    let methods: Methods = module.into();
    let (stop_handle, server_handle) = stop_channel();
    let auth = AuthLayer::new(
        ctx.config.clone(),
        crate::auth::env_secret_keys(),
        own_uid().context("reading the daemon's own uid")?,
    );
    // jsonrpsee's default of 100 connections is too few for a sidecar shared by many
    // worker processes; the limit is a setting (limits.max_connections).
    let builder = Server::builder()
        .set_config(
            ServerConfig::builder()
                .max_connections(limits.max_connections)
                .max_request_body_size(limits.max_request_bytes)
                .max_response_body_size(MAX_RESPONSE_BYTES)
                .build(),
        )
        // Every call is checked before dispatch (access.md); the HTTP middleware, which
        // carries the peer's uid, is set per connection below. The wire layer comes first:
        // it must see a batch whole to refuse its unreadable ids by position.
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer(WireLayer)
                .layer(ObserveLayer {
                    metrics: Arc::clone(&ctx.metrics),
                })
                .layer(auth.clone()),
        )
        .to_service_builder();

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    match ConfigWatcher::start(ctx.config.clone()) {
        Ok(watcher) => {
            let cancel = cancel.clone();
            tasks.spawn(async move {
                if let Err(e) = watcher.run(cancel).await {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the config watcher stopped; edits now need SIGHUP or config.reload"
                    );
                }
            });
        }
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "cannot watch the config directory; use SIGHUP or config.reload"
        ),
    }
    // The handler is installed here, before `run` serves anything, so a SIGHUP can never
    // meet the default action (which ends the process).
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            tasks.spawn(reload_on_sighup(hup, ctx.config.clone(), cancel.clone()));
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; use config.reload"),
    }
    tasks.spawn(crate::jobs::run(
        ctx.db.clone(),
        ctx.jobs.clone(),
        ctx.config.clone(),
        Arc::clone(&ctx.metrics),
        cancel.clone(),
    ));
    tasks.spawn(apply_store_limits(ctx.clone(), cancel.clone()));
    tasks.spawn(prune_history(ctx.clone(), cancel.clone()));
    let rest = crate::rest::App::new(Arc::clone(&ctx), auth.clone());
    if let Some(tcp) = tcp {
        let ops = rpc::ops::Ops(Arc::clone(&ctx));
        tasks.spawn(tcp::serve(
            tcp,
            rest.clone(),
            ops,
            tasks.clone(),
            cancel.clone(),
        ));
    }
    tasks.spawn(crate::api::backup::schedule(ctx.clone(), cancel.clone()));
    tasks.spawn(systemd::watchdog(cancel.clone()));

    let connections = Arc::new(Connections::default());
    let refused_open = Arc::new(AtomicUsize::new(0));
    let budget = AnswerBudget::new(UNREAD_ANSWERS_BYTES);
    let max_connections = connection_cap(limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: ask the least recently active
                    // connections to close, and back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    connections.shed(SHED_BATCH);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if connections.staying() >= max_connections {
            connections.shed(SHED_BATCH);
        }
        // SO_PEERCRED, once per connection: the uid every call on it is checked against.
        let peer = Peer {
            uid: stream.peer_cred().ok().map(|c| c.uid()),
        };
        let refusal = auth.refusal(peer);
        let refused_slot = match &refusal {
            None => None,
            Some(denied) => match RefusedSlot::take(&refused_open) {
                Some(slot) => Some(slot),
                None => {
                    auth.log_closed_at_accept(peer, denied);
                    continue;
                }
            },
        };
        let exchange = Arc::new(Exchange::default());
        let service = builder
            .clone()
            .set_http_middleware(
                tower::ServiceBuilder::new()
                    .layer(PeerLayer::new(peer, refusal))
                    .layer(rest_hook::SocketLayer::new(rest.clone()))
                    .layer(JsonLayer {
                        max_request_bytes: limits.max_request_bytes,
                        exchange: Arc::clone(&exchange),
                        budget: budget.clone(),
                        ops: rpc::ops::Ops(Arc::clone(&ctx)),
                    }),
            )
            .build(methods.clone(), stop_handle.clone());
        let counted = ctx.metrics.connection();
        tasks.spawn(serve_connection(
            (connections.add(stream), counted),
            service,
            exchange,
            refused_slot,
            stop_handle.clone().shutdown(),
        ));
    }
    tracing::info!("shutting down: no new connections; finishing in-flight calls");
    // Long evaluations in flight stop rather than finish (`api::evaluate`).
    ctx.stopping.cancel();
    drop(listener);
    let _ = server_handle.stop();
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Serves one connection: HTTP/1.1 with keep-alive and the WebSocket upgrade (a refused
/// peer's, holding `refused_slot`: one request, no upgrade). On shutdown the connection
/// finishes the request in flight and then closes. A client that reads nothing of a large
/// answer for [`WRITE_STALL_TIMEOUT`] is cut off. When shed under pressure, a connection
/// whose request body is still arriving is dropped at once (nothing has run, and the body
/// may never come); any other finishes its call and writes the answer within
/// [`SHED_GRACE`]. (A WebSocket leaves [`Connections`] once upgraded; jsonrpsee's own
/// `max_connections` bounds those.)
async fn serve_connection<S, B>(
    ((stream, _registered), _counted): ((Tracked, Registered), crate::metrics::ConnectionGuard),
    service: S,
    exchange: Arc<Exchange>,
    refused_slot: Option<RefusedSlot>,
    stopped: impl Future<Output = ()>,
) where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::clone(&stream.activity);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(refused_slot.is_none())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn, stopped);
    let result = tokio::select! {
        res = &mut conn => res,
        () = &mut stopped => {
            conn.as_mut().graceful_shutdown();
            // A client that has stopped reading its answer must not hold up the shutdown.
            tokio::select! {
                res = &mut conn => res,
                () = write_stalled(&activity, &exchange) => return,
            }
        }
        () = write_stalled(&activity, &exchange) => {
            tracing::debug!("a client stopped reading its answer: connection closed");
            return;
        }
        () = activity.close.notified() => {
            conn.as_mut().graceful_shutdown();
            if exchange.receiving() {
                return;
            }
            match tokio::time::timeout(SHED_GRACE, conn).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!("a shed connection did not finish its answer in time");
                    return;
                }
            }
        }
    };
    drop(refused_slot);
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Returns when a counted answer is being written on the connection and no byte has moved
/// on it for [`WRITE_STALL_TIMEOUT`].
async fn write_stalled(activity: &Activity, exchange: &Exchange) {
    let stall_ms = u64::try_from(WRITE_STALL_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    loop {
        exchange.write_begins().await;
        while exchange.writing() {
            let last = activity.last_ms.load(Ordering::Relaxed);
            let left = last.saturating_add(stall_ms).saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(left)).await;
            if exchange.writing() && activity.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// How often the change log is pruned to `[history] retention_days`, besides at start-up
/// and after every reload.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the change log to `[history] retention_days` (0 keeps everything) now, after
/// every reload and every [`PRUNE_EVERY`].
async fn prune_history(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut configs = ctx.config.subscribe();
    loop {
        let days = configs.borrow_and_update().settings.history_retention_days;
        if days > 0 {
            let horizon = jiff::Timestamp::now().as_millisecond() - i64::from(days) * 86_400_000;
            match ctx.db.prune_history(horizon).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, days, "pruned the change log"),
                Err(e) => tracing::warn!(error = %e, "could not prune the change log"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            changed = configs.changed() => if changed.is_err() { return },
        }
    }
}

/// Applies `limits.max_database_mb` and `limits.read_cache_mb` to the store now and after
/// every reload (SQLite's `max_page_count` belongs to the writer connection, not the file).
async fn apply_store_limits(ctx: Arc<Context>, cancel: CancellationToken) {
    let mut configs = ctx.config.subscribe();
    let mut applied = None;
    loop {
        let (wanted, cache_mb) = {
            let config = configs.borrow_and_update();
            let limits = &config.settings.limits;
            (limits.max_database_mb, limits.read_cache_mb)
        };
        ctx.db
            .set_cache_budget(cache_mb as usize * crate::store::MIB);
        if applied != Some(wanted) {
            match ctx.db.set_max_size(wanted).await {
                Ok(()) => applied = Some(wanted),
                Err(e) => tracing::warn!(error = %e, "cannot apply limits.max_database_mb"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = configs.changed() => if changed.is_err() { return },
        }
    }
}

/// Reloads the config on every SIGHUP until cancelled.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    config: crate::config::ConfigHandle,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the config");
                if let Err(errors) = config.reload_async().await {
                    tracing::warn!(errors = errors.len(), "the reloaded config is invalid; the old one stays in force");
                }
            }
        }
    }
}

/// Binds the daemon's socket with `mode`, with no moment in which it is more open: it is
/// bound in a private temporary directory, chmod-ed, then renamed into place. A stale socket file
/// (nobody listening) is replaced; a live daemon on the path is an error, and its socket is
/// left alone.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    parent_must_exist(
        path,
        "binding the socket",
        "`socket` in prefsd.toml or --socket",
    )?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a socket is ever replaced: a typo in --socket must not delete a file.
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; remove it or use another --socket",
                path.display()
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => anyhow::bail!(
                "another prefsd is already listening on {}; stop it first or use another --socket",
                path.display()
            ),
            Err(_) => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
        }
    }
    // Bound inside a private (0700) directory, so that nobody else can connect to it even
    // while its own mode is still the umask's; chmod-ed there, then renamed into place.
    let dir = temp_name(path);
    let _ = std::fs::remove_dir_all(&dir);
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .with_context(|| format!("creating the private directory {}", dir.display()))?;
    let tmp = dir.join("s");
    let placed = UnixListener::bind(&tmp)
        .with_context(|| format!("binding {}", tmp.display()))
        .and_then(|listener| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("placing the socket at {}", path.display()))?;
            Ok(listener)
        });
    let _ = std::fs::remove_dir_all(&dir);
    placed
}

/// The uid this process runs as: the peer uid of one end of a socket pair (no libc call).
fn own_uid() -> std::io::Result<u32> {
    let (a, _b) = UnixStream::pair()?;
    Ok(a.peer_cred()?.uid())
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.d", std::process::id()))
}

/// Fails, saying what to do, when the directory that is to hold `path` (the socket, the
/// database) does not exist, rather than with the error of whatever first tries to create
/// a file in it (a private temporary directory, or SQLite's "unable to open" three times).
fn parent_must_exist(path: &Path, doing: &str, setting: &str) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        return Ok(());
    }
    anyhow::bail!(
        "{doing} {}: its directory {} does not exist; create it, or choose another path with {setting}",
        path.display(),
        shown(parent).display()
    )
}

/// Fails when `path` (the socket, the database) would sit inside the config directory:
/// the directory is watched, and every write to the file would be taken for an edit.
fn outside_config(
    path: &Path,
    config_dir: &Path,
    setting: &str,
    example: &str,
) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (Ok(parent), Ok(dir)) = (parent.canonicalize(), config_dir.canonicalize()) else {
        return Ok(());
    };
    if parent.starts_with(&dir) {
        anyhow::bail!(
            "the {setting} {} is inside the config directory {}, which is watched for edits; put it elsewhere, e.g. `{setting} = \"{example}\"` in prefsd.toml (relative to the config directory)",
            shown(path).display(),
            dir.display()
        );
    }
    Ok(())
}

/// A path as a message shows it: absolute, so it says where it was looked for.
fn shown(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `prefsd serve` from `main`: builds the daemon's runtime and runs [`serve`] on it.
pub fn main(options: ServeOptions) -> anyhow::Result<std::process::ExitCode> {
    runtime()?.block_on(serve(options))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The daemon's runtime: [`async_workers`] workers, each asking for short time slices.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = async_workers() {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .on_thread_start(crate::sched::prefer_short_slices)
        .build()
        .context("cannot start the async runtime")
}

/// How many async workers `prefsd serve` runs: one fewer than the cores, at least one, or
/// `None` when `TOKIO_WORKER_THREADS` says (tokio reads it). The database threads and the
/// app the daemon sits beside need the other core. Measured on 2 cores with the load
/// generator beside the daemon: two workers put `users.getPreferences` p99 at 64
/// connections at a scheduler tick (4.2 ms) while the median was 0.7 ms; one worker gives
/// 0.7 ms p99 and 25% more `daemon.ping` calls/s (README, performance).
pub fn async_workers() -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Some(cores.saturating_sub(1).max(1))
}

/// The config check of `serve`: the user-token key of a config must load.
pub fn check_user_token_key(
    config: &crate::config::Config,
) -> Result<(), crate::config::ConfigError> {
    crate::auth::token::Verifier::load(&config.settings.access)
        .map(drop)
        .map_err(|message| crate::config::ConfigError {
            file: crate::config::SETTINGS_FILE.to_string(),
            line: None,
            message,
        })
}

/// The config check of `serve` for the REST TCP listener (rest.md §2.2): with
/// `rest.listen`, a secret key must be configured (`env_keys`: `PREFSD_SECRET_KEYS`), since
/// every server call on TCP needs one. At start-up a failure is exit 2; on a reload the old
/// config stays in force.
pub fn check_rest_secret_key(
    config: &crate::config::Config,
    env_keys: &[String],
) -> Result<(), crate::config::ConfigError> {
    let settings = &config.settings;
    let has_key = settings
        .access
        .secret_keys
        .iter()
        .any(|k| !k.trim().is_empty())
        || !env_keys.is_empty();
    if settings.rest.listen.is_none() || has_key {
        return Ok(());
    }
    Err(crate::config::ConfigError {
        file: crate::config::SETTINGS_FILE.to_string(),
        line: None,
        message: "`rest.listen` needs a secret key (access.secret_keys or PREFSD_SECRET_KEYS): \
                  every server call on the TCP listener must carry one"
            .into(),
    })
}

/// Opens the store. SQLite's file is checked whole first (about a second per GB), said
/// first so that a slow start is not taken for a hang. PostgreSQL is reached from a thread
/// of its own: its client runs a runtime of its own, which cannot start inside this one.
fn open_store(
    location: &crate::store::Location,
    options: crate::store::Options,
) -> anyhow::Result<crate::store::Db> {
    use crate::store::{Db, Location};
    match location {
        Location::Sqlite(database) => {
            tracing::info!(
                database = %database.display(),
                "checking the database (PRAGMA quick_check) before serving"
            );
            Db::open_with(database, options)
                .with_context(|| format!("opening the database {}", database.display()))
        }
        Location::Postgres(pg) => {
            let at = location.clone();
            let schema = pg.schema.clone();
            std::thread::spawn(move || Db::open_at(&at, options))
                .join()
                .map_err(|_| anyhow::anyhow!("opening the PostgreSQL store panicked"))?
                .map_err(|e| {
                    let hint = if e.is_unavailable() {
                        "; check `[store] url` (or --database-url) and that PostgreSQL is running"
                    } else {
                        ""
                    };
                    anyhow::anyhow!("opening the PostgreSQL store (schema {schema}): {e}{hint}")
                })
        }
    }
}

/// The store for the log: the SQLite path, or PostgreSQL's schema (never the URL, which
/// may hold a password).
fn store_description(location: &crate::store::Location) -> String {
    match location {
        crate::store::Location::Sqlite(path) => path.display().to_string(),
        crate::store::Location::Postgres(pg) => format!("postgres (schema {})", pg.schema),
    }
}

/// What `prefsd serve` needs, from flags and environment.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub config_dir: PathBuf,
    pub overrides: crate::config::Overrides,
}

/// `prefsd serve`: loads the config, opens the database, binds the socket and serves until
/// SIGTERM or SIGINT; then finishes in-flight calls, closes the database and removes the
/// socket file. Any start-up failure is an error (exit 2 in `main`).
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    if !options.config_dir.is_dir() {
        anyhow::bail!(
            "there is no config directory at {}; pass --config DIR (or set PREFSD_CONFIG), or write one there with `prefsd init {}`",
            shown(&options.config_dir).display(),
            options.config_dir.display()
        );
    }
    // A user-token key that cannot be read is an invalid config: at start-up an error, not
    // a daemon that refuses every token; on a reload an invalid edit, and the old config
    // stays in force.
    let check = crate::config::Check(Box::new(|config: &crate::config::Config| {
        check_user_token_key(config)?;
        check_rest_secret_key(config, &crate::auth::env_secret_keys())
    }));
    let config = crate::config::ConfigHandle::load(
        options.config_dir.clone(),
        options.overrides,
        Some(check),
    )
    .map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "the config in {} is invalid:\n  {}",
            options.config_dir.display(),
            list.join("\n  ")
        )
    })?;
    let settings = config.current().settings.clone();
    let db_options = crate::store::Options {
        durability: settings.durability,
        max_database_mb: settings.limits.max_database_mb,
        read_cache_mb: settings.limits.read_cache_mb,
        max_staleness_ms: settings.store.max_staleness_ms,
        skip_change_log: false,
    };
    let location = settings.store_location().ok_or_else(|| {
        anyhow::anyhow!(
            "`[store] backend = \"postgres\"` needs a URL: `[store] url` in prefsd.toml, --database-url or PREFSD_DATABASE_URL"
        )
    })?;
    outside_config(
        &settings.socket,
        &options.config_dir,
        "socket",
        "../prefsd.sock",
    )?;
    // One daemon per SQLite database (ops.md §5): held until this function returns, after
    // the database is closed; the kernel drops it if the process dies. A PostgreSQL store
    // is shared by design (fleet.md).
    let _lock = match &location {
        crate::store::Location::Sqlite(database) => {
            parent_must_exist(
                database,
                "opening the database",
                "`database` in prefsd.toml or --database",
            )?;
            let lock = crate::store::lock::DbLock::acquire(database)?;
            outside_config(database, &options.config_dir, "database", "../prefsd.db")?;
            Some(lock)
        }
        crate::store::Location::Postgres(_) => None,
    };
    let db = open_store(&location, db_options)?;
    // Socket activation: serve on the sockets systemd passed (and never remove them), else
    // bind our own; the REST TCP listener too when systemd passed one named `rest`.
    let activated = systemd::activated()?;
    let (listener, ours) = match activated.unix {
        Some(passed) => (
            UnixListener::from_std(passed).context("serving the socket systemd passed")?,
            false,
        ),
        None => (bind(&settings.socket, settings.socket_mode)?, true),
    };
    let tcp = match (activated.rest, settings.rest.listen) {
        (Some(passed), _) => {
            passed
                .set_nonblocking(true)
                .context("making the passed REST socket non-blocking")?;
            Some(
                tokio::net::TcpListener::from_std(passed)
                    .context("serving the REST socket systemd passed")?,
            )
        }
        (None, None) => None,
        (None, Some(addr)) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding the REST TCP listener on {addr} (rest.listen)")
            })?)
        }
    };
    config.on_reload(crate::config::ReloadHook(Box::new(systemd::reloading)));
    // The signal handlers are installed before the daemon says it is serving, so that a
    // signal sent as soon as it does never meets the default action (which ends the
    // process without a graceful stop). `run` listens for SIGHUP itself.
    let signal = shutdown_signal();
    let shutdown = async {
        signal.await;
        systemd::stopping();
    };
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // A passed socket is shown where systemd bound it; our own was bound under a temporary
    // name and renamed, so its address would show that name.
    let serving_on = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .filter(|_| !ours)
        .unwrap_or_else(|| settings.socket.clone());
    tracing::info!(
        socket = %serving_on.display(),
        database = %store_description(&location),
        config = %options.config_dir.display(),
        schema_version = db.schema_version(),
        "prefsd is serving"
    );
    let ctx = Arc::new(Context::new(db.clone(), config));
    systemd::ready();
    let result = run_with_tcp(listener, tcp, ctx, shutdown).await;
    if ours && let Err(e) = std::fs::remove_file(&settings.socket) {
        tracing::warn!(error = %e, "could not remove the socket file");
    }
    // Every handle on the database but this one is gone with `run`; closing waits for the
    // database threads, so the WAL is checkpointed before the process exits.
    tokio::task::spawn_blocking(move || db.close())
        .await
        .context("closing the database")?;
    tracing::info!("stopped");
    result
}

/// Records the config in force in the change log (history.md §1), and every config a
/// reload applies from now on, before it is in force: a point-in-time answer then finds
/// the config of its instant. A reload whose record cannot be written (a full disk) still
/// applies, with a warning: the config on disk is what the operator asked for.
async fn record_configs(ctx: &Context) -> anyhow::Result<()> {
    fn origin() -> Origin {
        Origin::new(Actor::Config, "config.reload")
    }
    let config = ctx.config();
    let (version, files) = (ctx.config.version(), config.sources.clone());
    ctx.db
        .write_as(origin(), move |w| {
            w.config_applied(version, &files).map(drop)
        })
        .await
        .context("recording the config in the change log")?;
    let db = ctx.db.clone();
    ctx.config.on_applied(Box::new(move |config, version| {
        let files = config.sources.clone();
        let recorded = db.write_blocking(origin(), move |w| w.config_applied(version, &files).map(drop));
        if let Err(e) = recorded {
            tracing::warn!(error = %e, version, "could not record the reloaded config in the change log");
        }
    }));
    Ok(())
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot listen for SIGTERM/SIGINT; stop the daemon with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
