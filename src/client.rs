//! The client side of the protocol, shared by the CLI (`cli`) and the load generator
//! (`bench`): which socket to talk to, the credential headers, and a JSON-RPC client over
//! a WebSocket on the Unix socket (so the same client can follow subscriptions). It knows
//! the wire protocol and nothing of the daemon's insides.

use std::path::{Path, PathBuf};

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
}

impl Client {
    /// Connects over the Unix socket and upgrades to a WebSocket, with the credentials of
    /// the environment (`PREFSD_SECRET_KEY`, `PREFSD_USER_TOKEN`; see [`client_headers`]).
    pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
        let headers = client_headers_from_env().map_err(anyhow::Error::msg)?;
        Client::connect_with_headers(socket, headers).await
    }

    /// Connects with these headers on the WebSocket upgrade request (credentials apply to
    /// every call on the connection).
    pub async fn connect_with_headers(
        socket: &Path,
        headers: http::HeaderMap,
    ) -> anyhow::Result<Client> {
        let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot connect to the daemon at {}; is `prefsd serve` running? (set --socket or PREFSD_SOCKET)",
                socket.display()
            )
        })?;
        let url = url::Url::parse("ws://localhost/").context("the WebSocket URL")?;
        let (tx, rx) = jsonrpsee::client_transport::ws::WsTransportClientBuilder::default()
            .max_request_size(u32::MAX)
            .max_response_size(u32::MAX)
            .set_headers(headers)
            .build_with_stream(url, stream)
            .await
            .context("WebSocket handshake with the daemon")?;
        let inner = jsonrpsee::core::client::ClientBuilder::default()
            .request_timeout(std::time::Duration::from_secs(300))
            .build_with_tokio(tx, rx);
        Ok(Client { inner })
    }

    /// Calls a method with params given as a JSON value (an object, or null for none).
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let raw = if params.is_null() {
            None
        } else {
            Some(serde_json::value::to_raw_value(&params)?)
        };
        Ok(self.inner.request(method, RawParams(raw)).await?)
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
