//! The real binary, killed with SIGKILL in the middle of a 1000-user bulk job, several times
//! at different points, and restarted on the same database each time: the job completes
//! exactly once, every user has exactly the new set, and the counters are exact.

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

    let mut daemon = ChildDaemon::spawn(dir.path());
    let socket = daemon.socket.clone();
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
        daemon.kill();
        kills += 1;
        if last["status"] != "completed" {
            killed_mid_job += 1;
        }
        daemon = ChildDaemon::spawn(dir.path());
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
    let jobs = daemon.ok("bulkOperations.list", json!({})).await;
    assert_eq!(
        jobs["items"].as_array().map(Vec::len),
        Some(1),
        "one job, finished once"
    );

    let database = daemon.database.clone();
    daemon.kill();
    assert_eq!(integrity_check(&database), "ok");
}
