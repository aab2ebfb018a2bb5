//! `prefsd bench seed`: realistic, deterministic data written straight through the store.
//!
//! Every user, object and tenant is generated from its own [`Rng::for_item`] stream, so the
//! data depends only on the seed and the sizes, never on the chunking. A generator thread
//! builds and validates the next chunk while the store's writer thread commits the current
//! one (one transaction per chunk), so both cores work.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::{ALERTS, CATEGORIES, CHANNEL_TYPES, Rng, SeedArgs, WORKFLOWS, tenant_id, user_id};
use crate::config::Durability;
use crate::model::change::{Actor, Origin};
use crate::model::{PreferenceSet, RecipientKey, SetKind};
use crate::store::{Db, TenantRow, Write};

/// What to seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    pub users: u64,
    pub sets_per_user: u32,
    pub seed: u64,
    pub tenants: u32,
    pub objects: u64,
    /// Users (or objects) per transaction.
    pub chunk: u64,
    /// Rewrites of random users' `default` sets after the users are written: changes for
    /// the change log's benchmarks.
    pub history: u64,
}

impl SeedPlan {
    pub fn from_args(args: &SeedArgs) -> anyhow::Result<SeedPlan> {
        let plan = SeedPlan {
            users: args.users,
            sets_per_user: args.sets_per_user,
            seed: args.seed,
            tenants: args.tenants,
            objects: args.objects.unwrap_or(args.users / 10),
            chunk: args.chunk.max(1),
            history: args.history,
        };
        plan.check()?;
        Ok(plan)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.sets_per_user > 1 && self.sets_per_user > self.tenants + 1 {
            anyhow::bail!(
                "--sets-per-user {} needs at least {} tenants (one set is `default`, the others are tenant sets); got --tenants {}",
                self.sets_per_user,
                self.sets_per_user - 1,
                self.tenants
            );
        }
        Ok(())
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedSummary {
    pub users: u64,
    pub objects: u64,
    pub tenants: u64,
    pub preference_sets: u64,
    pub memberships: u64,
    /// The changes `history` added.
    pub changes: u64,
    pub elapsed: Duration,
}

/// One generated user or object with its sets.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipientRecord {
    pub key: RecipientKey,
    pub properties: Map<String, Value>,
    /// Its `created_at` and `updated_at` (derived from the seed, not the clock).
    pub at: String,
    pub sets: Vec<(String, PreferenceSet)>,
    /// Keys of the audiences it is a member of.
    pub audiences: Vec<&'static str>,
}

/// The audiences the seed fills.
pub const AUDIENCES: [&str; 3] = ["beta-testers", "eu-customers", "enterprise-admins"];

const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
const COUNTRIES: [&str; 10] = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "NL", "ES"];
const EU: [&str; 4] = ["DE", "FR", "NL", "ES"];
const TENANT_NAMES: [&str; 12] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Aperture",
];
const TENANT_SUFFIXES: [&str; 4] = ["Inc", "Labs", "GmbH", "Ltd"];

/// 2024-01-01T00:00:00Z: seeded timestamps fall in the two years after it.
const EPOCH: i64 = 1_704_067_200;
const TWO_YEARS: u64 = 2 * 365 * 86_400;

/// Stream ids, so users, objects and tenants of one seed draw unrelated numbers.
const USER_STREAM: u64 = 1;
const OBJECT_STREAM: u64 = 2;
const TENANT_STREAM: u64 = 3;
const HISTORY_STREAM: u64 = 4;

fn stream(seed: u64, kind: u64) -> u64 {
    Rng::new(seed).next_u64() ^ Rng::new(kind).next_u64()
}

fn timestamp(rng: &mut Rng) -> anyhow::Result<String> {
    let s = EPOCH + rng.below(TWO_YEARS) as i64;
    Ok(jiff::Timestamp::from_second(s)
        .context("a seeded timestamp")?
        .to_string())
}

fn parse(value: Value, kind: SetKind) -> anyhow::Result<PreferenceSet> {
    PreferenceSet::parse(&value, kind, "preferences")
        .map_err(|e| anyhow::anyhow!("a generated preference set is invalid: {e}: {value}"))
}

/// A condition of the seeded sets.
fn condition(variable: &str, operator: &str, argument: Value) -> Value {
    json!({ "variable": variable, "operator": operator, "argument": argument })
}

