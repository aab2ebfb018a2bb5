//! Bulk jobs, measured as ratios in one run (issue 4):
//!
//! 1. one 1000-user job, submit → `completed`, against a database of 100 000 users, next to
//!    a raw rusqlite upsert of the same 1000 rows in one transaction (same schema, same
//!    durability, a copy of the same database);
//! 2. `users.getPreferences` p99 under load, with and without 1000-user jobs running back to
//!    back: 8 connections sending back to back (the target), then an open loop at a fixed
//!    rate.
//!
//! `cargo bench --bench jobs` (add `-- --quick` for a short run). The daemon runs
//! in-process on a temp socket, with the daemon's allocator; the load comes from
//! `prefsd bench`'s generator and the jobs from a client, each on its own thread.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prefsd::bench::load::{Limit, LoadConfig, run_rounds};
use prefsd::bench::seed::{SeedPlan, seed_db};
use prefsd::bench::{Mix, Rng, Transport, Users, Workload, user_id};
use prefsd::config::{ConfigHandle, Overrides};
use prefsd::store::Db;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The daemon's allocator, so that the in-process server behaves as `prefsd serve` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USERS: u64 = 100_000;
const JOB_USERS: usize = 1000;
/// The open loop's rate: well below what 8 connections reach back to back (about 35 000
/// calls/s here), so that latency, not capacity, is measured.
const OPEN_LOOP_RATE: u32 = 2000;

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    let users = if quick { 20_000 } else { USERS };
    let dir = tempfile::tempdir()?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir)?;
    let chunk = std::env::var("PREFSD_BENCH_CHUNK").unwrap_or_else(|_| "250".into());
    std::fs::write(
        config_dir.join("prefsd.toml"),
        format!("durability = \"full\"\n[jobs]\nchunk_size = {chunk}\n"),
    )?;
    let db_path = dir.path().join("prefsd.db");
    let raw_path = dir.path().join("raw.db");

    println!("seeding {users} users ...");
    let t = Instant::now();
    {
        let db = Db::open(&db_path, prefsd::config::Durability::Full)?;
        let plan = SeedPlan {
            users,
            sets_per_user: 1,
            seed: 7,
            tenants: 2,
            objects: 0,
            chunk: 10_000,
            history: 0,
        };
        seed_db(&db, &plan, |_, _| {})?;
        db.close();
    }
    std::fs::copy(&db_path, &raw_path)?;
    println!("seeded in {:.1}s", t.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(prefsd::sched::prefer_short_slices)
        .enable_all()
        .build()?;
    let socket = dir.path().join("prefsd.sock");
    let cancel = CancellationToken::new();
    let mut daemon_db = None;
    let server = runtime.block_on(async {
        let config = ConfigHandle::load(
            config_dir.clone(),
            Overrides {
                socket: Some(socket.clone()),
                database: Some(db_path.clone()),
                ..Default::default()
            },
            None,
        )
        .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
        let db = Db::open(&db_path, prefsd::config::Durability::Full)?;
        daemon_db = Some(db.clone());
        let listener = prefsd::server::bind(&socket, 0o600)?;
        let ctx = Arc::new(prefsd::api::Context::new(db, config));
        anyhow::Ok(tokio::spawn(prefsd::server::run(
            listener,
            ctx,
            cancel.clone().cancelled_owned(),
        )))
    })?;

    // 1. A 1000-user job against a raw upsert of the same rows, alternating.
    let mut rng = Rng::new(11);
    let mut job_ms = Vec::new();
    let mut raw_ms = Vec::new();
    let mut raw = rusqlite::Connection::open(&raw_path)?;
    raw.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    for round in 0..rounds {
        let ids: Vec<String> = (0..JOB_USERS).map(|_| user_id(rng.below(users))).collect();
        let prefs = json!({ "channel_types": { "sms": round % 2 == 0 }, "workflows": { format!("w{round}"): false } });
        let ms = runtime.block_on(run_job(&socket, &ids, &prefs))?;
        job_ms.push(ms);
        // The daemon copies its WAL back after the job, beside other work; the raw upsert
        // is timed once that is done, so that it runs alone as the job did.
        if let Some(db) = &daemon_db {
            db.wait_for_checkpoints();
        }
        let text = serde_json::to_string(&prefs)?;
        let t = Instant::now();
        let tx = raw.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO preference_sets (collection, recipient_id, set_id, preferences, updated_at)
                 VALUES ('', ?1, 'default', ?2, ?3)
                 ON CONFLICT (collection, recipient_id, set_id) DO UPDATE
                 SET preferences = excluded.preferences, updated_at = excluded.updated_at",
            )?;
            for id in &ids {
                stmt.execute(rusqlite::params![
                    id,
                    text,
                    format!("2026-11-30T00:00:{round:02}Z")
                ])?;
            }
        }
        tx.commit()?;
        raw_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let job = median(&job_ms);
    let raw_median = median(&raw_ms);
    println!(
        "1000-user job, submit -> completed: median {job:.1} ms over {rounds} rounds ({job_ms:.1?})"
    );
    println!("raw rusqlite upsert of the same 1000 rows: median {raw_median:.1} ms ({raw_ms:.1?})");
    println!("ratio job / raw: {:.2} (target <= 2)", job / raw_median);

    // 2. getPreferences p99 with and without jobs running: 8 connections back to back (the
    // target), then an open loop at a fixed rate, as an app server sends them (reported).
    let duration = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let load = LoadConfig {
        socket: socket.clone(),
        transport: Transport::Http,
        connections: 8,
        limit: Limit::Duration(duration),
        rate: None,
        workload: Workload::Get,
        compare: None,
        rounds: 1,
        batch: 1,
        mix: Mix {
            reads: 1,
            evaluates: 0,
            writes: 0,
        },
        users: Users {
            count: users,
            skew: 0.0,
        },
        seed: 3,
        pid: None,
    };
    let rounds = if quick { 1 } else { 5 };
    p99_with_and_without_jobs(
        "8 connections back to back",
        "target <= 2",
        &load,
        rounds,
        users,
    )?;
    let open = LoadConfig {
        rate: Some(OPEN_LOOP_RATE),
        ..load
    };
    p99_with_and_without_jobs(
        &format!("open loop, {OPEN_LOOP_RATE} calls/s"),
        "reported, no target",
        &open,
        rounds,
        users,
    )?;

    // The server closes the database last, which needs the only handle.
    drop(daemon_db);
    cancel.cancel();
    runtime.block_on(server)??;
    Ok(())
}

