//! The crash loop: the real binary, several writer clients, and `kill -9` at random moments
//! (a seeded PRNG, so a run can be repeated), restarted on the same database each time.
//! After every kill it checks that:
//!
//! - every acknowledged write is there: for each key, the stored state is the state after
//!   its last acknowledged write, or after the one write that was in flight when the daemon
//!   died (its reply was lost, so it may or may not have landed — but all of it or none of
//!   it);
//! - every bulk job only moves forward (queued → processing → completed), never fails, with
//!   `processed_rows == success_count`, and once completed stays completed with the same
//!   `completed_at`; at the end every job is completed exactly once with exact counters and
//!   every one of its users has its set; a submission whose reply was lost, retried with the
//!   same `idempotency_key`, makes no second job;
//! - the change log holds the changes of every acknowledged write, in commit order, and of
//!   the write in flight exactly when it landed: for each key, the `preferences.set` values
//!   in `seq` order are the states after each of its writes; and `seq` runs 1, 2, 3… with no
//!   gap a reader could fall into (nothing here deletes or prunes);
//! - the database passes `PRAGMA integrity_check`.
//!
//! The writers: replacing `users.setPreferences`, merging `users.setPreferences`,
//! `users.identify` with inline preferences, `preferences.evaluate` with an inline identify
//! (properties and preferences), and `users.bulkSetPreferences` jobs. Each writer owns its
//! keys and writes them one call at a time, so "the write in flight" is well defined.
//!
//! On PostgreSQL (fleet mode; a cluster of the test's own, skipped without
//! `PREFSD_TEST_PG`), the same loop, where every third cycle also crashes PostgreSQL
//! itself (`pg_ctl restart -m immediate`) at the random moment, before the daemon is
//! killed: nothing acknowledged may be lost there either. `seq` is then strictly
//! increasing rather than gapless (an append rolled back by a crash uses up its number;
//! it never appears later), and `integrity_check` is SQLite's alone. A call answered
//! `unavailable` (the server was away) counts as a write in flight: it may or may not
//! have landed, whole.
//!
//! Short mode (`cargo test`): 10 cycles with `durability = "full"` and 10 with `"normal"`
//! (a kill -9 is not a power loss: the page cache survives, so "normal" loses nothing
//! acknowledged either). Long mode: `PREFSD_CRASH_CYCLES=100` (and `PREFSD_CRASH_SEED=n`
//! to vary the run); add `--nocapture` to see the summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use prefsd::bench::Rng;

use crate::child::{ChildDaemon, env_number, integrity_check};
use crate::support::{HttpConn, TIMEOUT, write_files};

