//! WebSocket: prefsd reads the client's frames itself, and jsonrpsee serves what passes.
//!
//! jsonrpsee runs a WebSocket connection whole (soketto's frames, its own parse of each
//! message), so its middleware never sees a message's text, and soketto accepts what RFC 6455
//! says a server must refuse. So the upgrade is answered here ([`accept`], [`upgrade`]), and
//! the client's byte stream goes through [`Frames`] before jsonrpsee reads it:
//!
//! - a client frame that is not masked, or otherwise breaks RFC 6455's framing, closes the
//!   connection (RFC 6455 §5.1: the server MUST close it);
//! - a message larger than `limits.max_request_bytes` is dropped unread and answered
//!   `limit_exceeded`, as an HTTP body would be;
//! - a request whose `id` jsonrpsee cannot read (`rpc::envelope`), alone or in a batch, is
//!   replaced by a `envelope::REFUSED` call, which `rpc::wire` answers with `invalid_request` and
//!   which runs nothing.
//!
//! Everything else passes unchanged, one message per frame. jsonrpsee gets its WebSocket
//! through an HTTP upgrade of its own: a hyper connection over [`Frames`] is handed a made-up
//! upgrade request (with the real request's extensions: the peer and its credentials),
//! jsonrpsee answers it into [`Frames`], which swallows that answer, and from then on
//! jsonrpsee reads and writes frames through [`Frames`] as it would through the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonrpsee::server::HttpBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::rpc::envelope::{self, Refusal};

/// jsonrpsee's answer to `req` if it is a valid WebSocket upgrade request (soketto's
/// handshake, as jsonrpsee makes it); `None` otherwise, and jsonrpsee answers it itself.
pub fn accept(req: &Request<Incoming>) -> Option<Response<()>> {
    if !jsonrpsee::server::ws::is_upgrade_request(req) {
        return None;
    }
    soketto::handshake::http::Server::new()
        .receive_request(req)
        .ok()
}

/// Serves the WebSocket that `req` asked for and [`accept`] accepted, through [`Frames`];
/// the answer is the upgrade's.
///
/// `inner` is jsonrpsee's own service for this connection, and `wrap` makes the body it
/// takes of the upgrade request it is handed. The task spawned here lives
/// until jsonrpsee has taken the upgraded connection (a made-up request and answer in
/// memory) or the client has gone; jsonrpsee's task, which then serves the connection,
/// is stopped by its stop handle like every other.
pub fn upgrade<B, S>(
    mut req: Request<Incoming>,
    accepted: Response<()>,
    inner: S,
    wrap: fn(Incoming) -> B,
    max_message_bytes: u32,
) -> Response<HttpBody>
where
    B: Send + 'static,
    S: tower::Service<
            Request<B>,
            Response = Response<HttpBody>,
            Future: Send + 'static,
            Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    // `accept` has checked it is there.
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|key| String::from_utf8_lossy(key.as_bytes()).into_owned())
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut extensions = req.into_parts().0.extensions;
    // Every call on the WebSocket carries these: the metrics count them as `ws`.
    extensions.insert(crate::metrics::Transport::Ws);
    let handshake = format!(
        "GET / HTTP/1.1\r\nhost: prefsd\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n\r\n"
    );
    tokio::spawn(async move {
        let client = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let frames = Frames::new(client, handshake.into_bytes(), max_message_bytes);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(wrap);
            // The made-up request's own extensions hold its upgrade; the real request's
            // (peer, credentials) are added.
            req.extensions_mut().extend(extensions.clone());
            let mut inner = inner.clone();
            tower::Service::call(&mut inner, req)
        });
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(frames), service)
            .with_upgrades()
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "WebSocket hand-over to jsonrpsee failed");
        }
    });
    accepted.map(|()| HttpBody::empty())
}

/// The client's connection as jsonrpsee sees it (see the module doc).
pub struct Frames<T> {
    client: T,
    phase: Phase,
    decoder: Decoder,
}

enum Phase {
    /// Reading gives the made-up upgrade request; writing swallows jsonrpsee's answer.
    Handshake {
        request: Vec<u8>,
        sent: usize,
        answer: Vec<u8>,
        reader: Option<Waker>,
    },
    /// Frames, checked one way and passed through the other.
    Frames,
    /// The client broke the framing: nothing more is read from it, and jsonrpsee's last
    /// frames (answers in flight, its close frame) still go out.
    Failed,
    /// jsonrpsee refused the upgrade: the connection is closing.
    Closed,
}