/// Alternates load runs without and with 1000-user jobs running back to back, and prints
/// the median p99 of each and their ratio.
fn p99_with_and_without_jobs(
    label: &str,
    target: &str,
    load: &LoadConfig,
    rounds: usize,
    users: u64,
) -> anyhow::Result<()> {
    let mut quiet = Vec::new();
    let mut busy = Vec::new();
    for _ in 0..rounds {
        quiet.push(p99_us(load)?);
        let stop = CancellationToken::new();
        // The jobs come from another client on its own thread, as from an app server: the
        // daemon's runtime serves them but does not also run their client.
        let jobs = {
            let (socket, stop) = (load.socket.clone(), stop.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(jobs_back_to_back(socket, users, stop))
            })
        };
        busy.push(p99_us(load)?);
        stop.cancel();
        let n = jobs
            .join()
            .map_err(|_| anyhow::anyhow!("the jobs thread panicked"))??;
        println!("  ({label}: {n} jobs ran during the loaded round)");
    }
    let (q, b) = (median(&quiet), median(&busy));
    println!("getPreferences p99, {label}, without jobs: {q:.0} us ({quiet:.0?})");
    println!(
        "getPreferences p99, {label}, with 1000-user jobs back to back: {b:.0} us ({busy:.0?})"
    );
    println!("ratio with / without ({label}): {:.2} ({target})", b / q);
    Ok(())
}

/// Submits one job and waits for `completed` over the subscription; returns milliseconds.
async fn run_job(socket: &Path, ids: &[String], prefs: &Value) -> anyhow::Result<f64> {
    let client = prefsd::client::Client::connect(socket).await?;
    let t = Instant::now();
    let op = client
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ids, "preferences": prefs }),
        )
        .await?;
    let id = op["id"].as_str().unwrap_or_default().to_string();
    let mut sub = client.follow_bulk(&id).await?;
    while let Some(state) = sub.next().await {
        if state?["status"] == "completed" {
            return Ok(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    anyhow::bail!("the job did not complete")
}

async fn jobs_back_to_back(
    socket: std::path::PathBuf,
    users: u64,
    stop: CancellationToken,
) -> anyhow::Result<u32> {
    let mut rng = Rng::new(5);
    let mut n = 0;
    while !stop.is_cancelled() {
        let ids: Vec<String> = (0..JOB_USERS).map(|_| user_id(rng.below(users))).collect();
        run_job(
            &socket,
            &ids,
            &json!({ "channel_types": { "push": n % 2 == 0 } }),
        )
        .await?;
        n += 1;
    }
    Ok(n)
}

/// One load run on its own thread and runtime; returns the p99 latency in microseconds.
fn p99_us(load: &LoadConfig) -> anyhow::Result<f64> {
    let load = load.clone();
    let results = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(run_rounds(&load))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let run = results.last().ok_or_else(|| anyhow::anyhow!("no run"))?;
    anyhow::ensure!(
        run.errors == 0,
        "errors during the load: {:?}",
        run.first_error
    );
    Ok(run.latency.p99.as_secs_f64() * 1e6)
}

fn median(values: &[f64]) -> f64 {
    prefsd::bench::stats::median(values).unwrap_or(f64::NAN)
}
