//! An in-process daemon on a temp socket, and the clients the tests talk to it with.
//!
//! [`Daemon::start`] binds the socket *before* spawning `server::run` (mini-redis), so a
//! test can connect as soon as `start` returns: no test sleeps or polls for the server to
//! come up. Each daemon has its own temp directory holding its config directory, its
//! database and its socket; nothing is shared between tests.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prefsd::api::Context;
use prefsd::config::{ConfigHandle, Overrides};
use prefsd::store::Db;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any bounded wait of a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `prefsd.toml` of the test config: fast commits (nothing here tests power loss), workflow
/// keys outside the catalog allowed (most tests evaluate a workflow of their own, `w`) and
/// a `vars` table for conditions. Everything else has its built-in default.
pub const PREFSD_TOML: &str = r#"durability = "normal"
strict_workflows = false

[vars]
region = "eu"
"#;

/// The environment default: sms is off for everyone unless they say otherwise.
pub const ENVIRONMENT_JSON: &str = r#"{
  "channel_types": { "email": true, "sms": false },
  "commercial_subscribed": true
}"#;

/// The tenant template of `acme`: no marketing in that workspace.
pub const ACME_JSON: &str = r#"{ "categories": { "marketing": false } }"#;

/// The workflow catalog of the test config.
pub const WORKFLOWS_TOML: &str = r#"[[workflow]]
key = "new-comment"
categories = ["collaboration"]
channels = [{ type = "email" }, { type = "in_app_feed" }]

[[workflow]]
key = "newsletter"
categories = ["marketing"]
commercial = true
channels = [{ type = "email" }]

[[workflow]]
key = "security-alert"
categories = ["account"]
override_preferences = true
channels = [{ type = "email" }, { type = "sms" }]

[[workflow]]
key = "digest"
categories = ["digest"]
"#;

/// `prefsd.toml` with small limits, for the limit tests (workflow keys as in [`PREFSD_TOML`]).
pub const SMALL_LIMITS_TOML: &str = r#"durability = "normal"
strict_workflows = false

[limits]
max_request_bytes = 65536
max_preference_set_bytes = 2048
"#;

/// The files of the test config directory, relative to it.
pub fn default_files() -> Vec<(String, String)> {
    [
        ("prefsd.toml", PREFSD_TOML),
        ("environment.json", ENVIRONMENT_JSON),
        ("tenants/acme.json", ACME_JSON),
        ("workflows.toml", WORKFLOWS_TOML),
    ]
    .into_iter()
    .map(|(path, content)| (path.to_string(), content.to_string()))
    .collect()
}

/// The test config's files with `files` (relative path, contents) written over them.
pub fn files_with(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = default_files();
    for (path, content) in files {
        all.retain(|(p, _)| p != path);
        all.push((path.to_string(), content.to_string()));
    }
    all
}

/// Writes config files into `dir` (creating subdirectories).
pub fn write_files(dir: &Path, files: &[(String, String)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a config file has a parent directory"))
            .expect("creating the config directory");
        std::fs::write(&path, content).expect("writing a config file");
    }
}

/// A daemon serving on a temp socket, from the test's tokio runtime.
pub struct Daemon {
    /// Holds the config directory, the database and the socket; removed on drop.
    pub dir: TempDir,
    pub config_dir: PathBuf,
    pub socket: PathBuf,
    pub database: PathBuf,
    /// The REST TCP listener's address, for a daemon started with one.
    pub tcp: Option<std::net::SocketAddr>,
    /// The PostgreSQL store of this daemon when the suite runs on PostgreSQL
    /// ([`pg_backend`]): a schema of its own.
    pub pg: Option<prefsd::store::PgOptions>,
    running: Option<Running>,
}

/// The PostgreSQL server the tests may use (`PREFSD_TEST_PG`, a libpq connection string),
/// or `None`. With `PREFSD_REQUIRE_PG=1` (CI) a missing one is a failure, not a skip: a
/// silent skip would hide a broken install.
pub fn test_pg() -> Option<String> {
    let url = std::env::var("PREFSD_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() && std::env::var("PREFSD_REQUIRE_PG").is_ok_and(|v| v == "1") {
        panic!("PREFSD_REQUIRE_PG=1 but PREFSD_TEST_PG is not set");
    }
    url
}

