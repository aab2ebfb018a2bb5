//! HTTP shims around jsonrpsee's service:
//! - a body is always read as JSON, whatever its `content-type` says (rpc.md: `curl -d`
//!   works without the header; jsonrpsee alone answers 415);
//! - errors that jsonrpsee produces itself (parse error, invalid request, unknown method,
//!   body too large) get the `data.type` of rpc.md, and an oversized body becomes
//!   `limit_exceeded` (-32004), so clients see one error vocabulary;
//! - a single body that jsonrpsee refuses is classified by what it is: not JSON (invalid
//!   UTF-8 included) is a parse error, JSON that is not a request object (`42`) an invalid
//!   request. jsonrpsee guesses from whether an `id` can be read, which gets both wrong;
//! - the body travels to the RPC middleware ([`RequestBody`]), which refuses a request whose
//!   `id` jsonrpsee could not read (alone or in a batch) instead of running it as a
//!   notification;
//! - a WebSocket upgrade is answered by `rpc::ws`, which reads the client's frames before
//!   jsonrpsee does;
//! - in a batch, a subscription method (which needs a WebSocket) is told so, as it is when
//!   sent alone, instead of jsonrpsee's bare internal error;
//! - a body must arrive within [`BODY_READ_TIMEOUT`] of its headers, or the request is
//!   answered 408 `limit_exceeded` and the connection closed; the connection's [`Exchange`]
//!   tells the server whether a body is arriving, so that shedding can drop such a
//!   connection at once instead of waiting for a body that may never come;
//! - large answers count against one [`AnswerBudget`] for all connections until they have
//!   left the process, so clients that do not read cannot make the daemon hold more than
//!   that; an answer that does not fit is refused with `limit_exceeded`. Calls with large
//!   bodies, which make the large answers, run [`LARGE_CALLS`] at a time once their body is
//!   in, so that answers being made do not pile up either.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::HttpBody;
use serde_json::{Value, json};
use tokio::time::{Instant, Sleep};

use crate::rpc::envelope::{RequestBody, recorded};
use crate::rpc::error::{INTERNAL, LIMIT_EXCEEDED, OVERSIZED_REQUEST, add_type};
use crate::rpc::ops::Ops;
use crate::rpc::wire::Typed;
use crate::rpc::ws;

/// How long a request's body may take to arrive once its headers have. With the server's
/// 10 s for the headers, a request arrives whole within 20 s or is refused: a client that
/// sends headers and then stalls its body no longer holds its connection forever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Made per connection (the [`Exchange`] is the connection's, the [`AnswerBudget`] the
/// daemon's).
#[derive(Clone, Debug)]
pub struct JsonLayer {
    pub max_request_bytes: u32,
    pub exchange: Arc<Exchange>,
    pub budget: AnswerBudget,
    /// For the operators' `GET` endpoints.
    pub ops: Ops,
}

impl<S> tower::Layer<S> for JsonLayer {
    type Service = JsonService<S>;
    fn layer(&self, inner: S) -> JsonService<S> {
        JsonService {
            inner,
            max_request_bytes: self.max_request_bytes,
            exchange: Arc::clone(&self.exchange),
            budget: self.budget.clone(),
            ops: self.ops.clone(),
        }
    }
}

/// Where a connection's request stands, for the server: while a body is still arriving
/// nothing has run, so a shed connection can be dropped at once; once the body is in, the
/// call runs and its answer is let out first. While a counted answer ([`AnswerBudget`]) is
/// being written, the server cuts off a client that stops reading it.
#[derive(Debug, Default)]
pub struct Exchange {
    receiving: AtomicBool,
    writing: AtomicBool,
    write_began: tokio::sync::Notify,
}

impl Exchange {
    /// Whether a request has been started and its body is not all in yet.
    pub fn receiving(&self) -> bool {
        self.receiving.load(Ordering::Relaxed)
    }

    /// Whether a counted answer is being written.
    pub fn writing(&self) -> bool {
        self.writing.load(Ordering::Relaxed)
    }

