//! The hook of the REST API on the socket (rest.md §2.1): requests under `/v1/` go to
//! `rest::handle`, every other one on to JSON-RPC. Here rather than in `rest`, because it
//! hands jsonrpsee's body type back to the socket's stack.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use jsonrpsee::server::HttpBody;

use crate::auth::Peer;
use crate::rest::{App, Via, handle, is_rest_path};

/// The hook on the socket (rest.md §2.1): requests under `/v1/` go to the REST API, every
/// other one to the inner (JSON-RPC) service. Sits after `rpc::auth::PeerLayer`, which
/// tags the request with its peer.
#[derive(Clone)]
pub struct SocketLayer {
    app: App,
}

impl SocketLayer {
    pub fn new(app: App) -> SocketLayer {
        SocketLayer { app }
    }
}

impl<S> tower::Layer<S> for SocketLayer {
    type Service = SocketService<S>;
    fn layer(&self, inner: S) -> SocketService<S> {
        SocketService {
            inner,
            app: self.app.clone(),
        }
    }
}

#[derive(Clone)]
pub struct SocketService<S> {
    inner: S,
    app: App,
}

impl<S, B> tower::Service<Request<B>> for SocketService<S>
where
    S: tower::Service<Request<B>, Response = Response<HttpBody>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !is_rest_path(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let peer = req
            .extensions()
            .get::<Peer>()
            .copied()
            .unwrap_or(Peer { uid: None });
        let app = self.app.clone();
        Box::pin(async move {
            let response = handle(app, req, Via::Socket(peer)).await;
            Ok(response.map(HttpBody::new))
        })
    }
}
