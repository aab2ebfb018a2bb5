//! Operating the daemon (ops.md §1–3): health and readiness over plain `GET`, the
//! Prometheus metrics (parsed by Prometheus's own Python parser), and "method not found"
//! naming the method.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use http::StatusCode;
use serde_json::{Value, json};

use crate::support::Daemon;

#[tokio::test]
async fn health_and_readiness_answer_plain_gets() {
    let d = Daemon::start().await;
    let mut http = d.http().await;
    let health = http.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json, Some(json!({ "status": "ok" })));
    let ready = http.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json, Some(json!({ "status": "ready" })));
    // JSON-RPC still works on the same connection.
    assert_eq!(d.call("daemon.ping", Value::Null).await, json!("pong"));
    // Another path is not theirs: a GET of `/` is still jsonrpsee's.
    assert_ne!(http.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn health_cli_exits_zero_when_serving_and_one_when_not() {
    let d = Daemon::start().await;
    let socket = d.socket.clone();
    let run = |socket: PathBuf, ready: bool| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_prefsd"));
            cmd.arg("--socket")
                .arg(&socket)
                .arg("--timeout")
                .arg("5s")
                .arg("health");
            if ready {
                cmd.arg("--ready");
            }
            cmd.output().expect("running prefsd health")
        })
    };
    let out = run(socket.clone(), false).await.expect("joined");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ok\""),
        "{out:?}"
    );
    let out = run(socket.clone(), true).await.expect("joined");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ready\""),
        "{out:?}"
    );
    let nobody = d.dir.path().join("nobody.sock");
    let out = run(nobody, false).await.expect("joined");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prefsd serve"),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_unknown_method_is_named_in_its_error() {
    let d = Daemon::start().await;
    let error = d.call_err("users.fetch", json!({})).await;
    error.assert(-32601, "method_not_found");
    assert!(error.message.contains("`users.fetch`"), "{error:?}");
    // Over the WebSocket too.
    let ws = d.ws().await;
    let err = ws
        .call("users.fetch", json!({}))
        .await
        .expect_err("unknown");
    assert!(format!("{err:#}").contains("users.fetch"), "{err:#}");
}

/// One sample of a parsed scrape.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap_or(0.0))
        .sum()
}

/// A virtual environment with prometheus_client (Prometheus's own parser) and jsonschema,
/// made once under `target/`. `None` (the test is skipped, with a message) when python3
/// is missing here, but not under CI.
fn prometheus_parser() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-ops");
    let python = venv.join("bin/python3");
    let has_parser = |python: &Path| {
        Command::new(python)
            .args(["-c", "import prometheus_client.parser, jsonschema"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_parser(&python) {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "prometheus_client",
                "jsonschema",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if made && has_parser(&python) {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs python3 with venv and pip to check /metrics with Prometheus's parser"
    );
    eprintln!("skipped: no python3 with venv and pip here to parse /metrics");
    None
}

/// Runs `tests/ops/SCRIPT ARGS` with the venv's `python`, `input` on its standard input.
async fn run_python(
    python: &Path,
    script: &str,
    args: &[PathBuf],
    input: Vec<u8>,
) -> std::process::Output {
    use std::io::Write as _;
    let mut command = Command::new(python);
    command
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/ops")
                .join(script),
        )
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("running python");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("writing");
        child.wait_with_output().expect("its output")
    })
    .await
    .expect("joined")
}