    /// Returns once a counted answer is being written.
    pub async fn write_begins(&self) {
        // `notify_one` keeps a permit when nobody waits, so a start between the check and
        // the wait is not missed; a stale permit only costs one more check.
        while !self.writing() {
            self.write_began.notified().await;
        }
    }

    fn set_writing(&self, writing: bool) {
        self.writing.store(writing, Ordering::Relaxed);
        if writing {
            self.write_began.notify_one();
        }
    }
}

#[derive(Clone, Debug)]
pub struct JsonService<S> {
    inner: S,
    max_request_bytes: u32,
    exchange: Arc<Exchange>,
    budget: AnswerBudget,
    ops: Ops,
}

/// jsonrpsee's HTTP service for one connection, as the shims here and `rpc::ws` call it.
pub trait Jsonrpsee:
    tower::Service<
        Request<TapBody<Incoming>>,
        Response = Response<HttpBody>,
        Future: Send + 'static,
        Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Jsonrpsee for S where
    S: tower::Service<
            Request<TapBody<Incoming>>,
            Response = Response<HttpBody>,
            Future: Send + 'static,
            Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

impl<S: Jsonrpsee> tower::Service<Request<Incoming>> for JsonService<S> {
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(accepted) = ws::accept(&req) {
            let response = ws::upgrade(
                req,
                accepted,
                self.inner.clone(),
                TapBody::new,
                self.max_request_bytes,
            );
            return Box::pin(async move { Ok(response) });
        }
        if req.method() != Method::POST {
            let ops = self.ops.clone();
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
                return Box::pin(async move {
                    Ok(ops
                        .answer(&method, &path)
                        .await
                        .unwrap_or_else(method_not_allowed))
                });
            }
        }
        if req.method() == Method::POST {
            let is_json = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if !is_json {
                req.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let max = self.max_request_bytes;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let timed_out = Arc::new(AtomicBool::new(false));
        let exchange = Arc::clone(&self.exchange);
        let budget = self.budget.clone();
        let large_call = Arc::new(Mutex::new(None));
        exchange.receiving.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(RequestBody(Arc::clone(&seen)));
        let req = req.map(|inner| TapBody {
            inner,
            seen: Arc::clone(&seen),
            started: Instant::now(),
            deadline: None,
            timed_out: Arc::clone(&timed_out),
            exchange: Arc::clone(&exchange),
            large_calls: Arc::clone(&budget.large_calls),
            waiting: None,
            turn_taken: false,
            large_call: Arc::clone(&large_call),
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await;
            // A request whose body was never read (a GET, an upgrade) is not receiving either.
            exchange.receiving.store(false, Ordering::Relaxed);
            let timed_out = timed_out.load(Ordering::Relaxed);
            let resp = patch_errors(resp?, max, &seen, timed_out).await;
            let resp = budget.hold(resp, &seen, &exchange).await;
            // The answer is held or refused: the next large call may run.
            drop(large_call);
            Ok(resp)
        })
    }
}

/// Answers smaller than this are not counted: they fit in the socket's send buffer (about
/// 200 KiB on Linux) and leave the process at once, read or not.
const BUDGETED_ANSWER_BYTES: usize = 256 * 1024;

/// A request body at least this large makes a large call: 50 recipients fit in a quarter
/// of it, a 1000-recipient evaluation needs several times more.
const LARGE_CALL_BODY_BYTES: usize = 4 * 1024;

/// How many large calls run at once; the others wait, with their bodies read, until one
/// has its answer (held or refused). A 1000-recipient evaluation keeps both cores busy by
/// itself (it reads and decides on both reader threads), and each builds its answer in
/// memory (about 18 MiB for 1000 × 64 decisions): 40 at once reached 374 MiB, two at once
/// 117 MiB with the unread answers, one 99–103 MiB.
pub const LARGE_CALLS: usize = 1;

