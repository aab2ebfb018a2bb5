//! The load generator: runs of a workload against a running daemon (what it sends is
//! `requests`, what it prints is `report`).
//!
//! A run connects first (the clock does not include connecting), then every connection
//! (HTTP) or every in-flight slot (WebSocket) sends calls back to back (or, with a rate, at
//! fixed intervals: an open loop) until the run's duration is over or its call budget is
//! spent. Latency is measured per call around the whole request and response; the daemon's
//! CPU time is read from `/proc` before and after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::requests::Requests;
use super::stats::Latency;
use super::{LoadArgs, Mix, Rng, Transport, Users, Workload, procfs};

/// How long a run lasts without --duration or --calls.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    Duration(Duration),
    Calls(u64),
}

/// Everything a run needs, resolved from the command line.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub socket: PathBuf,
    pub transport: Transport,
    pub connections: u32,
    pub limit: Limit,
    /// Calls per second in all, for an open loop; `None` sends back to back.
    pub rate: Option<u32>,
    pub workload: Workload,
    pub compare: Option<Workload>,
    pub rounds: u32,
    pub batch: u32,
    pub mix: Mix,
    pub users: Users,
    pub seed: u64,
    pub pid: Option<u32>,
}

impl LoadConfig {
    pub fn new(socket: &Path, args: &LoadArgs) -> LoadConfig {
        LoadConfig {
            socket: socket.to_path_buf(),
            transport: args.transport,
            connections: args.connections,
            limit: match (args.calls, args.duration) {
                (Some(n), _) => Limit::Calls(n),
                (None, Some(d)) => Limit::Duration(d),
                (None, None) => Limit::Duration(DEFAULT_DURATION),
            },
            rate: args.rate,
            workload: args.workload,
            compare: args.compare,
            rounds: args.rounds.unwrap_or(
                if args.compare.is_some() || args.during_backup.is_some() {
                    3
                } else {
                    1
                },
            ),
            batch: args.batch,
            mix: args.mix,
            users: Users {
                count: args.users,
                skew: args.skew,
            },
            seed: args.seed,
            pid: args.pid,
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub workload: Workload,
    /// A run of the `--compare` baseline rather than of the measured workload.
    pub baseline: bool,
    pub round: u32,
    /// Calls completed, failed ones included.
    pub calls: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Latency,
    /// The daemon's CPU time (utime + stime) during the run, when it is local.
    pub server_cpu: Option<Duration>,
    /// This process's CPU time during the run.
    pub client_cpu: Option<Duration>,
    pub first_error: Option<String>,
}

impl RunResult {
    pub fn calls_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.calls as f64 / secs
        } else {
            0.0
        }
    }

    pub fn server_us_per_call(&self) -> Option<f64> {
        per_call(self.server_cpu, self.calls)
    }

    pub fn client_us_per_call(&self) -> Option<f64> {
        per_call(self.client_cpu, self.calls)
    }
}

fn per_call(cpu: Option<Duration>, calls: u64) -> Option<f64> {
    cpu.filter(|_| calls > 0)
        .map(|d| d.as_secs_f64() * 1e6 / calls as f64)
}

/// The daemon's pid: the peer credentials of a connection to its socket (the process that
/// listens), else the owner of the socket found through `/proc`.
pub(super) async fn daemon_pid(socket: &Path) -> Option<u32> {
    let me = std::process::id();
    let from_peer = match UnixStream::connect(socket).await {
        Ok(stream) => stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p != me && p != 0),
        Err(_) => None,
    };
    from_peer.or_else(|| procfs::find_socket_owner(socket))
}

/// The rounds, alternating the baseline and the measured workload.
pub async fn run_rounds(config: &LoadConfig) -> anyhow::Result<Vec<RunResult>> {
    run_rounds_reporting(config, |_| {}).await
}

