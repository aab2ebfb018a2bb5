//! The real `prefsd serve` binary as a child process: for the tests that kill the daemon
//! (crash loop), measure its memory (load) or watch it refuse to start (faults). They talk
//! to it with `support::HttpConn`'s `try_` methods, which report a failed connection as an
//! error instead of panicking.
//!
//! [`ChildDaemon::spawn`] returns once the daemon logs "prefsd is serving" on stderr, which
//! it does after binding the socket: no test polls or sleeps for it to come up.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};

use serde_json::Value;

use crate::support::{RpcError, TIMEOUT};

/// Held by the tests whose timing claims (no call over 1 s) must not share the two cores
/// with another such test: the load tests take turns, the rest of the suite goes on.
pub static TIMED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `prefsd serve` child process on `dir` (which holds `config/`, `prefsd.db` and
/// `prefsd.sock`). Killed with SIGKILL when dropped.
pub struct ChildDaemon {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub database: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// How a daemon that did not come up ended: its exit status and what it logged.
#[derive(Debug)]
pub struct StartFailure {
    pub status: ExitStatus,
    pub log: Vec<String>,
}

impl ChildDaemon {
    /// Starts `prefsd serve` on `dir` and waits for it to serve; panics with its log if it
    /// exits first.
    pub fn spawn(dir: &Path) -> ChildDaemon {
        ChildDaemon::try_spawn(dir).unwrap_or_else(|f| {
            panic!(
                "prefsd serve exited with {} before serving:\n{}",
                f.status,
                f.log.join("\n")
            )
        })
    }

    /// Starts `prefsd serve` on `dir`; `Err` with the exit status and log if it exits
    /// before it serves.
    pub fn try_spawn(dir: &Path) -> Result<ChildDaemon, StartFailure> {
        ChildDaemon::try_spawn_with(dir, None)
    }

    /// [`ChildDaemon::spawn`] with the soft limit on open files set to `limit` (through
    /// `sh -c 'ulimit -n N; exec prefsd ...'`).
    pub fn spawn_with_fd_limit(dir: &Path, limit: usize) -> ChildDaemon {
        ChildDaemon::try_spawn_with(dir, Some(limit))
            .unwrap_or_else(|f| panic!("prefsd serve exited with {}: {:?}", f.status, f.log))
    }

    fn try_spawn_with(dir: &Path, fd_limit: Option<usize>) -> Result<ChildDaemon, StartFailure> {
        let socket = dir.join("prefsd.sock");
        let database = dir.join("prefsd.db");
        let mut command = match fd_limit {
            None => Command::new(env!("CARGO_BIN_EXE_prefsd")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_prefsd"));
                c
            }
        };
        command
            .args(ChildDaemon::serve_args(dir))
            .arg("--database")
            .arg(&database);
        ChildDaemon::start(command, dir, socket, database)
    }

    /// `serve` on `dir`'s config and socket (`config/`, `prefsd.sock`), the store left to
    /// the caller.
    pub fn serve_args(dir: &Path) -> [std::ffi::OsString; 5] {
        [
            "serve".into(),
            "--config".into(),
            dir.join("config").into(),
            "--socket".into(),
            dir.join("prefsd.sock").into(),
        ]
    }

    /// Runs `command` (a `prefsd serve` made by the caller, e.g. with systemd's
    /// variables) and waits for it to serve on `socket`; `Err` with the exit status and
    /// log if it exits first.
    pub fn start(
        mut command: Command,
        dir: &Path,
        socket: PathBuf,
        database: PathBuf,
    ) -> Result<ChildDaemon, StartFailure> {
        // The tests read text lines (JSON, the default off a terminal, has its own test),
        // unless the caller asked for a format.
        if !command
            .get_envs()
            .any(|(name, _)| name == "PREFSD_LOG_FORMAT")
        {
            command.env("PREFSD_LOG_FORMAT", "text");
        }
        if !command.get_envs().any(|(name, _)| name == "PREFSD_LOG") {
            command.env("PREFSD_LOG", "info");
        }
        let mut child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting prefsd serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (serving_tx, serving_rx) = mpsc::channel::<()>();
        let lines = Arc::clone(&log);
        // Reads stderr until the daemon exits, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let serving = line.contains("prefsd is serving");
                lines.lock().expect("the log lock").push(line);
                if serving {
                    let _ = serving_tx.send(());
                }
            }
        });
        match serving_rx.recv_timeout(TIMEOUT) {
            Ok(()) => Ok(ChildDaemon {
                child,
                dir: dir.to_path_buf(),
                socket,
                database,
                log,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stderr closed without the line: the daemon has exited (or is exiting).
                let status = child.wait().expect("reaping the daemon");
                let log = log.lock().expect("the log lock").clone();
                Err(StartFailure { status, log })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().expect("the log lock").clone();
                panic!(
                    "prefsd serve did not serve within {TIMEOUT:?}:\n{}",
                    log.join("\n")
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.kill_in_place();
    }

    fn kill_in_place(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a graceful stop), then wait for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("reaping the daemon")
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("the log lock").clone()
    }

    /// `VmRSS` of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// The number of open file descriptors of the daemon.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Sends SIGHUP (reload the config).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Calls a method over a fresh HTTP connection; panics on a transport failure.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        crate::support::try_rpc(&self.socket, method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Calls a method that must succeed.
    pub async fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method} failed: {e:?}"))
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        self.kill_in_place();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The soft limit on open files of this process (children inherit it).
pub fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// An environment variable as a number, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs `PRAGMA integrity_check` on a database file no daemon has open.
pub fn integrity_check(database: &Path) -> String {
    let conn = rusqlite::Connection::open(database).expect("opening the database");
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect())
        })
        .expect("integrity_check");
    rows.join("; ")
}