/// `GET /metrics`, parsed by prometheus_client.
async fn scrape(d: &Daemon, python: &Path) -> Vec<Value> {
    let response = d.http().await.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    let content_type = response.headers["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let out = run_python(python, "parse_metrics.py", &[], response.body.to_vec()).await;
    assert!(out.status.success(), "the parser refused /metrics");
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

#[tokio::test]
async fn metrics_parse_and_counters_move_with_calls() {
    let Some(python) = prometheus_parser() else {
        return;
    };
    let d = Daemon::start().await;
    let before = scrape(&d, &python).await;
    let ping = [
        ("method", "daemon.ping"),
        ("transport", "http"),
        ("outcome", "ok"),
    ];
    d.call("daemon.ping", Value::Null).await;
    d.call("daemon.ping", Value::Null).await;
    let ws = d.ws().await;
    ws.call("daemon.ping", Value::Null)
        .await
        .expect("ping over ws");
    d.call_err("users.fetch", json!({})).await;
    // In a batch, each call is counted with its own method and outcome.
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "daemon.ping" },
        { "jsonrpc": "2.0", "id": "b", "method": "users.get", "params": { "user_id": "nobody" } },
    ]);
    let answered = d.http().await.post_json(batch.to_string()).await;
    assert_eq!(answered.status, StatusCode::OK);
    d.call_err("users.get", json!({ "user_id": "nobody" }))
        .await
        .assert(-32001, "not_found");
    d.call(
        "preferences.evaluate",
        json!({ "recipients": ["dana"], "workflow": "new-comment", "channels": [{ "type": "email" }] }),
    )
    .await;
    // A REST read is counted as the method it runs as, on transport rest.
    let rest = d
        .http()
        .await
        .request(
            http::Method::GET,
            "/v1/users/dana/preferences/default",
            "",
            &[],
        )
        .await;
    assert_eq!(rest.status, StatusCode::OK);
    let after = scrape(&d, &python).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(moved("prefsd_requests_total", &ping), 3.0);
    assert_eq!(
        moved(
            "prefsd_requests_total",
            &[("method", "daemon.ping"), ("transport", "ws")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "prefsd_requests_total",
            &[("method", "unknown"), ("outcome", "method_not_found")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "prefsd_requests_total",
            &[("method", "users.get"), ("outcome", "not_found")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "prefsd_request_duration_seconds_count",
            &[("method", "daemon.ping")]
        ),
        4.0
    );
    assert_eq!(
        moved(
            "prefsd_requests_total",
            &[
                ("method", "users.getPreferences"),
                ("transport", "rest"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "prefsd_decisions_total",
            &[("send", "true"), ("code", "opted_in")]
        ),
        1.0
    );
    for name in [
        "prefsd_cache_hits_total",
        "prefsd_cache_misses_total",
        "prefsd_cache_bytes",
        "prefsd_cache_entries",
        "prefsd_config_version",
        "prefsd_store_writes_total",
        "prefsd_store_commits_total",
        "prefsd_config_reload_errors_total",
        "prefsd_config_last_reload_timestamp_seconds",
        "prefsd_connections",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(after.iter().any(|s| s["name"] == name), "{name} missing");
    }
    assert_eq!(sample(&after, "prefsd_config_version", &[]), 1.0);
    // The change log's head is the newest seq, as changes.list says.
    let head = d.call("changes.list", json!({ "limit": 1 })).await["head"]
        .as_f64()
        .expect("head");
    assert!(head >= 1.0);
    assert_eq!(sample(&after, "prefsd_changes_head", &[]), head);
    assert_eq!(
        sample(
            &after,
            "prefsd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(sample(&after, "prefsd_jobs", &[("status", "queued")]), 0.0);
    // The size of the SQLite file (PostgreSQL's is the server's to report).
    if crate::support::on_sqlite() {
        assert!(sample(&after, "prefsd_store_size_bytes", &[("file", "db")]) > 0.0);
    }
    assert!(sample(&after, "prefsd_connections", &[]) >= 1.0);
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 0.0);
    // No method name a client made up becomes a label.
    assert!(!after.iter().any(|s| s["labels"]["method"] == "users.fetch"));

    // A bulk job's rows are counted once it has written them.
    let op = d
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["a", "b", "c"], "preferences": { "channel_types": { "sms": false } } }),
        )
        .await;
    let id = op["id"].clone();
    crate::support::wait_for("the bulk job to complete", || {
        let id = id.clone();
        let d = &d;
        async move {
            let job = d.call("bulkOperations.get", json!({ "id": id })).await;
            (job["status"] == "completed").then_some(())
        }
    })
    .await;
    // The job's status is committed before the worker counts its rows, so a scrape
    // right after "completed" may be early; the count must then arrive, and be 3.
    let rows = crate::support::wait_for("the job's rows to be counted", || {
        let (d, python) = (&d, &python);
        async move {
            let jobs = scrape(d, python).await;
            let rows = sample(&jobs, "prefsd_job_rows_total", &[("outcome", "success")]);
            (rows > 0.0).then_some(rows)
        }
    })
    .await;
    assert_eq!(rows, 3.0);
}

#[tokio::test]
async fn the_database_and_its_wal_are_private() {
    // SQLite only: the file modes of the SQLite database.
    if !crate::support::on_sqlite() {
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "dana", "properties": { "plan": "pro" } }),
    )
    .await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = d.database.clone().into_os_string();
        path.push(suffix);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{path:?} is {:o}", mode & 0o777);
    }
}