/// The PostgreSQL of the fleet tests (several daemons, a cluster of a test's own): as
/// [`test_pg`], but not in the rerun of the suite with every daemon on PostgreSQL
/// (`PREFSD_TEST_BACKEND=postgres`), where they would only run a second time.
pub fn fleet_pg() -> Option<String> {
    if !on_sqlite() {
        return None;
    }
    test_pg()
}

/// A fresh schema name for one test's store.
pub fn fresh_schema() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// Whether the whole suite runs its daemons on PostgreSQL (`PREFSD_TEST_BACKEND=postgres`,
/// with `PREFSD_TEST_PG`): the same tests, the other backend.
pub fn pg_backend() -> Option<prefsd::store::PgOptions> {
    if std::env::var("PREFSD_TEST_BACKEND").ok()? != "postgres" {
        return None;
    }
    let url = test_pg().expect("PREFSD_TEST_BACKEND=postgres needs PREFSD_TEST_PG");
    Some(prefsd::store::PgOptions {
        url,
        schema: fresh_schema(),
    })
}

/// True when the daemons of this run are on SQLite: a test of what only the SQLite file
/// has (its backups, its lock, its file on disk) returns early otherwise.
pub fn on_sqlite() -> bool {
    std::env::var("PREFSD_TEST_BACKEND").map_or(true, |b| b != "postgres")
}

struct Running {
    cancel: CancellationToken,
    join: JoinHandle<anyhow::Result<()>>,
    db: Db,
    jobs: prefsd::jobs::Jobs,
    ctx: Arc<Context>,
}

impl Daemon {
    /// A daemon on the test config ([`default_files`]) and a fresh database.
    pub async fn start() -> Daemon {
        Daemon::start_with(&[]).await
    }

    /// A daemon on the test config with `files` (relative path, contents) written over it.
    pub async fn start_with(files: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(files, false).await
    }

    /// [`Daemon::start_with`], with the REST TCP listener on a free loopback port.
    pub async fn start_with_tcp(files: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(files, true).await
    }

    /// A daemon on the test config, on PostgreSQL in the schema `pg` names (several
    /// daemons on one schema make a fleet).
    pub async fn start_on_pg(pg: prefsd::store::PgOptions, files: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::unlaunched(files, false);
        daemon.pg = Some(pg);
        daemon.launch();
        daemon
    }

    async fn start_on(files: &[(&str, &str)], tcp: bool) -> Daemon {
        let mut daemon = Daemon::unlaunched(files, tcp);
        daemon.launch();
        daemon
    }

