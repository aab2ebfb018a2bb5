//! `prefsd bench` and `prefsd bench seed`, through the built binary against an in-process
//! daemon.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::support::Daemon;

/// Runs the prefsd binary with `args` off the runtime (the daemon keeps serving meanwhile).
async fn prefsd(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prefsd"))
            .args(&args)
            .env_remove("PREFSD_SOCKET")
            .env_remove("PREFSD_DATABASE")
            .env("PREFSD_LOG", "warn")
            .output()
            .expect("running prefsd")
    })
    .await
    .expect("the prefsd process did not panic the test")
}

fn args(socket: &Path, rest: &[&str]) -> Vec<String> {
    let mut out = vec![
        "bench".to_string(),
        "--socket".into(),
        socket.display().to_string(),
    ];
    out.extend(rest.iter().map(|s| s.to_string()));
    out
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_mixed_makes_its_calls_without_errors() {
    let mut daemon = Daemon::start().await;

    let output = prefsd(args(
        &daemon.socket,
        &["--calls", "200", "--workload", "mixed", "--users", "50"],
    ))
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("errors: 0"), "{}", describe(&output));
    assert!(stdout.contains("mixed"), "{}", describe(&output));

    // The same as JSON, over the WebSocket, with a baseline: every call is counted.
    let output = prefsd(args(
        &daemon.socket,
        &[
            "--calls",
            "60",
            "--workload",
            "mixed",
            "--users",
            "50",
            "--transport",
            "ws",
            "--connections",
            "4",
            "--compare",
            "ping",
            "--rounds",
            "2",
            "--json",
        ],
    ))
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(report["errors"], json!(0), "{report}");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["calls"] == json!(60)), "{report}");
    assert_eq!(
        runs.iter()
            .map(|r| r["workload"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["ping", "mixed", "ping", "mixed"]
    );
    // Each run is reported on stderr as it ends, before the report.
    let stderr = String::from_utf8_lossy(&output.stderr);
    for n in 1..=4 {
        assert!(stderr.contains(&format!("run {n}/4: ")), "{stderr}");
    }
    assert!(
        report["ratio"]["calls_per_s"].as_f64().is_some(),
        "{report}"
    );
    // The daemon is this test process: found from the socket, so CPU and RSS are reported.
    assert_eq!(report["daemon"]["pid"], json!(std::process::id()));
    assert!(
        report["daemon"]["peak_rss_kib"]
            .as_u64()
            .is_some_and(|k| k > 0)
    );

    // The mixed workload's writes landed.
    assert!(
        daemon.counts().await["preference_sets"]
            .as_i64()
            .unwrap_or(0)
            > 0
    );
    daemon.assert_alive().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_a_rate_sends_at_that_rate() {
    let mut daemon = Daemon::start().await;

    // 40 pings at 200 calls/s over 4 connections: 10 per connection, 20 ms apart, so the
    // run lasts about 190 ms however fast the daemon answers (back to back it takes a few).
    for transport in ["http", "ws"] {
        let output = prefsd(args(
            &daemon.socket,
            &[
                "--calls",
                "40",
                "--rate",
                "200",
                "--connections",
                "4",
                "--transport",
                transport,
                "--json",
            ],
        ))
        .await;
        assert!(output.status.success(), "{}", describe(&output));
        let report: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
        assert_eq!(report["config"]["rate"], json!(200), "{report}");
        let run = &report["runs"][0];
        assert_eq!(run["calls"], json!(40), "{report}");
        assert_eq!(run["errors"], json!(0), "{report}");
        let seconds = run["seconds"].as_f64().unwrap_or(0.0);
        assert!(
            (0.15..2.0).contains(&seconds),
            "{transport}: 40 calls at 200/s took {seconds} s: {report}"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_no_daemon_exits_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = prefsd(args(&dir.path().join("none.sock"), &["--calls", "1"])).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot connect"),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_seed_fills_a_database_the_daemon_serves() {
    // SQLite only: `bench seed` fills a SQLite file.
    if !crate::support::on_sqlite() {
        return;
    }
    let mut daemon = Daemon::start().await;
    daemon.stop().await;

    let database = daemon.database.display().to_string();
    let output = prefsd(
        [
            "bench",
            "seed",
            "--database",
            &database,
            "--users",
            "300",
            "--sets-per-user",
            "2",
            "--seed",
            "3",
            "--tenants",
            "4",
            "--chunk",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    // "seeded PATH: 300 users, 30 objects, 4 tenants, N preference sets, ..."
    let sets: i64 = stdout
        .split(", ")
        .find_map(|part| part.strip_suffix(" preference sets"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no preference set count in {stdout:?}"));
    assert!(sets >= 600, "{stdout}");

    daemon.restart().await;
    let counts = daemon.counts().await;
    assert_eq!(
        counts,
        json!({ "users": 300, "objects": 30, "tenants": 4, "preference_sets": sets })
    );
    // A seeded user has properties and stored sets; a seeded tenant has a default set.
    let user = daemon
        .call("users.get", json!({ "user_id": "user-000042" }))
        .await;
    assert!(user["properties"]["plan"].is_string(), "{user}");
    assert!(user["properties"]["muted_alert_ids"].is_array(), "{user}");
    let listed = daemon
        .call("users.listPreferences", json!({ "user_id": "user-000042" }))
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(listed[0]["id"], "default");
    let tenant = daemon
        .call("tenants.get", json!({ "tenant_id": "tenant-01" }))
        .await;
    assert!(tenant["name"].is_string(), "{tenant}");
    assert!(tenant["settings"]["preference_set"].is_object(), "{tenant}");

    // Seeding again with the same seed changes nothing.
    daemon.stop().await;
    let again = prefsd(
        [
            "bench",
            "seed",
            "--database",
            &database,
            "--users",
            "300",
            "--seed",
            "3",
            "--tenants",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(again.status.success(), "{}", describe(&again));
    daemon.restart().await;
    assert_eq!(daemon.counts().await, counts);
    assert_eq!(
        daemon
            .call("users.listPreferences", json!({ "user_id": "user-000042" }))
            .await,
        listed
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_during_a_backup_alternates_rounds_as_long_as_the_backup() {
    // SQLite only: SQLite's online backup; on PostgreSQL its own tools back up.
    if !crate::support::on_sqlite() {
        return;
    }
    let mut daemon = Daemon::start().await;
    let backup = daemon.dir.path().join("during.db");
    let backup_arg = backup.display().to_string();
    let bench = |json: bool| {
        let mut flags = vec![
            "--workload",
            "ping",
            "--connections",
            "1",
            "--during-backup",
            &backup_arg,
            "--rounds",
            "2",
        ];
        if json {
            flags.push("--json");
        }
        prefsd(args(&daemon.socket, &flags))
    };
    let output = bench(true).await;
    assert!(output.status.success(), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    let runs = report["runs"].as_array().expect("runs");
    // Round 1 runs during the backup first, round 2 without one first.
    assert_eq!(
        runs.iter()
            .map(|r| (
                r["round"].as_u64().unwrap_or(0),
                r["baseline"] == json!(true)
            ))
            .collect::<Vec<_>>(),
        [(1, false), (1, true), (2, true), (2, false)],
        "{report}"
    );
    // Each run without a backup lasts as long as the backup of its pair (the one before
    // it in round 2: the previous round's).
    let seconds = |i: usize| runs[i]["seconds"].as_f64().unwrap_or(0.0);
    for (without, backup_run) in [(1, 0), (2, 0)] {
        let (a, b) = (seconds(without), seconds(backup_run));
        assert!((a - b).abs() < 0.25 + b * 0.1, "{a} s vs {b} s: {report}");
    }
    assert!(backup.exists(), "the backup was written");
    // The table gives each round's p99 ratio and their median.
    let output = bench(false).await;
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for text in ["round 1: ", "round 2: ", "median "] {
        assert!(stdout.contains(text), "{text}: {}", describe(&output));
    }
    daemon.assert_alive().await;
    daemon.stop().await;
}
