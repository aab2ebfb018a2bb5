//! Faults the daemon survives:
//!
//! - **a full disk**, simulated with `limits.max_database_mb` (SQLite's `max_page_count` on
//!   the writer): a write that does not fit fails with a clear `internal_error`, is rolled
//!   back whole, reads go on, and writes work again once there is space — after deletes
//!   free pages, or after a reload raises the limit;
//! - **a database file that is corrupt or cannot be opened** at start: `prefsd serve` exits
//!   2 with a message naming the file, and leaves the file as it was;
//! - **the config directory disappearing** while running: the config in force stays, and
//!   `config.status` shows why the reload failed.

use std::path::Path;

use serde_json::{Value, json};

use crate::child::ChildDaemon;
use crate::support::{Daemon, RpcError, wait_for, write_files};

/// The message of a write refused for lack of space.
const FULL: &str = "the database is full";

/// `prefsd.toml` with a 1 MiB database.
const ONE_MB: &str = "durability = \"normal\"\n[limits]\nmax_database_mb = 1\n";

fn big_user(id: &str) -> Value {
    json!({ "user_id": id, "properties": { "blob": "x".repeat(60_000) } })
}

#[track_caller]
fn assert_full(e: &RpcError) {
    e.assert(-32603, "internal_error");
    assert!(e.message.contains(FULL), "a clear message: {e:?}");
}

/// Writes big users until one does not fit; returns how many fitted.
async fn fill(d: &Daemon, prefix: &str) -> usize {
    for i in 0..100 {
        match d
            .try_call("users.identify", big_user(&format!("{prefix}{i}")))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_full(&e);
                return i;
            }
        }
    }
    panic!("100 users of 60 KB fitted in a 1 MiB database");
}

/// Everything a client can read of the stored state (each read must work while full).
async fn snapshot(d: &Daemon, users: &[String]) -> Value {
    let mut out = json!({
        "counts": d.counts().await,
        "tenant": d.call("tenants.get", json!({ "tenant_id": "t1" })).await,
        "jobs": d.call("bulkOperations.list", json!({})).await["items"].as_array().map(Vec::len),
    });
    for user in users {
        out[user] = json!({
            "user": d.call("users.get", json!({ "user_id": user })).await,
            "sets": d.call("users.listPreferences", json!({ "user_id": user })).await,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_writes_whole_serves_reads_and_recovers() {
    // SQLite only: `limits.max_database_mb` is SQLite's page limit.
    if !crate::support::on_sqlite() {
        return;
    }
    let d = Daemon::start_with(&[("prefsd.toml", ONE_MB)]).await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "small", "preferences": { "channel_types": { "sms": true } } }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "t1", "settings": { "preference_set": { "categories": { "marketing": false } } } }),
    )
    .await;
    let fitted = fill(&d, "big").await;
    assert!(fitted >= 5, "only {fitted} users fitted in 1 MiB");
    let mut users: Vec<String> = (0..fitted).map(|i| format!("big{i}")).collect();
    users.push("small".into());
    let before = snapshot(&d, &users).await;

    // Writes that do not fit fail with the clear error, and leave nothing behind — also
    // when the call made smaller writes before the one that failed (one transaction).
    let big_set: serde_json::Map<String, Value> = (0..4000)
        .map(|i| (format!("workflow-{i:05}"), json!(false)))
        .collect();
    let refused = [
        ("users.identify", big_user("one-more")),
        (
            "users.identify",
            json!({ "user_id": "small", "properties": { "blob": "y".repeat(60_000) },
                    "preferences": { "default": { "channel_types": { "sms": false } } } }),
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "small", "preferences": { "workflows": big_set } }),
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": [
                { "id": "inline-small", "properties": { "a": 1 } },
                { "id": "inline-big", "properties": { "blob": "z".repeat(60_000) } } ] }),
        ),
        (
            "tenants.set",
            json!({ "tenant_id": "t1", "properties": { "blob": "t".repeat(60_000) } }),
        ),
    ];
    for (method, params) in refused {
        let e = d.call_err(method, params).await;
        assert_full(&e);
        assert_eq!(
            snapshot(&d, &users).await,
            before,
            "{method} changed the state"
        );
    }
    for user in ["one-more", "inline-small", "inline-big"] {
        d.call_err("users.get", json!({ "user_id": user }))
            .await
            .assert(-32001, "not_found");
    }
    // A bulk job is refused when its row does not fit; if it is stored, it fails cleanly.
    match d
        .try_call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["b0", "b1"], "preferences": { "workflows": big_set } }),
        )
        .await
    {
        Err(e) => assert_full(&e),
        Ok(op) => {
            let id = op["id"].as_str().expect("an id").to_string();
            let done = wait_for("the bulk job to end", || async {
                let op = d.call("bulkOperations.get", json!({ "id": id })).await;
                matches!(op["status"].as_str(), Some("completed" | "failed")).then_some(op)
            })
            .await;
            assert_eq!(done["status"], "failed", "{done}");
            assert_eq!(done["success_count"], 0, "{done}");
        }
    }

    // Reads and evaluation go on.
    let decision = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["small", "big0"], "channels": [{ "type": "sms" }] }),
        )
        .await;
    assert_eq!(decision["results"][0]["channels"][0]["send"], true);
    assert_eq!(
        d.call("users.get", json!({ "user_id": "big0" })).await["properties"]["blob"]
            .as_str()
            .map(str::len),
        Some(60_000)
    );
    d.assert_alive().await;

    // Space comes back when data is deleted: freed pages are reused.
    for user in &users[..3] {
        assert_eq!(
            d.call("users.delete", json!({ "user_id": user })).await,
            json!({ "deleted": true })
        );
    }
    d.call("users.identify", big_user("after-delete")).await;

    // ...or when a reload raises the limit (it applies to the running daemon).
    fill(&d, "again").await;
    std::fs::write(
        d.config_dir.join("prefsd.toml"),
        "durability = \"normal\"\n[limits]\nmax_database_mb = 64\n",
    )
    .expect("writing prefsd.toml");
    d.call("config.reload", Value::Null).await;
    // The limit is applied by a task that follows reloads: wait until a write fits.
    wait_for("a write to fit after the reload", || async {
        match d.try_call("users.identify", big_user("after-reload")).await {
            Ok(_) => Some(()),
            Err(e) => {
                assert_full(&e);
                None
            }
        }
    })
    .await;
    for i in 0..20 {
        d.call("users.identify", big_user(&format!("roomy{i}")))
            .await;
    }
    // And lowering it again refuses growth again.
    std::fs::write(d.config_dir.join("prefsd.toml"), ONE_MB).expect("writing prefsd.toml");
    d.call("config.reload", Value::Null).await;
    wait_for("the lower limit to apply", || async {
        match d.try_call("users.identify", big_user("too-many")).await {
            Ok(_) => None,
            Err(e) => {
                assert_full(&e);
                Some(())
            }
        }
    })
    .await;
    d.assert_alive().await;
}