    fn unlaunched(files: &[(&str, &str)], tcp: bool) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("prefsd-it")
            .tempdir()
            .expect("creating a temp dir");
        let config_dir = dir.path().join("config");
        write_files(&config_dir, &files_with(files));
        Daemon {
            socket: dir.path().join("daemon.sock"),
            database: dir.path().join("prefsd.db"),
            config_dir,
            dir,
            tcp: tcp.then(|| "127.0.0.1:0".parse().expect("an address")),
            pg: pg_backend(),
            running: None,
        }
    }

    /// Loads the config, opens the database, binds the socket, then spawns `server::run`.
    fn launch(&mut self) {
        let overrides = Overrides {
            socket: Some(self.socket.clone()),
            database: Some(self.database.clone()),
            database_url: None,
            schema: None,
        };
        let config = ConfigHandle::load(self.config_dir.clone(), overrides, None)
            .unwrap_or_else(|errors| panic!("the test config is invalid: {errors:?}"));
        let settings = config.current().settings.clone();
        let options = prefsd::store::Options {
            durability: settings.durability,
            max_database_mb: settings.limits.max_database_mb,
            read_cache_mb: settings.limits.read_cache_mb,
            max_staleness_ms: settings.store.max_staleness_ms,
            skip_change_log: false,
        };
        let db = match &self.pg {
            None => Db::open_with(&self.database, options).expect("opening the database"),
            Some(pg) => {
                // The PostgreSQL client runs a runtime of its own, which cannot start on
                // this runtime's thread.
                let location = prefsd::store::Location::Postgres(pg.clone());
                std::thread::spawn(move || Db::open_at(&location, options))
                    .join()
                    .expect("opening PostgreSQL did not panic")
                    .expect("opening the PostgreSQL store")
            }
        };
        let listener =
            prefsd::server::bind(&self.socket, settings.socket_mode).expect("binding the socket");
        // Bound before the server runs, like the socket; a restart binds the same port.
        let tcp = self.tcp.map(|addr| {
            let listener = std::net::TcpListener::bind(addr).expect("binding the TCP listener");
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener");
            self.tcp = Some(listener.local_addr().expect("its address"));
            tokio::net::TcpListener::from_std(listener).expect("a tokio listener")
        });
        let ctx = Arc::new(Context::new(db.clone(), config));
        let jobs = ctx.jobs.clone();
        let cancel = CancellationToken::new();
        let join = tokio::spawn(prefsd::server::run_with_tcp(
            listener,
            tcp,
            Arc::clone(&ctx),
            cancel.clone().cancelled_owned(),
        ));
        self.running = Some(Running {
            cancel,
            join,
            db,
            jobs,
            ctx,
        });
    }

    /// The bulk worker's handle, to hold it between chunks (`Jobs::hold`).
    pub fn jobs(&self) -> &prefsd::jobs::Jobs {
        &self.running.as_ref().expect("the daemon is running").jobs
    }

    /// The daemon's own `api` context, to call an `api` function that has no JSON-RPC
    /// method (the REST layer's operations) on the daemon's store and cache.
    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.running.as_ref().expect("the daemon is running").ctx)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        if let Some(running) = &self.running {
            running.cancel.cancel();
        }
    }

    /// Shuts down and waits until `run` has returned (it must return `Ok`) and the database
    /// is closed.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.cancel.cancel();
        let result = tokio::time::timeout(TIMEOUT, running.join)
            .await
            .expect("server::run returns within the timeout after shutdown")
            .expect("the server task did not panic");
        result.expect("server::run returns Ok after a graceful shutdown");
        let db = running.db;
        tokio::task::spawn_blocking(move || db.close())
            .await
            .expect("closing the database");
    }

    /// Stops, then starts again on the same config directory, database and socket path.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch();
    }

    /// A WebSocket JSON-RPC client (the CLI's).
    pub async fn ws(&self) -> prefsd::client::Client {
        prefsd::client::Client::connect(&self.socket)
            .await
            .expect("connecting the WebSocket client")
    }

    /// A raw HTTP/1.1 connection.
    pub async fn http(&self) -> HttpConn {
        HttpConn::connect(&self.socket).await
    }

    /// A raw HTTP/1.1 connection to the REST TCP listener.
    pub async fn tcp(&self) -> HttpConn {
        HttpConn::connect_tcp(
            self.tcp
                .expect("the daemon was started with a TCP listener"),
        )
        .await
    }

    /// A raw WebSocket, upgraded and ready for frames.
    pub async fn raw_ws(&self) -> RawWs {
        RawWs::connect(&self.socket).await
    }

    /// Calls a method over HTTP; `Value::Null` params are omitted.
    pub async fn try_call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let mut request = json!({ "jsonrpc": "2.0", "id": 1, "method": method });
        if !params.is_null() {
            request["params"] = params;
        }
        let response = self.http().await.post_json(request.to_string()).await;
        let body = response.json.unwrap_or_else(|| {
            panic!(
                "{method}: the response is not JSON: {:?}",
                String::from_utf8_lossy(&response.body)
            )
        });
        RpcError::split(body)
    }

    /// Calls a method that must succeed, and returns its result.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(result) => result,
            Err(e) => panic!("{method} failed: {e:?}"),
        }
    }

    /// Calls a method that must fail, and returns its error.
    pub async fn call_err(&self, method: &str, params: Value) -> RpcError {
        match self.try_call(method, params).await {
            Ok(result) => panic!("{method} succeeded with {result}; expected an error"),
            Err(e) => e,
        }
    }

    /// `daemon.status.counts`.
    pub async fn counts(&self) -> Value {
        self.call("daemon.status", Value::Null).await["counts"].clone()
    }

    /// Fails the test unless the daemon still answers `daemon.ping`.
    pub async fn assert_alive(&self) {
        assert_eq!(self.call("daemon.ping", Value::Null).await, json!("pong"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.cancel.cancel();
        }
    }
}

/// A JSON-RPC error object, with its `data`.
#[derive(Clone, Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Value,
}