/// [`run_rounds`], calling `finished` with each run as it ends.
pub async fn run_rounds_reporting(
    config: &LoadConfig,
    mut finished: impl FnMut(&RunResult),
) -> anyhow::Result<Vec<RunResult>> {
    let mut results = Vec::new();
    for round in 1..=config.rounds {
        if let Some(baseline) = config.compare {
            results.push(run_once(config, baseline, true, round, End::Configured).await?);
            finished(&results[results.len() - 1]);
        }
        results.push(run_once(config, config.workload, false, round, End::Configured).await?);
        finished(&results[results.len() - 1]);
    }
    Ok(results)
}

/// The longest a benchmark's backup may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// `prefsd bench --during-backup PATH`: each round runs the workload while the daemon
/// makes a backup to PATH (`daemon.backup`), for exactly as long as the backup takes, and
/// beside it a baseline run of the same workload without a backup, for the same length.
/// The order alternates (with first in odd rounds, without first in even ones, at the
/// previous backup's length), so a drift of the machine's load or the disk's speed over
/// the rounds falls on both sides alike. A baseline longer than the backup (a fixed
/// `--duration`) would dilute its effect, and a single pair of runs on a shared disk is
/// noise: the report gives every round and the medians.
pub async fn backup_rounds_reporting(
    config: &LoadConfig,
    path: &Path,
    mut finished: impl FnMut(&RunResult),
) -> anyhow::Result<Vec<RunResult>> {
    let client =
        Arc::new(crate::client::Client::connect_timeout(&config.socket, BACKUP_TIMEOUT).await?);
    let path = std::path::absolute(path).context("the backup path")?;
    let mut results = Vec::new();
    let mut last_backup: Option<Duration> = None;
    for round in 1..=config.rounds {
        let without_first = last_backup.filter(|_| round % 2 == 0);
        if let Some(length) = without_first {
            let run = run_once(config, config.workload, true, round, End::After(length)).await?;
            finished(&run);
            results.push(run);
        }
        let done = Arc::new(AtomicBool::new(false));
        let backup = {
            let client = Arc::clone(&client);
            let done = Arc::clone(&done);
            let params = serde_json::json!({ "path": path });
            async move {
                let answer = client.call("daemon.backup", params).await;
                done.store(true, Ordering::Relaxed);
                answer
            }
        };
        let during = run_once(config, config.workload, false, round, End::When(done));
        let (answer, run) = tokio::join!(backup, during);
        answer.context("the backup to measure against")?;
        let run = run?;
        let length = run.elapsed;
        last_backup = Some(length);
        finished(&run);
        results.push(run);
        if without_first.is_none() {
            let run = run_once(config, config.workload, true, round, End::After(length)).await?;
            finished(&run);
            results.push(run);
        }
    }
    Ok(results)
}

/// When one run ends.
enum End {
    /// As the command line says (`--duration`, `--calls`).
    Configured,
    /// After this long.
    After(Duration),
    /// When the flag is set (a backup has answered).
    When(Arc<AtomicBool>),
}

/// The end of a run, shared by its workers.
#[derive(Clone)]
enum Stop {
    At(Instant),
    Budget(Arc<AtomicU64>),
    /// Until the flag is set.
    Flag(Arc<AtomicBool>),
}