#[tokio::test]
async fn a_catalog_makes_unknown_workflow_keys_an_error_by_default() {
    let evaluate = json!({
        "recipients": ["dana"], "workflow": "new_comment", "channels": [{ "type": "email" }],
    });
    // The test config sets nothing: its catalog defines workflows, so a typo is refused.
    let d = Daemon::start_with(&[("prefsd.toml", "durability = \"normal\"\n")]).await;
    d.call_err("preferences.evaluate", evaluate.clone())
        .await
        .assert(-32006, "workflow_not_found");
    // An explicit false keeps the lenient behaviour.
    let d = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\nstrict_workflows = false\n",
    )])
    .await;
    d.call("preferences.evaluate", evaluate.clone()).await;
    // With an empty catalog, any key is a workflow.
    let d = Daemon::start_with(&[
        ("prefsd.toml", "durability = \"normal\"\n"),
        ("workflows.toml", ""),
    ])
    .await;
    d.call("preferences.evaluate", evaluate).await;
}

/// Datagrams sent to a fake `NOTIFY_SOCKET`, one at a time.
struct NotifySocket(std::os::unix::net::UnixDatagram);

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = std::os::unix::net::UnixDatagram::bind(path).expect("binding NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(crate::support::TIMEOUT))
            .expect("a read timeout");
        NotifySocket(socket)
    }

    /// The next datagram that is not a watchdog ping, and whether pings came before it.
    fn next(&self) -> (String, bool) {
        let mut pinged = false;
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .0
                .recv(&mut buf)
                .expect("a datagram within the timeout");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text == "WATCHDOG=1\n" {
                pinged = true;
                continue;
            }
            return (text, pinged);
        }
    }
}

