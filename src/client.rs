//! The client side of the protocol, shared by the CLI (`cli`) and the load generator
//! (`bench`): which socket to talk to, the credential headers, and a JSON-RPC client over
//! a WebSocket on the Unix socket (so the same client can follow subscriptions). It knows
//! the wire protocol and nothing of the daemon's insides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::traits::ToRpcParams;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The command ran and its answer was "no": a bulk job that ended with errors or failed,
/// a benchmark whose calls failed. Like an error answer from the daemon, it exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The daemon at `socket` took longer than `timeout`, and what to do about it.
fn not_answering(socket: &Path, timeout: Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "the daemon at {} did not answer within {timeout:?}; it may be busy or stuck: check its log and `prefsd status`, or allow longer with --timeout",
        socket.display()
    )
}

/// Why a connection to `socket` failed, and what to do about it.
fn connect_error(socket: &Path, e: &std::io::Error) -> anyhow::Error {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        let owner = std::fs::metadata(socket)
            .map(|m| {
                format!(
                    " (mode {:04o}, owner uid {}, you are uid {})",
                    m.permissions().mode() & 0o7777,
                    m.uid(),
                    // /proc/self belongs to this process's uid: getuid without `unsafe`.
                    std::fs::metadata("/proc/self").map_or(0, |p| p.uid())
                )
            })
            .unwrap_or_default();
        return anyhow::anyhow!(
            "permission denied on the daemon's socket {}{owner}; the daemon's `socket_mode` and `access.allowed_uids` in prefsd.toml decide who may connect",
            socket.display()
        );
    }
    anyhow::anyhow!(
        "cannot connect to the daemon at {}: {e}; is `prefsd serve` running? (set --socket or PREFSD_SOCKET)",
        socket.display()
    )
}

/// The socket to talk to: --socket or PREFSD_SOCKET, else the config's, else the default.
pub fn socket_path(cli_socket: Option<&Path>, config_dir: &Path) -> PathBuf {
    if let Some(path) = cli_socket {
        return path.to_path_buf();
    }
    crate::config::load_dir(config_dir)
        .map(|c| c.settings.socket)
        .unwrap_or_else(|_| crate::config::Settings::default().socket)
}

/// Raw params: a JSON object text, passed through as is.
pub struct RawParams(pub Option<Box<RawValue>>);

impl ToRpcParams for RawParams {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        Ok(self.0)
    }
}

/// A connected client.
pub struct Client {
    inner: jsonrpsee::core::client::Client,
    socket: PathBuf,
    timeout: Duration,
}

/// How long a call may take before the client gives up on it, unless told otherwise
/// (`prefsd --timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Connects over the Unix socket and upgrades to a WebSocket, with the credentials of
    /// the environment (`PREFSD_SECRET_KEY`, `PREFSD_USER_TOKEN`; see [`client_headers`])
    /// and [`DEFAULT_TIMEOUT`] for each call.
    pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
        Client::connect_timeout(socket, DEFAULT_TIMEOUT).await
    }

    /// [`Client::connect`] with `timeout` for each call, and for the connection itself.
    pub async fn connect_timeout(socket: &Path, timeout: Duration) -> anyhow::Result<Client> {
        let headers = client_headers_from_env().map_err(anyhow::Error::msg)?;
        Client::connect_with(socket, headers, timeout).await
    }

    /// Connects with these headers on the WebSocket upgrade request (credentials apply to
    /// every call on the connection) and [`DEFAULT_TIMEOUT`].
    pub async fn connect_with_headers(
        socket: &Path,
        headers: http::HeaderMap,
    ) -> anyhow::Result<Client> {
        Client::connect_with(socket, headers, DEFAULT_TIMEOUT).await
    }

    async fn connect_with(
        socket: &Path,
        headers: http::HeaderMap,
        timeout: Duration,
    ) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(socket))
            .await
            .map_err(|_| not_answering(socket, timeout))?
            .map_err(|e| connect_error(socket, &e))?;
        let url = url::Url::parse("ws://localhost/").context("the WebSocket URL")?;
        let handshake = jsonrpsee::client_transport::ws::WsTransportClientBuilder::default()
            .max_request_size(u32::MAX)
            .max_response_size(u32::MAX)
            .set_headers(headers)
            .build_with_stream(url, stream);
        let (tx, rx) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| not_answering(socket, timeout))?
            .context("WebSocket handshake with the daemon")?;
        let inner = jsonrpsee::core::client::ClientBuilder::default()
            .request_timeout(timeout)
            .build_with_tokio(tx, rx);
        Ok(Client {
            inner,
            socket: socket.to_path_buf(),
            timeout,
        })
    }

    /// Calls a method with params given as a JSON value (an object, or null for none).
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let raw = if params.is_null() {
            None
        } else {
            Some(serde_json::value::to_raw_value(&params)?)
        };
        match self.inner.request(method, RawParams(raw)).await {
            Err(jsonrpsee::core::client::Error::RequestTimeout) => {
                Err(not_answering(&self.socket, self.timeout))
            }
            result => Ok(result?),
        }
    }
}

