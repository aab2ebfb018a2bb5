//! The access check as middleware: the one place where credentials are looked at.
//!
//! - [`PeerLayer`], an HTTP layer made per connection, puts the connection's [`Peer`] (its
//!   `SO_PEERCRED` uid, read once at accept) and the request's [`Credentials`] (from its
//!   headers) into the request extensions. jsonrpsee copies them into every call of the
//!   request; for a WebSocket, the upgrade request's extensions go with every call on it.
//! - [`AuthLayer`], the RPC middleware, resolves the [`Caller`] from them (once per request;
//!   once per batch) and calls [`auth::authorize`] for each call before it is dispatched. A
//!   refused call is answered with the `unauthenticated` or `forbidden` error of rpc.md and
//!   runs nothing; the refusal is logged with the peer uid, the method and the reason. The
//!   calls of a tenant-scoped user token carry [`NoDefaultSet`] in their extensions.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, MethodResponse, Notification, Request, RpcServiceT,
};
use jsonrpsee::types::ErrorObjectOwned;

use crate::auth::{self, Caller, Credentials, Denied, NoDefaultSet, Peer, Policy, TokenPolicy};
use crate::config::{Config, ConfigHandle};
use crate::rpc::wire::Inner;

/// Per connection: tags every HTTP request with the peer and its credentials.
#[derive(Clone, Copy, Debug)]
pub struct PeerLayer {
    peer: Peer,
}

impl PeerLayer {
    pub fn new(peer: Peer) -> PeerLayer {
        PeerLayer { peer }
    }
}

impl<S> tower::Layer<S> for PeerLayer {
    type Service = PeerService<S>;
    fn layer(&self, inner: S) -> PeerService<S> {
        PeerService {
            inner,
            peer: self.peer,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PeerService<S> {
    inner: S,
    peer: Peer,
}

impl<S, B> tower::Service<http::Request<B>> for PeerService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        let credentials = Credentials::from_headers(req.headers());
        req.extensions_mut().insert(self.peer);
        req.extensions_mut().insert(credentials);
        self.inner.call(req)
    }
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
            let user = match caller {
                Ok(Caller::User(u)) => Some(u.sub.as_str()),
                _ => None,
            };
            tracing::warn!(
                peer_uid = peer,
                method,
                user,
                reason = %denied,
                "call refused"
            );
            ErrorObjectOwned::from(crate::Error::from(denied))
        })
    }
}

/// Tells the handler of a tenant-scoped token's call not to read the `default` set.
fn mark_scope(caller: &Result<Caller, Denied>, ext: &mut http::Extensions) {
    if caller.as_ref().is_ok_and(Caller::tenant_scoped) {
        ext.insert(NoDefaultSet);
    }
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
        let inner = self.inner.clone();
        async move {
            match verdict {
                Ok(()) => inner.call(req).await,
                Err(error) => MethodResponse::error(req.id, error),
            }
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
                Ok(BatchEntry::Notification(n)) => {
                    notifications = true;
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
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let (peer, caller) = self.state.resolve(n.extensions());
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