const SHORT_CYCLES: u64 = 10;
const DEFAULT_SEED: u64 = 0x5eed_0008;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_durability_full() {
    crash_loop("full", 1, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_durability_normal() {
    crash_loop("normal", 2, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_daemons_and_of_postgres() {
    let Some(cluster) = crate::pgcluster::Cluster::start() else {
        return;
    };
    crash_loop("full", 3, Some(&cluster)).await;
}

/// The JSON-RPC code of `unavailable`: the store could not be reached.
const UNAVAILABLE: i64 = -32008;

/// A `prefsd serve` child on `dir`, on SQLite or on the schema `crashloop` of `cluster`.
fn spawn(dir: &Path, cluster: Option<&crate::pgcluster::Cluster>) -> ChildDaemon {
    match cluster {
        None => ChildDaemon::spawn(dir),
        Some(cluster) => crate::fleet::child_on_pg(
            dir,
            &prefsd::store::PgOptions {
                url: cluster.url(),
                schema: "crashloop".into(),
            },
        ),
    }
}

/// What a writer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Replace,
    Merge,
    Identify,
    Inline,
}

/// One write: its kind, the user it writes and a sequence number that makes its value
/// unique.
#[derive(Clone, Debug)]
struct Op {
    kind: Kind,
    user: String,
    seq: u64,
}

/// A workflow setting that carries `seq`: a condition on it.
fn marked(seq: u64) -> Value {
    json!({ "conditions": [{ "variable": "data.seq", "operator": "equal_to", "argument": seq.to_string() }] })
}

impl Op {
    fn request(&self) -> (&'static str, Value) {
        let (user, seq) = (&self.user, self.seq);
        match self.kind {
            Kind::Replace => (
                "users.setPreferences",
                json!({ "user_id": user, "preferences": { "workflows": { "r": marked(seq) } } }),
            ),
            Kind::Merge => (
                "users.setPreferences",
                json!({ "user_id": user, "preferences": {
                    "__persistence_strategy__": "merge",
                    "workflows": { format!("m{}", seq % 3): marked(seq) } } }),
            ),
            Kind::Identify => (
                "users.identify",
                json!({ "user_id": user,
                        "properties": { "seq": seq, format!("k{}", seq % 3): seq },
                        "preferences": { "default": { "workflows": { "i": marked(seq) } } } }),
            ),
            Kind::Inline => (
                "preferences.evaluate",
                json!({ "workflow": "new-comment",
                        "channels": [{ "type": "email" }],
                        "data": { "seq": seq.to_string() },
                        "recipients": [{ "id": user, "properties": { "seq": seq },
                                         "preferences": { "default": { "workflows": { "new-comment": marked(seq) } } } }] }),
            ),
        }
    }

    /// The state of the user after this write, from the state before it.
    fn apply(&self, before: &State) -> State {
        let mut after = before.clone();
        let workflow = |name: String, after: &mut State| {
            let map = after.workflows.get_or_insert_with(Map::new);
            map.insert(name, marked(self.seq));
        };
        match self.kind {
            Kind::Replace => {
                after.workflows = Some(Map::from_iter([("r".to_string(), marked(self.seq))]));
            }
            Kind::Merge => workflow(format!("m{}", self.seq % 3), &mut after),
            Kind::Identify => {
                let props = after.properties.get_or_insert_with(Map::new);
                props.insert("seq".into(), json!(self.seq));
                props.insert(format!("k{}", self.seq % 3), json!(self.seq));
                workflow("i".into(), &mut after);
            }
            Kind::Inline => {
                let props = after.properties.get_or_insert_with(Map::new);
                props.insert("seq".into(), json!(self.seq));
                workflow("new-comment".into(), &mut after);
            }
        }
        after
    }
}

/// What the test can see of a user: its properties (for the kinds that write them; `None`
/// for a user that does not exist) and the workflows of its raw default set.
#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    properties: Option<Map<String, Value>>,
    workflows: Option<Map<String, Value>>,
}

/// Reads the state of `user` as `kind` sees it.
async fn observe(conn: &mut HttpConn, kind: Kind, user: &str) -> State {
    let set = conn
        .try_call(
            "users.getPreferences",
            json!({ "user_id": user, "raw": true }),
        )
        .await
        .expect("the restarted daemon answers")
        .unwrap_or_else(|e| panic!("getPreferences {user}: {e:?}"));
    let workflows = set["workflows"].as_object().cloned();
    let properties = if matches!(kind, Kind::Identify | Kind::Inline) {
        match conn
            .try_call("users.get", json!({ "user_id": user }))
            .await
            .expect("the restarted daemon answers")
        {
            Ok(u) => Some(u["properties"].as_object().cloned().unwrap_or_default()),
            Err(e) if e.code == -32001 => None,
            Err(e) => panic!("users.get {user}: {e:?}"),
        }
    } else {
        None
    };
    State {
        properties,
        workflows,
    }
}

/// One writer client: its keys, what it knows of them, and its counters.
struct Writer {
    kind: Kind,
    rng: Rng,
    users: Vec<String>,
    /// The state of each key as of the last check plus every acknowledged write since.
    model: BTreeMap<String, State>,
    /// The write whose reply was lost in the last cycle.
    in_flight: Option<Op>,
    /// For each key, the `workflows` of its set after each of its writes that landed: what
    /// its `preferences.set` changes must hold, in order.
    logged: BTreeMap<String, Vec<Value>>,
    seq: u64,
    acked: u64,
    lost_replies_landed: u64,
    lost_replies_dropped: u64,
}

impl Writer {
    fn new(kind: Kind, name: &str, seed: u64) -> Writer {
        let users: Vec<String> = (0..4).map(|i| format!("{name}-{i}")).collect();
        Writer {
            kind,
            rng: Rng::new(seed),
            model: users
                .iter()
                .map(|u| (u.clone(), State::default()))
                .collect(),
            users,
            in_flight: None,
            logged: BTreeMap::new(),
            seq: 0,
            acked: 0,
            lost_replies_landed: 0,
            lost_replies_dropped: 0,
        }
    }

    /// Writes until the daemon dies under it (or `stop`); remembers the write in flight.
    async fn run(mut self, socket: std::path::PathBuf, stop: Arc<AtomicBool>) -> Writer {
        let Ok(mut conn) = HttpConn::try_connect(&socket).await else {
            return self;
        };
        while !stop.load(Ordering::Relaxed) {
            self.seq += 1;
            let user = self.users[self.rng.range(0, 3) as usize].clone();
            let op = Op {
                kind: self.kind,
                user,
                seq: self.seq,
            };
            let (method, params) = op.request();
            match conn.try_call(method, params).await {
                Ok(Ok(result)) => {
                    if self.kind == Kind::Inline {
                        // The inline set's condition (data.seq equal to this write's seq)
                        // decided: the evaluation saw the write of its own call.
                        assert_eq!(
                            result["results"][0]["channels"][0]["send"], true,
                            "{result}"
                        );
                    }
                    let before = &self.model[&op.user];
                    let after = op.apply(before);
                    self.log(&op.user, &after);
                    self.model.insert(op.user.clone(), after);
                    self.acked += 1;
                }
                Ok(Err(e)) if e.code != UNAVAILABLE => panic!("{method} {op:?} failed: {e:?}"),
                Ok(Err(_)) | Err(_) => {
                    self.in_flight = Some(op);
                    break;
                }
            }
        }
        self
    }

    /// After a restart: every key is at its last acknowledged state, or the write in flight
    /// landed whole. The model then takes what is stored.
    async fn check(&mut self, conn: &mut HttpConn, cycle: u64) {
        let in_flight = self.in_flight.take();
        for user in self.users.clone() {
            let stored = observe(conn, self.kind, &user).await;
            let acked = &self.model[&user];
            if stored == *acked {
                if in_flight.as_ref().is_some_and(|op| op.user == user) {
                    self.lost_replies_dropped += 1;
                }
                continue;
            }
            let landed = in_flight
                .as_ref()
                .filter(|op| op.user == user)
                .map(|op| op.apply(acked));
            assert_eq!(
                Some(&stored),
                landed.as_ref(),
                "cycle {cycle}: {user} ({:?}) lost an acknowledged write or holds half a write;\n\
                 acked state: {acked:?}\nin flight: {in_flight:?}",
                self.kind
            );
            self.lost_replies_landed += 1;
            self.log(&user, &stored);
            self.model.insert(user, stored);
        }
        for user in self.users.clone() {
            let logged = logged_sets(conn, &user).await;
            let expected = self.logged.get(&user).cloned().unwrap_or_default();
            assert_eq!(
                logged, expected,
                "cycle {cycle}: the change log of {user} ({:?}) is not its acknowledged writes in order",
                self.kind
            );
        }
    }

    fn log(&mut self, user: &str, after: &State) {
        let workflows = after
            .workflows
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null);
        self.logged
            .entry(user.to_string())
            .or_default()
            .push(workflows);
    }
}

/// The `workflows` of every `preferences.set` change of `user`'s default set, in order.
async fn logged_sets(conn: &mut HttpConn, user: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = conn
            .try_call(
                "changes.list",
                json!({ "after": after, "limit": 1000, "kinds": ["preferences.set"], "recipient": { "id": user } }),
            )
            .await
            .expect("the daemon answers")
            .expect("changes.list");
        for change in page["items"].as_array().into_iter().flatten() {
            assert_eq!(change["preference_set"], "default", "{change}");
            out.push(change["value"]["workflows"].clone());
        }
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// Every `seq` from 1 to the head is there, once, in order: nothing here deletes changes,
/// so a gap would be a change a reader skipped.
/// `seq` runs 1, 2, 3… (`gapless`, SQLite) or at least strictly increases (PostgreSQL),
/// and `head` is the last.
async fn check_seq_has_no_gaps(conn: &mut HttpConn, cycle: u64, gapless: bool) {
    let mut last = 0;
    let mut after = 0;
    loop {
        let page = conn
            .try_call("changes.list", json!({ "after": after, "limit": 1000 }))
            .await
            .expect("the daemon answers")
            .expect("changes.list");
        for change in page["items"].as_array().into_iter().flatten() {
            let seq = change["seq"].as_i64().expect("a seq");
            if gapless {
                assert_eq!(seq, last + 1, "cycle {cycle}: a gap in seq");
            } else {
                assert!(seq > last, "cycle {cycle}: seq {seq} after {last}");
            }
            last = seq;
        }
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => {
                assert_eq!(page["head"], last, "cycle {cycle}: head");
                return;
            }
        }
    }
}

/// One `users.bulkSetPreferences` job of the test.
#[derive(Clone, Debug)]
struct Job {
    key: String,
    users: Vec<String>,
    /// Known once a submission was acknowledged.
    id: Option<String>,
    processed: u64,
    completed_at: Option<Value>,
    checked_users: bool,
}

impl Job {
    fn params(&self) -> Value {
        json!({ "user_ids": self.users, "idempotency_key": self.key,
                "preferences": { "workflows": { self.key.clone(): true } } })
    }
}

/// The bulk writer: submits jobs (and resubmits those whose reply was lost).
struct BulkWriter {
    rng: Rng,
    jobs: Vec<Job>,
    submitted: u64,
}

impl BulkWriter {
    async fn run(mut self, socket: std::path::PathBuf, stop: Arc<AtomicBool>) -> BulkWriter {
        let Ok(mut conn) = HttpConn::try_connect(&socket).await else {
            return self;
        };
        // First the submissions whose reply was lost: the same key and payload give the
        // same job if it was stored, or store it now.
        for i in 0..self.jobs.len() {
            if self.jobs[i].id.is_some() {
                continue;
            }
            match conn
                .try_call("users.bulkSetPreferences", self.jobs[i].params())
                .await
            {
                Ok(Ok(op)) => self.jobs[i].id = op["id"].as_str().map(str::to_string),
                Ok(Err(e)) if e.code != UNAVAILABLE => {
                    panic!("resubmitting {}: {e:?}", self.jobs[i].key)
                }
                Ok(Err(_)) | Err(_) => return self,
            }
        }
        for _ in 0..2 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.range(0, 80))).await;
            let n = self.jobs.len();
            let size = self.rng.range(10, 500);
            let job = Job {
                key: format!("job-{n}"),
                users: (0..size).map(|i| format!("bulk{n}-{i}")).collect(),
                id: None,
                processed: 0,
                completed_at: None,
                checked_users: false,
            };
            let params = job.params();
            self.jobs.push(job);
            self.submitted += 1;
            match conn.try_call("users.bulkSetPreferences", params).await {
                Ok(Ok(op)) => {
                    assert_eq!(op["status"], "queued", "{op}");
                    self.jobs[n].id = op["id"].as_str().map(str::to_string);
                }
                Ok(Err(e)) if e.code != UNAVAILABLE => panic!("users.bulkSetPreferences: {e:?}"),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        self
    }

    /// Every acknowledged job only moves forward, with exact counters.
    async fn check(&mut self, conn: &mut HttpConn, cycle: u64) {
        for job in &mut self.jobs {
            let Some(id) = &job.id else { continue };
            let op = conn
                .try_call("bulkOperations.get", json!({ "id": id }))
                .await
                .expect("the restarted daemon answers")
                .unwrap_or_else(|e| panic!("cycle {cycle}: job {} is gone: {e:?}", job.key));
            check_job(&op, job, cycle);
            if op["status"] == "completed" && !job.checked_users {
                check_job_users(conn, job).await;
                job.checked_users = true;
            }
        }
        // No job twice, none unknown beyond the submissions whose reply was lost.
        let listed = list_jobs(conn).await;
        let known = self.jobs.iter().filter(|j| j.id.is_some()).count();
        let unknown = self.jobs.len() - known;
        assert!(
            listed.len() >= known && listed.len() <= known + unknown,
            "cycle {cycle}: {} jobs listed, {known} acknowledged, {unknown} replies lost",
            listed.len()
        );
    }
}