impl RpcError {
    /// Splits a response object into its result or its error.
    pub fn split(response: Value) -> Result<Value, RpcError> {
        assert_eq!(
            response["jsonrpc"], "2.0",
            "not a JSON-RPC 2.0 response: {response}"
        );
        if let Some(error) = response.get("error") {
            assert!(
                response.get("result").is_none(),
                "a response with both result and error: {response}"
            );
            return Err(RpcError::from_object(error));
        }
        Ok(response
            .get("result")
            .unwrap_or_else(|| panic!("a response with neither result nor error: {response}"))
            .clone())
    }

    pub fn from_object(error: &Value) -> RpcError {
        RpcError {
            code: error["code"]
                .as_i64()
                .unwrap_or_else(|| panic!("an error without a numeric code: {error}")),
            message: error["message"]
                .as_str()
                .unwrap_or_else(|| panic!("an error without a message: {error}"))
                .to_string(),
            data: error.get("data").cloned().unwrap_or(Value::Null),
        }
    }

    /// `data.type`.
    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }

    /// The `field` of every item of `data.errors`.
    pub fn fields(&self) -> Vec<String> {
        self.data["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["field"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Asserts the code and `data.type` (and that the message is a non-empty sentence).
    #[track_caller]
    pub fn assert(&self, code: i64, kind: &str) {
        assert_eq!(
            (self.code, self.kind()),
            (code, kind),
            "unexpected error: {self:?}"
        );
        assert!(!self.message.is_empty(), "an error without a message");
    }

    /// Asserts an `invalid_params` error naming `field`.
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) {
        self.assert(-32602, "invalid_params");
        assert!(
            self.fields().iter().any(|f| f == field),
            "expected data.errors to name {field:?}: {self:?}"
        );
    }
}

/// An HTTP response: status, headers, body, and the body as JSON when it is JSON.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub json: Option<Value>,
}

impl HttpResponse {
    /// The body, which must be one JSON-RPC response, split into result or error.
    pub fn rpc(&self) -> Result<Value, RpcError> {
        let json = self.json.clone().unwrap_or_else(|| {
            panic!("not a JSON body: {:?}", String::from_utf8_lossy(&self.body))
        });
        RpcError::split(json)
    }
}