impl Client {
    /// Follows a bulk operation: its state now (unless already over), then every change
    /// until the terminal one.
    pub async fn follow_bulk(
        &self,
        id: &str,
    ) -> anyhow::Result<jsonrpsee::core::client::Subscription<Value>> {
        use jsonrpsee::core::client::SubscriptionClientT;
        let params = serde_json::value::to_raw_value(&json!({ "id": id }))?;
        Ok(self
            .inner
            .subscribe::<Value, _>(
                "bulkOperations.subscribe",
                RawParams(Some(params)),
                "bulkOperations.unsubscribe",
            )
            .await?)
    }
}

impl Client {
    /// Follows the change log: every change after `after` (by default the newest), then
    /// each one as it commits. A subscriber that falls behind gets an error and resumes
    /// with `after` = the last `seq` it processed.
    pub async fn subscribe_changes(
        &self,
        after: Option<i64>,
    ) -> anyhow::Result<jsonrpsee::core::client::Subscription<Value>> {
        use jsonrpsee::core::client::SubscriptionClientT;
        let params = match after {
            Some(after) => json!({ "after": after }),
            None => json!({}),
        };
        let params = serde_json::value::to_raw_value(&params)?;
        Ok(self
            .inner
            .subscribe::<Value, _>(
                "changes.subscribe",
                RawParams(Some(params)),
                "changes.unsubscribe",
            )
            .await?)
    }
}

/// One message of `daemon.export`: lines of the export, and on the last `done` (with the
/// count of lines) or `error`.
#[derive(Debug, serde::Deserialize)]
pub struct ExportMessage {
    pub lines: Vec<Box<RawValue>>,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub count: u64,
    pub error: Option<String>,
}

impl Client {
    /// Starts an export of the daemon's store (`daemon.export`).
    pub async fn export(
        &self,
    ) -> anyhow::Result<jsonrpsee::core::client::Subscription<ExportMessage>> {
        use jsonrpsee::core::client::SubscriptionClientT;
        Ok(self
            .inner
            .subscribe::<ExportMessage, _>("daemon.export", RawParams(None), "daemon.exportCancel")
            .await?)
    }
}

/// The environment variables a client (the CLI) takes its credentials from.
pub const CLIENT_SECRET_KEY_ENV: &str = "PREFSD_SECRET_KEY";
pub const CLIENT_USER_TOKEN_ENV: &str = "PREFSD_USER_TOKEN";

/// The credential headers a client sends: `Authorization: Bearer <secret_key>` and
/// `X-User-Token: <user_token>`, each when given.
pub fn client_headers(
    secret_key: Option<&str>,
    user_token: Option<&str>,
) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    if let Some(key) = secret_key.map(str::trim).filter(|k| !k.is_empty()) {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "the secret key is not a valid header value".to_string())?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    if let Some(token) = user_token.map(str::trim).filter(|t| !t.is_empty()) {
        let mut value = http::HeaderValue::from_str(token)
            .map_err(|_| "the user token is not a valid header value".to_string())?;
        value.set_sensitive(true);
        headers.insert(crate::auth::USER_TOKEN_HEADERS[0], value);
    }
    Ok(headers)
}

/// [`client_headers`] from `PREFSD_SECRET_KEY` (else the first key of `PREFSD_SECRET_KEYS`)
/// and `PREFSD_USER_TOKEN`.
pub fn client_headers_from_env() -> Result<http::HeaderMap, String> {
    let key = std::env::var(CLIENT_SECRET_KEY_ENV)
        .ok()
        .or_else(|| crate::auth::env_secret_keys().into_iter().next());
    let token = std::env::var(CLIENT_USER_TOKEN_ENV).ok();
    client_headers(key.as_deref(), token.as_deref())
}

/// Progress of a long client-side operation (`bulk set --follow`, `bench seed`): on a
/// terminal, one indicatif bar with rate and ETA; otherwise (a CI log, a file) a plain line
/// every few seconds, so a log shows that work goes on without filling up with redraws.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    unit: &'static str,
    total: u64,
    position: u64,
    started: std::time::Instant,
    last_line: std::time::Instant,
}

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress towards `total` items named `unit` (e.g. "users").
    pub fn new(total: u64, unit: &'static str) -> Progress {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let template = format!(
                "{{msg:10}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})"
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        });
        let now = std::time::Instant::now();
        Progress {
            bar,
            unit,
            total,
            position: 0,
            started: now,
            last_line: now,
        }
    }

    /// The items done so far, and what is happening (e.g. the job's status).
    pub fn set(&mut self, position: u64, message: &str) {
        self.position = position;
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.set_message(message.to_string());
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = std::time::Instant::now();
                eprintln!("{}", self.line(message));
            }
            None => {}
        }
    }

    /// Adds `more` items to the total (work found as it goes, e.g. jobs submitted while
    /// earlier ones run).
    pub fn add_to_total(&mut self, more: u64) {
        self.total += more;
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
        }
    }

    /// Clears the bar (the caller prints its own summary).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }

    fn line(&self, message: &str) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            self.position as f64 / seconds
        } else {
            0.0
        };
        format!(
            "{message}: {}/{} {} ({rate:.0}/s, {seconds:.0}s)",
            self.position, self.total, self.unit
        )
    }
}