/// A counted answer is handed to hyper in copies of this size, so that what hyper has queued
/// but not written (a few hundred KiB at most) never keeps the whole answer alive.
const ANSWER_CHUNK_BYTES: usize = 64 * 1024;

/// The memory that answers not yet written to their clients may hold, all connections
/// together. Without it, 40 clients that asked for 1000 × 64 evaluations and read nothing
/// held 390 MB of answers.
#[derive(Clone, Debug)]
pub struct AnswerBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    large_calls: Arc<Semaphore>,
}

impl AnswerBudget {
    pub fn new(bytes: usize) -> AnswerBudget {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        AnswerBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            large_calls: Arc::new(Semaphore::new(LARGE_CALLS)),
        }
    }

    /// `resp` if it is small or fits in the budget (then it holds its share until written),
    /// else the `limit_exceeded` error in its place. An answer larger than the whole budget
    /// takes all of it, so it is served when nothing else is held.
    async fn hold(
        &self,
        resp: Response<HttpBody>,
        seen: &Mutex<Vec<Bytes>>,
        exchange: &Arc<Exchange>,
    ) -> Response<HttpBody> {
        let size = usize::try_from(resp.body().size_hint().lower()).unwrap_or(usize::MAX);
        if size < BUDGETED_ANSWER_BYTES {
            return resp;
        }
        let kib = u32::try_from(size.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        let Ok(permit) = Arc::clone(&self.kib).try_acquire_many_owned(kib) else {
            return self.refuse(resp, size, seen);
        };
        let (parts, body) = resp.into_parts();
        match body.collect().await {
            Ok(collected) => Response::from_parts(
                parts,
                HttpBody::new(Held::new(collected.to_bytes(), permit, exchange)),
            ),
            Err(_) => Response::from_parts(parts, HttpBody::from("")),
        }
    }

    /// The `limit_exceeded` answer to the request whose answer (`size` bytes) does not fit.
    fn refuse(
        &self,
        resp: Response<HttpBody>,
        size: usize,
        seen: &Mutex<Vec<Bytes>>,
    ) -> Response<HttpBody> {
        let held_mib =
            (self.total_kib as usize).saturating_sub(self.kib.available_permits()) / 1024;
        let message = format!(
            "limit exceeded: the answer ({size} bytes) does not fit: the daemon already holds              {held_mib} MiB of answers that their clients have not read (at most {} MiB);              read answers as they come, or ask for less at a time",
            self.total_kib / 1024
        );
        tracing::warn!(
            size,
            held_mib,
            "an answer was refused: too many unread answers"
        );
        // The id of a single request (a batch's answer is refused whole, with a null id).
        let id = serde_json::from_slice::<Value>(&recorded(seen))
            .ok()
            .and_then(|request| request.get("id").cloned())
            .unwrap_or(Value::Null);
        let text = json!({ "jsonrpc": "2.0", "id": id, "error": {
            "code": LIMIT_EXCEEDED, "message": message, "data": { "type": "limit_exceeded" },
        } })
        .to_string();
        let (mut parts, _) = resp.into_parts();
        parts.headers.remove(CONTENT_LENGTH);
        Response::from_parts(parts, HttpBody::from(text))
    }
}

/// A counted answer: its share of the [`AnswerBudget`] is given back when hyper has taken
/// the last chunk (or the connection is dropped); until then its connection is `writing`.
struct Held {
    rest: Bytes,
    _permit: OwnedSemaphorePermit,
    exchange: Arc<Exchange>,
}

