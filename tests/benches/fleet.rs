//! Fleet mode's costs (fleet.md), as ratios and figures in one run, daemons in this process:
//!
//! 1. cached `preferences.evaluate` on the PostgreSQL backend against the SQLite backend,
//!    loaded in turn (target ≥ 0.9);
//! 2. cache-miss `users.getPreferences` (`read_cache_mb = 0`) p50/p99 on both backends;
//! 3. cross-daemon staleness: a write acknowledged by one daemon, until another daemon of
//!    the same schema answers it (p50/p99; target p99 ≤ 100 ms);
//! 4. a 1000-user bulk job on PostgreSQL against a raw upsert of the same rows in one
//!    statement (target ≤ 2×);
//! 5. the read cache's bytes per recipient on both backends.
//!
//! `-- --bulk` runs the bulk job's figure (4) alone, with 9 rounds.
//!
//! Needs a PostgreSQL: `PREFSD_TEST_PG="host=/tmp/sock user=postgres dbname=postgres"
//! cargo bench --bench fleet` (add `-- --quick` for a short run). Without it, it says so
//! and exits 0 (with `PREFSD_REQUIRE_PG=1`, as in CI, it fails).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prefsd::bench::load::{Limit, LoadConfig, RunResult, run_rounds};
use prefsd::bench::seed::{SeedPlan, seed_db};
use prefsd::bench::{Mix, Transport, Users, Workload};
use prefsd::config::{ConfigHandle, Overrides};
use prefsd::store::{Db, Location, PgOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let bulk_only = std::env::args().any(|a| a == "--bulk");
    let Some(url) = std::env::var("PREFSD_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        anyhow::ensure!(
            std::env::var("PREFSD_REQUIRE_PG").as_deref() != Ok("1"),
            "PREFSD_REQUIRE_PG=1 but PREFSD_TEST_PG is not set"
        );
        println!("fleet benchmark skipped: set PREFSD_TEST_PG to a PostgreSQL connection string");
        return Ok(());
    };
    let (users, rounds, duration, probes) = if quick {
        (10_000, 3, Duration::from_secs(1), 100)
    } else {
        (100_000, 5, Duration::from_secs(3), 500)
    };
    // Alone, the bulk figure gets more rounds: it is the noisiest.
    let bulk_rounds = if bulk_only { 9 } else { rounds };
    let dir = tempfile::tempdir()?;
    let sqlite = dir.path().join("bench.db");
    let sqlite_cold = dir.path().join("cold.db");
    let pg = PgOptions {
        url,
        schema: format!("bench_{}", uuid::Uuid::new_v4().simple()),
    };
    let plan = SeedPlan {
        users,
        sets_per_user: 2,
        seed: 7,
        tenants: 4,
        objects: 0,
        chunk: 10_000,
        history: 0,
    };
    println!("seeding {users} users on both backends ...");
    let t = Instant::now();
    {
        let db = Db::open(&sqlite, prefsd::config::Durability::Normal)?;
        seed_db(&db, &plan, |_, _| {})?;
        db.close();
        std::fs::copy(&sqlite, &sqlite_cold)?;
        let db = open(&Location::Postgres(pg.clone()), 0)?;
        seed_db(&db, &plan, |_, _| {})?;
        db.close();
    }
    println!("seeded in {:.1}s", t.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(prefsd::sched::prefer_short_slices)
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let start = |name: &str, at: Location, cache_mb: u32| {
        runtime.block_on(start(dir.path(), name, at, cache_mb, &cancel))
    };
    let s = start("s", Location::Sqlite(sqlite.clone()), 8)?;
    let p = start("p", Location::Postgres(pg.clone()), 8)?;
    let s0 = start("s0", Location::Sqlite(sqlite_cold.clone()), 0)?;
    let p0 = start("p0", Location::Postgres(pg.clone()), 0)?;

    let load = |socket: &Path, workload: Workload, count: u64| LoadConfig {
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
        users: Users { count, skew: 0.0 },
        seed: 3,
        pid: None,
    };

    if !bulk_only {
        // 1. Cached evaluations: 1000 users, which fit the 8 MiB cache; warmed first.
        let (mut on_s, mut on_p) = (Vec::new(), Vec::new());
        run(&load(&s.socket, Workload::Evaluate, 1000))?;
        run(&load(&p.socket, Workload::Evaluate, 1000))?;
        for _ in 0..rounds {
            on_s.push(run(&load(&s.socket, Workload::Evaluate, 1000))?.calls_per_s());
            on_p.push(run(&load(&p.socket, Workload::Evaluate, 1000))?.calls_per_s());
        }
        let (ms, mp) = (median(&on_s), median(&on_p));
        println!("cached preferences.evaluate, SQLite: median {ms:.0} calls/s ({on_s:.0?})");
        println!("cached preferences.evaluate, PostgreSQL: median {mp:.0} calls/s ({on_p:.0?})");
        println!("ratio PostgreSQL / SQLite: {:.2} (target >= 0.9)", mp / ms);

        // 2. Misses: every read goes to the store.
        let (mut lat_s, mut lat_p) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            lat_s.push(run(&load(&s0.socket, Workload::Get, users))?);
            lat_p.push(run(&load(&p0.socket, Workload::Get, users))?);
        }
        for (name, runs) in [("SQLite", &lat_s), ("PostgreSQL", &lat_p)] {
            let p50: Vec<f64> = runs.iter().map(|r| ms_of(r.latency.p50)).collect();
            let p99: Vec<f64> = runs.iter().map(|r| ms_of(r.latency.p99)).collect();
            let rate: Vec<f64> = runs.iter().map(RunResult::calls_per_s).collect();
            println!(
                "cache-miss users.getPreferences, {name}, 8 connections: p50 {:.3} ms, p99 {:.3} ms (medians of {rounds}; p50s {p50:.3?}, p99s {p99:.3?}), {:.0} calls/s",
                median(&p50),
                median(&p99),
                median(&rate)
            );
        }

        // 3. Staleness: acknowledged on P, answered by P0's neighbour P (cache on) — the
        //    write goes through P0, the reads through P, which cached the user first.
        let staleness = runtime.block_on(staleness(&p0.socket, &p.socket, probes))?;
        println!(
            "cross-daemon staleness over {probes} writes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 100 ms)",
            ms_of(staleness.p50),
            ms_of(staleness.p99),
            ms_of(staleness.max)
        );
    }

    // 4. A 1000-user bulk job against one raw upsert of the same rows.
    let ids: Vec<String> = (0..1000).map(|i| format!("bulk-{i:04}")).collect();
    let (mut job, mut raw) = (Vec::new(), Vec::new());
    // A first job, not timed, creates the users: the raw upsert is timed on rows that
    // exist, and so is every timed job (as the cached runs, this figure is warmed first).
    let client = runtime.block_on(prefsd::client::Client::connect(&p.socket))?;
    runtime.block_on(run_job(&client, &ids, bulk_rounds))?;
    for round in 0..bulk_rounds {
        // Timed from the submit, as the raw upsert is from its statement: connecting is
        // neither's cost.
        let client = runtime.block_on(prefsd::client::Client::connect(&p.socket))?;
        let t = Instant::now();
        runtime.block_on(run_job(&client, &ids, round))?;
        job.push(ms_of(t.elapsed()));
        raw.push(raw_upsert(&pg, &ids, round)?);
    }
    let (mj, mr) = (median(&job), median(&raw));
    println!("1000-user bulk job on PostgreSQL: median {mj:.1} ms ({job:.1?})");
    println!("raw upsert of the same rows in one statement: median {mr:.1} ms ({raw:.1?})");
    println!("ratio job / raw: {:.2} (target <= 2)", mj / mr);

    // 5. The cache's bytes per recipient after the cached runs.
    for (name, d) in [("SQLite", &s), ("PostgreSQL", &p)] {
        let stats = d.db.cache().stats();
        println!(
            "read cache, {name}: {} recipients in {} bytes, {:.0} bytes per recipient",
            stats.recipients,
            stats.bytes,
            stats.bytes as f64 / stats.recipients.max(1) as f64
        );
    }

    cancel.cancel();
    runtime.block_on(async {
        for d in [s.server, p.server, s0.server, p0.server] {
            d.await??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    for db in [s.db, p.db, s0.db, p0.db] {
        db.close();
    }
    drop_schema(&pg)
}

/// Drops the benchmark's schema, so runs do not pile up in the server.
fn drop_schema(pg: &PgOptions) -> anyhow::Result<()> {
    let pg = pg.clone();
    // On a thread of its own, as `raw_upsert`: the sync client runs a runtime inside.
    std::thread::spawn(move || -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls)?;
        client.batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", pg.schema))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("dropping the schema panicked"))?
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Opens a store off any runtime (PostgreSQL's client runs one of its own).
fn open(at: &Location, cache_mb: u32) -> anyhow::Result<Db> {
    let at = at.clone();
    let options = prefsd::store::Options {
        durability: prefsd::config::Durability::Full,
        max_database_mb: None,
        read_cache_mb: cache_mb,
        max_staleness_ms: 1000,
        skip_change_log: false,
    };
    std::thread::spawn(move || Db::open_at(&at, options))
        .join()
        .map_err(|_| anyhow::anyhow!("opening panicked"))?
        .map_err(Into::into)
}

struct Daemon {
    socket: PathBuf,
    db: Db,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A daemon in this process on `at`, serving `<dir>/<name>.sock`.
async fn start(
    dir: &Path,
    name: &str,
    at: Location,
    cache_mb: u32,
    cancel: &CancellationToken,
) -> anyhow::Result<Daemon> {
    let config_dir = dir.join(format!("config-{name}"));
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("prefsd.toml"),
        format!("durability = \"full\"\n[limits]\nread_cache_mb = {cache_mb}\n"),
    )?;
    let socket = dir.join(format!("{name}.sock"));
    let config = ConfigHandle::load(
        config_dir,
        Overrides {
            socket: Some(socket.clone()),
            ..Default::default()
        },
        None,
    )
    .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    let db = tokio::task::block_in_place(|| open(&at, cache_mb))?;
    let listener = prefsd::server::bind(&socket, 0o600)?;
    let ctx = Arc::new(prefsd::api::Context::new(db.clone(), config));
    let server = tokio::spawn(prefsd::server::run(
        listener,
        ctx,
        cancel.clone().cancelled_owned(),
    ));
    Ok(Daemon { socket, db, server })
}

/// One load run on its own thread and runtime (as a client in another process would).
fn run(load: &LoadConfig) -> anyhow::Result<RunResult> {
    let load = load.clone();
    let results: Vec<RunResult> = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run_rounds(&load))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let run = results
        .into_iter()
        .last()
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    anyhow::ensure!(
        run.errors == 0,
        "errors during the load: {:?}",
        run.first_error
    );
    Ok(run)
}

/// Writes `probes` times through `writer` and measures, from each acknowledgement, how
/// long until `reader` (which has the user cached) answers the new value.
async fn staleness(
    writer: &Path,
    reader: &Path,
    probes: usize,
) -> anyhow::Result<prefsd::bench::stats::Latency> {
    let (w, r) = (
        prefsd::client::Client::connect(writer).await?,
        prefsd::client::Client::connect(reader).await?,
    );
    let read = |user: &str| {
        r.call(
            "users.getPreferences",
            json!({ "user_id": user, "raw": true }),
        )
    };
    let mut samples = Vec::with_capacity(probes);
    for i in 0..probes {
        let user = format!("stale-{}", i % 10);
        // Cached on the reader first, so only an invalidation can show the new value.
        read(&user).await?;
        read(&user).await?;
        w.call(
            "users.setPreferences",
            json!({ "user_id": user, "preferences": { "workflows": { format!("w{i}"): false } } }),
        )
        .await?;
        let acked = Instant::now();
        loop {
            let set = read(&user).await?;
            if set["workflows"].get(format!("w{i}")).is_some() {
                break;
            }
            anyhow::ensure!(
                acked.elapsed() < Duration::from_secs(10),
                "the write never reached the other daemon"
            );
        }
        samples.push(u64::try_from(acked.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(prefsd::bench::stats::Latency::from_nanos(&mut samples))
}

/// Submits one bulk job and waits for it to complete.
async fn run_job(
    client: &prefsd::client::Client,
    ids: &[String],
    round: usize,
) -> anyhow::Result<()> {
    let op = client
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ids, "preferences": { "workflows": { format!("job-{round}"): false } } }),
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

/// The same 1000 sets written by one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO
/// UPDATE` (the recipients exist already, from the job): the floor a bulk job is held to.
fn raw_upsert(pg: &PgOptions, ids: &[String], round: usize) -> anyhow::Result<f64> {
    let (pg, ids) = (pg.clone(), ids.to_vec());
    std::thread::spawn(move || -> anyhow::Result<f64> {
        let mut client = postgres::Client::connect(&pg.url, postgres::NoTls)?;
        client.batch_execute(&format!(
            "SET search_path TO \"{}\"; SET synchronous_commit TO on;",
            pg.schema
        ))?;
        let keys: Vec<Vec<u8>> = ids.iter().map(|i| i.as_bytes().to_vec()).collect();
        let set = json!({ "workflows": { format!("raw-{round}"): false } }).to_string();
        let t = Instant::now();
        client.execute(
            "INSERT INTO preference_sets (collection, recipient_id, set_id, preferences, updated_at)
             SELECT ''::bytea, k, 'default'::bytea, $2, $3 FROM unnest($1::bytea[]) AS k
             ON CONFLICT (collection, recipient_id, set_id)
             DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at",
            &[&keys, &set, &"2026-12-07T00:00:00.000Z"],
        )?;
        Ok(ms_of(t.elapsed()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the raw upsert panicked"))?
}

fn median(values: &[f64]) -> f64 {
    prefsd::bench::stats::median(values).unwrap_or(f64::NAN)
}