impl Stop {
    /// True if the worker may make one more call (and takes it from the budget).
    fn take(&self) -> bool {
        match self {
            Stop::At(deadline) => Instant::now() < *deadline,
            Stop::Flag(done) => !done.load(Ordering::Relaxed),
            Stop::Budget(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// What one worker did.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }
}

async fn run_once(
    config: &LoadConfig,
    workload: Workload,
    baseline: bool,
    round: u32,
    end: End,
) -> anyhow::Result<RunResult> {
    let n = config.connections as usize;
    // Every run draws calls of its own, from the same distribution. Replaying the other
    // run's calls would measure writes that change nothing (the second run of a pair
    // found every value already stored, and committed nothing): a backup's rounds read
    // 5.05x and 1.88x, by which side ran first.
    let run = u64::from(round) << 1 | u64::from(baseline);
    let requests = |i: usize| Requests {
        workload,
        batch: config.batch,
        mix: config.mix,
        users: config.users,
        rng: Rng::for_item(config.seed ^ run.wrapping_mul(0x1000_0000_01B3), i as u64),
        as_of: None,
    };
    let mut http = Vec::new();
    let mut ws = None;
    match config.transport {
        Transport::Http => {
            for _ in 0..n {
                http.push(HttpConn::connect(&config.socket).await?);
            }
        }
        Transport::Ws => {
            ws = Some(Arc::new(
                crate::client::Client::connect(&config.socket).await?,
            ));
        }
    }
    let server_before = config.pid.and_then(procfs::cpu_time);
    let client_before = procfs::own_cpu_time();
    let start = Instant::now();
    let stop = match (end, config.limit) {
        (End::After(d), _) | (End::Configured, Limit::Duration(d)) => Stop::At(start + d),
        (End::Configured, Limit::Calls(c)) => Stop::Budget(Arc::new(AtomicU64::new(c))),
        (End::When(done), _) => Stop::Flag(done),
    };
    let mut workers = tokio::task::JoinSet::new();
    match &ws {
        None => {
            for (i, conn) in http.into_iter().enumerate() {
                let pace = config.rate.map(|rate| Pace::new(start, rate, n, i));
                workers.spawn(http_worker(
                    config.socket.clone(),
                    conn,
                    requests(i),
                    stop.clone(),
                    pace,
                ));
            }
        }
        Some(client) => {
            for i in 0..n {
                let pace = config.rate.map(|rate| Pace::new(start, rate, n, i));
                workers.spawn(ws_worker(
                    Arc::clone(client),
                    requests(i),
                    stop.clone(),
                    pace,
                ));
            }
        }
    }
    let mut all = Tally::default();
    while let Some(done) = workers.join_next().await {
        let tally = done.context("a load worker panicked")?;
        all.latencies.extend_from_slice(&tally.latencies);
        all.errors += tally.errors;
        if all.first_error.is_none() {
            all.first_error = tally.first_error;
        }
    }
    let elapsed = start.elapsed();
    let server_after = config.pid.and_then(procfs::cpu_time);
    let client_after = procfs::own_cpu_time();
    drop(ws);
    let calls = all.latencies.len() as u64;
    Ok(RunResult {
        workload,
        baseline,
        round,
        calls,
        errors: all.errors,
        elapsed,
        latency: Latency::from_nanos(&mut all.latencies),
        server_cpu: server_after
            .zip(server_before)
            .map(|(a, b)| a.saturating_sub(b)),
        client_cpu: client_after
            .zip(client_before)
            .map(|(a, b)| a.saturating_sub(b)),
        first_error: all.first_error,
    })
}

/// One keep-alive HTTP/1.1 connection over the Unix socket (stack-notes §3 (c)).
struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    /// Credentials from the environment, as the CLI sends them (usually none).
    headers: http::HeaderMap,
}

impl HttpConn {
    async fn connect(socket: &Path) -> anyhow::Result<HttpConn> {
        let headers = crate::client::client_headers_from_env().map_err(anyhow::Error::msg)?;
        let stream = UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot connect to the daemon at {}; is `prefsd serve` running? (set --socket or PREFSD_SOCKET)",
                socket.display()
            )
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("the HTTP handshake with the daemon")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn { sender, headers })
    }