/// A recipient's set: a few channel types, workflows and categories, sometimes a condition
/// or a commercial choice. Never empty.
fn recipient_set(rng: &mut Rng) -> anyhow::Result<PreferenceSet> {
    let mut set = Map::new();
    let mut channel_types = Map::new();
    for _ in 0..1 + rng.below(3) {
        channel_types.insert((*rng.pick(&CHANNEL_TYPES)).into(), json!(rng.chance(75)));
    }
    if rng.chance(8) {
        channel_types.insert(
            "sms".into(),
            json!({ "conditions": [condition("recipient.country_code", "equal_to", json!("US"))] }),
        );
    }
    set.insert("channel_types".into(), Value::Object(channel_types));
    let mut workflows = Map::new();
    for _ in 0..rng.below(4) {
        let (key, _) = *rng.pick(&WORKFLOWS);
        let value = if rng.chance(40) {
            json!(rng.chance(70))
        } else {
            json!({ "channel_types": { *rng.pick(&CHANNEL_TYPES): rng.bool() } })
        };
        workflows.insert(key.into(), value);
    }
    if rng.chance(10) {
        workflows.insert(
            "alert-fired".into(),
            json!({ "conditions": [condition("recipient.muted_alert_ids", "not_contains", json!("data.alert_id"))] }),
        );
    }
    if !workflows.is_empty() {
        set.insert("workflows".into(), Value::Object(workflows));
    }
    let mut categories = Map::new();
    for _ in 0..rng.below(3) {
        let key = *rng.pick(&CATEGORIES);
        let value = if rng.chance(50) {
            json!(rng.chance(60))
        } else {
            json!({ "channel_types": { *rng.pick(&CHANNEL_TYPES): rng.bool() } })
        };
        categories.insert(key.into(), value);
    }
    if rng.chance(3) {
        categories.insert(
            "marketing".into(),
            json!({ "conditions": [condition("recipient.id", "is_audience_member", json!("beta-testers"))] }),
        );
    }
    if !categories.is_empty() {
        set.insert("categories".into(), Value::Object(categories));
    }
    match rng.below(10) {
        0 | 1 => {
            set.insert("commercial_subscribed".into(), json!(false));
        }
        2 => {
            set.insert("commercial_subscribed".into(), json!(true));
        }
        _ => {}
    }
    parse(Value::Object(set), SetKind::Recipient)
}

/// User `i` of the plan.
pub fn user(plan: &SeedPlan, i: u64) -> anyhow::Result<RecipientRecord> {
    let mut rng = Rng::for_item(stream(plan.seed, USER_STREAM), i);
    let id = user_id(i);
    let created = timestamp(&mut rng)?;
    let plan_name = match rng.below(10) {
        0..=5 => PLANS[0],
        6..=8 => PLANS[1],
        _ => PLANS[2],
    };
    let country = *rng.pick(&COUNTRIES);
    let muted: Vec<String> = (0..rng.below(4))
        .map(|_| format!("alert-{}", rng.below(ALERTS)))
        .collect();
    let mut properties = Map::new();
    properties.insert("email".into(), json!(format!("{id}@example.com")));
    properties.insert("plan".into(), json!(plan_name));
    properties.insert("country_code".into(), json!(country));
    properties.insert("muted_alert_ids".into(), json!(muted));
    properties.insert("created_at".into(), json!(created));
    properties.insert(
        "signup_unix".into(),
        json!(EPOCH + rng.below(TWO_YEARS) as i64),
    );
    let mut sets = Vec::with_capacity(plan.sets_per_user as usize);
    let home = rng.below(u64::from(plan.tenants.max(1)));
    for k in 0..plan.sets_per_user {
        let set_id = if k == 0 {
            "default".to_string()
        } else {
            tenant_id((home + u64::from(k) - 1) % u64::from(plan.tenants))
        };
        sets.push((set_id, recipient_set(&mut rng)?));
    }
    let mut audiences = Vec::new();
    if rng.chance(5) {
        audiences.push(AUDIENCES[0]);
    }
    if EU.contains(&country) {
        audiences.push(AUDIENCES[1]);
    }
    if plan_name == "enterprise" && rng.chance(20) {
        audiences.push(AUDIENCES[2]);
    }
    Ok(RecipientRecord {
        key: RecipientKey::user(id),
        properties,
        at: created,
        sets,
        audiences,
    })
}

