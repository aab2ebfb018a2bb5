//! Wiring and lifecycle of the daemon: the accept loop, one jsonrpsee service per
//! connection, the background tasks (config watcher, SIGHUP), and graceful shutdown.
//! No business logic.
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis): `main` binds the
//! configured socket and passes SIGTERM/SIGINT; tests bind a temp socket and pass a token,
//! so no test waits for the server to come up.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{Methods, Server, ServerConfig, stop_channel};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Context;
use crate::auth::Peer;
use crate::config::ConfigWatcher;
use crate::rpc;
use crate::rpc::auth::{AuthLayer, PeerLayer};
use crate::rpc::http::JsonLayer;
use crate::rpc::wire::WireLayer;

/// How long a client may take to send a request's headers once it has started. It stops
/// a slow client from holding a connection forever; idle keep-alive connections between
/// requests are not affected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response: 1000 recipients × 6 channels of decisions fit many times over.
const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;

/// How many connections one round of shedding asks to close (see [`Connections`]).
const SHED_BATCH: usize = 16;

/// File descriptors kept for the database, the config watcher and the rest when the
/// open-files limit caps the number of connections.
const RESERVED_FDS: usize = 64;

/// Serves JSON-RPC on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight calls finish, stops the background tasks and returns once every task spawned
/// here has ended.
pub async fn run(
    listener: UnixListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let limits = ctx.config().settings.limits.clone();
    let methods: Methods = rpc::module(Arc::clone(&ctx))
        .context("registering the RPC methods")?
        .into();
    let (stop_handle, server_handle) = stop_channel();
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
        // carries the peer's uid, is set per connection below.
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer(AuthLayer::new(
                    ctx.config.clone(),
                    crate::auth::env_secret_keys(),
                    own_uid().context("reading the daemon's own uid")?,
                ))
                .layer(WireLayer),
        )
        .to_service_builder();
    let json_layer = JsonLayer {
        max_request_bytes: limits.max_request_bytes,
    };

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
        cancel.clone(),
    ));
    tasks.spawn(apply_store_limits(ctx.clone(), cancel.clone()));

    let connections = Arc::new(Connections::default());
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
        let service = builder
            .clone()
            .set_http_middleware(
                tower::ServiceBuilder::new()
                    .layer(PeerLayer::new(peer))
                    .layer(json_layer),
            )
            .build(methods.clone(), stop_handle.clone());
        tasks.spawn(serve_connection(
            connections.add(stream),
            service,
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

/// Serves one connection: HTTP/1.1 with keep-alive and the WebSocket upgrade. On shutdown,
/// or when shed under pressure, the connection finishes the request in flight and then
/// closes. (A WebSocket leaves [`Connections`] once upgraded; jsonrpsee's own
/// `max_connections` bounds those.)
async fn serve_connection<S, B>(
    (stream, _registered): (Tracked, Registered),
    service: S,
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
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn, stopped);
    let result = tokio::select! {
        res = &mut conn => res,
        () = &mut stopped => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = activity.close.notified() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// How many connections to keep open at most: `limits.max_connections`, or fewer if the
/// open-files limit would run out first (e.g. systemd's default soft limit of 1024).
fn connection_cap(max_connections: u32) -> usize {
    let max = usize::try_from(max_connections).unwrap_or(usize::MAX);
    let Some(files) = open_files_limit() else {
        return max;
    };
    let cap = files.saturating_sub(RESERVED_FDS).max(1);
    if cap < max {
        tracing::info!(
            open_files_limit = files,
            connections = cap,
            "the open-files limit allows fewer connections than limits.max_connections"
        );
    }
    max.min(cap)
}

/// The soft limit on open files (`/proc/self/limits`), when it can be read and is finite.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The open HTTP connections, so that under pressure — `limits.max_connections` of them
/// open, or no file descriptor left to accept another — the least recently active can be
/// asked to close (gracefully: a call in flight finishes first). Idle connections never end
/// by themselves, so without this a crowd of them would lock every other client out; with
/// it a new client always gets in, at the expense of whoever has been quiet the longest.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    /// How many of `open` have been asked to close and are finishing.
    closing: AtomicUsize,
    next_id: AtomicU64,
    /// When shedding was last logged (ms, [`now_ms`]), to log it once per 10 s at most.
    warned_ms: AtomicU64,
}

/// When a connection last moved a byte, and how to ask it to close.
#[derive(Default)]
struct Activity {
    last_ms: AtomicU64,
    asked: AtomicBool,
    close: tokio::sync::Notify,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Milliseconds since the first call: a cheap, monotonic activity clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Connections {
    /// The open connections not asked to close.
    fn staying(&self) -> usize {
        let open = self.open.lock().map(|open| open.len()).unwrap_or(0);
        open.saturating_sub(self.closing.load(Ordering::Relaxed))
    }

    /// Registers an accepted connection, until the [`Registered`] is dropped.
    fn add(self: &Arc<Self>, stream: UnixStream) -> (Tracked, Registered) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        activity.touch();
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, Arc::clone(&activity));
        }
        let registered = Registered {
            registry: Arc::clone(self),
            id,
        };
        (Tracked { stream, activity }, registered)
    }

    /// Asks the `n` least recently active connections (not asked already) to close.
    fn shed(&self, n: usize) {
        let Ok(open) = self.open.lock() else { return };
        let mut quiet: Vec<(u64, &Arc<Activity>)> = open
            .values()
            .filter(|a| !a.asked.load(Ordering::Relaxed))
            .map(|a| (a.last_ms.load(Ordering::Relaxed), a))
            .collect();
        let n = n.min(quiet.len());
        if n == 0 {
            return;
        }
        quiet.select_nth_unstable_by_key(n - 1, |(last, _)| *last);
        for (_, activity) in &quiet[..n] {
            activity.asked.store(true, Ordering::Relaxed);
            activity.close.notify_one();
        }
        self.closing.fetch_add(n, Ordering::Relaxed);
        let now = now_ms();
        let warned = self.warned_ms.load(Ordering::Relaxed);
        if warned == 0 || now.saturating_sub(warned) >= 10_000 {
            self.warned_ms.store(now.max(1), Ordering::Relaxed);
            tracing::warn!(
                open = open.len(),
                "too many connections (limits.max_connections or the open-files limit): \
                 closing the least recently active ones"
            );
        }
    }
}

