//! `prefsd import FILE`: loads an export (`prefsd export`), or JSON lines of Knock users or
//! objects as Knock's API returns them with `include[]=preferences`, through the bulk
//! methods: tenants by `tenants.bulkSet`, users by `users.bulkIdentify`, objects by
//! `objects.bulkSet` (durable jobs of [`LINES_PER_JOB`] lines each, resumed after a crash
//! like any bulk job), audience members by `audiences.addMembers` (no bulk job kind exists
//! for them; adding a member twice changes nothing).
//!
//! The daemon validates every item as its single method would. A line it refuses, or one
//! that is not a line of the format at all, is reported with its line number and left out:
//! the rest of its batch is submitted again without it, so no line is half-applied. Each
//! batch's idempotency key is a hash of what it submits, so importing a file again (after
//! the daemon was killed mid-import, say) answers the jobs already queued instead of
//! queuing them twice; and the writes merge, so a line applied twice leaves what it left
//! once.
//!
//! The CLI keeps at most [`QUEUED_AT_MOST`] of its jobs queued or running in the daemon,
//! following the oldest over its subscription before it submits the next: the daemon then
//! never holds more than a couple of submissions at once, however long the file.

use std::collections::VecDeque;
use std::io::BufRead as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::Follower;
use crate::client::{Client, Refused};

/// The most lines one job (or one `audiences.addMembers` call) takes: a quarter of what a
/// bulk method accepts. A 1000-line job is about 1 MB of JSON, which the daemon holds
/// several times over while it parses and validates it, and its worker holds parsed while
/// the job runs: its RSS swung by about 15 MiB with each 1000-line submission.
pub const LINES_PER_JOB: usize = 250;

/// The most of an import's jobs queued or running in the daemon at once: one the worker
/// runs and one waiting, so the worker never waits for the CLI. Submitting a whole file at
/// once had the daemon receive, validate and store about 1 MB of JSON per job back to back
/// while its worker wrote: its peak RSS was 110 MiB on a 100 000-line import, against
/// about 80 MiB once the submissions stopped (README, "Backups and moving data").
pub const QUEUED_AT_MOST: usize = 2;

/// The import's jobs the daemon has not finished, oldest first, and the follower that
/// waits for them.
struct InFlight {
    jobs: VecDeque<Value>,
    follower: Follower,
    queued: usize,
}

impl InFlight {
    /// Follows the oldest jobs to their end until another may be queued.
    async fn make_room(&mut self, client: &Client) -> anyhow::Result<()> {
        while self.jobs.len() >= QUEUED_AT_MOST {
            self.follow_oldest(client).await?;
        }
        Ok(())
    }

    /// Adds a job its bulk method answered.
    fn push(&mut self, op: Value) {
        self.follower.expect(&op);
        self.queued += 1;
        self.jobs.push_back(op);
    }

    async fn follow_oldest(&mut self, client: &Client) -> anyhow::Result<()> {
        match self.jobs.pop_front() {
            Some(op) => self.follower.follow(client, op).await,
            None => Ok(()),
        }
    }
}

/// The format of an import file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `prefsd export`'s NDJSON, header line first.
    Prefsd,
    /// Knock users or objects, one JSON object a line.
    Knock,
}

/// What a batch holds: which method takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Tenants,
    Users,
    Objects(String),
    Members(String),
}

impl Target {
    /// The method, its list param and (objects, members) the extra param.
    fn call(&self, items: Vec<Value>, key: &str) -> (&'static str, &'static str, Value) {
        match self {
            Target::Tenants => (
                "tenants.bulkSet",
                "tenants",
                json!({ "tenants": items, "idempotency_key": key }),
            ),
            Target::Users => (
                "users.bulkIdentify",
                "users",
                json!({ "users": items, "idempotency_key": key }),
            ),
            Target::Objects(c) => (
                "objects.bulkSet",
                "objects",
                json!({ "collection": c, "objects": items, "idempotency_key": key }),
            ),
            Target::Members(a) => (
                "audiences.addMembers",
                "members",
                json!({ "audience_key": a, "members": items }),
            ),
        }
    }
}

/// A line that was left out, and why.
struct Bad {
    line: u64,
    message: String,
}

/// The lines of one batch, in file order.
struct Batch {
    target: Target,
    lines: Vec<(u64, Value)>,
}

