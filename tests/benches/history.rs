//! The change log's costs (history.md §6), as ratios in one run:
//!
//! 1. `users.setPreferences` calls/s with the log against the same build with the log's
//!    insert skipped (`store::Options::skip_change_log`): two daemons in this process, on
//!    copies of one seeded database, loaded in turn, in pairs of alternating order, each
//!    pair's ratio taken, of calls/s and of the server's CPU per call (target ≥ 0.8);
//! 2. what a change costs on disk: a 1000-user bulk job's changes and the values they hold
//!    (bytes per change from SQLite's `dbstat`; the job's one set stored once);
//! 3. `users.getPreferences` with `as_of` against the plain read, on the same daemon, in
//!    pairs as for 1 (target ≤ 5× the time per call).
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

    // 1. Writes with and without the log, in turn ([`pairs`]).
    let (with, without) = pairs(
        rounds * 2 + 1,
        &load(&a.socket, Workload::Set),
        &load(&b.socket, Workload::Set),
    )?;
    report(
        "users.setPreferences with the change log",
        "log insert skipped",
        &with,
        &without,
        ">= 0.8",
    );

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
        "change log on disk: {:.0} bytes per change (table and indexes, {} changes, of which {:.0} bytes each of values kept in the row), values stored by content {:.0} bytes each ({} values)",
        after.change_bytes as f64 / after.changes.max(1) as f64,
        after.changes,
        after.inline_text as f64 / after.changes.max(1) as f64,
        after.value_bytes as f64 / after.values.max(1) as f64,
        after.values
    );

    // 3. as_of reads against plain reads, in turn, on the logged daemon. The target is on
    // the time per call, so the ratio printed is plain / as_of and must stay above 1/5.
    let (past, plain) = pairs(
        rounds * 2 + 1,
        &load(&a.socket, Workload::GetAsOf),
        &load(&a.socket, Workload::Get),
    )?;
    report(
        "users.getPreferences with as_of",
        "without",
        &past,
        &plain,
        ">= 0.2, i.e. as_of <= 5x the time",
    );

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

/// What one load run measured.
struct Sample {
    calls_per_s: f64,
    /// CPU time of this process per call, less the load generator's: the daemons' (the
    /// idle one takes next to none). Steadier than calls/s on a loaded machine.
    server_us_per_call: f64,
}

/// One load run on its own thread and runtime (the daemons' runtime serves, as for a
/// client in another process).
fn sample(load: &LoadConfig, seed: u64) -> anyhow::Result<Sample> {
    let load = LoadConfig {
        seed,
        ..load.clone()
    };
    let cpu = || prefsd::bench::procfs::own_cpu_time().unwrap_or_default();
    let before = cpu();
    let (results, client) = std::thread::spawn(move || {
        let results = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run_rounds(&load));
        let client = prefsd::bench::procfs::thread_cpu_time().unwrap_or_default();
        anyhow::Ok((results?, client))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let server = cpu().saturating_sub(before).saturating_sub(client);
    let run: &RunResult = results.last().ok_or_else(|| anyhow::anyhow!("no run"))?;
    anyhow::ensure!(
        run.errors == 0,
        "errors during the load: {:?}",
        run.first_error
    );
    Ok(Sample {
        calls_per_s: run.calls_per_s(),
        server_us_per_call: server.as_secs_f64() * 1e6 / run.calls.max(1) as f64,
    })
}

/// Pairs of runs of `a` and `b` in alternating order (A B, then B A, ...), after one
/// warm-up run of each: the shared machine's load drifts within a run (a round took from a
/// third to three times the median), and a pair's two runs see about the same load.
/// Answers the samples of each, pair by pair.
fn pairs(
    pairs: usize,
    a: &LoadConfig,
    b: &LoadConfig,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    // Each pair draws its own calls (both runs of a pair the same ones): a run that
    // replayed the calls of the run before would set what is already stored, a call that
    // changes nothing and appends nothing, so the runs would time fewer writes each time.
    let seed = |pair: usize| a.seed + 1 + pair as u64;
    sample(a, a.seed)?;
    sample(b, b.seed)?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        if pair % 2 == 0 {
            xs.push(sample(a, seed(pair))?);
            ys.push(sample(b, seed(pair))?);
        } else {
            ys.push(sample(b, seed(pair))?);
            xs.push(sample(a, seed(pair))?);
        }
    }
    Ok((xs, ys))
}

/// Prints both sides of [`pairs`] and the medians of the pairs' ratios of calls/s and of
/// server CPU per call (`b / a`: how much of `b`'s speed `a` keeps).
fn report(name_a: &str, name_b: &str, xs: &[Sample], ys: &[Sample], target: &str) {
    let rates = |s: &[Sample]| s.iter().map(|s| s.calls_per_s).collect::<Vec<_>>();
    let cpus = |s: &[Sample]| s.iter().map(|s| s.server_us_per_call).collect::<Vec<_>>();
    for (name, side) in [(name_a, xs), (name_b, ys)] {
        println!(
            "{name}: median {:.0} calls/s ({:.0?}), server CPU median {:.1} µs per call ({:.1?})",
            median(&rates(side)),
            rates(side),
            median(&cpus(side)),
            cpus(side)
        );
    }
    let rate: Vec<f64> = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| x.calls_per_s / y.calls_per_s)
        .collect();
    let cpu: Vec<f64> = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| y.server_us_per_call / x.server_us_per_call)
        .collect();
    println!(
        "{name_a} / {name_b}, medians of {} pairs: calls/s {:.2} ({rate:.2?}), server CPU per call (inverted) {:.2} ({cpu:.2?}) (target {target})",
        rate.len(),
        median(&rate),
        median(&cpu)
    );
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
    /// Values kept in their change's row (`sql/0006_inline_change_values.sql`).
    inline_text: i64,
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
        inline_text: conn.query_row(
            "SELECT coalesce(sum(length(value_text)), 0) + coalesce(sum(length(before_text)), 0)
             FROM changes",
            [],
            |r| r.get(0),
        )?,
    })
}

fn median(values: &[f64]) -> f64 {
    prefsd::bench::stats::median(values).unwrap_or(f64::NAN)
}