impl Held {
    fn new(rest: Bytes, permit: OwnedSemaphorePermit, exchange: &Arc<Exchange>) -> Held {
        exchange.set_writing(true);
        Held {
            rest,
            _permit: permit,
            exchange: Arc::clone(exchange),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.exchange.set_writing(false);
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(ANSWER_CHUNK_BYTES);
        let chunk = Bytes::copy_from_slice(&self.rest[..n]);
        if n == self.rest.len() {
            // Dropped here, not with the body: the whole answer is freed now.
            self.rest = Bytes::new();
        } else {
            let _ = self.rest.split_to(n);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// The request body, recording the chunks jsonrpsee reads (reference-counted, not copied)
/// so that a refused body can be classified afterwards, and ending in an error if it has not
/// all arrived [`BODY_READ_TIMEOUT`] after the headers.
pub struct TapBody<B> {
    inner: B,
    seen: Arc<Mutex<Vec<Bytes>>>,
    started: Instant,
    /// Made the first time the body is not ready: most bodies come with their headers and
    /// never need a timer.
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
    exchange: Arc<Exchange>,
    large_calls: Arc<Semaphore>,
    /// A large body, all in, waiting for its turn to run.
    waiting: Option<Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>>,
    turn_taken: bool,
    /// The turn of a large call, kept by [`JsonService`] until its answer is held or refused
    /// (jsonrpsee drops the body before it dispatches the call).
    large_call: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl<B> TapBody<B> {
    /// A body that records nothing anyone reads, times nothing and waits for no turn (a
    /// WebSocket upgrade's, whose messages `rpc::ws` bounds itself).
    pub fn new(inner: B) -> TapBody<B> {
        TapBody {
            inner,
            seen: Arc::default(),
            started: Instant::now(),
            deadline: None,
            timed_out: Arc::default(),
            exchange: Arc::default(),
            large_calls: Arc::new(Semaphore::new(1)),
            waiting: None,
            turn_taken: true,
            large_call: Arc::default(),
        }
    }

    /// At the end of the body: `Pending` while a large call waits for its turn.
    fn take_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.turn_taken {
            return Poll::Ready(());
        }
        if self.waiting.is_none() {
            if recorded_len(&self.seen) < LARGE_CALL_BODY_BYTES {
                self.turn_taken = true;
                return Poll::Ready(());
            }
            let large_calls = Arc::clone(&self.large_calls);
            self.waiting = Some(Box::pin(
                async move { large_calls.acquire_owned().await.ok() },
            ));
        }
        let Some(waiting) = self.waiting.as_mut() else {
            return Poll::Ready(());
        };
        let Poll::Ready(permit) = waiting.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        if let Ok(mut turn) = self.large_call.lock() {
            *turn = permit;
        }
        self.waiting = None;
        self.turn_taken = true;
        Poll::Ready(())
    }
}

impl<B> Body for TapBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Ok(mut seen) = this.seen.lock()
                {
                    seen.push(data.clone());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.exchange.receiving.store(false, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.exchange.receiving.store(false, Ordering::Relaxed);
                if this.take_turn(cx).is_pending() {
                    return Poll::Pending;
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let until = this.started + BODY_READ_TIMEOUT;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timed_out.store(true, Ordering::Relaxed);
                this.exchange.receiving.store(false, Ordering::Relaxed);
                Poll::Ready(Some(Err("the request body did not arrive in time".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How many bytes of the body jsonrpsee has read.
fn recorded_len(seen: &Mutex<Vec<Bytes>>) -> usize {
    seen.lock()
        .map(|chunks| chunks.iter().map(Bytes::len).sum())
        .unwrap_or(0)
}

/// Whether the recorded body is JSON at all (UTF-8 and well-formed).
fn is_json(seen: &Mutex<Vec<Bytes>>) -> bool {
    let body = recorded(seen);
    std::str::from_utf8(&body)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

/// Adds `data.type` to error objects that lack it. Responses without an error object
/// pass through untouched after one substring search.
async fn patch_errors(
    resp: Response<HttpBody>,
    max_request_bytes: u32,
    seen: &Mutex<Vec<Bytes>>,
    timed_out: bool,
) -> Response<HttpBody> {
    // Single-call answers were typed by the RPC middleware: nothing to read.
    if resp.extensions().get::<Typed>().is_some() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Response::from_parts(parts, HttpBody::from("")),
    };
    // jsonrpsee writes every error response as `"error":{"code":`.
    if !memfind(&bytes, b"\"error\":{\"code\":") {
        return Response::from_parts(parts, HttpBody::from(bytes.to_vec()));
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, HttpBody::from(bytes.to_vec()));
    };
    // A 500 that did not pass the RPC middleware is jsonrpsee failing to read the body: the
    // client's fault. A chunked body past the limit (no content-length to refuse it by) is
    // cut off by jsonrpsee's length limit, which it reports as a stream error: that is the
    // 413 a content-length over the limit gets. Anything else (broken chunked framing, say)
    // is a 400 and a parse error.
    if parts.status == http::StatusCode::INTERNAL_SERVER_ERROR
        && value["error"]["code"] == json!(INTERNAL)
        && timed_out
    {
        let message = format!(
            "the request body did not arrive within {} s of its headers",
            BODY_READ_TIMEOUT.as_secs()
        );
        value = json!({ "jsonrpc": "2.0", "id": null, "error": {
            "code": LIMIT_EXCEEDED,
            "message": format!("limit exceeded: {message}"),
            "data": { "type": "limit_exceeded", "errors": [{ "field": "body", "message": message }] },
        } });
        parts.status = http::StatusCode::REQUEST_TIMEOUT;
    } else if parts.status == http::StatusCode::INTERNAL_SERVER_ERROR
        && value["error"]["code"] == json!(INTERNAL)
    {
        let oversize = recorded_len(seen) > max_request_bytes as usize;
        let (status, code) = if oversize {
            (http::StatusCode::PAYLOAD_TOO_LARGE, OVERSIZED_REQUEST)
        } else {
            (http::StatusCode::BAD_REQUEST, -32700)
        };
        value = json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": "" } });
        parts.status = status;
    }
    if let Value::Object(one) = &mut value {
        classify_refused_body(one, seen);
    }
    match &mut value {
        Value::Array(items) => {
            items
                .iter_mut()
                .for_each(|v| add_type(v, max_request_bytes));
            explain_subscriptions(items, seen);
        }
        one => add_type(one, max_request_bytes),
    }
    let text = value.to_string();
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    Response::from_parts(parts, HttpBody::from(text))
}

/// In a batch answer, jsonrpsee's bare internal error to a subscription method (which plain
/// HTTP cannot carry) becomes what the middleware says to one sent alone: it needs a
/// WebSocket. The request's method is found by the answer's id in the recorded body.
fn explain_subscriptions(answers: &mut [Value], seen: &Mutex<Vec<Bytes>>) {
    if !answers
        .iter()
        .any(|a| a["error"]["code"] == json!(INTERNAL))
    {
        return;
    }
    let Ok(Value::Array(requests)) = serde_json::from_slice::<Value>(&recorded(seen)) else {
        return;
    };
    for answer in answers
        .iter_mut()
        .filter(|a| a["error"]["code"] == json!(INTERNAL))
    {
        let method = requests
            .iter()
            .find(|r| r.get("id").is_some_and(|id| *id == answer["id"]))
            .and_then(|r| r["method"].as_str());
        if let Some(error) = method.and_then(crate::rpc::wire::needs_websocket)
            && let Ok(error) = serde_json::to_value(error)
        {
            answer["error"] = error;
        }
    }
}

/// A single body refused as a parse error or an invalid request gets the right one of the
/// two: not JSON is a parse error (with `id: null`), JSON is an invalid request.
fn classify_refused_body(response: &mut serde_json::Map<String, Value>, seen: &Mutex<Vec<Bytes>>) {
    let code = response
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64);
    let right = match code {
        Some(-32700 | -32600) if is_json(seen) => -32600,
        Some(-32700 | -32600) => -32700,
        _ => return,
    };
    if code != Some(right) {
        response.insert("error".into(), json!({ "code": right }));
        if right == -32700 {
            response.insert("id".into(), Value::Null);
        }
    }
}

/// The answer to another method on an operator's path (`POST /healthz`, say).
fn method_not_allowed() -> Response<HttpBody> {
    let mut response = Response::new(HttpBody::from("use GET\n"));
    *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
