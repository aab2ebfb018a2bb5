//! The change log's costs (history.md §6), as ratios in one run:
//!
//! 1. `users.setPreferences` calls/s with the log against the same build with the log's
//!    insert skipped (`store::Options::skip_change_log`): two daemons in this process, on
//!    copies of one seeded database, loaded in turn (target ≥ 0.8);
//! 2. what a change costs on disk: a 1000-user bulk job's changes and the values they hold
//!    (bytes per change from SQLite's `dbstat`; the job's one set stored once);
//! 3. `users.getPreferences` with `as_of` against the plain read, on the same daemon, in
//!    turn (target ≤ 5× the time per call).
//!
//! `cargo bench --bench history` (add `-- --quick` for a short run). The full run's
//! database is 100 000 users with a million changes; the README's 1 M-user, 10 M-change
//! figures come from `prefsd bench seed --history` and `prefsd bench --workload get-as-of
//! --compare get` (see the README's performance section).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prefsd::bench::load::{Limit, LoadConfig, RunResult, run_rounds};
use prefsd::bench::seed::{SeedPlan, seed_db};
use prefsd::bench::{Mix, Rng, Transport, Users, Workload, user_id};
use prefsd::config::{ConfigHandle, Overrides};
use prefsd::store::Db;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (users, history, rounds, duration) = if quick {
        (20_000, 100_000, 3, Duration::from_secs(1))
    } else {
        (100_000, 800_000, 5, Duration::from_secs(3))
    };
    let dir = tempfile::tempdir()?;
    let logged = dir.path().join("logged.db");
    let unlogged = dir.path().join("unlogged.db");
    println!("seeding {users} users and {history} extra changes ...");
    let t = Instant::now();
    {
        let db = Db::open(&logged, prefsd::config::Durability::Full)?;
        let plan = SeedPlan {
            users,
            sets_per_user: 1,
            seed: 7,
            tenants: 2,
            objects: 0,
            chunk: 10_000,
            history,
        };
        seed_db(&db, &plan, |_, _| {})?;
        db.close();
    }
    std::fs::copy(&logged, &unlogged)?;
    println!("seeded in {:.1}s", t.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(prefsd::sched::prefer_short_slices)
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let a = runtime.block_on(start(dir.path(), "a", &logged, false, &cancel))?;
    let b = runtime.block_on(start(dir.path(), "b", &unlogged, true, &cancel))?;

    let load = |socket: &Path, workload: Workload| LoadConfig {
        socket: socket.to_path_buf(),
        transport: Transport::Http,
        connections: 8,
        limit: Limit::Duration(duration),
        rate: None,
        workload,
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

    // 1. Writes with and without the log, in turn.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        with.push(calls_per_s(&load(&a.socket, Workload::Set))?);
        without.push(calls_per_s(&load(&b.socket, Workload::Set))?);
    }
    let (w, wo) = (median(&with), median(&without));
    println!("users.setPreferences with the change log: median {w:.0} calls/s ({with:.0?})");
    println!("users.setPreferences, log insert skipped: median {wo:.0} calls/s ({without:.0?})");
    println!("ratio with / without: {:.2} (target >= 0.8)", w / wo);

    // 2. What a change costs: a 1000-user job, then the log's tables measured.
    let before = log_bytes(&a.path)?;
    let mut rng = Rng::new(11);
    let ids: Vec<String> = (0..1000).map(|_| user_id(rng.below(users))).collect();
    runtime.block_on(run_job(&a.socket, &ids))?;
    let after = log_bytes(&a.path)?;
    let changes = after.changes - before.changes;
    println!(
        "a 1000-user bulk job: {changes} changes, {} new values stored ({} bytes of value text)",
        after.values - before.values,
        after.value_text - before.value_text
    );
    println!(
        "change log on disk: {:.0} bytes per change (table and indexes, {} changes), values {:.0} bytes each ({} values)",
        after.change_bytes as f64 / after.changes.max(1) as f64,
        after.changes,
        after.value_bytes as f64 / after.values.max(1) as f64,
        after.values
    );

    // 3. as_of reads against plain reads, in turn, on the logged daemon.
    let (mut plain, mut past) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(calls_per_s(&load(&a.socket, Workload::Get))?);
        past.push(calls_per_s(&load(&a.socket, Workload::GetAsOf))?);
    }
    let (p, q) = (median(&plain), median(&past));
    println!("users.getPreferences: median {p:.0} calls/s ({plain:.0?})");
    println!("users.getPreferences with as_of: median {q:.0} calls/s ({past:.0?})");
    println!("time per call, as_of / plain: {:.2} (target <= 5)", p / q);

    cancel.cancel();
    runtime.block_on(async {
        a.server.await??;
        b.server.await?
    })?;
    a.db.close();
    b.db.close();
    Ok(())
}