/// `prefsd import FILE [--format F]`: submits the file's lines, then follows the jobs to
/// their end. Refused (exit 1) when a line was left out or a job item failed.
pub async fn import(client: &Client, file: &Path, format: Option<Format>) -> anyhow::Result<()> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut bad = Vec::new();
    let mut ops = InFlight {
        jobs: VecDeque::new(),
        follower: Follower::new(),
        queued: 0,
    };
    let mut members = 0u64;
    let mut format = format;
    let mut batch: Option<Batch> = None;
    for (index, line) in reader.lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.with_context(|| format!("reading line {number} of {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                bad.push(Bad {
                    line: number,
                    message: format!("not JSON: {e}"),
                });
                continue;
            }
        };
        if number == 1 && format != Some(Format::Knock) {
            if value.get("format").is_some() {
                check_header(&value)?;
                format = Some(Format::Prefsd);
                continue;
            }
            if format == Some(Format::Prefsd) {
                anyhow::bail!(
                    "{} does not start with a prefsd export header; import Knock lines with --format knock",
                    file.display()
                );
            }
            format = Some(Format::Knock);
        }
        let item = match format {
            Some(Format::Prefsd) => from_export(value),
            _ => from_knock(value),
        };
        let (target, item) = match item {
            Ok(found) => found,
            Err(message) => {
                bad.push(Bad {
                    line: number,
                    message,
                });
                continue;
            }
        };
        let full = batch
            .as_ref()
            .is_some_and(|b| b.target != target || b.lines.len() >= LINES_PER_JOB);
        if full && let Some(done) = batch.take() {
            members += submit(client, done, &mut bad, &mut ops).await?;
        }
        batch
            .get_or_insert_with(|| Batch {
                target,
                lines: Vec::new(),
            })
            .lines
            .push((number, item));
    }
    if let Some(done) = batch.take() {
        members += submit(client, done, &mut bad, &mut ops).await?;
    }
    eprintln!(
        "{}: {} bulk operation(s) queued, {members} audience member(s) added, {} line(s) left out",
        file.display(),
        ops.queued,
        bad.len()
    );
    bad.sort_by_key(|b| b.line);
    for b in &bad {
        eprintln!("  line {}: {}", b.line, b.message);
    }
    let mut followed = Ok(());
    while !ops.jobs.is_empty() && followed.is_ok() {
        followed = ops.follow_oldest(client).await;
    }
    let followed = followed.and_then(|()| ops.follower.finish());
    match (followed, bad.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => Err(Refused(format!("{} line(s) were left out", bad.len())).into()),
        (Err(e), _) => Err(e),
    }
}

/// Refuses a header of another format or a newer version.
fn check_header(header: &Value) -> anyhow::Result<()> {
    if header["format"] != json!(crate::store::export::FORMAT) {
        anyhow::bail!(
            "line 1 is the header of a {} file, not a prefsd export",
            header["format"]
        );
    }
    match header["version"].as_u64() {
        Some(v) if v <= u64::from(crate::store::export::VERSION) => Ok(()),
        _ => anyhow::bail!(
            "the export is version {}; this prefsd reads version {}",
            header["version"],
            crate::store::export::VERSION
        ),
    }
}

/// A line of an export: what takes it, and the item as the bulk method takes it.
fn from_export(value: Value) -> Result<(Target, Value), String> {
    let Value::Object(mut line) = value else {
        return Err("must be a JSON object".into());
    };
    let kind = match line.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err("`type` must be tenant, user, object or audience_member".into()),
    };
    // Timestamps are set by the writes that import makes.
    line.remove("created_at");
    line.remove("updated_at");
    match kind.as_str() {
        "tenant" => Ok((Target::Tenants, Value::Object(line))),
        "user" => Ok((Target::Users, Value::Object(line))),
        "object" => match line.remove("collection") {
            Some(Value::String(c)) => Ok((Target::Objects(c), Value::Object(line))),
            _ => Err("`collection` must be a string".into()),
        },
        "audience_member" => {
            line.remove("added_at");
            match line.remove("audience_key") {
                Some(Value::String(a)) => Ok((Target::Members(a), Value::Object(line))),
                _ => Err("`audience_key` must be a string".into()),
            }
        }
        other => Err(format!(
            "`type` {other:?} is not tenant, user, object or audience_member"
        )),
    }
}

/// Keys of a Knock user that are not custom properties.
const KNOCK_RESERVED: [&str; 6] = [
    "id",
    "__typename",
    "preferences",
    "created_at",
    "updated_at",
    "collection",
];

/// A Knock user (custom properties at the top level) or object (`collection`, and
/// `properties`), with `preferences` keyed by set id.
fn from_knock(value: Value) -> Result<(Target, Value), String> {
    let Value::Object(mut line) = value else {
        return Err("must be a JSON object (a Knock user or object)".into());
    };
    let id = line.get("id").cloned();
    let mut item = Map::new();
    item.insert("id".into(), id.unwrap_or(Value::Null));
    if let Some(sets) = line.get("preferences").filter(|p| !p.is_null()) {
        item.insert("preferences".into(), sets.clone());
    }
    let collection = match line.get("collection") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => return Err("`collection` must be a string".into()),
    };
    let properties = match &collection {
        // Knock's objects carry their properties under `properties`.
        Some(_) => match line.remove("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => return Err("`properties` must be an object".into()),
        },
        None => {
            for key in KNOCK_RESERVED {
                line.remove(key);
            }
            line
        }
    };
    if !properties.is_empty() {
        item.insert("properties".into(), Value::Object(properties));
    }
    let target = match collection {
        Some(c) => Target::Objects(c),
        None => Target::Users,
    };
    Ok((target, Value::Object(item)))
}

