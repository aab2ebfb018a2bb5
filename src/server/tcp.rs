//! The REST API's optional TCP listener (rest.md §2.2): plain HTTP/1.1, serving only the
//! REST routes, `OPTIONS` and the health endpoints `GET /healthz` and `/readyz` (ops.md
//! §1; never `POST /`, the WebSocket or `/metrics`). Its connections are tracked
//! with the daemon's other tasks and finish their request in flight at shutdown.

use std::convert::Infallible;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES};
use crate::rest::{App, Via, handle};
use crate::rpc::ops::Ops;

/// Accepts connections on `listener` until `cancel`, each served on its own task in `tasks`.
pub(super) async fn serve(
    listener: TcpListener,
    app: App,
    ops: Ops,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the REST TCP listener");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(connection(stream, app.clone(), ops.clone(), cancel.clone()));
    }
}

/// One TCP connection, keep-alive, until the client closes it or the daemon stops.
async fn connection(stream: tokio::net::TcpStream, app: App, ops: Ops, cancel: CancellationToken) {
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (app, ops) = (app.clone(), ops.clone());
        async move {
            if matches!(req.uri().path(), "/healthz" | "/readyz")
                && let Some(answer) = ops.answer(req.method(), req.uri().path()).await
            {
                return Ok::<_, Infallible>(answer.map(axum::body::Body::new));
            }
            Ok::<_, Infallible>(handle(app, req, Via::Tcp).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        res = &mut conn => res,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "a REST TCP connection ended with an error");
    }
}