/// The invariants of one observation of a job.
fn check_job(op: &Value, job: &mut Job, cycle: u64) {
    let size = job.users.len() as u64;
    let status = op["status"].as_str().unwrap_or("");
    assert!(
        matches!(status, "queued" | "processing" | "completed"),
        "cycle {cycle}: job {}: {op}",
        job.key
    );
    let processed = op["processed_rows"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(op["estimated_total_rows"], size, "{op}");
    assert_eq!(op["success_count"], processed, "{op}");
    assert_eq!(op["error_count"], 0, "{op}");
    assert_eq!(op["error_items"], json!([]), "{op}");
    assert!(
        processed >= job.processed && processed <= size,
        "cycle {cycle}: job {} went from {} to {processed} of {size} rows",
        job.key,
        job.processed
    );
    job.processed = processed;
    if status == "completed" {
        assert_eq!(processed, size, "{op}");
        assert!(op["completed_at"].is_string(), "{op}");
        if let Some(at) = &job.completed_at {
            assert_eq!(
                &op["completed_at"], at,
                "cycle {cycle}: job {} completed twice",
                job.key
            );
        }
        job.completed_at = Some(op["completed_at"].clone());
    } else {
        assert!(
            job.completed_at.is_none(),
            "cycle {cycle}: job {} went back from completed to {status}",
            job.key
        );
    }
}

/// Every user of a completed job has exactly its set.
async fn check_job_users(conn: &mut HttpConn, job: &Job) {
    for user in &job.users {
        let set = conn
            .try_call(
                "users.getPreferences",
                json!({ "user_id": user, "raw": true }),
            )
            .await
            .expect("the daemon answers")
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!(set["workflows"], json!({ job.key.clone(): true }), "{user}");
    }
}

async fn list_jobs(conn: &mut HttpConn) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut params = json!({ "limit": 1000 });
        if !after.is_null() {
            params["after"] = after.clone();
        }
        let page = conn
            .try_call("bulkOperations.list", params)
            .await
            .expect("the daemon answers")
            .expect("bulkOperations.list");
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        after = page["next"].clone();
        if after.is_null() {
            return items;
        }
    }
}

