//! systemd's protocols (ops.md §4), through the `sd-notify` crate: readiness and reload
//! notifications on `NOTIFY_SOCKET`, the watchdog, and socket activation (`LISTEN_FDS`).
//! Without those variables nothing is sent and nothing is taken: the daemon binds its own
//! socket as always.

use std::os::fd::{FromRawFd as _, RawFd};
use std::time::Duration;

use anyhow::Context as _;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Tells systemd (when it is listening) what the daemon is doing; a failure to tell is
/// logged, never fatal.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// `READY=1`: the socket serves and the store is open.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// `STOPPING=1`: the graceful stop has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` as a config reload begins, `READY=1` when it has
/// ended (applied or refused: the daemon serves either way).
pub fn reloading(begins: bool) {
    if !begins {
        ready();
        return;
    }
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Sends `WATCHDOG=1` at half of `WATCHDOG_USEC` until cancelled; returns at once when
/// systemd asked for no watchdog.
pub async fn watchdog(cancel: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticks = tokio::time::interval((timeout / 2).max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => notify(&[NotifyState::Watchdog]),
        }
    }
}

/// The sockets systemd passed (socket activation), by purpose.
#[derive(Debug, Default)]
pub struct Activated {
    /// The Unix socket to serve JSON-RPC on: the one named `prefsd` (the socket unit's
    /// `FileDescriptorName=`) or, unnamed, the first that is not `rest`.
    pub unix: Option<std::os::unix::net::UnixListener>,
    /// The REST layer's TCP listener, named `rest`.
    pub rest: Option<std::net::TcpListener>,
}

/// Takes the sockets systemd passed to this process, if it passed any (`LISTEN_PID` is
/// ours). An unexpected descriptor is an error, not a silent bind of another socket.
pub fn activated() -> anyhow::Result<Activated> {
    let fds = sd_notify::listen_fds_with_names().context("reading LISTEN_FDS")?;
    let mut activated = Activated::default();
    for (fd, name) in fds {
        if name == "rest" {
            // SAFETY: systemd passed this descriptor to this process (LISTEN_PID) for it
            // to own; nothing else in the process takes it.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            listener.local_addr().with_context(|| {
                format!("the socket named `rest` (fd {fd}) is not a TCP listener")
            })?;
            activated.rest = Some(listener);
        } else if activated.unix.is_none() {
            activated.unix = Some(unix_listener(fd, &name)?);
        } else {
            anyhow::bail!(
                "systemd passed more than one socket for JSON-RPC (fd {fd}, named `{name}`); name the REST one `rest`"
            );
        }
    }
    Ok(activated)
}

fn unix_listener(fd: RawFd, name: &str) -> anyhow::Result<std::os::unix::net::UnixListener> {
    // SAFETY: as above: the descriptor was passed to this process to own.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.local_addr().with_context(|| {
        format!("the socket systemd passed (fd {fd}, named `{name}`) is not a Unix socket")
    })?;
    listener
        .set_nonblocking(true)
        .context("making the passed socket non-blocking")?;
    Ok(listener)
}
