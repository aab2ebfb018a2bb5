//! Import (ops.md §7, issue 20): an export imported into an empty store answers every read
//! method as the original did; a Knock-format file with bad lines imports the good ones and
//! reports the bad ones by line number; a daemon killed with SIGKILL mid-import completes
//! it exactly once after a restart; the CLI keeps at most two jobs queued in the daemon.

use std::path::Path;

use prefsd::cli::import::{LINES_PER_JOB, QUEUED_AT_MOST};
use serde_json::{Value, json};

use crate::child::ChildDaemon;
use crate::cli::{client, prefsd};
use crate::export::fill;
use crate::support::{Daemon, default_files, wait_for, write_files};

/// `value` without its timestamps, at any depth: an import writes now, as Knock's identify
/// does, not the source's times.
fn untimed(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "created_at" | "updated_at" | "added_at"))
                .map(|(k, v)| (k.clone(), untimed(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(untimed).collect()),
        other => other.clone(),
    }
}

/// Every read of the filled store: each method, for every recipient, set and tenant.
async fn answers(d: &Daemon) -> Vec<(String, Value)> {
    let mut reads: Vec<(&str, Value)> = Vec::new();
    for user in ["dana", "lee", "ana"] {
        reads.push(("users.get", json!({ "user_id": user })));
        reads.push(("users.listPreferences", json!({ "user_id": user })));
        for tenant in [None, Some("acme"), Some("globex")] {
            let mut p = json!({ "user_id": user });
            if let Some(t) = tenant {
                p["tenant"] = json!(t);
            }
            reads.push(("users.getPreferences", p.clone()));
            p["raw"] = json!(true);
            reads.push(("users.getPreferences", p));
        }
    }
    let p1 = json!({ "collection": "projects", "object_id": "p1" });
    reads.push(("objects.get", p1.clone()));
    reads.push(("objects.listPreferences", p1.clone()));
    reads.push(("objects.getPreferences", p1));
    reads.push(("tenants.get", json!({ "tenant_id": "acme" })));
    reads.push(("audiences.listMembers", json!({ "audience_key": "beta" })));
    for workflow in ["new-comment", "newsletter", "security-alert", "digest"] {
        for tenant in [None, Some("acme")] {
            let mut p = json!({
                "workflow": workflow,
                "recipients": ["dana", "lee", "ana", { "collection": "projects", "id": "p1" }],
                "channels": [{ "type": "email" }, { "type": "sms" }, { "type": "in_app_feed" }],
                "now": "2026-01-01T00:00:00Z",
            });
            if let Some(t) = tenant {
                p["tenant"] = json!(t);
            }
            reads.push(("preferences.evaluate", p));
        }
    }
    let mut out = Vec::new();
    for (method, params) in reads {
        let label = format!("{method} {params}");
        let answer = d.try_call(method, params).await;
        let answer = match answer {
            Ok(v) => untimed(&v),
            Err(e) => json!({ "error": e.code, "type": e.kind() }),
        };
        out.push((label, answer));
    }
    out
}

