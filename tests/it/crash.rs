//! The real binary, killed with SIGKILL in the middle of a 1000-item bulk job, several times
//! at different points, and restarted on the same database each time: the job completes
//! exactly once, every item is applied exactly once, and the counters are exact; for a bulk
//! set and for the job kinds of rest.md §4.2.

use std::path::Path;

use serde_json::{Value, json};

use crate::child::{ChildDaemon, integrity_check};
use crate::support::{TIMEOUT, write_files};

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
    let users: Vec<String> = (0..1000).map(|i| format!("crash-{i:04}")).collect();

    let daemon = ChildDaemon::spawn(dir.path());
    // Everyone starts with a set the job must replace.
    for user in users.iter().step_by(97) {
        daemon
            .ok(
                "users.setPreferences",
                json!({ "user_id": user, "preferences": { "workflows": { "old": false } } }),
            )
            .await;
    }
    let op = daemon.ok(
        "users.bulkSetPreferences",
        json!({ "user_ids": users, "preferences": { "channel_types": { "sms": false, "push": true } } }),
    )
    .await;
    let id = op["id"].as_str().expect("an id").to_string();

    let (daemon, last) = kill_repeatedly(daemon, dir.path(), &id).await;
    assert_eq!(last["processed_rows"], 1000, "{last}");
    assert_eq!(last["success_count"], 1000, "{last}");
    assert_eq!(last["error_count"], 0, "{last}");
    assert_eq!(last["error_items"], json!([]));

    for user in &users {
        let set = daemon
            .ok(
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
    assert_jobs_then_kill(daemon, 1).await;
}

/// Checks that the daemon holds `n` jobs (each finished once), kills it, and checks the
/// database's integrity.
async fn assert_jobs_then_kill(daemon: ChildDaemon, n: usize) {
    let jobs = daemon.ok("bulkOperations.list", json!({})).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(n), "{jobs}");
    let database = daemon.database.clone();
    daemon.kill();
    assert_eq!(integrity_check(&database), "ok");
}

/// Follows job `id` to `completed` (the subscription starts with its current state).
async fn follow_to_end(socket: &Path, id: &str) -> Value {
    let client = prefsd::client::Client::connect(socket)
        .await
        .expect("connecting");
    let mut sub = client.follow_bulk(id).await.expect("subscribing");
    let mut last = Value::Null;
    while last["status"] != "completed" {
        last = tokio::time::timeout(TIMEOUT * 6, sub.next())
            .await
            .expect("the job finishes")
            .expect("an update")
            .expect("a well-formed update");
        assert_ne!(last["status"], "failed", "{last}");
    }
    last
}

/// Kills the daemon with SIGKILL six times while job `id` runs, after a different number
/// of its progress updates each time, restarting it on the same database; then follows the
/// job to its end. Returns the running daemon and the job's terminal state.
async fn kill_repeatedly(mut daemon: ChildDaemon, dir: &Path, id: &str) -> (ChildDaemon, Value) {
    let socket = daemon.socket.clone();
    let mut kills = 0;
    let mut killed_mid_job = 0;
    for wait_updates in [1usize, 5, 13, 29, 2, 40] {
        let client = prefsd::client::Client::connect(&socket)
            .await
            .expect("connecting");
        let mut sub = client.follow_bulk(id).await.expect("subscribing");
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
        daemon.kill();
        kills += 1;
        if last["status"] != "completed" {
            killed_mid_job += 1;
        }
        daemon = ChildDaemon::spawn(dir);
    }
    assert!(
        killed_mid_job >= 3,
        "the daemon was killed mid-job at least 3 times ({killed_mid_job} of {kills})"
    );
    let last = follow_to_end(&socket, id).await;
    (daemon, last)
}

/// The job kinds of rest.md §4.2 resume as exactly: a `users.bulkIdentify` whose items
/// fail in part, killed mid-way, then a `tenants.bulkSet` and a `users.bulkDelete` queued
/// behind it; every counter is exact and every item applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_job_kinds_survive_kill_9_and_finish_exactly_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write_files(
        &dir.path().join("config"),
        &[(
            "prefsd.toml".to_string(),
            "durability = \"full\"\n[limits]\nmax_properties_bytes = 200\n[jobs]\nchunk_size = 3\n"
                .to_string(),
        )],
    );
    let daemon = ChildDaemon::spawn(dir.path());
    // Every tenth user's properties are too large: an error item each, written never.
    let users: Vec<Value> = (0..1000)
        .map(|i| {
            let size = if i % 10 == 7 { 300 } else { 10 };
            json!({ "id": format!("k-{i:04}"), "properties": { "n": i, "pad": "x".repeat(size) } })
        })
        .collect();
    let identify = daemon
        .ok("users.bulkIdentify", json!({ "users": users }))
        .await;
    let tenants: Vec<String> = (0..1000).map(|i| format!("t-{i:04}")).collect();
    let set_tenants = daemon
        .ok("tenants.bulkSet", json!({ "tenants": tenants }))
        .await;
    let deleted: Vec<String> = (0..1000).step_by(2).map(|i| format!("k-{i:04}")).collect();
    let delete = daemon
        .ok("users.bulkDelete", json!({ "user_ids": deleted }))
        .await;

    let id = identify["id"].as_str().expect("an id");
    let (daemon, last) = kill_repeatedly(daemon, dir.path(), id).await;
    assert_eq!(last["processed_rows"], 1000, "{last}");
    assert_eq!(last["success_count"], 900, "{last}");
    assert_eq!(last["error_count"], 100, "{last}");
    let failed: Vec<&str> = last["error_items"]
        .as_array()
        .expect("error_items")
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    let expected: Vec<String> = (0..1000)
        .filter(|i| i % 10 == 7)
        .map(|i| format!("k-{i:04}"))
        .collect();
    assert_eq!(failed, expected, "each failed item reported once, in order");

    for (job, total) in [(&set_tenants, 1000), (&delete, 500)] {
        let id = job["id"].as_str().expect("an id");
        let last = follow_to_end(&daemon.socket, id).await;
        assert_eq!(last["processed_rows"], total, "{last}");
        assert_eq!(last["success_count"], total, "{last}");
    }
    let counts = daemon.ok("daemon.status", json!({})).await["counts"].clone();
    // 900 identified, of which the 500 even ones were deleted (k-xxx7 are odd).
    assert_eq!(counts["users"], 400, "{counts}");
    assert_eq!(counts["tenants"], 1000, "{counts}");
    let one = daemon.ok("users.get", json!({ "user_id": "k-0001" })).await;
    assert_eq!(one["properties"]["n"], 1);
    daemon
        .call("users.get", json!({ "user_id": "k-0017" }))
        .await
        .expect_err("a failed item wrote nothing");
    assert_jobs_then_kill(daemon, 3).await;
}