impl<T> Frames<T> {
    pub fn new(client: T, request: Vec<u8>, max_message_bytes: u32) -> Frames<T> {
        Frames {
            client,
            phase: Phase::Handshake {
                request,
                sent: 0,
                answer: Vec::new(),
                reader: None,
            },
            decoder: Decoder::new(max_message_bytes),
        }
    }
}

/// The longest answer to the made-up upgrade request that is read before giving up.
const MAX_HANDSHAKE_ANSWER: usize = 8 * 1024;

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Frames<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.phase {
            Phase::Handshake {
                request,
                sent,
                reader,
                ..
            } => {
                if *sent < request.len() {
                    let n = buf.remaining().min(request.len() - *sent);
                    buf.put_slice(&request[*sent..*sent + n]);
                    *sent += n;
                    return Poll::Ready(Ok(()));
                }
                // Nothing more until jsonrpsee has answered: the frames that follow must
                // reach it through the upgraded connection, not hyper's request parser.
                *reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Phase::Closed | Phase::Failed => Poll::Ready(Ok(())),
            Phase::Frames => loop {
                if this.decoder.write_out(buf) {
                    return Poll::Ready(Ok(()));
                }
                let mut chunk = [0u8; 8192];
                let mut read = ReadBuf::new(&mut chunk);
                match Pin::new(&mut this.client).poll_read(cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => {
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(())) => {
                        if let Err(e) = this.decoder.decode(read.filled()) {
                            tracing::debug!(error = %e, "WebSocket closed: a frame broke RFC 6455");
                            this.phase = Phase::Failed;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            },
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Frames<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &mut this.phase {
            Phase::Handshake { answer, reader, .. } => {
                answer.extend_from_slice(data);
                let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if answer.len() > MAX_HANDSHAKE_ANSWER {
                        this.phase = Phase::Closed;
                        return Poll::Ready(Err(io::Error::other("no answer to the upgrade")));
                    }
                    return Poll::Ready(Ok(data.len()));
                };
                let switched = answer.starts_with(b"HTTP/1.1 101");
                if !switched {
                    // jsonrpsee refused (at its connection limit, say): the client, already
                    // told 101, sees the connection close.
                    tracing::debug!(
                        answer = %String::from_utf8_lossy(&answer[..end]),
                        "jsonrpsee refused the WebSocket"
                    );
                }
                if let Some(waker) = reader.take() {
                    waker.wake();
                }
                this.phase = if switched {
                    Phase::Frames
                } else {
                    Phase::Closed
                };
                Poll::Ready(Ok(data.len()))
            }
            Phase::Frames | Phase::Failed => Pin::new(&mut this.client).poll_write(cx, data),
            Phase::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Frames | Phase::Failed => Pin::new(&mut this.client).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().client).poll_shutdown(cx)
    }
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The client's frames in, jsonrpsee's frames out (unmasked, one per message).
struct Decoder {
    max_message_bytes: u32,
    /// Bytes read and not yet decoded (at most a frame header's worth).
    pending: Vec<u8>,
    /// The frame being read, once its header is.
    frame: Option<Frame>,
    /// The opcode of the message being assembled, if one is.
    message_opcode: Option<u8>,
    message: Vec<u8>,
    /// The message grew past the limit: the rest of it is dropped.
    too_large: bool,
    /// Frames for jsonrpsee, and how much of them it has read.
    out: Vec<u8>,
    out_read: usize,
}

struct Frame {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    remaining: u64,
    /// Payload bytes read so far (for the mask's phase).
    read: u64,
    /// A control frame's payload.
    control: Vec<u8>,
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {what}"))
}

impl Decoder {
    fn new(max_message_bytes: u32) -> Decoder {
        Decoder {
            max_message_bytes,
            pending: Vec::new(),
            frame: None,
            message_opcode: None,
            message: Vec::new(),
            too_large: false,
            out: Vec::new(),
            out_read: 0,
        }
    }

    /// Copies decoded output into `buf`; `false` if there was none.
    fn write_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.out_read == self.out.len() {
            return false;
        }
        let n = buf.remaining().min(self.out.len() - self.out_read);
        buf.put_slice(&self.out[self.out_read..self.out_read + n]);
        self.out_read += n;
        if self.out_read == self.out.len() {
            self.out.clear();
            self.out_read = 0;
        }
        true
    }

    /// Decodes `input`, appending whole frames for jsonrpsee to the output.
    fn decode(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            match &mut self.frame {
                None => {
                    let take = (MAX_HEADER - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..take]);
                    let Some((frame, used)) = parse_header(&self.pending)? else {
                        input = &input[take..];
                        continue;
                    };
                    // Give back what the header did not use.
                    let unused = self.pending.len() - used;
                    input = &input[take - unused..];
                    self.pending.clear();
                    self.start(frame)?;
                }
                Some(frame) => {
                    let n = usize::try_from(frame.remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (payload, rest) = input.split_at(n);
                    input = rest;
                    let target = if frame.opcode >= CLOSE {
                        Some(&mut frame.control)
                    } else if self.too_large {
                        None
                    } else {
                        Some(&mut self.message)
                    };
                    if let Some(target) = target {
                        let from = target.len();
                        target.extend_from_slice(payload);
                        for (i, byte) in target[from..].iter_mut().enumerate() {
                            *byte ^= frame.mask[((frame.read + i as u64) % 4) as usize];
                        }
                    }
                    frame.read += n as u64;
                    frame.remaining -= n as u64;
                    if frame.remaining == 0 {
                        self.end_frame();
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a frame's header against the message in progress.
    fn start(&mut self, frame: Frame) -> io::Result<()> {
        match frame.opcode {
            CLOSE | PING | PONG => {}
            CONTINUATION if self.message_opcode.is_none() => {
                return Err(protocol_error("a continuation frame outside a message"));
            }
            CONTINUATION => {}
            TEXT | BINARY if self.message_opcode.is_some() => {
                return Err(protocol_error("a new message inside a fragmented one"));
            }
            TEXT | BINARY => self.message_opcode = Some(frame.opcode),
            _ => return Err(protocol_error("an unknown opcode")),
        }
        if frame.opcode < CLOSE {
            let total = (self.message.len() as u64).saturating_add(frame.remaining);
            if total > u64::from(self.max_message_bytes) {
                self.too_large = true;
                self.message = Vec::new();
            }
        }
        let empty = frame.remaining == 0;
        self.frame = Some(frame);
        if empty {
            self.end_frame();
        }
        Ok(())
    }

    /// A frame has been read whole.
    fn end_frame(&mut self) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        if frame.opcode >= CLOSE {
            emit(&mut self.out, frame.opcode, &frame.control);
            return;
        }
        if !frame.fin {
            return;
        }
        let opcode = self.message_opcode.take().unwrap_or(TEXT);
        let message = std::mem::take(&mut self.message);
        let limit = self.max_message_bytes;
        let refused = |refusal: Refusal| refusal.call().into_bytes();
        let checked = if std::mem::take(&mut self.too_large) {
            refused(Refusal::TooLarge(limit))
        } else {
            match checked_message(message) {
                // A batch made longer by its refusals could pass the limit jsonrpsee also
                // applies: it is then refused as too large here.
                m if m.len() as u64 > u64::from(limit) => refused(Refusal::TooLarge(limit)),
                m => m,
            }
        };
        emit(&mut self.out, opcode, &checked);
    }
}

/// The message with each request whose `id` cannot be read replaced by a `envelope::REFUSED` call.
fn checked_message(message: Vec<u8>) -> Vec<u8> {
    match message.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => match envelope::id_problem(&message) {
            Some(problem) => Refusal::Id(problem).call().into_bytes(),
            None => message,
        },
        Some(b'[') => {
            let problems = envelope::batch_id_problems(&message);
            if problems.is_empty() {
                return message;
            }
            let mut out = Vec::with_capacity(message.len());
            let mut at = 0;
            for (_, range, problem) in problems {
                out.extend_from_slice(&message[at..range.start]);
                out.extend_from_slice(Refusal::Id(problem).call().as_bytes());
                at = range.end;
            }
            out.extend_from_slice(&message[at..]);
            out
        }
        _ => message,
    }
}

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Reads a client frame's header from `bytes`: the frame and the header's length, or `None`
/// if more bytes are needed.
fn parse_header(bytes: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    if first & 0x70 != 0 {
        return Err(protocol_error(
            "reserved bits set (no extension was agreed)",
        ));
    }
    let opcode = first & 0x0F;
    // RFC 6455 §5.1: a client masks every frame; the server closes the connection on one
    // that is not.
    if second & 0x80 == 0 {
        return Err(protocol_error("a client frame that is not masked"));
    }
    let (length, at) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= CLOSE && (!fin || length > 125) {
        return Err(protocol_error("a fragmented or long control frame"));
    }
    let Some(mask) = bytes.get(at..at + 4) else {
        return Ok(None);
    };
    let frame = Frame {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        remaining: length,
        read: 0,
        control: Vec::new(),
    };
    Ok(Some((frame, at + 4)))
}

/// Appends one unmasked frame (as a server would send it: jsonrpsee's reader takes either).
fn emit(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::envelope::IdProblem;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Decodes `input` fed in pieces of `step` bytes; the frames out.
    fn decode(input: &[u8], step: usize, max: u32) -> io::Result<Vec<(u8, Vec<u8>)>> {
        let mut decoder = Decoder::new(max);
        for piece in input.chunks(step) {
            decoder.decode(piece)?;
        }
        let mut frames = Vec::new();
        let mut out = &decoder.out[..];
        while !out.is_empty() {
            let opcode = out[0] & 0x0F;
            let (len, at) = match out[1] {
                126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
                n => (usize::from(n), 2),
            };
            frames.push((opcode, out[at..at + len].to_vec()));
            out = &out[at + len..];
        }
        Ok(frames)
    }

    #[test]
    fn passes_messages_and_control_frames_whole_in_any_pieces() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#;
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":"{}","method":"daemon.ping"}}"#,
            "x".repeat(300)
        );
        let mut input = frame(true, TEXT, call);
        input.extend(frame(false, TEXT, &long.as_bytes()[..100]));
        input.extend(frame(true, PING, b"hi"));
        input.extend(frame(true, CONTINUATION, &long.as_bytes()[100..]));
        input.extend(frame(true, TEXT, b""));
        for step in [1, 3, 7, 64, 4096] {
            assert_eq!(
                decode(&input, step, 1000).expect("valid frames"),
                [
                    (TEXT, call.to_vec()),
                    (PING, b"hi".to_vec()),
                    (TEXT, long.as_bytes().to_vec()),
                    (TEXT, Vec::new()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn refuses_unmasked_and_malformed_frames() {
        let mut unmasked = frame(true, TEXT, b"{}");
        unmasked[1] &= 0x7F;
        unmasked.truncate(2);
        unmasked.extend_from_slice(b"{}");
        let mut reserved = frame(true, TEXT, b"{}");
        reserved[0] |= 0x40;
        for input in [
            unmasked,
            reserved,
            frame(true, CONTINUATION, b"x"),
            frame(false, PING, b""),
            frame(true, 0x3, b""),
            [frame(false, TEXT, b"a"), frame(true, TEXT, b"b")].concat(),
        ] {
            assert!(decode(&input, 5, 1000).is_err(), "{input:?}");
        }
    }

    #[test]
    fn replaces_refused_messages() {
        let refused = |r: Refusal| (TEXT, r.call().into_bytes());
        let big = format!(r#"{{"id":1,"method":"m","params":"{}"}}"#, "x".repeat(200));
        let input = [
            frame(true, TEXT, big.as_bytes()),
            frame(true, TEXT, br#"{"jsonrpc":"2.0","id":1e400,"method":"m"}"#),
            frame(
                true,
                TEXT,
                br#"[{"id":1,"method":"a"},{"id":-1,"method":"b"}]"#,
            ),
        ]
        .concat();
        let batch = format!(
            r#"[{{"id":1,"method":"a"}},{}]"#,
            Refusal::Id(IdProblem::Unreadable).call()
        );
        assert_eq!(
            decode(&input, 10, 150).expect("valid frames"),
            [
                refused(Refusal::TooLarge(150)),
                refused(Refusal::Id(IdProblem::Unreadable)),
                (TEXT, batch.into_bytes()),
            ]
        );
        for refusal in [
            Refusal::TooLarge(7),
            Refusal::Id(IdProblem::Unreadable),
            Refusal::Id(IdProblem::Repeated),
        ] {
            let call: serde_json::Value = serde_json::from_str(&refusal.call()).expect("JSON");
            let params = call["params"].to_string();
            assert_eq!(Refusal::from_params(Some(&params)), Some(refusal));
        }
    }
}