/// Submits a batch; the lines the daemon refuses are reported in `bad` and the rest sent
/// again without them. Queued jobs go to `ops` (which may wait for older ones to finish
/// first); answers how many members were added.
async fn submit(
    client: &Client,
    batch: Batch,
    bad: &mut Vec<Bad>,
    ops: &mut InFlight,
) -> anyhow::Result<u64> {
    let mut lines = batch.lines;
    // Each round leaves out at least one line, so this ends.
    while !lines.is_empty() {
        let items: Vec<Value> = lines.iter().map(|(_, v)| v.clone()).collect();
        let key = idempotency_key(&batch.target, &items);
        let (method, field, params) = batch.target.call(items, &key);
        if !matches!(batch.target, Target::Members(_)) {
            ops.make_room(client).await?;
        }
        match client.call(method, params).await {
            Ok(answer) => {
                if matches!(batch.target, Target::Members(_)) {
                    return Ok(lines.len() as u64);
                }
                ops.push(answer);
                return Ok(0);
            }
            Err(e) => {
                let refused = refused_items(&e, field);
                if refused.is_empty() {
                    return Err(e.context(format!(
                        "{method} for lines {}–{}",
                        lines[0].0,
                        lines[lines.len() - 1].0
                    )));
                }
                let mut kept = Vec::with_capacity(lines.len());
                for (i, line) in lines.into_iter().enumerate() {
                    match refused.iter().find(|(index, _)| *index == i) {
                        Some((_, message)) => bad.push(Bad {
                            line: line.0,
                            message: message.clone(),
                        }),
                        None => kept.push(line),
                    }
                }
                lines = kept;
            }
        }
    }
    Ok(0)
}

/// The items an `invalid_params` or `limit_exceeded` answer names (`users.3.properties`):
/// index and message, with the field inside the item.
fn refused_items(e: &anyhow::Error, field: &str) -> Vec<(usize, String)> {
    use jsonrpsee::core::client::Error as ClientError;
    let Some(ClientError::Call(err)) = e.downcast_ref::<ClientError>() else {
        return Vec::new();
    };
    let Some(data) = err
        .data()
        .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
    else {
        return Vec::new();
    };
    let named: Vec<(String, String)> = match data["errors"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                let f = i["field"].as_str().unwrap_or_default().to_string();
                (f, i["message"].as_str().unwrap_or_default().to_string())
            })
            .collect(),
        None => vec![(
            data["field"].as_str().unwrap_or_default().to_string(),
            err.message().to_string(),
        )],
    };
    let mut out: Vec<(usize, String)> = Vec::new();
    for (f, message) in named {
        let Some(rest) = f.strip_prefix(field).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let (index, inner) = rest.split_once('.').unwrap_or((rest, ""));
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let message = if inner.is_empty() {
            message
        } else {
            format!("{inner}: {message}")
        };
        match out.iter_mut().find(|(i, _)| *i == index) {
            Some((_, m)) => {
                m.push_str("; ");
                m.push_str(&message);
            }
            None => out.push((index, message)),
        }
    }
    out
}

/// `import-` and a 64-bit FNV-1a hash of the method's target and items: the same batch
/// gets the same key in every run, so a repeated import answers the jobs already queued.
fn idempotency_key(target: &Target, items: &[Value]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(format!("{target:?}").as_bytes());
    for item in items {
        feed(item.to_string().as_bytes());
        feed(b"\n");
    }
    format!("import-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Target, from_export, from_knock};

    #[test]
    fn knock_users_keep_custom_properties_and_objects_their_properties() {
        let (target, item) = from_knock(json!({
            "__typename": "User", "id": "dana", "email": "d@example.com", "plan": "pro",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": null,
            "preferences": { "default": { "__typename": "PreferenceSet", "id": "default",
                                          "categories": { "marketing": false } } }
        }))
        .expect("a user");
        assert_eq!(target, Target::Users);
        assert_eq!(
            item["properties"],
            json!({ "email": "d@example.com", "plan": "pro" })
        );
        assert_eq!(
            item["preferences"]["default"]["categories"]["marketing"],
            false
        );
        let (target, item) = from_knock(json!({
            "__typename": "Object", "id": "p1", "collection": "projects",
            "properties": { "name": "Apollo" }
        }))
        .expect("an object");
        assert_eq!(target, Target::Objects("projects".into()));
        assert_eq!(
            item,
            json!({ "id": "p1", "properties": { "name": "Apollo" } })
        );
        assert!(from_knock(json!([1])).is_err());
    }

    #[test]
    fn export_lines_become_bulk_items_without_their_timestamps() {
        let (target, item) = from_export(json!({
            "type": "audience_member", "audience_key": "beta", "user_id": "dana",
            "added_at": "2024-01-01T00:00:00Z"
        }))
        .expect("a member");
        assert_eq!(target, Target::Members("beta".into()));
        assert_eq!(item, json!({ "user_id": "dana" }));
        assert!(from_export(json!({ "type": "robot" })).is_err());
    }
}
