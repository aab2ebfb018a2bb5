//! The daemon's open connections, and shedding: under pressure (`limits.max_connections`
//! open, or no file descriptor left to accept another) the least recently active are asked
//! to close, and refused peers never hold more than a few.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// How many connections one round of shedding asks to close (see [`Connections`]).
pub(super) const SHED_BATCH: usize = 16;

/// How many connections of peers whose uid is refused may be open at once. They are served
/// one request each (so that a misconfigured client reads why it is refused); past this
/// many, a refused peer's connection is closed at accept, so that refused peers can never
/// take the file descriptors allowed clients need.
const REFUSED_CONNECTIONS: usize = 32;

/// File descriptors kept for the database, the config watcher and the rest when the
/// open-files limit caps the number of connections.
const RESERVED_FDS: usize = 64;

/// One of the [`REFUSED_CONNECTIONS`] places for a refused peer's connection, given back on
/// drop.
pub(super) struct RefusedSlot(Arc<AtomicUsize>);

impl RefusedSlot {
    pub(super) fn take(open: &Arc<AtomicUsize>) -> Option<RefusedSlot> {
        let before = open.fetch_add(1, Ordering::Relaxed);
        let slot = RefusedSlot(Arc::clone(open));
        (before < REFUSED_CONNECTIONS).then_some(slot)
    }
}

impl Drop for RefusedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many connections to keep open at most: `limits.max_connections`, or fewer if the
/// open-files limit would run out first (e.g. systemd's default soft limit of 1024).
pub(super) fn connection_cap(max_connections: u32) -> usize {
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
pub(super) struct Connections {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    /// How many of `open` have been asked to close and are finishing.
    closing: AtomicUsize,
    next_id: AtomicU64,
    /// When shedding was last logged (ms, [`now_ms`]), to log it once per 10 s at most.
    warned_ms: AtomicU64,
}

/// When a connection last moved a byte, and how to ask it to close.
#[derive(Default)]
pub(super) struct Activity {
    pub(super) last_ms: AtomicU64,
    asked: AtomicBool,
    pub(super) close: tokio::sync::Notify,
}

impl Activity {
    pub(super) fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Milliseconds since the first call: a cheap, monotonic activity clock.
pub(super) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Connections {
    /// The open connections not asked to close.
    pub(super) fn staying(&self) -> usize {
        let open = self.open.lock().map(|open| open.len()).unwrap_or(0);
        open.saturating_sub(self.closing.load(Ordering::Relaxed))
    }

    /// Registers an accepted connection, until the [`Registered`] is dropped.
    pub(super) fn add(self: &Arc<Self>, stream: UnixStream) -> (Tracked, Registered) {
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
    pub(super) fn shed(&self, n: usize) {
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
pub(super) struct Registered {
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
pub(super) struct Tracked {
    stream: UnixStream,
    pub(super) activity: Arc<Activity>,
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