/// Runs `prefsd serve` on `dir`, which must fail to start: returns its stderr.
fn serve_must_fail(dir: &Path) -> String {
    match ChildDaemon::try_spawn(dir) {
        Ok(d) => panic!("prefsd serve started on a bad database: {:?}", d.log()),
        Err(f) => {
            assert_eq!(f.status.code(), Some(2), "exit 2: {:?}", f.log);
            f.log.join("\n")
        }
    }
}

fn config_only(dir: &Path) {
    write_files(
        &dir.join("config"),
        &[(
            "prefsd.toml".to_string(),
            "durability = \"full\"\n".to_string(),
        )],
    );
}

/// A directory's entries (name → bytes), to show nothing was created or changed.
/// The lock file `prefsd serve` takes beside the database (ops.md §5) is left out: it holds
/// a pid, not data.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("listing")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("reading"),
            )
        })
        .collect();
    out.sort();
    out
}

/// A database with 300 users whose header and schema are fine but one page in the middle
/// of the data is garbage: only a check of every page finds it.
fn damaged_inside() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temp dir");
    config_only(dir.path());
    let daemon = ChildDaemon::spawn(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let batch: Vec<Value> = (0..300)
            .map(|i| {
                json!({ "jsonrpc": "2.0", "id": i, "method": "users.identify",
                        "params": { "user_id": format!("user-{i}"), "properties": { "blob": "x".repeat(200) } } })
            })
            .collect();
        let mut conn = crate::support::HttpConn::connect(&daemon.socket).await;
        let response = conn.post_json(Value::Array(batch).to_string()).await;
        assert!(response.status.is_success());
        let answers = response.json.as_ref().and_then(Value::as_array);
        let failed: Vec<&Value> = answers
            .into_iter()
            .flatten()
            .filter(|a| a.get("error").is_some())
            .collect();
        assert!(
            answers.is_some_and(|a| a.len() == 300) && failed.is_empty(),
            "every identify succeeds: {:?}",
            failed.first().map_or(response.json.as_ref(), |f| Some(*f))
        );
    });
    assert!(daemon.terminate().success());
    let mut bytes = std::fs::read(dir.path().join("prefsd.db")).expect("reading");
    assert!(
        !dir.path().join("prefsd.db-wal").exists(),
        "a graceful stop checkpoints the WAL into the database file"
    );
    let pages = bytes.len() / 4096;
    assert!(pages > 10, "{pages} pages");
    let middle = pages / 2 * 4096;
    for b in &mut bytes[middle..middle + 4096] {
        *b = 0xA5;
    }
    bytes
}