#[tokio::test]
async fn export_then_import_into_an_empty_store_answers_every_read_the_same() {
    let a = Daemon::start().await;
    fill(&a).await;
    let file = a.dir.path().join("store.ndjson");
    let run = client(&a, &["export", "--out", &file.display().to_string()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let before = answers(&a).await;

    let b = Daemon::start().await;
    let run = client(&b, &["import", &file.display().to_string()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("0 line(s) left out"), "{run:?}");
    let after = answers(&b).await;
    for ((label, x), (_, y)) in before.iter().zip(&after) {
        assert_eq!(x, y, "{label}");
    }
    assert_eq!(before.len(), after.len());

    // Importing it again leaves the same state (and queues nothing new).
    let jobs = b.call("bulkOperations.list", json!({})).await;
    let run = client(&b, &["import", &file.display().to_string()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(answers(&b).await, after);
    assert_eq!(b.call("bulkOperations.list", json!({})).await, jobs);
}

#[tokio::test]
async fn a_knock_file_with_bad_lines_imports_the_good_ones_and_reports_the_bad_ones() {
    let d = Daemon::start().await;
    let lines = [
        // 1: a Knock user with custom properties at the top level and a set as Knock shows it.
        r#"{"__typename":"User","id":"dana","email":"dana@example.com","plan":"pro","created_at":null,"updated_at":"2024-05-01T00:00:00Z","preferences":{"default":{"__typename":"PreferenceSet","id":"default","categories":{"marketing":false},"channel_types":null,"channels":null,"workflows":null}}}"#,
        // 2: not JSON.
        r#"{"id":"broken""#,
        // 3: a set that does not validate.
        r#"{"id":"lee","preferences":{"default":{"categories":{"marketing":"maybe"}}}}"#,
        // 4: an id that is not one.
        r#"{"id":"","plan":"free"}"#,
        // 5: a Knock object.
        r#"{"__typename":"Object","id":"p1","collection":"projects","properties":{"name":"Apollo"},"preferences":{"acme":{"workflows":{"new-comment":false}}}}"#,
        // 6: not an object.
        r#"[1, 2]"#,
        // 7: a good user after the bad ones, in the same batch.
        r#"{"id":"ana","locale":"fr"}"#,
    ];
    let file = d.dir.path().join("knock.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let run = client(&d, &["import", &file.display().to_string()]).await;
    assert_eq!(
        run.code, 1,
        "left-out lines make the import exit 1: {run:?}"
    );
    for line in [
        "line 2: not JSON",
        "line 3: preferences.default.categories.marketing",
        "line 4: id",
        "line 6:",
    ] {
        assert!(run.stderr.contains(line), "{line} is reported: {run:?}");
    }
    for line in ["line 1:", "line 5:", "line 7:"] {
        assert!(
            !run.stderr.contains(line),
            "{line} is not reported: {run:?}"
        );
    }
    let dana = d.call("users.get", json!({ "user_id": "dana" })).await;
    assert_eq!(
        dana["properties"],
        json!({ "email": "dana@example.com", "plan": "pro" })
    );
    let set = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "dana", "raw": true }),
        )
        .await;
    assert_eq!(set["categories"], json!({ "marketing": false }));
    let ana = d.call("users.get", json!({ "user_id": "ana" })).await;
    assert_eq!(ana["properties"], json!({ "locale": "fr" }));
    let p1 = d
        .call("objects.getPreferences", json!({ "collection": "projects", "object_id": "p1", "preference_set": "acme", "raw": true }))
        .await;
    assert_eq!(p1["workflows"], json!({ "new-comment": false }));
    // Nothing of a refused line was written.
    let lee = d.call_err("users.get", json!({ "user_id": "lee" })).await;
    assert_eq!(lee.kind(), "not_found");
}

/// `count` users, one line each, in Knock's format.
fn users_file(path: &Path, count: usize) {
    let text: String = (0..count)
        .map(|i| format!("{{\"id\":\"u{i}\",\"n\":{i},\"preferences\":{{\"default\":{{\"channel_types\":{{\"sms\":{}}}}}}}}}\n", i % 2 == 0))
        .collect();
    std::fs::write(path, text).expect("write");
}

#[tokio::test]
async fn an_import_killed_with_sigkill_completes_exactly_once_after_a_restart() {
    const USERS: usize = 6000;
    let dir = tempfile::tempdir().expect("temp dir");
    // Chunks of 5 users: the jobs are still running when the daemon is killed.
    let toml = format!("{}\n[jobs]\nchunk_size = 5\n", crate::support::PREFSD_TOML);
    let mut files = default_files();
    files.retain(|(p, _)| p != "prefsd.toml");
    files.push(("prefsd.toml".into(), toml));
    write_files(&dir.path().join("config"), &files);
    let file = dir.path().join("users.jsonl");
    users_file(&file, USERS);
    let daemon = ChildDaemon::spawn(dir.path());
    let socket = daemon.socket.display().to_string();
    let file_arg = file.display().to_string();
    // The CLI follows the jobs; the daemon is killed under it once two are queued.
    let import = tokio::spawn({
        let dir = dir.path().to_path_buf();
        let socket = socket.clone();
        let file_arg = file_arg.clone();
        async move { prefsd(&dir, &["--socket", &socket, "import", &file_arg]).await }
    });
    let queued = wait_for("the import's first jobs to be queued", || async {
        let list = daemon.ok("bulkOperations.list", json!({})).await;
        let n = list["items"].as_array().map_or(0, Vec::len);
        (n >= 2).then_some(list)
    })
    .await;
    daemon.kill();
    let run = import.await.expect("the CLI task");
    assert_ne!(run.code, 0, "the CLI lost its daemon: {run:?}");
    let unfinished = queued["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|op| op["status"] != "completed")
        .count();
    assert!(
        unfinished > 0,
        "the kill came after the import had finished"
    );

    // Restarted, the daemon resumes the jobs; the same import run again queues nothing new.
    let daemon = ChildDaemon::spawn(dir.path());
    let run = prefsd(dir.path(), &["--socket", &socket, "import", &file_arg]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let list = daemon.ok("bulkOperations.list", json!({})).await;
    let ops = list["items"].as_array().expect("items");
    assert_eq!(
        ops.len(),
        USERS / LINES_PER_JOB,
        "each batch queued once: {list}"
    );
    for op in ops {
        assert_eq!(op["status"], "completed", "{op}");
        assert_eq!(op["estimated_total_rows"], LINES_PER_JOB, "{op}");
        assert_eq!(op["processed_rows"], LINES_PER_JOB, "{op}");
        assert_eq!(op["success_count"], LINES_PER_JOB, "{op}");
        assert_eq!(op["error_count"], 0, "{op}");
    }
    for i in [0, 1, 2999, USERS - 1] {
        let user = daemon
            .ok("users.get", json!({ "user_id": format!("u{i}") }))
            .await;
        assert_eq!(user["properties"], json!({ "n": i }));
        let set = daemon
            .ok(
                "users.getPreferences",
                json!({ "user_id": format!("u{i}"), "raw": true }),
            )
            .await;
        assert_eq!(set["channel_types"], json!({ "sms": i % 2 == 0 }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_submits_its_next_job_only_when_few_are_left_in_the_daemon() {
    let d = Daemon::start().await;
    let file = d.dir.path().join("users.jsonl");
    users_file(&file, 5 * LINES_PER_JOB);
    // The worker runs nothing until released: the CLI must wait for it, not queue on.
    d.jobs().hold();
    let import = tokio::spawn({
        let dir = d.dir.path().to_path_buf();
        let socket = d.socket.display().to_string();
        let file = file.display().to_string();
        async move { prefsd(&dir, &["--socket", &socket, "import", &file]).await }
    });
    let count = || async {
        let list = d.call("bulkOperations.list", json!({})).await;
        list["items"].as_array().map_or(0, Vec::len)
    };
    let queued = wait_for("the import's first jobs", || async {
        let n = count().await;
        (n >= QUEUED_AT_MOST).then_some(n)
    })
    .await;
    assert_eq!(queued, QUEUED_AT_MOST);
    // What this test is about: a CLI that stalls. Given time to queue the rest, it has not.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        count().await,
        QUEUED_AT_MOST,
        "no job is queued while the worker is held"
    );
    d.jobs().release_chunks(1000);
    let run = import.await.expect("the CLI task");
    assert_eq!(run.code, 0, "{run:?}");
    let list = d.call("bulkOperations.list", json!({})).await;
    let ops = list["items"].as_array().expect("items");
    assert_eq!(ops.len(), 5, "{list}");
    assert!(ops.iter().all(|op| op["status"] == "completed"), "{list}");
}