    /// One call: `Err` when the connection failed, `Ok(Err)` when the daemon answered with
    /// an error.
    async fn call(&mut self, body: String) -> anyhow::Result<Result<(), String>> {
        self.sender.ready().await?;
        let mut request = http::Request::post("/")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        if !self.headers.is_empty() {
            request.headers_mut().extend(self.headers.clone());
        }
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK {
            return Ok(Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(rpc_outcome(&body))
    }
}

impl HttpConn {
    /// One REST GET (`bench --workload rest-get`): `Ok(Err)` unless the answer is 200.
    async fn get(&mut self, path: &str) -> anyhow::Result<Result<(), String>> {
        self.sender.ready().await?;
        let mut request = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))?;
        if !self.headers.is_empty() {
            request.headers_mut().extend(self.headers.clone());
        }
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK {
            return Ok(Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(Ok(()))
    }
}

/// Whether a JSON-RPC response body is a result or an error, without parsing a large result:
/// the first `"result"` or `"error"` key decides (ids are numbers, so the key that comes
/// first is the top-level one). Only an error is parsed, for its message.
pub fn rpc_outcome(body: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|&b| b == b'"') {
        let at = &body[i + off..];
        if at.starts_with(b"\"result\"") {
            return Ok(());
        }
        if at.starts_with(b"\"error\"") {
            let message = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            return Err(message);
        }
        i += off + 1;
    }
    Err(format!(
        "not a JSON-RPC response: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    ))
}

/// An open loop's schedule for one connection: calls at a fixed interval, the connections
/// offset from each other so that together they send evenly.
struct Pace {
    next: Instant,
    interval: Duration,
}

impl Pace {
    fn new(start: Instant, rate: u32, connections: usize, index: usize) -> Pace {
        let interval = Duration::from_secs_f64(connections as f64 / f64::from(rate.max(1)));
        Pace {
            next: start + interval.mul_f64(index as f64 / connections.max(1) as f64),
            interval,
        }
    }

    /// Waits for this connection's next slot. A call that is late (the previous answer came
    /// after the slot) goes at once, and the schedule does not try to catch up.
    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next.into()).await;
        self.next = (self.next + self.interval).max(Instant::now());
    }
}

async fn http_worker(
    socket: PathBuf,
    mut conn: HttpConn,
    mut requests: Requests,
    stop: Stop,
    mut pace: Option<Pace>,
) -> Tally {
    let mut tally = Tally::default();
    while stop.take() {
        if let Some(pace) = &mut pace {
            pace.wait().await;
        }
        let call = requests.next_call();
        let t0 = Instant::now();
        let outcome = match &call.rest_path {
            None => conn.call(call.http_body()).await,
            Some(path) => conn.get(path).await,
        };
        tally.latencies.push(t0.elapsed().as_nanos() as u64);
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(message)) => tally.error(|| format!("{}: {message}", call.method)),
            Err(e) => {
                tally.error(|| format!("{}: {e:#}", call.method));
                // The connection is gone: open another, or give up on this worker.
                match HttpConn::connect(&socket).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    tally
}

async fn ws_worker(
    client: Arc<crate::client::Client>,
    mut requests: Requests,
    stop: Stop,
    mut pace: Option<Pace>,
) -> Tally {
    let mut tally = Tally::default();
    while stop.take() {
        if let Some(pace) = &mut pace {
            pace.wait().await;
        }
        let call = requests.next_call();
        if call.rest_path.is_some() {
            tally.error(|| format!("{}: REST is plain HTTP; use --transport http", call.method));
            break;
        }
        let params = match &call.params {
            None => Value::Null,
            Some(text) => match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    tally.error(|| format!("{}: bad params: {e}", call.method));
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let outcome = client.call(call.method, params).await;
        tally.latencies.push(t0.elapsed().as_nanos() as u64);
        if let Err(e) = outcome {
            let answered = matches!(
                e.downcast_ref::<jsonrpsee::core::client::Error>(),
                Some(jsonrpsee::core::client::Error::Call(_))
            );
            tally.error(|| format!("{}: {e:#}", call.method));
            if !answered {
                // The WebSocket is gone; every further call would fail the same way.
                break;
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_of_a_response() {
        assert_eq!(
            rpc_outcome(br#"{"jsonrpc":"2.0","id":1,"result":"pong"}"#),
            Ok(())
        );
        assert_eq!(
            rpc_outcome(br#"{"jsonrpc":"2.0","result":{"error":"x"},"id":1}"#),
            Ok(())
        );
        assert_eq!(
            rpc_outcome(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no such method"}}"#
            ),
            Err("no such method".into())
        );
        assert!(rpc_outcome(b"<html>").is_err());
    }

    #[test]
    fn budget_stops_after_n_calls() {
        let stop = Stop::Budget(Arc::new(AtomicU64::new(3)));
        assert_eq!((0..10).filter(|_| stop.take()).count(), 3);
        let past = Stop::At(Instant::now());
        assert!(!past.take());
    }
}