#[test]
fn a_corrupt_database_file_is_refused_at_start_and_left_untouched() {
    // A real database, then damaged in three ways.
    let good = tempfile::tempdir().expect("a temp dir");
    config_only(good.path());
    let daemon = ChildDaemon::spawn(good.path());
    // A graceful stop checkpoints the WAL: the main file holds the whole database.
    let log = daemon.log();
    let status = daemon.terminate();
    assert!(status.success(), "{status}: {log:?}");
    let real = std::fs::read(good.path().join("prefsd.db")).expect("reading the database");
    assert!(
        real.len() >= 8192,
        "a real database of {} bytes",
        real.len()
    );

    let mut not_sqlite =
        b"this is not a database, just some text that was copied over it\n".repeat(200);
    not_sqlite.truncate(8192);
    let mut bad_header = real.clone();
    bad_header[..16].copy_from_slice(b"SQLite format 2\0");
    let mut garbage_schema = real.clone();
    // Page 1 after the 100-byte header holds the schema table: overwrite it.
    for b in &mut garbage_schema[100..4096] {
        *b = 0xA5;
    }
    let truncated = real[..1000].to_vec();
    let damaged_page = damaged_inside();

    for (name, bytes) in [
        ("not an SQLite file", not_sqlite),
        ("a damaged header", bad_header),
        ("a garbage schema page", garbage_schema),
        ("a truncated file", truncated),
        ("a damaged data page", damaged_page),
    ] {
        let dir = tempfile::tempdir().expect("a temp dir");
        config_only(dir.path());
        let database = dir.path().join("prefsd.db");
        std::fs::write(&database, &bytes).expect("writing the bad database");
        let before = files(dir.path());
        let log = serve_must_fail(dir.path());
        assert!(
            log.contains("opening the database") && log.contains("prefsd.db"),
            "{name}: the message names the database: {log}"
        );
        assert_eq!(files(dir.path()), before, "{name}: the file is untouched");
        assert!(
            !dir.path().join("prefsd.sock").exists(),
            "{name}: no socket"
        );
    }
}

#[test]
fn a_database_path_that_cannot_be_opened_is_refused_at_start() {
    // As root every file is readable, so "unreadable" is a path SQLite cannot open as a
    // file: a directory, or a file under a missing directory.
    let dir = tempfile::tempdir().expect("a temp dir");
    config_only(dir.path());
    std::fs::create_dir(dir.path().join("prefsd.db")).expect("a directory in the way");
    let before = files(dir.path());
    let log = serve_must_fail(dir.path());
    assert!(log.contains("opening the database"), "{log}");
    assert_eq!(files(dir.path()), before);
    assert_eq!(
        std::fs::read_dir(dir.path().join("prefsd.db"))
            .expect("still a directory")
            .count(),
        0
    );

    let dir = tempfile::tempdir().expect("a temp dir");
    write_files(
        &dir.path().join("config"),
        &[(
            "prefsd.toml".to_string(),
            format!(
                "database = \"{}\"\n",
                dir.path().join("missing/prefsd.db").display()
            ),
        )],
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_prefsd"))
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config"))
        .arg("--socket")
        .arg(dir.path().join("prefsd.sock"))
        .output()
        .expect("running prefsd serve");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("opening the database") && stderr.contains("missing/prefsd.db"),
        "{stderr}"
    );
    assert!(!dir.path().join("missing").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_directory_disappearing_keeps_the_config_in_force() {
    let mut d = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[vars]\nregion = \"eu\"\n",
    )])
    .await;
    let evaluate = json!({ "workflow": "new-comment", "recipients": ["u1"],
                           "channels": [{ "type": "email" }, { "type": "sms" }] });
    let decide = |result: Value| -> Vec<bool> {
        result["results"][0]["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .map(|c| c["send"].as_bool().expect("send"))
            .collect()
    };
    // environment.json: email on, sms off.
    assert_eq!(
        decide(d.call("preferences.evaluate", evaluate.clone()).await),
        [true, false]
    );
    let version = d.call("config.status", Value::Null).await["version"].clone();

    std::fs::remove_dir_all(&d.config_dir).expect("removing the config directory");
    // The watcher notices and keeps the old config; the status says why.
    let status = wait_for("config.status to show the error", || async {
        let status = d.call("config.status", Value::Null).await;
        (!status["last_error"].is_null()).then_some(status)
    })
    .await;
    assert_eq!(status["version"], version, "{status}");
    let message = status["last_error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("cannot read the config directory"),
        "{status}"
    );
    // An explicit reload fails the same way and changes nothing.
    let e = d.call_err("config.reload", Value::Null).await;
    e.assert(-32602, "invalid_params");
    assert!(e.message.contains("old config stays in force"), "{e:?}");
    assert_eq!(
        decide(d.call("preferences.evaluate", evaluate.clone()).await),
        [true, false]
    );
    assert_eq!(
        d.call("config.status", Value::Null).await["workflows"],
        4,
        "the catalog in force"
    );
    // Writes go on too.
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "channel_types": { "sms": true } } }),
    )
    .await;
    assert_eq!(
        decide(d.call("preferences.evaluate", evaluate.clone()).await),
        [true, true]
    );

    // The directory comes back: a reload (SIGHUP or config.reload; the watch ended with
    // the directory) applies it.
    write_files(
        &d.config_dir,
        &[(
            "environment.json".to_string(),
            r#"{ "channel_types": { "email": false } }"#.to_string(),
        )],
    );
    let status = d.call("config.reload", Value::Null).await;
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(status["workflows"], 0, "{status}");
    assert_eq!(
        decide(d.call("preferences.evaluate", evaluate).await),
        [false, true]
    );
    d.stop().await;
}