/// Under systemd (Type=notify, StateDirectory=, RuntimeDirectory=, WatchdogSec=): READY=1
/// once serving, in the unit's directories when nothing names the socket or the database;
/// RELOADING=1 with MONOTONIC_USEC then READY=1 around a reload; WATCHDOG=1 pings at half
/// of WATCHDOG_USEC; STOPPING=1 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_it_notifies_and_uses_the_units_directories() {
    let dir = tempfile::tempdir().expect("temp dir");
    crate::support::write_files(&dir.path().join("config"), &crate::support::default_files());
    let (run, state, elsewhere) = (
        dir.path().join("run"),
        dir.path().join("state"),
        dir.path().join("cwd"),
    );
    for d in [&run, &state, &elsewhere] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let notify = NotifySocket::bind(&dir.path().join("notify.sock"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_prefsd"));
    command
        .current_dir(&elsewhere)
        .arg("--config")
        .arg(dir.path().join("config"))
        .arg("serve")
        .env_remove("PREFSD_SOCKET")
        .env_remove("PREFSD_DATABASE")
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "200000")
        .env("RUNTIME_DIRECTORY", &run)
        .env("STATE_DIRECTORY", &state)
        // Off a terminal the log is JSON lines anyway; debug adds one line per call.
        .env_remove("PREFSD_LOG_FORMAT")
        .env("PREFSD_LOG", "debug");
    let socket = run.join("prefsd.sock");
    let daemon = tokio::task::spawn_blocking({
        let (dir, socket, database) = (
            dir.path().to_path_buf(),
            socket.clone(),
            state.join("prefsd.db"),
        );
        move || crate::child::ChildDaemon::start(command, &dir, socket, database)
    })
    .await
    .expect("joined")
    .unwrap_or_else(|f| panic!("did not start: {:?}", f.log));
    let (first, _) = notify.next();
    assert_eq!(first, "READY=1\n");
    assert!(
        state.join("prefsd.db").exists(),
        "the database is in STATE_DIRECTORY"
    );
    assert_eq!(
        d_ping(&socket).await,
        json!("pong"),
        "READY=1 means it serves"
    );
    let secret = "a-secret-property-value";
    crate::support::try_rpc(
        &socket,
        "users.identify",
        json!({ "user_id": "dana", "properties": { "note": secret } }),
    )
    .await
    .expect("transport")
    .expect("identified");
    // JSON lines, no colour, one debug line per call with method, duration, outcome and
    // caller kind, and never the params.
    // The call's line is read from the daemon's stderr by a thread of its own.
    crate::support::wait_for("the call's debug line", || async {
        daemon
            .log()
            .iter()
            .any(|l| l.contains("users.identify"))
            .then_some(())
    })
    .await;
    let log = daemon.log();
    for line in &log {
        assert!(
            !line.contains('\u{1b}'),
            "colour codes off a terminal: {line}"
        );
        assert!(!line.contains(secret), "params in the log: {line}");
        let _: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let call = log
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|l| l["fields"]["message"] == "call" && l["fields"]["method"] == "users.identify")
        .unwrap_or_else(|| panic!("no debug line for the call: {log:#?}"));
    assert_eq!(call["level"], "DEBUG");
    assert_eq!(call["fields"]["outcome"], "ok");
    assert_eq!(call["fields"]["caller"], "server");
    assert!(call["fields"]["duration_us"].is_u64(), "{call}");

    daemon.hangup();
    let (reloading, _) = notify.next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(usec.is_some_and(|n| n > 0), "{reloading}");
    assert_eq!(notify.next().0, "READY=1\n");

    // Pings come every 100 ms: some arrive before the stop is told.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopped = tokio::task::spawn_blocking(move || daemon.terminate());
    let (stopping, pinged) = notify.next();
    assert_eq!(stopping, "STOPPING=1\n");
    assert!(pinged, "WATCHDOG=1 every half WATCHDOG_USEC");
    let status = stopped.await.expect("joined");
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "its own socket is removed");
}

async fn d_ping(socket: &Path) -> Value {
    crate::support::try_rpc(socket, "daemon.ping", Value::Null)
        .await
        .expect("transport")
        .expect("pong")
}

/// Socket activation: the daemon serves on the socket passed as fd 3 (LISTEN_FDS=1), binds
/// none of its own, and leaves the passed socket in place when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_socket_is_served_and_never_removed() {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs python3");
        eprintln!("skipped: no python3 to pass a socket as systemd does");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    crate::support::write_files(&dir.path().join("config"), &crate::support::default_files());
    let passed = dir.path().join("passed.sock");
    let configured = dir.path().join("configured.sock");
    let database = dir.path().join("prefsd.db");
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/ops/activate.py"
        ))
        .arg(&passed)
        .arg(env!("CARGO_BIN_EXE_prefsd"))
        .arg("--config")
        .arg(dir.path().join("config"))
        .arg("--socket")
        .arg(&configured)
        .arg("serve")
        .arg("--database")
        .arg(&database);
    let daemon = tokio::task::spawn_blocking({
        let (dir, passed, database) = (dir.path().to_path_buf(), passed.clone(), database.clone());
        move || crate::child::ChildDaemon::start(command, &dir, passed, database)
    })
    .await
    .expect("joined")
    .unwrap_or_else(|f| panic!("did not start: {:?}", f.log));
    assert_eq!(d_ping(&passed).await, json!("pong"));
    assert!(!configured.exists(), "it bound no socket of its own");
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        passed.exists(),
        "the passed socket is not the daemon's to remove"
    );
}

/// The fenced block right after `<!-- marker -->` in the README.
fn readme_block(marker: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("no `{marker}` block in the README"));
    let fence = readme[start..].find("```").expect("a fence") + start;
    let body = readme[fence..].find('\n').expect("a fence line") + fence + 1;
    let end = readme[body..].find("\n```").expect("a closing fence") + body;
    readme[body..=end].to_string()
}

