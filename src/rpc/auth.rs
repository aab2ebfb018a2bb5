//! The access check as middleware: the one place where credentials are looked at.
//!
//! - [`PeerLayer`], an HTTP layer made per connection, puts the connection's [`Peer`] (its
//!   `SO_PEERCRED` uid, read once at accept) and the request's [`Credentials`] (from its
//!   headers) into the request extensions. jsonrpsee copies them into every call of the
//!   request; for a WebSocket, the upgrade request's extensions go with every call on it.
//!   A peer whose uid is refused at accept ([`AuthLayer::refusal`]) is not let upgrade: a
//!   WebSocket would outlive the bounds the server puts on a refused peer's connections.
//! - [`AuthLayer`], the RPC middleware, resolves the [`Caller`] from them (once per request;
//!   once per batch) and calls [`auth::authorize`] for each call before it is dispatched. A
//!   refused call is answered with the `unauthenticated` or `forbidden` error of rpc.md and
//!   runs nothing; the refusal is logged with the peer uid, the method and the reason, at
//!   most once per peer uid per second (`RefusalLog`). The calls of a tenant-scoped user
//!   token carry [`NoDefaultSet`] in their extensions.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use jsonrpsee::server::HttpBody;
use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, MethodResponse, Notification, Request, RpcServiceT,
};
use jsonrpsee::types::ErrorObjectOwned;

use crate::auth::{self, Caller, Credentials, Denied, NoDefaultSet, Peer, Policy, TokenPolicy};
use crate::config::{Config, ConfigHandle};
use crate::rpc::observe::CallerKind;
use crate::rpc::wire::Inner;

/// Per connection: tags every HTTP request with the peer and its credentials.
#[derive(Clone, Debug)]
pub struct PeerLayer {
    peer: Peer,
    refused: Option<Arc<Denied>>,
}

impl PeerLayer {
    /// `refused`: why the peer's uid may not use the socket, if it may not
    /// ([`AuthLayer::refusal`]).
    pub fn new(peer: Peer, refused: Option<Denied>) -> PeerLayer {
        PeerLayer {
            peer,
            refused: refused.map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for PeerLayer {
    type Service = PeerService<S>;
    fn layer(&self, inner: S) -> PeerService<S> {
        PeerService {
            inner,
            peer: self.peer,
            refused: self.refused.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PeerService<S> {
    inner: S,
    peer: Peer,
    refused: Option<Arc<Denied>>,
}

impl<S, B> tower::Service<http::Request<B>> for PeerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<HttpBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(denied) = &self.refused
            && req.headers().contains_key(http::header::UPGRADE)
        {
            let response = refused_upgrade(denied);
            return Box::pin(std::future::ready(Ok(response)));
        }
        let credentials = Credentials::from_headers(req.headers());
        req.extensions_mut().insert(self.peer);
        req.extensions_mut().insert(credentials);
        Box::pin(self.inner.call(req))
    }
}

/// The answer to a refused peer's upgrade request: 403 with the `unauthenticated` error its
/// calls would get.
fn refused_upgrade(denied: &Denied) -> http::Response<HttpBody> {
    let error = ErrorObjectOwned::from(crate::Error::from(denied.clone()));
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": null, "error": error }).to_string();
    let mut response = http::Response::new(HttpBody::from(body));
    *response.status_mut() = http::StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The RPC middleware that checks every call (see the module doc).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    config: ConfigHandle,
    env_keys: Vec<String>,
    daemon_uid: u32,
    /// The policy of the config in force, made again when the config changes (which reads
    /// the user-token key file again).
    cache: Mutex<Option<(Arc<Config>, Arc<Policy>)>>,
    refusals: RefusalLog,
}

/// How often a refusal is logged per peer uid at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Past this many peers in the log's table, the peers not refused in the last interval are
/// forgotten, so the table stays small whatever the peers do.
const REFUSAL_LOG_PEERS: usize = 1024;

/// Rate-limits the refusal lines: a refused client that retries in a loop would otherwise
/// write a line per call (30 MB in 5 s was measured) and fill the disk. One line per peer
/// uid per interval is logged; the refusals held back in between are counted, and the count
/// goes out with that peer's next line (`unlogged`).
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    peers: Mutex<HashMap<Option<u32>, Window>>,
}

#[derive(Debug)]
struct Window {
    logged: Instant,
    held_back: u64,
}

impl RefusalLog {
    /// `Some(refusals held back since the last line)` if this refusal of `peer` is to be
    /// logged, `None` if it is counted instead.
    pub(crate) fn admit(&self, peer: Option<u32>, now: Instant) -> Option<u64> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.len() >= REFUSAL_LOG_PEERS {
            peers.retain(|_, w| now.duration_since(w.logged) < REFUSAL_LOG_INTERVAL);
        }
        match peers.entry(peer) {
            Entry::Occupied(mut e) => {
                let window = e.get_mut();
                if now.duration_since(window.logged) < REFUSAL_LOG_INTERVAL {
                    window.held_back += 1;
                    return None;
                }
                let held_back = window.held_back;
                *window = Window {
                    logged: now,
                    held_back: 0,
                };
                Some(held_back)
            }
            Entry::Vacant(e) => {
                e.insert(Window {
                    logged: now,
                    held_back: 0,
                });
                Some(0)
            }
        }
    }
}

impl AuthLayer {
    /// `env_keys`: the secret keys of `PREFSD_SECRET_KEYS`; `daemon_uid`: the uid the daemon
    /// runs as (allowed, with root, when `access.allowed_uids` is empty).
    pub fn new(config: ConfigHandle, env_keys: Vec<String>, daemon_uid: u32) -> AuthLayer {
        let layer = AuthLayer {
            state: Arc::new(State {
                config,
                env_keys,
                daemon_uid,
                cache: Mutex::new(None),
                refusals: RefusalLog::default(),
            }),
        };
        let policy = layer.state.policy();
        if policy.require_credentials && !policy.has_secret_keys() {
            tracing::warn!(
                "access.require_credentials is on but there are no secret keys \
                 (access.secret_keys, PREFSD_SECRET_KEYS): every call will be refused"
            );
        }
        layer
    }
}

impl AuthLayer {
    /// Why `peer` may not use the socket at all under the config in force (its uid is not
    /// allowed, or unknown), or `None`. Checked at accept, so that the server can bound what
    /// refused peers hold; every call is still checked, since a reload can change the answer.
    pub fn refusal(&self, peer: Peer) -> Option<Denied> {
        let policy = self.state.policy();
        if peer
            .uid
            .is_some_and(|uid| policy.allows_uid(uid, self.state.daemon_uid))
        {
            return None;
        }
        auth::resolve(
            peer.uid,
            &Credentials::default(),
            &policy,
            self.state.daemon_uid,
            jiff::Timestamp::now(),
        )
        .err()
    }

    /// Logs, at most once a second per peer uid like the refused calls, that a refused peer's
    /// connection was closed at accept.
    pub fn log_closed_at_accept(&self, peer: Peer, denied: &Denied) {
        if let Some(unlogged) = self.state.refusals.admit(peer.uid, Instant::now()) {
            tracing::warn!(
                peer_uid = peer.uid,
                reason = %denied,
                unlogged,
                "connection closed at accept: too many connections from refused peers"
            );
        }
    }
}

impl State {
    fn policy(&self) -> Arc<Policy> {
        let config = self.config.current();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, policy)) = cache.as_ref()
            && Arc::ptr_eq(seen, &config)
        {
            return Arc::clone(policy);
        }
        let policy = Arc::new(Policy::load(&config.settings.access, &self.env_keys));
        if let TokenPolicy::Broken(reason) = &policy.user_tokens {
            tracing::error!(reason = %reason, "cannot load the user-token key: every user token is refused");
        }
        *cache = Some((config, Arc::clone(&policy)));
        policy
    }