/// One HTTP/1.1 keep-alive connection over the Unix socket (hyper's client, as curl would
/// talk): the one HTTP client of the tests. The `try_` methods report a failure as an
/// error, for the tests whose daemon may be killed under them; the others panic.
pub struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl HttpConn {
    pub async fn connect(socket: &Path) -> HttpConn {
        HttpConn::try_connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to the daemon socket: {e}"))
    }

    pub async fn try_connect(socket: &Path) -> Result<HttpConn, String> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        HttpConn::over(stream).await
    }

    /// A connection to the REST TCP listener at `addr`.
    pub async fn connect_tcp(addr: std::net::SocketAddr) -> HttpConn {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        HttpConn::over(stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn over<S>(stream: S) -> Result<HttpConn, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn { sender })
    }

    /// Sends one request to `/` and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        self.try_send(method, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`HttpConn::send`], with a failure (no response within [`TIMEOUT`], a closed
    /// connection) as an error.
    pub async fn try_send(
        &mut self,
        method: Method,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        self.try_request(method, "/", body, headers).await
    }

    /// Sends one request to `uri` (a path with its query, sent as written) and reads the
    /// whole response.
    pub async fn request(
        &mut self,
        method: Method,
        uri: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        self.try_request(method, uri, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET path` (the operators' endpoints: `/healthz`, `/readyz`, `/metrics`).
    pub async fn get(&mut self, path: &str) -> HttpResponse {
        self.try_request(Method::GET, path, Bytes::new(), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`HttpConn::request`], with a failure as an error.
    pub async fn try_request(
        &mut self,
        method: Method,
        uri: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("the connection is not ready for another request: {e}"))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .expect("a valid request");
        let response = tokio::time::timeout(TIMEOUT, self.sender.send_request(request))
            .await
            .map_err(|_| "no response within the timeout".to_string())?
            .map_err(|e| format!("send: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(TIMEOUT, body.collect())
            .await
            .map_err(|_| "no body within the timeout".to_string())?
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let json = serde_json::from_slice(&body).ok();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            json,
        })
    }

    /// `POST /` with the given headers.
    pub async fn post(&mut self, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> HttpResponse {
        self.send(Method::POST, body, headers).await
    }

    /// `POST /` with `content-type: application/json`.
    pub async fn post_json(&mut self, body: impl Into<Bytes>) -> HttpResponse {
        self.post(body, &[("content-type", "application/json")])
            .await
    }

    /// One JSON-RPC call: `Err(transport failure)`, or the call's result or error.
    pub async fn try_call(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, RpcError>, String> {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let response = self
            .try_send(
                Method::POST,
                body.to_string(),
                &[("content-type", "application/json")],
            )
            .await?;
        let json = response.json.ok_or_else(|| {
            format!(
                "status {}: not JSON: {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )
        })?;
        Ok(RpcError::split(json))
    }
}

/// One call on a fresh connection.
pub async fn try_rpc(
    socket: &Path,
    method: &str,
    params: Value,
) -> Result<Result<Value, RpcError>, String> {
    HttpConn::try_connect(socket)
        .await?
        .try_call(method, params)
        .await
}

/// Awaits futures concurrently, without spawning them; their outputs in order.
pub async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

/// Polls `check` until it returns `Some`, failing the test after [`TIMEOUT`]. For state that
/// has no notification to wait on; `what` names it in the failure.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that `value` is an RFC 3339 UTC timestamp, and returns it parsed.
#[track_caller]
pub fn timestamp(value: &Value) -> jiff::Timestamp {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp string: {value}"));
    assert!(text.ends_with('Z'), "not a UTC timestamp: {text}");
    text.parse()
        .unwrap_or_else(|e| panic!("not an RFC 3339 timestamp: {text}: {e}"))
}

/// The response shape of a PreferenceSet: `__typename`, `id` and the five sections (null
/// when empty), with the sections given in `sections` and the others null.
pub fn preference_set(id: &str, sections: Value) -> Value {
    let mut out = json!({
        "__typename": "PreferenceSet",
        "id": id,
        "workflows": null,
        "categories": null,
        "channel_types": null,
        "channels": null,
        "commercial_subscribed": null,
    });
    for (key, value) in sections.as_object().expect("sections is an object") {
        assert!(out.get(key).is_some(), "not a PreferenceSet section: {key}");
        out[key] = value.clone();
    }
    out
}

/// A WebSocket spoken frame by frame, for what a well-behaved client never sends.
pub struct RawWs {
    stream: UnixStream,
    /// Bytes read past the handshake's answer.
    buffer: Vec<u8>,
}

/// A frame from the daemon: its opcode and payload.
pub type WsFrame = (u8, Vec<u8>);

impl RawWs {
    pub async fn connect(socket: &Path) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = UnixStream::connect(socket).await.expect("connecting");
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                  sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
            .await
            .expect("sending the upgrade");
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("the upgrade answered in time")
                .expect("reading the upgrade's answer");
            assert!(n > 0, "closed during the upgrade: {buffer:?}");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "the accept key of RFC 6455's example: {head}"
        );
        buffer.drain(..end);
        RawWs { stream, buffer }
    }

    /// Sends one frame, FIN set; `masked` as a client must (RFC 6455 §5.1), or not.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        let bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(bit | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The daemon may close as soon as it has read a header it refuses.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a text message in one masked frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes(), true).await;
    }

    /// The next frame, or `None` once the daemon has closed the connection.
    pub async fn recv(&mut self) -> Option<WsFrame> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((frame, used)) = server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("a frame or the end of the connection in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Fails the test unless the connection still answers `daemon.ping`.
    pub async fn assert_serving(&mut self) {
        self.send_text(r#"{"jsonrpc":"2.0","id":"ping","method":"daemon.ping"}"#)
            .await;
        assert_eq!(self.recv_json().await["result"], "pong");
    }

    /// The next text message, as JSON.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Some((0x1, text)) => serde_json::from_slice(&text).expect("a JSON message"),
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// An unmasked frame from the start of `bytes` and its length, if it is all there.
fn server_frame(bytes: &[u8]) -> Option<(WsFrame, usize)> {
    let opcode = bytes.first()? & 0x0F;
    let (len, at) = match bytes.get(1)? & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = bytes.get(at..at + len)?;
    Some(((opcode, payload.to_vec()), at + len))
}