/// Object `j` of the plan: a project (two in three) or a chat channel.
pub fn object(plan: &SeedPlan, j: u64) -> anyhow::Result<RecipientRecord> {
    let mut rng = Rng::for_item(stream(plan.seed, OBJECT_STREAM), j);
    let (collection, prefix) = if j % 3 == 2 {
        ("channels", "channel")
    } else {
        ("projects", "project")
    };
    let id = format!("{prefix}-{j:06}");
    let created = timestamp(&mut rng)?;
    let mut properties = Map::new();
    properties.insert("name".into(), json!(format!("{prefix} {j}")));
    properties.insert(
        "owner_id".into(),
        json!(user_id(rng.below(plan.users.max(1)))),
    );
    properties.insert("archived".into(), json!(rng.chance(10)));
    properties.insert("created_at".into(), json!(created));
    let mut sets = Vec::new();
    if rng.chance(60) {
        let set = json!({ "channel_types": { "chat": rng.chance(80), "email": rng.chance(50) } });
        sets.push(("default".to_string(), parse(set, SetKind::Recipient)?));
    }
    Ok(RecipientRecord {
        key: RecipientKey::object(collection, id),
        properties,
        at: created,
        sets,
        audiences: Vec::new(),
    })
}

/// Tenant `t` of the plan, with a default preference set; every third locks the security
/// workflow to email (an admin lock).
pub fn tenant(plan: &SeedPlan, t: u64) -> anyhow::Result<TenantRow> {
    let mut rng = Rng::for_item(stream(plan.seed, TENANT_STREAM), t);
    let created = timestamp(&mut rng)?;
    let name = format!("{} {}", rng.pick(&TENANT_NAMES), rng.pick(&TENANT_SUFFIXES));
    let mut set = json!({
        "channel_types": { "sms": false, "email": true },
        "categories": { "marketing": rng.chance(50), "digest": { "channel_types": { "email": true, "push": false } } },
        "commercial_subscribed": rng.chance(80),
    });
    if t.is_multiple_of(3) {
        set["workflows"] = json!({
            "security-notice": { "__strategy__": "replace", "channel_types": { "email": true } }
        });
    }
    let mut properties = Map::new();
    properties.insert("plan".into(), json!(*rng.pick(&PLANS)));
    properties.insert("region".into(), json!(if rng.bool() { "eu" } else { "us" }));
    properties.insert("seats".into(), json!(5 + rng.below(500)));
    Ok(TenantRow {
        id: tenant_id(t),
        name: Some(name),
        properties,
        preference_set: Some(parse(set, SetKind::Default)?),
        branding: None,
        created_at: created.clone(),
        updated_at: created,
    })
}

/// Rewrites `plan.history` random users' `default` sets, a chunk per transaction: each
/// write changes the set (a counter in it), so each appends one change.
fn write_history(db: &Db, plan: &SeedPlan) -> anyhow::Result<u64> {
    if plan.users == 0 {
        return Ok(0);
    }
    let mut rng = Rng::for_item(stream(plan.seed, HISTORY_STREAM), 0);
    let mut done = 0;
    while done < plan.history {
        let n = plan.chunk.min(plan.history - done);
        let writes: Vec<(RecipientKey, PreferenceSet)> = (0..n)
            .map(|k| {
                let user = RecipientKey::user(user_id(rng.below(plan.users)));
                let (workflow, category) = *rng.pick(&WORKFLOWS);
                let set = json!({
                    "channel_types": { "email": rng.chance(80), *rng.pick(&CHANNEL_TYPES): rng.bool() },
                    "workflows": { workflow: rng.bool() },
                    "categories": { category: (done + k) % 2 == 0 },
                });
                Ok((user, parse(set, SetKind::Recipient)?))
            })
            .collect::<anyhow::Result<_>>()?;
        let now = crate::store::time::now();
        db.write_blocking(seed_origin(), move |w| {
            for (user, set) in &writes {
                w.put_set(user, "default", set, &now)?;
            }
            Ok::<_, crate::store::Error>(())
        })
        .context("writing history")?;
        db.wait_for_checkpoints();
        done += n;
    }
    Ok(done)
}