    /// The caller of the request these extensions came with.
    fn resolve(&self, ext: &http::Extensions) -> (Option<u32>, Result<Caller, Denied>) {
        let peer = ext.get::<Peer>().and_then(|p| p.uid);
        let none = Credentials::default();
        let credentials = ext.get::<Credentials>().unwrap_or(&none);
        let policy = self.policy();
        let caller = auth::resolve(
            peer,
            credentials,
            &policy,
            self.daemon_uid,
            jiff::Timestamp::now(),
        );
        (peer, caller)
    }

    /// `Ok` or the logged refusal, for one call.
    fn check(
        &self,
        peer: Option<u32>,
        caller: &Result<Caller, Denied>,
        method: &str,
        params: Option<&str>,
    ) -> Result<(), ErrorObjectOwned> {
        let result = match caller {
            Ok(caller) => auth::authorize(caller, method, params),
            Err(denied) => Err(denied.clone()),
        };
        result.map_err(|denied| {
            self.log_refusal(peer, caller.as_ref().ok(), method, &denied);
            ErrorObjectOwned::from(crate::Error::from(denied))
        })
    }

    /// Logs a refused call (at most once a second per peer uid, see [`RefusalLog`]).
    fn log_refusal(
        &self,
        peer: Option<u32>,
        caller: Option<&Caller>,
        method: &str,
        denied: &Denied,
    ) {
        if let Some(unlogged) = self.refusals.admit(peer, Instant::now()) {
            let user = match caller {
                Some(Caller::User(u)) => Some(u.sub.as_str()),
                _ => None,
            };
            tracing::warn!(
                peer_uid = peer,
                method,
                user,
                reason = %denied,
                unlogged,
                "call refused"
            );
        }
    }
}