/// A connection's place in [`Connections`], given up on drop.
struct Registered {
    registry: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.registry.open.lock()
            && let Some(activity) = open.remove(&self.id)
            && activity.asked.load(Ordering::Relaxed)
        {
            self.registry.closing.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An accepted stream that records when it last moved a byte.
struct Tracked {
    stream: UnixStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
            .cache()
            .set_budget(cache_mb as usize * crate::store::MIB);
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

/// The reload check of `serve`: the user-token key of a new config must load.
pub fn check_user_token_key(
    config: &crate::config::Config,
) -> Result<(), crate::config::ConfigError> {
    crate::auth::Verifier::load(&config.settings.access)
        .map(drop)
        .map_err(|message| crate::config::ConfigError {
            file: crate::config::SETTINGS_FILE.to_string(),
            line: None,
            message,
        })
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
    let config = crate::config::ConfigHandle::load(options.config_dir.clone(), options.overrides)
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
    };
    let db = crate::store::Db::open_with(&settings.database, db_options)
        .with_context(|| format!("opening the database {}", settings.database.display()))?;
    // A user-token key that cannot be read is a start-up error, not a daemon that refuses
    // every token; on a reload it is an invalid edit, and the old config stays in force.
    crate::auth::Verifier::load(&settings.access).map_err(|e| anyhow::anyhow!("{e}"))?;
    config.set_check(check_user_token_key);
    let listener = bind(&settings.socket, settings.socket_mode)?;
    // The signal handlers are installed before the daemon says it is serving, so that a
    // signal sent as soon as it does never meets the default action (which ends the
    // process without a graceful stop). `run` listens for SIGHUP itself.
    let shutdown = shutdown_signal();
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tracing::info!(
        socket = %settings.socket.display(),
        database = %settings.database.display(),
        config = %options.config_dir.display(),
        schema_version = db.schema_version(),
        "prefsd is serving"
    );
    let ctx = Arc::new(Context::new(db.clone(), config));
    let result = run(listener, ctx, shutdown).await;
    if let Err(e) = std::fs::remove_file(&settings.socket) {
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