/// Writes one chunk of recipients (and their audience memberships) in the transaction.
fn write_chunk(
    w: &Write<'_>,
    chunk: &[RecipientRecord],
) -> Result<(u64, u64), crate::store::Error> {
    let mut sets = 0;
    let mut members: Vec<Vec<RecipientKey>> = vec![Vec::new(); AUDIENCES.len()];
    let mut at = "";
    for r in chunk {
        w.put_recipient(&r.key, &r.properties, &r.at)?;
        for (set_id, set) in &r.sets {
            w.put_set(&r.key, set_id, set, &r.at)?;
            sets += 1;
        }
        for a in &r.audiences {
            if let Some(i) = AUDIENCES.iter().position(|x| x == a) {
                members[i].push(r.key.clone());
            }
        }
        at = &r.at;
    }
    let mut added = 0;
    for (audience, keys) in AUDIENCES.iter().zip(&members) {
        if !keys.is_empty() {
            w.add_members(audience, keys, at)?;
            added += keys.len() as u64;
        }
    }
    Ok((sets, added))
}

/// The origin of the changes a seed writes: the seeding user, through `bench seed`.
fn seed_origin() -> Origin {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to this process's uid: getuid without `unsafe`.
    let uid = std::fs::metadata("/proc/self").map_or(0, |p| p.uid());
    Origin::new(Actor::Peer { uid }, "bench.seed")
}