/// The same checks for the REST layer (rest.md §6), which calls `api` without jsonrpsee:
/// the caller from the request's credentials and the call's method and params, with the
/// same policy, decisions and refusal log as a JSON-RPC call.
impl AuthLayer {
    /// The caller of a REST request from socket peer `peer`, or on the TCP listener (`None`).
    /// Whether a Bearer is a public key (`pk_…` or one of `access.public_keys`).
    pub fn is_public_key(&self, key: &str) -> bool {
        self.state.policy().is_public_key(key)
    }

    pub fn rest_caller(
        &self,
        peer: Option<Peer>,
        credentials: &Credentials,
    ) -> Result<Caller, Denied> {
        let policy = self.state.policy();
        let now = jiff::Timestamp::now();
        let daemon_uid = self.state.daemon_uid;
        let result = match peer {
            Some(peer) => auth::resolve(peer.uid, credentials, &policy, daemon_uid, now),
            None => auth::resolve_tcp(credentials, &policy, daemon_uid, now),
        };
        if let Err(denied) = &result {
            let uid = peer.and_then(|p| p.uid);
            self.state.log_refusal(uid, None, "rest", denied);
        }
        result
    }

    /// Whether `caller` may call `method` with `params` (a JSON object as text).
    pub fn rest_authorize(
        &self,
        caller: &Caller,
        method: &str,
        params: &str,
    ) -> Result<(), Denied> {
        auth::authorize(caller, method, Some(params)).inspect_err(|denied| {
            let uid = match caller {
                Caller::Server { uid } => *uid,
                Caller::User(u) => u.uid,
            };
            self.state
                .log_refusal(Some(uid), Some(caller), method, denied);
        })
    }
}

/// Tells the handler who is calling, as the change log names it ([`Actor`]), and a
/// tenant-scoped token's call not to read the `default` set.
fn mark_scope(caller: &Result<Caller, Denied>, ext: &mut http::Extensions) {
    let Ok(caller) = caller else { return };
    if caller.tenant_scoped() {
        ext.insert(NoDefaultSet);
    }
    let none = Credentials::default();
    let actor = caller.actor(ext.get::<Credentials>().unwrap_or(&none));
    ext.insert(actor);
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    state: Arc<State>,
}

impl<S> RpcServiceT for Auth<S>
where
    S: Inner,
{
    type MethodResponse = MethodResponse;
    type BatchResponse = MethodResponse;
    type NotificationResponse = MethodResponse;

    fn call<'a>(&self, mut req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let (peer, caller) = self.state.resolve(req.extensions());
        mark_scope(&caller, req.extensions_mut());
        let verdict = self.state.check(
            peer,
            &caller,
            req.method_name(),
            req.params.as_ref().map(|p| p.get()),
        );
        let kind = CallerKind(match (&caller, &verdict) {
            (_, Err(_)) | (Err(_), _) => "refused",
            (Ok(Caller::Server { .. }), Ok(())) => "server",
            (Ok(Caller::User(_)), Ok(())) => "user",
        });
        let inner = self.inner.clone();
        async move {
            let mut response = match verdict {
                Ok(()) => inner.call(req).await,
                Err(error) => MethodResponse::error(req.id, error),
            };
            response.extensions_mut().insert(kind);
            response
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let (peer, caller) = self.state.resolve(batch.extensions());
        let mut notifications = false;
        let entries: Vec<_> = batch
            .into_iter()
            .filter_map(|entry| match entry {
                Ok(BatchEntry::Call(mut req)) => {
                    mark_scope(&caller, req.extensions_mut());
                    let params = req.params.as_ref().map(|p| p.get());
                    match self.state.check(peer, &caller, req.method_name(), params) {
                        Ok(()) => Some(Ok(BatchEntry::Call(req))),
                        Err(error) => Some(Err(BatchEntryErr::new(req.id, error))),
                    }
                }
                Ok(BatchEntry::Notification(mut n)) => {
                    notifications = true;
                    mark_scope(&caller, n.extensions_mut());
                    let params = n.params.as_ref().map(|p| p.get());
                    self.state
                        .check(peer, &caller, n.method_name(), params)
                        .ok()
                        .map(|()| Ok(BatchEntry::Notification(n)))
                }
                Err(e) => Some(Err(e)),
            })
            .collect();
        let inner = self.inner.clone();
        async move {
            if entries.is_empty() && notifications {
                // Only refused notifications: nothing to run and nothing to answer.
                return MethodResponse::notification();
            }
            inner.batch(Batch::from(entries)).await
        }
    }

    fn notification<'a>(
        &self,
        mut n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let (peer, caller) = self.state.resolve(n.extensions());
        mark_scope(&caller, n.extensions_mut());
        let params = n.params.as_ref().map(|p| p.get());
        let allowed = self
            .state
            .check(peer, &caller, n.method_name(), params)
            .is_ok();
        let inner = self.inner.clone();
        async move {
            if allowed {
                inner.notification(n).await
            } else {
                MethodResponse::notification()
            }
        }
    }
}