/// Whether `program` runs here; under CI, a missing one the test needs is a failure.
fn have(program: &str, needed_under_ci: bool) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !needed_under_ci || std::env::var_os("CI").is_none(),
            "CI needs {program} (.ci/run installs it)"
        );
        eprintln!("skipped: no {program} on this machine");
    }
    found
}

/// The README's unit files pass `systemd-analyze verify` (with the ExecStart binary
/// pointed at the one built here, which verify requires to exist).
#[test]
fn the_readme_unit_files_verify() {
    if !have("systemd-analyze", true) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for name in ["prefsd.service", "prefsd.socket"] {
        let text = readme_block(&format!("unit: {name}"))
            .replace("/usr/local/bin/prefsd", env!("CARGO_BIN_EXE_prefsd"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writing the unit");
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about units of the machine itself (not ours) are not this test's business.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("prefsd")).collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

/// The README's client examples run against a daemon and print its decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_client_examples_work() {
    let d = Daemon::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |mut command: Command| {
        let socket = d.socket.clone();
        tokio::task::spawn_blocking(move || {
            command
                .env("PREFSD_SOCKET", socket)
                .output()
                .expect("running the example")
        })
    };
    let mut ran = 0;
    let examples: [(&str, &str, &str, bool); 3] = [
        ("python", "client.py", "python3", true),
        ("node", "client.js", "node", false),
        ("go", "client.go", "go", false),
    ];
    for (language, file, program, needed) in examples {
        if !have(program, needed) {
            continue;
        }
        let path = dir.path().join(file);
        std::fs::write(&path, readme_block(&format!("client: {language}"))).expect("writing");
        let mut command = Command::new(program);
        if language == "go" {
            command.arg("run");
        }
        command.arg(&path);
        let out = run(command).await.expect("joined");
        assert!(out.status.success(), "{language}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "true",
            "{language}: {out:?}"
        );
        ran += 1;
    }
    assert!(ran >= 1, "no example ran");
}

/// The OpenRPC meta-schema, from its npm package (`@open-rpc/meta-schema`, which exports
/// it as a JS object), made once under `target/`. `None` without npm and node (skipped with
/// a message, but not under CI).
fn openrpc_meta_schema() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openrpc-meta-schema");
    let schema = dir.join("schema.json");
    if schema.exists() {
        return Some(schema);
    }
    if !have("npm", true) || !have("node", true) {
        return None;
    }
    std::fs::create_dir_all(&dir).expect("mkdir");
    let packed = Command::new("npm")
        .args([
            "pack",
            "--silent",
            "@open-rpc/meta-schema",
            "--pack-destination",
        ])
        .arg(&dir)
        .output()
        .expect("npm pack");
    assert!(packed.status.success(), "npm pack: {packed:?}");
    let tarball = dir.join(String::from_utf8_lossy(&packed.stdout).trim());
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(untar.success(), "untar {tarball:?}");
    let script = format!(
        "process.stdout.write(JSON.stringify(require({:?}).openrpcDocument))",
        dir.join("package/index.js")
    );
    let out = Command::new("node")
        .args(["-e", &script])
        .output()
        .expect("node");
    assert!(out.status.success(), "node: {out:?}");
    std::fs::write(&schema, &out.stdout).expect("writing the schema");
    Some(schema)
}

/// `rpc.discover` answers an OpenRPC document that the OpenRPC meta-schema accepts, with
/// the server's version; an unknown method's error points to it.
#[tokio::test]
async fn rpc_discover_is_a_valid_openrpc_document() {
    let d = Daemon::start().await;
    let document = d.call("rpc.discover", Value::Null).await;
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = document["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for name in [
        "users.getPreferences",
        "preferences.evaluate",
        "bulkOperations.subscribe",
        "rpc.discover",
    ] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    let (Some(python), Some(schema)) = (prometheus_parser(), openrpc_meta_schema()) else {
        return;
    };
    let out = run_python(
        &python,
        "validate_openrpc.py",
        &[schema],
        document.to_string().into_bytes(),
    )
    .await;
    assert!(
        out.status.success(),
        "not a valid OpenRPC document:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