/// Seeds `db` by the plan; `progress` is called after every committed chunk with the
/// recipients written so far and the total.
pub fn seed_db(
    db: &Db,
    plan: &SeedPlan,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<SeedSummary> {
    plan.check()?;
    let start = Instant::now();
    let mut summary = SeedSummary::default();
    let tenants: Vec<TenantRow> = (0..u64::from(plan.tenants))
        .map(|t| tenant(plan, t))
        .collect::<anyhow::Result<_>>()?;
    summary.tenants = tenants.len() as u64;
    db.write_blocking(seed_origin(), move |w| {
        for t in &tenants {
            w.put_tenant(t)?;
        }
        Ok::<_, crate::store::Error>(())
    })
    .context("writing tenants")?;

    let total = plan.users + plan.objects;
    // The generator runs one chunk ahead of the writer.
    let (tx, rx) = mpsc::sync_channel::<anyhow::Result<(bool, Vec<RecipientRecord>)>>(1);
    let gen_plan = *plan;
    let generator = std::thread::Builder::new()
        .name("prefsd-seed-gen".into())
        .spawn(move || {
            let ranges = [(true, gen_plan.users), (false, gen_plan.objects)];
            for (is_user, count) in ranges {
                let mut from = 0;
                while from < count {
                    let to = (from + gen_plan.chunk).min(count);
                    let chunk: anyhow::Result<Vec<RecipientRecord>> = (from..to)
                        .map(|i| {
                            if is_user {
                                user(&gen_plan, i)
                            } else {
                                object(&gen_plan, i)
                            }
                        })
                        .collect();
                    let failed = chunk.is_err();
                    if tx.send(chunk.map(|c| (is_user, c))).is_err() || failed {
                        return;
                    }
                    from = to;
                }
            }
        })
        .context("starting the generator thread")?;
    let mut done = 0;
    for chunk in rx {
        let (is_user, chunk) = chunk?;
        let n = chunk.len() as u64;
        let (sets, members) = db
            .write_blocking(seed_origin(), move |w| write_chunk(w, &chunk))
            .context("writing a chunk")?;
        // The checkpointer copies the WAL back beside the writer; writing chunk after chunk
        // without waiting for it, it never catches up and the WAL is never restarted (a
        // 1 M-user seed with its change log ran the WAL past 8 GB). Waiting for it after
        // each chunk lets the next one start the WAL over.
        db.wait_for_checkpoints();
        if is_user {
            summary.users += n;
        } else {
            summary.objects += n;
        }
        summary.preference_sets += sets;
        summary.memberships += members;
        done += n;
        progress(done, total);
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    summary.changes = write_history(db, plan)?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// `prefsd bench seed`: opens (creating and migrating) the database, seeds it, prints
/// progress to stderr and a summary to stdout.
pub fn run(args: &SeedArgs) -> anyhow::Result<SeedSummary> {
    let plan = SeedPlan::from_args(args)?;
    match &args.database_url {
        None => seed_path(&args.database, &plan),
        Some(url) => {
            let location = crate::store::Location::Postgres(crate::store::PgOptions {
                url: url.clone(),
                schema: args.schema.clone(),
            });
            let options = crate::store::Options {
                durability: Durability::Normal,
                max_database_mb: None,
                read_cache_mb: 0,
                max_staleness_ms: 1000,
                skip_change_log: false,
            };
            // PostgreSQL's client runs a runtime of its own: opened off any runtime.
            let db = std::thread::spawn(move || Db::open_at(&location, options))
                .join()
                .map_err(|_| anyhow::anyhow!("opening PostgreSQL panicked"))?
                .with_context(|| format!("opening the PostgreSQL schema {}", args.schema))?;
            seed_opened(db, &format!("postgres schema {}", args.schema), &plan)
        }
    }
}

fn seed_path(path: &Path, plan: &SeedPlan) -> anyhow::Result<SeedSummary> {
    // Bulk loading needs no fsync per commit; the daemon reopens with its own setting.
    let db = Db::open(path, Durability::Normal)
        .with_context(|| format!("opening {}", path.display()))?;
    seed_opened(db, &path.display().to_string(), plan)
}

fn seed_opened(db: Db, name: &str, plan: &SeedPlan) -> anyhow::Result<SeedSummary> {
    eprintln!(
        "seeding {}: {} users × {} sets, {} tenants, {} objects, seed {}",
        name, plan.users, plan.sets_per_user, plan.tenants, plan.objects, plan.seed
    );
    let start = Instant::now();
    let mut progress = None;
    let result = seed_db(&db, plan, |done, total| {
        progress
            .get_or_insert_with(|| crate::client::Progress::new(total, "recipients"))
            .set(done, "seeding");
    });
    if let Some(progress) = progress {
        progress.finish();
    }
    // Close (checkpointing the WAL into the file) before reporting the time taken.
    db.close();
    let mut summary = result?;
    summary.elapsed = start.elapsed();
    println!(
        "seeded {}: {} users, {} objects, {} tenants, {} preference sets, {} audience memberships, {} extra changes in {:.1} s ({:.0} users/s)",
        name,
        summary.users,
        summary.objects,
        summary.tenants,
        summary.preference_sets,
        summary.memberships,
        summary.changes,
        summary.elapsed.as_secs_f64(),
        summary.users as f64 / summary.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(users: u64, seed: u64) -> SeedPlan {
        SeedPlan {
            users,
            sets_per_user: 2,
            seed,
            tenants: 4,
            objects: users / 10,
            chunk: 7,
            history: 0,
        }
    }

    #[test]
    fn records_are_deterministic() {
        let p = plan(100, 5);
        for i in [0, 1, 42, 99] {
            assert_eq!(user(&p, i).expect("a user"), user(&p, i).expect("a user"));
        }
        assert_eq!(
            object(&p, 3).expect("an object"),
            object(&p, 3).expect("an object")
        );
        assert_eq!(
            tenant(&p, 2).expect("a tenant"),
            tenant(&p, 2).expect("a tenant")
        );
        let other = plan(100, 6);
        assert_ne!(
            user(&p, 42).expect("a user"),
            user(&other, 42).expect("a user")
        );
        // A user does not depend on the size of the plan.
        assert_eq!(
            user(&p, 42).expect("a user"),
            user(&plan(1000, 5), 42).expect("a user")
        );
    }

    #[test]
    fn records_look_realistic() {
        let p = plan(2000, 1);
        let users: Vec<RecipientRecord> = (0..2000).map(|i| user(&p, i).expect("a user")).collect();
        let u = &users[123];
        assert_eq!(u.key, RecipientKey::user("user-000123"));
        for field in [
            "plan",
            "country_code",
            "muted_alert_ids",
            "created_at",
            "email",
        ] {
            assert!(u.properties.contains_key(field), "{field}");
        }
        assert!(
            users
                .iter()
                .all(|u| u.sets.len() == 2 && u.sets[0].0 == "default")
        );
        assert!(users.iter().all(|u| u.sets[1].0.starts_with("tenant-0")));
        let with_conditions = users
            .iter()
            .flat_map(|u| &u.sets)
            .filter(|(_, s)| {
                serde_json::to_string(s.as_map()).is_ok_and(|t| t.contains("conditions"))
            })
            .count();
        assert!(
            (100..1500).contains(&with_conditions),
            "{with_conditions} of 4000 sets with conditions"
        );
        let in_audiences: usize = users.iter().map(|u| u.audiences.len()).sum();
        assert!(in_audiences > 100, "{in_audiences}");
        let t = tenant(&p, 0).expect("a tenant");
        assert_eq!(t.id, "tenant-00");
        assert!(t.name.is_some() && t.preference_set.is_some());
        assert_eq!(
            object(&p, 2).expect("an object").key,
            RecipientKey::object("channels", "channel-000002")
        );
    }

    #[test]
    fn too_many_sets_for_the_tenants_is_refused() {
        let mut p = plan(10, 1);
        p.sets_per_user = 6;
        assert!(p.check().is_err());
        p.sets_per_user = 5;
        assert!(p.check().is_ok());
    }

    /// Everything a database holds for some recipients, to compare two seeded databases.
    fn snapshot(db: &Db, keys: Vec<RecipientKey>) -> Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime
            .block_on(db.read(move |r| {
                let mut out = Vec::new();
                for key in &keys {
                    let row = r.recipient(key)?;
                    let sets: Vec<(String, Value)> = r
                        .sets(key)?
                        .into_iter()
                        .map(|(id, s)| (id, s.to_value()))
                        .collect();
                    out.push(json!({
                        "key": key.to_string(),
                        "properties": row.as_ref().map(|r| Value::Object(r.properties.clone())),
                        "created_at": row.as_ref().map(|r| r.created_at.clone()),
                        "sets": sets,
                        "audiences": r.audiences_of(key)?,
                    }));
                }
                let tenant = r.tenant("tenant-01")?.map(|t| t.name);
                Ok::<_, crate::store::Error>(json!({
                    "recipients": out,
                    "counts": r.counts()?,
                    "tenant": tenant,
                    "beta": r.count_members("beta-testers")?,
                }))
            }))
            .expect("reading the database")
    }

    #[test]
    fn seeding_is_deterministic_and_counts_add_up() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let keys = || {
            vec![
                RecipientKey::user("user-000000"),
                RecipientKey::user("user-000057"),
                RecipientKey::user("user-000149"),
                RecipientKey::object("projects", "project-000004"),
                RecipientKey::object("channels", "channel-000011"),
            ]
        };
        let mut snapshots = Vec::new();
        for (name, chunk) in [("a.db", 7), ("b.db", 1000)] {
            let db = Db::open(&dir.path().join(name), Durability::Normal).expect("opening");
            let mut p = plan(150, 11);
            p.chunk = chunk;
            let mut calls = 0;
            let summary = seed_db(&db, &p, |done, total| {
                calls += 1;
                assert!(done <= total);
            })
            .expect("seeding");
            assert_eq!(summary.users, 150);
            assert_eq!(summary.objects, 15);
            assert_eq!(summary.tenants, 4);
            assert!(calls >= 1);
            let snap = snapshot(&db, keys());
            assert_eq!(snap["counts"]["users"], 150);
            assert_eq!(snap["counts"]["objects"], 15);
            assert_eq!(snap["counts"]["tenants"], 4);
            assert_eq!(
                snap["counts"]["preference_sets"],
                json!(summary.preference_sets)
            );
            assert_eq!(summary.preference_sets, 300 + snap_object_sets(&p));
            snapshots.push(snap);
            db.close();
        }
        // The same data whatever the chunk size.
        assert_eq!(snapshots[0], snapshots[1]);
        assert!(snapshots[0]["recipients"][1]["properties"]["plan"].is_string());
    }

    /// Seeding chunk after chunk leaves the checkpointer room to restart the WAL: it stays
    /// about a chunk's size instead of growing with the whole seed.
    #[test]
    fn the_wal_stays_about_a_chunk_while_seeding() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("seed.db");
        let db = Db::open(&path, Durability::Normal).expect("opening");
        let mut p = plan(20_000, 3);
        p.chunk = 1000;
        p.history = 20_000;
        let wal = dir.path().join("seed.db-wal");
        let mut largest = 0;
        seed_db(&db, &p, |_, _| {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        })
        .expect("seeding");
        let after = std::fs::metadata(&wal).map_or(0, |m| m.len());
        db.close();
        // A chunk of 1000 users writes a few MB; the whole seed about 60.
        let bound = 16 * 1024 * 1024;
        assert!(
            largest < bound && after < bound,
            "the WAL grew to {largest} bytes ({after} at the end)"
        );
    }

    fn snap_object_sets(p: &SeedPlan) -> u64 {
        (0..p.objects)
            .map(|j| object(p, j).expect("an object").sets.len() as u64)
            .sum()
    }
}
