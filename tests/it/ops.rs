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

/// A virtual environment with prometheus_client, made once under `target/`. `None` (the
/// test is skipped, with a message) when python3 is missing here, but not under CI.
fn prometheus_parser() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-prometheus");
    let python = venv.join("bin/python3");
    let has_parser = |python: &Path| {
        Command::new(python)
            .args(["-c", "import prometheus_client.parser"])
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
            .args(["-m", "pip", "install", "--quiet", "prometheus_client"])
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

/// `GET /metrics`, parsed by prometheus_client.
async fn scrape(d: &Daemon, python: &Path) -> Vec<Value> {
    let response = d.http().await.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    let content_type = response.headers["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.body.clone();
    let python = python.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/ops/parse_metrics.py"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running the parser");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&text)
            .expect("writing");
        child.wait_with_output().expect("parser output")
    })
    .await
    .expect("joined");
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
    d.call_err("users.get", json!({ "user_id": "nobody" }))
        .await
        .assert(-32001, "not_found");
    d.call(
        "preferences.evaluate",
        json!({ "recipients": ["dana"], "workflow": "new-comment", "channels": [{ "type": "email" }] }),
    )
    .await;
    let after = scrape(&d, &python).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(moved("prefsd_requests_total", &ping), 2.0);
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
        1.0
    );
    assert_eq!(
        moved(
            "prefsd_request_duration_seconds_count",
            &[("method", "daemon.ping")]
        ),
        3.0
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
    assert_eq!(
        sample(
            &after,
            "prefsd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(sample(&after, "prefsd_jobs", &[("status", "queued")]), 0.0);
    assert!(sample(&after, "prefsd_store_size_bytes", &[("file", "db")]) > 0.0);
    assert!(sample(&after, "prefsd_connections", &[]) >= 1.0);
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 0.0);
    // No method name a client made up becomes a label.
    assert!(!after.iter().any(|s| s["labels"]["method"] == "users.fetch"));
}

#[tokio::test]
async fn the_database_and_its_wal_are_private() {
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
