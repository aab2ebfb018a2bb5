//! The real binary, killed with SIGKILL in the middle of a 1000-user bulk job, several times
//! at different points, and restarted on the same database each time: the job completes
//! exactly once, every user has exactly the new set, and the counters are exact.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::support::{HttpConn, TIMEOUT, write_files};

/// Starts `prefsd serve` and returns once it logs that it is serving (no polling: the
/// daemon says so on stderr after binding).
fn spawn_daemon(dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_prefsd"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("config"))
        .arg("--socket")
        .arg(dir.join("prefsd.sock"))
        .arg("--database")
        .arg(dir.join("prefsd.db"))
        .env("PREFSD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting prefsd serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("the daemon logs that it is serving before it exits")
            .expect("reading the daemon's stderr");
        if line.contains("prefsd is serving") {
            break;
        }
    }
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

async fn call(socket: &Path, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let response = HttpConn::connect(socket)
        .await
        .post_json(body.to_string())
        .await;
    let json = response.json.expect("a JSON response");
    assert!(json.get("error").is_none(), "{method} failed: {json}");
    json["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_kill_9_at_any_point_and_finishes_exactly_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Chunks of 3 with an fsync each: the job takes long enough to be killed mid-way.
    write_files(
        &dir.path().join("config"),
        &[(
            "prefsd.toml".to_string(),
            "durability = \"full\"\n[jobs]\nchunk_size = 3\n".to_string(),
        )],
    );
    let socket = dir.path().join("prefsd.sock");
    let users: Vec<String> = (0..1000).map(|i| format!("crash-{i:04}")).collect();

    let mut child = spawn_daemon(dir.path());
    // Everyone starts with a set the job must replace.
    for user in users.iter().step_by(97) {
        call(
            &socket,
            "users.setPreferences",
            json!({ "user_id": user, "preferences": { "workflows": { "old": false } } }),
        )
        .await;
    }
    let op = call(
        &socket,
        "users.bulkSetPreferences",
        json!({ "user_ids": users, "preferences": { "channel_types": { "sms": false, "push": true } } }),
    )
    .await;
    let id = op["id"].as_str().expect("an id").to_string();

    // Kill after a different number of progress updates each time.
    let mut kills = 0;
    let mut killed_mid_job = 0;
    for wait_updates in [1usize, 5, 13, 29, 2, 40] {
        let client = prefsd::client::Client::connect(&socket)
            .await
            .expect("connecting");
        let mut sub = client.follow_bulk(&id).await.expect("subscribing");
        let mut last = Value::Null;
        for _ in 0..wait_updates {
            match tokio::time::timeout(TIMEOUT, sub.next()).await {
                Ok(Some(Ok(state))) => last = state,
                _ => break,
            }
            if last["status"] == "completed" {
                break;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the daemon");
        kills += 1;
        if last["status"] != "completed" {
            killed_mid_job += 1;
        }
        child = spawn_daemon(dir.path());
    }
    assert!(
        killed_mid_job >= 3,
        "the daemon was killed mid-job at least 3 times ({killed_mid_job} of {kills})"
    );

    let client = prefsd::client::Client::connect(&socket)
        .await
        .expect("connecting");
    let mut sub = client.follow_bulk(&id).await.expect("subscribing");
    let mut last = Value::Null;
    while last["status"] != "completed" {
        last = tokio::time::timeout(TIMEOUT * 6, sub.next())
            .await
            .expect("the job finishes")
            .expect("an update")
            .expect("a well-formed update");
        assert_ne!(last["status"], "failed", "{last}");
    }
    assert_eq!(last["processed_rows"], 1000, "{last}");
    assert_eq!(last["success_count"], 1000, "{last}");
    assert_eq!(last["error_count"], 0, "{last}");
    assert_eq!(last["error_items"], json!([]));

    for user in &users {
        let set = call(
            &socket,
            "users.getPreferences",
            json!({ "user_id": user, "raw": true }),
        )
        .await;
        assert_eq!(
            set["channel_types"],
            json!({ "sms": false, "push": true }),
            "{user}"
        );
        assert!(
            set["workflows"].is_null(),
            "{user}: the old set was replaced: {set}"
        );
    }
    let jobs = call(&socket, "bulkOperations.list", json!({})).await;
    assert_eq!(
        jobs["items"].as_array().map(Vec::len),
        Some(1),
        "one job, finished once"
    );

    child.kill().expect("SIGKILL");
    child.wait().expect("reaping the daemon");
    let conn =
        rusqlite::Connection::open(dir.path().join("prefsd.db")).expect("opening the database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}