struct Daemon {
    socket: PathBuf,
    path: PathBuf,
    db: Db,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A daemon in this process on `database`, serving `<dir>/<name>.sock`.
async fn start(
    dir: &Path,
    name: &str,
    database: &Path,
    skip_change_log: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<Daemon> {
    let config_dir = dir.join(format!("config-{name}"));
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(config_dir.join("prefsd.toml"), "durability = \"full\"\n")?;
    let socket = dir.join(format!("{name}.sock"));
    let config = ConfigHandle::load(
        config_dir,
        Overrides {
            socket: Some(socket.clone()),
            database: Some(database.to_path_buf()),
            ..Default::default()
        },
        None,
    )
    .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    let options = prefsd::store::Options {
        durability: prefsd::config::Durability::Full,
        max_database_mb: None,
        read_cache_mb: 8,
        max_staleness_ms: 1000,
        skip_change_log,
    };
    let db = Db::open_with(database, options)?;
    let listener = prefsd::server::bind(&socket, 0o600)?;
    let ctx = Arc::new(prefsd::api::Context::new(db.clone(), config));
    let server = tokio::spawn(prefsd::server::run(
        listener,
        ctx,
        cancel.clone().cancelled_owned(),
    ));
    Ok(Daemon {
        socket,
        path: database.to_path_buf(),
        db,
        server,
    })
}

/// One load run on its own thread and runtime (the daemons' runtime serves, as for a
/// client in another process); answers calls per second.
fn calls_per_s(load: &LoadConfig) -> anyhow::Result<f64> {
    let load = load.clone();
    let results: Vec<RunResult> = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run_rounds(&load))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let run = results.last().ok_or_else(|| anyhow::anyhow!("no run"))?;
    anyhow::ensure!(
        run.errors == 0,
        "errors during the load: {:?}",
        run.first_error
    );
    Ok(run.calls_per_s())
}

/// Submits one job and waits for it to complete.
async fn run_job(socket: &Path, ids: &[String]) -> anyhow::Result<()> {
    let client = prefsd::client::Client::connect(socket).await?;
    let op = client
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ids, "preferences": { "channel_types": { "sms": false }, "workflows": { "bench-job": false } } }),
        )
        .await?;
    let id = op["id"].as_str().unwrap_or_default().to_string();
    let mut sub = client.follow_bulk(&id).await?;
    while let Some(state) = sub.next().await {
        if state?["status"] == "completed" {
            return Ok(());
        }
    }
    anyhow::bail!("the job did not complete")
}

/// The change log's size on disk, from SQLite's `dbstat` (read beside the daemon).
struct LogBytes {
    changes: i64,
    change_bytes: i64,
    values: i64,
    value_bytes: i64,
    value_text: i64,
}

fn log_bytes(path: &Path) -> anyhow::Result<LogBytes> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let size = |names: &str| -> rusqlite::Result<i64> {
        conn.query_row(
            &format!("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({names})"),
            [],
            |r| r.get(0),
        )
    };
    Ok(LogBytes {
        changes: conn.query_row("SELECT count(*) FROM changes", [], |r| r.get(0))?,
        change_bytes: size(
            "'changes', 'changes_by_recipient', 'changes_by_tenant', 'changes_by_kind'",
        )?,
        values: conn.query_row("SELECT count(*) FROM change_values", [], |r| r.get(0))?,
        value_bytes: size("'change_values', 'sqlite_autoindex_change_values_1'")?,
        value_text: conn.query_row(
            "SELECT coalesce(sum(length(value)), 0) FROM change_values",
            [],
            |r| r.get(0),
        )?,
    })
}

fn median(values: &[f64]) -> f64 {
    prefsd::bench::stats::median(values).unwrap_or(f64::NAN)
}