fn write_config(dir: &Path, durability: &str) {
    write_files(
        &dir.join("config"),
        &[(
            "prefsd.toml".to_string(),
            // Small chunks: a job takes many commits, so kills land mid-job (without the
            // fsync of "full" a commit is quicker, so one user per chunk). On PostgreSQL a
            // killed daemon's job lease holds the job until it runs out: 1 s here.
            format!(
                "durability = \"{durability}\"\n[jobs]\nchunk_size = {}\nlease_s = 1\n",
                if durability == "full" { 2 } else { 1 }
            ),
        )],
    );
}

async fn crash_loop(durability: &str, stream: u64, cluster: Option<&crate::pgcluster::Cluster>) {
    let cycles = env_number("PREFSD_CRASH_CYCLES", SHORT_CYCLES);
    let seed = env_number("PREFSD_CRASH_SEED", DEFAULT_SEED) ^ stream;
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("prefsd-crashloop")
        .tempdir()
        .expect("a temp dir");
    write_config(dir.path(), durability);
    let mut rng = Rng::new(seed);
    let mut writers: Vec<Writer> = [
        (Kind::Replace, "replace-a"),
        (Kind::Replace, "replace-b"),
        (Kind::Merge, "merge"),
        (Kind::Identify, "identify"),
        (Kind::Inline, "inline"),
    ]
    .into_iter()
    .map(|(kind, name)| Writer::new(kind, name, rng.next_u64()))
    .collect();
    let mut bulk = BulkWriter {
        rng: Rng::new(rng.next_u64()),
        jobs: Vec::new(),
        submitted: 0,
    };
    let mut killed_mid_job = 0;
    let mut postgres_crashes = 0;

    for cycle in 0..cycles {
        let daemon = spawn(dir.path(), cluster);
        let socket = daemon.socket.clone();
        let mut conn = HttpConn::try_connect(&socket).await.expect("connecting");
        for writer in &mut writers {
            writer.check(&mut conn, cycle).await;
        }
        bulk.check(&mut conn, cycle).await;
        check_seq_has_no_gaps(&mut conn, cycle, cluster.is_none()).await;
        let status = conn
            .try_call("daemon.status", Value::Null)
            .await
            .expect("daemon.status")
            .expect("daemon.status");
        drop(conn);

        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(w.run(socket.clone(), Arc::clone(&stop))))
            .collect();
        let bulk_task = tokio::spawn(bulk.run(socket.clone(), Arc::clone(&stop)));
        // Kill at a random moment: sometimes at once (while jobs resume), mostly mid-writes.
        let delay = if rng.chance(10) {
            std::time::Duration::ZERO
        } else {
            Duration::from_millis(rng.range(5, 250))
        };
        tokio::time::sleep(delay).await;
        if let Some(cluster) = cluster
            && cycle % 3 == 2
        {
            let cluster_ref = cluster;
            tokio::task::block_in_place(|| cluster_ref.restart_immediate());
            postgres_crashes += 1;
        }
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            writers.push(task.await.expect("a writer panicked"));
        }
        bulk = bulk_task.await.expect("the bulk writer panicked");
        if status["jobs"]["queued"].as_u64().unwrap_or(0)
            + status["jobs"]["processing"].as_u64().unwrap_or(0)
            > 0
        {
            killed_mid_job += 1;
        }
        if cluster.is_none() {
            let check = integrity_check(&dir.path().join("prefsd.db"));
            assert_eq!(check, "ok", "cycle {cycle}: integrity_check");
        }
    }

    // The last start: no kill. Every check once more, then every job to its end.
    let daemon = spawn(dir.path(), cluster);
    let mut conn = HttpConn::try_connect(&daemon.socket)
        .await
        .expect("connecting");
    for writer in &mut writers {
        writer.check(&mut conn, cycles).await;
    }
    bulk.check(&mut conn, cycles).await;
    let stop = Arc::new(AtomicBool::new(true));
    // With `stop` set the bulk writer only resubmits the submissions whose reply was lost.
    bulk = bulk.run(daemon.socket.clone(), stop).await;
    assert!(
        bulk.jobs.iter().all(|j| j.id.is_some()),
        "every submission has a job"
    );
    let client = prefsd::client::Client::connect(&daemon.socket)
        .await
        .expect("connecting the WebSocket client");
    for job in &mut bulk.jobs {
        let id = job.id.clone().expect("an id");
        let mut updates = client.follow_bulk(&id).await.expect("subscribing");
        let mut last = Value::Null;
        while last["status"] != "completed" {
            last = tokio::time::timeout(TIMEOUT, updates.next())
                .await
                .unwrap_or_else(|_| panic!("job {} finishes", job.key))
                .expect("an update")
                .expect("a well-formed update");
            assert_ne!(last["status"], "failed", "{last}");
        }
        let op = conn
            .try_call("bulkOperations.get", json!({ "id": id }))
            .await
            .expect("the daemon answers")
            .expect("bulkOperations.get");
        check_job(&op, job, cycles);
        if !job.checked_users {
            check_job_users(&mut conn, job).await;
            job.checked_users = true;
        }
    }
    let listed = list_jobs(&mut conn).await;
    let mut listed_ids: Vec<String> = listed
        .iter()
        .map(|j| j["id"].as_str().unwrap_or("").to_string())
        .collect();
    listed_ids.sort();
    let mut ids: Vec<String> = bulk.jobs.iter().filter_map(|j| j.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), bulk.jobs.len(), "one job per idempotency key");
    assert_eq!(listed_ids, ids, "every job exactly once");
    drop(client);
    daemon.kill();
    if cluster.is_none() {
        assert_eq!(integrity_check(&dir.path().join("prefsd.db")), "ok");
    }

    let acked: u64 = writers.iter().map(|w| w.acked).sum();
    let landed: u64 = writers.iter().map(|w| w.lost_replies_landed).sum();
    let dropped: u64 = writers.iter().map(|w| w.lost_replies_dropped).sum();
    eprintln!(
        "crash loop (durability {durability}, seed {seed:#x}): {cycles} kills, {acked} acknowledged \
         writes all present; {} writes in flight at a kill ({landed} landed whole, {dropped} not at all); \
         {} bulk jobs ({} users) completed exactly once, {killed_mid_job} restarts resumed a pending job; \
         {postgres_crashes} crashes of PostgreSQL; integrity_check ok after every kill; {:.1} s",
        landed + dropped,
        bulk.jobs.len(),
        bulk.jobs.iter().map(|j| j.users.len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked > 0, "the writers wrote something");
}
