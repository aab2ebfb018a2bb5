//! Fleet mode (fleet.md): several daemons on one PostgreSQL schema. Each test skips when
//! `PREFSD_TEST_PG` is not set (and fails with `PREFSD_REQUIRE_PG=1`, as in CI).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, fleet_pg, fresh_schema, join_all, wait_for};

/// `n` daemons on one fresh schema, or `None` without a PostgreSQL to test on.
async fn fleet(n: usize) -> Option<Vec<Daemon>> {
    let url = fleet_pg()?;
    let pg = prefsd::store::PgOptions {
        url,
        schema: fresh_schema(),
    };
    let mut daemons = Vec::new();
    for _ in 0..n {
        daemons.push(Daemon::start_on_pg(pg.clone(), &[]).await);
    }
    Some(daemons)
}

async fn channel_types(d: &Daemon, user: &str) -> Value {
    d.call(
        "users.getPreferences",
        json!({ "user_id": user, "raw": true }),
    )
    .await["channel_types"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_daemon_is_read_on_the_others_and_the_caches_follow() {
    let Some(fleet) = fleet(3).await else { return };
    let [a, b, c] = &fleet[..] else {
        unreachable!()
    };
    // B and C cache the user as it is now (empty), so what they answer next must come from
    // an invalidation, not from a first read.
    for d in [b, c] {
        assert_eq!(channel_types(d, "dana").await, Value::Null);
        assert_eq!(channel_types(d, "dana").await, Value::Null);
    }
    a.call(
        "users.setPreferences",
        json!({ "user_id": "dana", "preferences": { "channel_types": { "email": false } } }),
    )
    .await;
    // Read your writes on A at once; B and C within the staleness bound.
    assert_eq!(channel_types(a, "dana").await, json!({ "email": false }));
    for d in [b, c] {
        wait_for("the write to reach another daemon", || async {
            (channel_types(d, "dana").await == json!({ "email": false })).then_some(())
        })
        .await;
    }
    // The evaluation on B follows too (the opt-out of the story).
    let decision = b
        .call(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["dana"], "channels": [{ "type": "email" }] }),
        )
        .await;
    assert_eq!(
        decision["results"][0]["channels"][0]["send"], false,
        "{decision}"
    );
    for d in &fleet {
        let status = d.call("daemon.status", json!({})).await;
        assert_eq!(status["store"]["backend"], "postgres");
        assert_eq!(status["store"]["coherent"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_of_one_set_through_three_daemons_lose_no_key() {
    let Some(fleet) = fleet(3).await else { return };
    // 3 daemons x 8 clients, each merging its own workflow key into one user's set.
    let calls = fleet.iter().enumerate().flat_map(|(i, d)| {
        (0..8).map(move |j| async move {
            let client = d.ws().await;
            client
                .call(
                    "users.setPreferences",
                    json!({ "user_id": "shared", "preferences": {
                        "__persistence_strategy__": "merge",
                        "workflows": { format!("w-{i}-{j}"): true } } }),
                )
                .await
                .expect("a merge");
        })
    });
    join_all(calls).await;
    let set = fleet[0]
        .call(
            "users.getPreferences",
            json!({ "user_id": "shared", "raw": true }),
        )
        .await;
    let keys: BTreeSet<String> = set["workflows"]
        .as_object()
        .expect("workflows")
        .keys()
        .cloned()
        .collect();
    let expected: BTreeSet<String> = (0..3)
        .flat_map(|i| (0..8).map(move |j| format!("w-{i}-{j}")))
        .collect();
    assert_eq!(keys, expected);
    // The log holds 24 changes of the set, one per merge, in one order on every daemon.
    let mut logs = Vec::new();
    for d in &fleet {
        let list = d
            .call(
                "changes.list",
                json!({ "kinds": ["preferences.set"], "limit": 1000 }),
            )
            .await;
        let seqs: Vec<i64> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["seq"].as_i64().expect("seq"))
            .collect();
        logs.push(seqs);
    }
    assert_eq!(logs[0].len(), 24);
    assert!(logs.iter().all(|l| l == &logs[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_two_daemons_get_the_same_sequence() {
    let Some(fleet) = fleet(2).await else { return };
    let [a, b] = &fleet[..] else { unreachable!() };
    let head = a.call("changes.list", json!({ "limit": 1 })).await["head"]
        .as_i64()
        .expect("head");
    let (ca, cb) = (a.ws().await, b.ws().await);
    let mut sa = ca.subscribe_changes(Some(head)).await.expect("subscribing");
    let mut sb = cb.subscribe_changes(Some(head)).await.expect("subscribing");
    // Writes through both daemons, interleaved.
    for i in 0..6_u32 {
        let d = if i.is_multiple_of(2) { a } else { b };
        d.call(
            "users.setPreferences",
            json!({ "user_id": format!("s{i}"), "preferences": {} }),
        )
        .await;
    }
    let mut seen = Vec::new();
    for sub in [&mut sa, &mut sb] {
        let mut got = Vec::new();
        while got.len() < 6 {
            let change = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("a change within 10 s")
                .expect("a change")
                .expect("a change object");
            // Each daemon records its config at start, perhaps after `head` was read.
            if change["kind"] != "preferences.set" {
                continue;
            }
            got.push((
                change["seq"].as_i64().expect("seq"),
                change["recipient"]["id"].clone(),
            ));
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1]);
    let ids: Vec<Value> = seen[0].iter().map(|(_, id)| id.clone()).collect();
    let expected: Vec<Value> = (0..6).map(|i| json!(format!("s{i}"))).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_the_fleet_commit_one_at_a_time_in_seq_order() {
    // The change log is commit-ordered across daemons (fleet.md §3): a write holds the
    // fleet's write lock from its start to its commit, so a second daemon's write waits,
    // and a reader never sees a change whose seq is below one it saw before.
    let Some(url) = fleet_pg() else { return };
    let pg = prefsd::store::PgOptions {
        url,
        schema: fresh_schema(),
    };
    let open = |pg| open_store(pg).expect("opening");
    let (da, db) = (open(pg.clone()), open(pg.clone()));
    let origin =
        || prefsd::model::change::Origin::new(prefsd::model::change::Actor::Config, "test");
    let set = prefsd::model::PreferenceSet::empty();
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let (wrote, written) = std::sync::mpsc::channel::<()>();
    // A: writes, then holds its transaction open until told to go on.
    let a = {
        let (da, set) = (da.clone(), set.clone());
        std::thread::spawn(move || {
            da.write_blocking(origin(), move |w| {
                w.put_set(
                    &prefsd::model::RecipientKey::user("a"),
                    "default",
                    &set,
                    "t",
                )?;
                let _ = wrote.send(());
                let _ = held.recv();
                Ok::<_, prefsd::store::Error>(())
            })
        })
    };
    written.recv().expect("A wrote");
    // B: must wait for A.
    let (b_done_tx, b_done) = std::sync::mpsc::channel::<()>();
    let b = {
        let (db, set) = (db.clone(), set.clone());
        std::thread::spawn(move || {
            let r = db.write_blocking(origin(), move |w| {
                w.put_set(
                    &prefsd::model::RecipientKey::user("b"),
                    "default",
                    &set,
                    "t",
                )
            });
            let _ = b_done_tx.send(());
            r
        })
    };
    assert!(
        b_done.recv_timeout(Duration::from_millis(300)).is_err(),
        "B committed while A held its transaction"
    );
    // A reader sees neither.
    let seen = read_seqs(&db).await;
    assert!(seen.is_empty(), "{seen:?}");
    hold.send(()).expect("A goes on");
    a.join().expect("A").expect("A's write");
    b.join().expect("B").expect("B's write");
    let seen = read_seqs(&db).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].1, "a",
        "A committed first, so its seq is the smaller"
    );
    assert!(seen[0].0 < seen[1].0);
    for d in [da, db] {
        tokio::task::spawn_blocking(move || d.close())
            .await
            .expect("closing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_never_logged_before_the_newest_one_when_a_clock_steps_back() {
    // The log's `at` never goes back (history.md): a change appended after one dated later
    // (another daemon's clock ahead, or this one stepped back) takes that later `at`. On
    // PostgreSQL the append reads the newest `at` itself, in its own statement.
    let Some(url) = fleet_pg() else { return };
    let pg = prefsd::store::PgOptions {
        url,
        schema: fresh_schema(),
    };
    let db = open_store(pg.clone()).expect("opening");
    let origin =
        || prefsd::model::change::Origin::new(prefsd::model::change::Actor::Config, "test");
    let set = prefsd::model::PreferenceSet::empty();
    let put = |user: &'static str| {
        let (db, set) = (db.clone(), set.clone());
        tokio::task::spawn_blocking(move || {
            db.write_blocking(origin(), move |w| {
                w.put_set(
                    &prefsd::model::RecipientKey::user(user),
                    "default",
                    &set,
                    "t",
                )
            })
            .expect("writing")
        })
    };
    put("early").await.expect("the first write");
    // The first change, as if logged by a clock an hour ahead.
    let ahead = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    let schema = prefsd::store::postgres::quote_ident(&pg.schema);
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connecting");
        client
            .execute(&format!("UPDATE {schema}.changes SET at = $1"), &[&ahead])
            .expect("moving the change ahead");
    })
    .await
    .expect("updating");
    put("late").await.expect("the second write");
    let changes = db
        .read(|r| {
            r.log().list(
                0,
                100,
                &prefsd::store::log::ChangeFilter {
                    kinds: vec![prefsd::model::change::ChangeKind::PreferencesSet],
                    recipient: None,
                },
            )
        })
        .await
        .expect("reading the log");
    let ats: Vec<(String, i64)> = changes
        .into_iter()
        .map(|c| (c.recipient.map(|k| k.id).unwrap_or_default(), c.at))
        .collect();
    assert_eq!(
        ats,
        vec![("early".to_string(), ahead), ("late".to_string(), ahead)]
    );
    tokio::task::spawn_blocking(move || db.close())
        .await
        .expect("closing");
}

/// The `preferences.set` changes in the log, as (seq, user id).
async fn read_seqs(db: &prefsd::store::Db) -> Vec<(i64, String)> {
    db.read(|r| {
        let changes = r.log().list(
            0,
            100,
            &prefsd::store::log::ChangeFilter {
                kinds: vec![prefsd::model::change::ChangeKind::PreferencesSet],
                recipient: None,
            },
        )?;
        Ok::<_, prefsd::store::Error>(
            changes
                .into_iter()
                .map(|c| (c.seq, c.recipient.map(|k| k.id).unwrap_or_default()))
                .collect(),
        )
    })
    .await
    .expect("reading the log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_on_postgres_names_its_tools() {
    let Some(fleet) = fleet(1).await else { return };
    let e = fleet[0]
        .call_err("daemon.backup", json!({ "path": "/tmp/never.db" }))
        .await;
    e.assert(-32005, "conflict");
    assert!(e.message.contains("pg_dump"), "{}", e.message);
}

/// Opens a store on `pg` in this process, off the runtime (PostgreSQL's client runs one of
/// its own).
fn open_store(pg: prefsd::store::PgOptions) -> Result<prefsd::store::Db, prefsd::store::Error> {
    std::thread::spawn(move || {
        prefsd::store::Db::open_at(
            &prefsd::store::Location::Postgres(pg),
            prefsd::store::Options {
                durability: prefsd::config::Durability::Full,
                max_database_mb: None,
                read_cache_mb: 8,
                max_staleness_ms: 1000,
                skip_change_log: false,
            },
        )
    })
    .join()
    .expect("opening did not panic")
}

/// A `prefsd serve` child process in `dir` on the PostgreSQL schema `pg`.
pub fn child_on_pg(
    dir: &std::path::Path,
    pg: &prefsd::store::PgOptions,
) -> crate::child::ChildDaemon {
    let socket = dir.join("prefsd.sock");
    let database = dir.join("prefsd.db");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prefsd"));
    command
        .args(crate::child::ChildDaemon::serve_args(dir))
        .env("PREFSD_DATABASE_URL", &pg.url)
        .env("PREFSD_SCHEMA", &pg.schema);
    crate::child::ChildDaemon::start(command, dir, socket, database)
        .unwrap_or_else(|f| panic!("prefsd serve on PostgreSQL did not start: {f:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_an_idle_worker_runs_the_job_it_queued() {
    // The daemon a job is queued on runs it, so that its subscribers hear of the job's end
    // without a hop through another daemon; the others, woken by its NOTIFY, leave it
    // alone meanwhile.
    let Some(fleet) = fleet(2).await else { return };
    let [a, b] = &fleet[..] else { unreachable!() };
    // A's worker claims nothing until let go: a job B took meanwhile would move on.
    a.jobs().hold();
    // Once started, A's worker waits for work (it purges and looks for jobs first).
    wait_for("A's worker to wait for work", || async {
        a.jobs().is_idle().then_some(())
    })
    .await;
    let users: Vec<String> = (0..3).map(|i| format!("held-{i}")).collect();
    let op = a
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": users, "preferences": { "channel_types": { "sms": false } } }),
        )
        .await;
    let id = op["id"].as_str().expect("an id").to_string();
    let node = a.context().db.node().to_string();
    assert_eq!(
        lease_owner(a, &id).await.as_deref(),
        Some(node.as_str()),
        "the job is A's from its insert"
    );
    // B heard of the job and looked (its worker reads the job table on each NOTIFY).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = b.call("bulkOperations.get", json!({ "id": id })).await;
    assert_eq!(job["processed_rows"], 0, "B took A's job: {job}");
    a.jobs().release_chunks(100);
    wait_for("A to finish its job", || async {
        let job = b.call("bulkOperations.get", json!({ "id": id })).await;
        (job["status"] == "completed").then_some(())
    })
    .await;
    assert_eq!(lease_owner(a, &id).await.as_deref(), Some(node.as_str()));
}

/// Which daemon holds or last held job `id` (its node name), read from `d`'s schema.
async fn lease_owner(d: &Daemon, id: &str) -> Option<String> {
    let pg = d.pg.clone().expect("a daemon on PostgreSQL");
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls).expect("connecting");
        let sql = format!(
            "SELECT lease_owner FROM {}.bulk_operations WHERE id = $1",
            prefsd::store::postgres::quote_ident(&pg.schema)
        );
        // Ids are stored as bytes (fleet.md: the schema mapping).
        client
            .query_one(&sql, &[&id.as_bytes()])
            .expect("the job's row")
            .get(0)
    })
    .await
    .expect("reading the lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_runner_is_killed_is_finished_once_by_another_daemon() {
    let Some(url) = fleet_pg() else { return };
    let pg = prefsd::store::PgOptions {
        url,
        schema: fresh_schema(),
    };
    // Chunks of 3 and a 2 s lease: the job takes long enough to be killed mid-way, and the
    // other daemon takes it over soon after.
    let config = || {
        vec![(
            "prefsd.toml".to_string(),
            "[jobs]\nchunk_size = 3\nlease_s = 2\n".to_string(),
        )]
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a temp dir"),
        tempfile::tempdir().expect("a temp dir"),
    );
    crate::support::write_files(&dir_a.path().join("config"), &config());
    crate::support::write_files(&dir_b.path().join("config"), &config());
    let a = child_on_pg(dir_a.path(), &pg);
    let users: Vec<String> = (0..120).map(|i| format!("fleet-{i:03}")).collect();
    let op = a
        .ok(
            "users.bulkSetPreferences",
            json!({ "user_ids": users, "preferences": { "channel_types": { "sms": false } } }),
        )
        .await;
    let id = op["id"].as_str().expect("an id").to_string();
    async fn progress(d: &crate::child::ChildDaemon, id: &str) -> Value {
        d.ok("bulkOperations.get", json!({ "id": id })).await
    }
    wait_for("A to run the job", || async {
        (progress(&a, &id).await["processed_rows"].as_i64() > Some(0)).then_some(())
    })
    .await;
    // B joins the fleet while A holds the job, then A dies mid-job.
    let b = child_on_pg(dir_b.path(), &pg);
    a.kill();
    let finished = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let job = progress(&b, &id).await;
            if job["status"] == "completed" {
                return job;
            }
            // Not too often: a daemon serving calls gives its bulk worker smaller chunks.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let done = finished
        .unwrap_or_else(|_| panic!("B did not finish the job; its log:\n{}", b.log().join("\n")));
    assert_eq!(done["processed_rows"], 120, "{done}");
    assert_eq!(done["success_count"], 120, "{done}");
    assert_eq!(done["error_count"], 0, "{done}");
    // Exactly once: one change per user from this job, and every user written.
    let mut from_job = std::collections::BTreeMap::<String, usize>::new();
    let mut after = 0;
    loop {
        let page = b
            .ok(
                "changes.list",
                json!({ "after": after, "limit": 1000, "kinds": ["preferences.set"] }),
            )
            .await;
        let items = page["items"].as_array().expect("items").clone();
        if items.is_empty() {
            break;
        }
        for c in &items {
            after = c["seq"].as_i64().expect("seq");
            if c["bulk_operation"] == id.as_str() {
                *from_job
                    .entry(c["recipient"]["id"].as_str().expect("id").to_string())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(from_job.len(), 120);
    assert!(from_job.values().all(|&n| n == 1), "{from_job:?}");
    let set = b
        .ok(
            "users.getPreferences",
            json!({ "user_id": "fleet-119", "raw": true }),
        )
        .await;
    assert_eq!(set["channel_types"], json!({ "sms": false }));
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_loses_no_acknowledged_write_and_every_daemon_serves_again() {
    let Some(cluster) = crate::pgcluster::Cluster::start() else {
        return;
    };
    let pg = prefsd::store::PgOptions {
        url: cluster.url(),
        schema: fresh_schema(),
    };
    // Acknowledged means committed on the primary (`synchronous_commit = on`).
    let full =
        crate::support::PREFSD_TOML.replace("durability = \"normal\"", "durability = \"full\"");
    let files = [("prefsd.toml", full.as_str())];
    let (a, b) = (
        Daemon::start_on_pg(pg.clone(), &files).await,
        Daemon::start_on_pg(pg.clone(), &files).await,
    );
    let client = a.ws().await;
    let write = |i: usize| {
        let client = &client;
        async move {
            client
                .call(
                    "users.setPreferences",
                    json!({ "user_id": format!("r{i}"), "preferences": { "workflows": { "w": i.is_multiple_of(2) } } }),
                )
                .await
        }
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        if i == 20 {
            cluster.restart_immediate();
        }
        match write(i).await {
            Ok(_) => acknowledged.push(i),
            Err(e) => {
                // Only `unavailable`, and only while the server is away.
                let text = format!("{e:#}");
                assert!(
                    text.contains("-32008") || text.contains("unavailable"),
                    "{text}"
                );
                refused += 1;
            }
        }
    }
    // Back by itself: writes go through again on A.
    wait_for("A to write again", || async { write(1000).await.ok() }).await;
    assert!(
        acknowledged.len() >= 20,
        "{acknowledged:?} ({refused} refused)"
    );
    // Every acknowledged write is there, read through both daemons (B's feed comes back
    // and its cache catches up by itself).
    for d in [&a, &b] {
        wait_for("the daemon's feed to be back", || async {
            let status = d.call("daemon.status", json!({})).await;
            (status["store"]["coherent"] == true).then_some(())
        })
        .await;
        for &i in &acknowledged {
            let set = d
                .call(
                    "users.getPreferences",
                    json!({ "user_id": format!("r{i}"), "raw": true }),
                )
                .await;
            assert_eq!(
                set["workflows"],
                json!({ "w": i.is_multiple_of(2) }),
                "r{i}"
            );
        }
    }
    let status = b.call("daemon.status", json!({})).await;
    assert!(
        status["store"]["reconnects"].as_u64() >= Some(1),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_it_cannot_reach_stops_the_start_with_exit_2_and_what_to_do() {
    // No PostgreSQL needed: nothing listens on this socket directory.
    let dir = tempfile::tempdir().expect("a temp dir");
    crate::support::write_files(&dir.path().join("config"), &crate::support::default_files());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prefsd"))
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config"))
        .arg("--socket")
        .arg(dir.path().join("prefsd.sock"))
        .arg("--database-url")
        .arg(format!(
            "postgresql://prefsd:s3cret@/prefsd?host={}",
            dir.path().display()
        ))
        .output()
        .expect("running prefsd serve");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(stderr.contains("[store] url"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password is never shown: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let Some(url) = fleet_pg() else { return };
    let pg = prefsd::store::PgOptions {
        url,
        schema: fresh_schema(),
    };
    let open = open_store;
    open(pg.clone()).expect("migrating a fresh schema").close();
    let (url, schema) = (pg.url.clone(), pg.schema.clone());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connecting");
        client
            .batch_execute(&format!(
                "INSERT INTO \"{schema}\".prefsd_schema_migrations (version, name) VALUES (999, 'future')"
            ))
            .expect("a version from the future");
    })
    .join()
    .expect("no panic");
    match open(pg) {
        Err(prefsd::store::Error::TooNew { found: 999, .. }) => {}
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}
