//! Bulk preference sets: each status path, idempotency, limits, the progress
//! subscription, pagination, and resuming after a stop.

use serde_json::{Value, json};

use crate::support::{Daemon, TIMEOUT};

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bulk-{i:04}")).collect()
}

/// Follows a job over the WebSocket subscription and returns every state it was sent,
/// the terminal one last.
pub async fn follow(daemon: &Daemon, id: &str) -> Vec<Value> {
    let client = daemon.ws().await;
    let mut sub = client
        .follow_bulk(id)
        .await
        .expect("subscribing to the job");
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(TIMEOUT, sub.next())
            .await
            .expect("a progress update within the timeout")
            .expect("the subscription delivers until the terminal state")
            .expect("a well-formed update");
        let over = matches!(next["status"].as_str(), Some("completed" | "failed"));
        seen.push(next);
        if over {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_replaces_the_set_of_every_user_and_counts_exactly() {
    let daemon = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[jobs]\nchunk_size = 7\n",
    )])
    .await;
    daemon
        .call(
            "users.setPreferences",
            json!({ "user_id": "bulk-0001", "preferences": { "workflows": { "w": false } } }),
        )
        .await;
    let ids = users(100);
    let op = daemon
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ids, "preferences": { "channel_types": { "sms": false } } }),
        )
        .await;
    assert_eq!(op["__typename"], "BulkOperation");
    assert_eq!(op["name"], "users.set_preferences");
    assert_eq!(
        op["status"], "queued",
        "the call returns before the job runs: {op}"
    );
    assert_eq!(op["estimated_total_rows"], 100);
    assert_eq!(
        op["progress_path"],
        format!("/v1/bulk_operations/{}", op["id"].as_str().unwrap_or(""))
    );

    let states = follow(&daemon, op["id"].as_str().expect("an id")).await;
    let last = states.last().expect("at least the terminal state");
    assert_eq!(last["status"], "completed");
    assert_eq!(
        (
            last["processed_rows"].clone(),
            last["success_count"].clone(),
            last["error_count"].clone()
        ),
        (json!(100), json!(100), json!(0))
    );
    assert_eq!(last["error_items"], json!([]));
    for key in ["started_at", "completed_at"] {
        assert!(last[key].is_string(), "{key} is set: {last}");
    }
    assert!(last["failed_at"].is_null());
    // Progress only goes forward, and a chunk of 7 shows up as intermediate states.
    let progress: Vec<i64> = states
        .iter()
        .filter_map(|s| s["processed_rows"].as_i64())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress goes forward: {progress:?}"
    );

    for user in ["bulk-0000", "bulk-0001", "bulk-0099"] {
        let set = daemon
            .call(
                "users.getPreferences",
                json!({ "user_id": user, "raw": true }),
            )
            .await;
        assert_eq!(set["channel_types"], json!({ "sms": false }), "{user}");
        assert!(set["workflows"].is_null(), "a bulk set replaces: {set}");
    }
    let status = daemon.call("daemon.status", Value::Null).await;
    assert_eq!(status["jobs"], json!({ "queued": 0, "processing": 0 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_reports_processing_states_between_queued_and_completed() {
    let daemon = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[jobs]\nchunk_size = 1\n",
    )])
    .await;
    // The worker runs one chunk, then waits: the job is seen processing, whatever the disk.
    daemon.jobs().hold();
    let op = daemon
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": users(40), "preferences": { "workflows": { "x": true } } }),
        )
        .await;
    let id = op["id"].as_str().expect("an id");
    let client = daemon.ws().await;
    let mut sub = client
        .follow_bulk(id)
        .await
        .expect("subscribing to the job");
    daemon.jobs().release_chunks(1);
    let mut statuses = Vec::new();
    loop {
        let next = tokio::time::timeout(TIMEOUT, sub.next())
            .await
            .expect("a progress update within the timeout")
            .expect("the subscription delivers until the terminal state")
            .expect("a well-formed update");
        let status = next["status"].as_str().unwrap_or_default().to_string();
        if status == "processing" && !statuses.contains(&status) {
            assert_eq!(next["processed_rows"], 1, "one chunk of one user: {next}");
            daemon.jobs().release_chunks(1000);
        }
        statuses.push(status);
        if matches!(
            statuses.last().map(String::as_str),
            Some("completed" | "failed")
        ) {
            break;
        }
    }
    assert!(
        statuses.iter().any(|s| s == "processing"),
        "a 40-chunk job is seen processing: {statuses:?}"
    );
    assert_eq!(statuses.last().map(String::as_str), Some("completed"));
    // Subscribing to a job that is over sends its terminal state once.
    let again = follow(&daemon, id).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_an_unreadable_payload_fails() {
    // SQLite only: it edits the job table through the SQLite file.
    if !crate::support::on_sqlite() {
        return;
    }
    let mut daemon = Daemon::start().await;
    daemon.stop().await;
    // A row no submit could produce, written behind the daemon's back.
    let conn = rusqlite::Connection::open(&daemon.database).expect("opening the database");
    conn.execute(
        "INSERT INTO bulk_operations (id, name, status, payload, estimated_total_rows, inserted_at, updated_at)
         VALUES ('00000000-0000-0000-0000-00000000dead', 'users.set_preferences', 'queued', '{\"user_ids\": 5}', 1,
                 '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        [],
    )
    .expect("inserting a broken job");
    drop(conn);
    daemon.restart().await;
    let states = follow(&daemon, "00000000-0000-0000-0000-00000000dead").await;
    let last = states.last().expect("a terminal state");
    assert_eq!(last["status"], "failed");
    assert!(last["failed_at"].is_string());
    assert_eq!(
        last["error_items"].as_array().map(Vec::len),
        Some(1),
        "{last}"
    );
    daemon.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_left_by_a_stop_continue_at_start() {
    // SQLite only: it edits the job table through the SQLite file.
    if !crate::support::on_sqlite() {
        return;
    }
    let mut daemon = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[jobs]\nchunk_size = 1\n",
    )])
    .await;
    // The worker runs three chunks of one user, then waits for the stop.
    daemon.jobs().hold();
    let op = daemon
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": users(1000), "preferences": { "workflows": { "x": false } } }),
        )
        .await;
    let id = op["id"].as_str().expect("an id");
    let client = daemon.ws().await;
    let mut sub = client
        .follow_bulk(id)
        .await
        .expect("subscribing to the job");
    daemon.jobs().release_chunks(3);
    loop {
        let next = tokio::time::timeout(TIMEOUT, sub.next())
            .await
            .expect("a progress update within the timeout")
            .expect("an update")
            .expect("a well-formed update");
        if next["processed_rows"] == 3 {
            break;
        }
    }
    drop(sub);
    drop(client);
    // Stop: the worker stops between chunks, where it waits.
    daemon.stop().await;
    let conn = rusqlite::Connection::open(&daemon.database).expect("opening the database");
    let processed: i64 = conn
        .query_row("SELECT processed_rows FROM bulk_operations", [], |r| {
            r.get(0)
        })
        .expect("the job row");
    drop(conn);
    assert_eq!(processed, 3, "the stop came after the third chunk");
    daemon.restart().await;
    let last = follow(&daemon, id).await.pop().expect("a terminal state");
    assert_eq!(
        (
            last["status"].clone(),
            last["processed_rows"].clone(),
            last["success_count"].clone()
        ),
        (json!("completed"), json!(1000), json!(1000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_return_the_same_job_or_conflict() {
    let daemon = Daemon::start().await;
    let params = json!({ "user_ids": ["a", "b"], "preferences": { "channel_types": { "push": false } }, "idempotency_key": "k-1" });
    let first = daemon
        .call("users.bulkSetPreferences", params.clone())
        .await;
    let second = daemon.call("users.bulkSetPreferences", params).await;
    assert_eq!(first["id"], second["id"]);
    let err = daemon
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["a", "c"], "preferences": { "channel_types": { "push": false } }, "idempotency_key": "k-1" }),
        )
        .await;
    err.assert(-32005, "conflict");
    let list = daemon.call("bulkOperations.list", json!({})).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "one job for one key: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submits_queue_nothing() {
    let daemon = Daemon::start().await;
    let too_many: Vec<String> = users(1001);
    daemon
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": too_many, "preferences": {} }),
        )
        .await
        .assert(-32004, "limit_exceeded");
    daemon
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": [], "preferences": {} }),
        )
        .await
        .assert_invalid("user_ids");
    daemon
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["ok", ""], "preferences": {} }),
        )
        .await
        .assert_invalid("user_ids.1");
    daemon
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["ok"], "preferences": { "channel_types": { "fax": false } } }),
        )
        .await
        .assert_invalid("preferences.channel_types.fax");
    daemon
        .call_err("users.bulkSetPreferences", json!({ "user_ids": ["ok"] }))
        .await
        .assert_invalid("preferences");
    daemon
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["ok"], "preferences": { "__persistence_strategy__": "merge" } }),
        )
        .await
        .assert_invalid("preferences.__persistence_strategy__");
    let list = daemon.call("bulkOperations.list", json!({})).await;
    assert_eq!(list["items"], json!([]), "nothing was queued");
    daemon
        .call_err(
            "bulkOperations.get",
            json!({ "id": "00000000-0000-0000-0000-000000000000" }),
        )
        .await
        .assert(-32001, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_newest_first_and_filters_by_status() {
    let daemon = Daemon::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let op = daemon
            .call(
                "users.bulkSetPreferences",
                json!({ "user_ids": [format!("p{i}")], "preferences": {} }),
            )
            .await;
        ids.push(op["id"].as_str().expect("an id").to_string());
    }
    for id in &ids {
        follow(&daemon, id).await;
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut params = json!({ "limit": 2, "status": "completed" });
        if !after.is_null() {
            params["after"] = after.clone();
        }
        let page = daemon.call("bulkOperations.list", params).await;
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["id"].as_str().unwrap_or("").to_string()),
        );
        after = page["next"].clone();
        if after.is_null() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every job once, newest first");
    let queued = daemon
        .call("bulkOperations.list", json!({ "status": "queued" }))
        .await;
    assert_eq!(queued["items"], json!([]));
    daemon
        .call_err("bulkOperations.list", json!({ "status": "sleeping" }))
        .await
        .assert_invalid("status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_after_the_retention() {
    // retention_days = 0: a finished job expires as soon as the worker looks again, which
    // it does when the next job wakes it.
    let daemon = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[jobs]\nretention_days = 0\n",
    )])
    .await;
    let first = daemon
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["r1"], "preferences": {} }),
        )
        .await;
    let first_id = first["id"].as_str().expect("an id").to_string();
    // Not followed: with no retention the job may already be gone when it is looked at.
    crate::support::wait_for("the first job to write", || async {
        let sets = daemon
            .call("users.listPreferences", json!({ "user_id": "r1" }))
            .await;
        (sets.as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    let second = daemon
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["r2"], "preferences": {} }),
        )
        .await;
    let _ = second;
    crate::support::wait_for("the first job to be purged", || async {
        let gone = daemon
            .try_call("bulkOperations.get", json!({ "id": first_id }))
            .await
            .is_err();
        gone.then_some(())
    })
    .await;
    daemon
        .call_err("bulkOperations.get", json!({ "id": first_id }))
        .await
        .assert(-32001, "not_found");
    // The users the job wrote are untouched by the purge.
    daemon.call("users.get", json!({ "user_id": "r1" })).await;
}
