//! `preferences.evaluate`: decisions for many recipients and channels in one call.
//!
//! Inline identifies (recipient properties and preferences, an inline tenant or actor) are
//! persisted first, in one write transaction that then also reads everything evaluation
//! needs; without them, everything comes from the read cache when it holds it all, else
//! from one read transaction, or, past `CHUNK_RECIPIENTS` recipients, from one read
//! transaction per chunk on both reader threads at once (each chunk is consistent in
//! itself, as a call of its own would be). Either way the reads are a few point queries
//! per recipient, never one per channel, and evaluation itself is the pure `eval::decide`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::recipients::{parse_inline_sets, write_inline};
use crate::api::tenants::TenantWrite;
use crate::api::{Context, Errors, FieldPath, Json, strict};
use crate::config::{Config, Limits};
use crate::eval::{self, Entity};
use crate::model::{
    Channel, ChannelType, DEFAULT_SET, PreferenceSet, PreferenceSetRequest, RecipientKey, Strategy,
    Workflow, type_name,
};
use crate::resolve::{Sources, Stack};
use crate::store::time::now;
use crate::store::{Cache, EvaluationInputs, Read, TenantRow, Ticket, View};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    #[serde(default, deserialize_with = "strict::value")]
    pub workflow: Option<Value>,
    #[serde(default, deserialize_with = "strict::value")]
    pub channels: Option<Value>,
    #[serde(default, deserialize_with = "strict::value")]
    pub recipients: Option<Value>,
    #[serde(default, deserialize_with = "strict::value")]
    pub tenant: Option<Value>,
    #[serde(default, deserialize_with = "strict::value")]
    pub data: Option<Value>,
    #[serde(default, deserialize_with = "strict::value")]
    pub actor: Option<Value>,
    pub run: Option<Value>,
    pub now: Option<String>,
}

/// The most channels one evaluation may name: every decision is made for every recipient,
/// so the work is recipients × channels, and both must be bounded.
const MAX_CHANNELS: usize = 64;

/// A recipient of the request, with what it identifies inline.
struct RecipientParam {
    key: RecipientKey,
    properties: Option<Map<String, Value>>,
    sets: Vec<(String, PreferenceSetRequest)>,
}

impl RecipientParam {
    fn is_inline(&self) -> bool {
        self.properties.is_some() || !self.sets.is_empty()
    }
}

struct ActorParam {
    id: String,
    properties: Option<Map<String, Value>>,
}

/// A validated request.
struct Request {
    workflow: Workflow,
    channels: Vec<Channel>,
    recipients: Vec<RecipientParam>,
    tenant: Option<TenantWrite>,
    actor: Option<ActorParam>,
    data: Value,
    /// The `run` object, or `null` without one.
    run: Value,
    now: jiff::Timestamp,
}

/// Everything evaluation reads: from one transaction, or all of it from the cache.
struct Snapshot {
    tenant: Option<Arc<TenantRow>>,
    actor: Option<Arc<EvaluationInputs>>,
    recipients: Vec<Arc<EvaluationInputs>>,
}

impl Request {
    /// The per-tenant set each recipient's own tenant preferences are read from.
    fn tenant_set(&self) -> Option<&str> {
        self.tenant
            .as_ref()
            .map(|t| t.id.as_str())
            .filter(|t| *t != DEFAULT_SET)
    }

    fn actor_key(&self) -> Option<RecipientKey> {
        self.actor.as_ref().map(|a| RecipientKey::user(&a.id))
    }
}

impl Snapshot {
    /// The snapshot from the cache, when it holds everything the request reads.
    fn cached(view: &View<'_>, req: &Request) -> Option<Snapshot> {
        let tenant = match &req.tenant {
            Some(t) => view.tenant(&t.id)?,
            None => None,
        };
        let actor = match req.actor_key() {
            Some(key) => Some(view.inputs(&key, None)?),
            None => None,
        };
        let tenant_set = req.tenant_set();
        let recipients = req
            .recipients
            .iter()
            .map(|rp| view.inputs(&rp.key, tenant_set))
            .collect::<Option<Vec<_>>>()?;
        Some(Snapshot {
            tenant,
            actor,
            recipients,
        })
    }

    /// Offers what a read transaction (begun after `ticket`) loaded for `recipients` to the
    /// cache.
    fn remember(
        &self,
        cache: &Cache,
        ticket: Ticket,
        req: &Request,
        recipients: &[RecipientParam],
    ) {
        if let Some(t) = &req.tenant {
            cache.put_tenant(ticket, &t.id, self.tenant.as_ref());
        }
        if let (Some(key), Some(actor)) = (req.actor_key(), &self.actor)
            && cache.admit(&key, None)
        {
            cache.put_inputs(ticket, &key, None, actor);
        }
        let tenant_set = req.tenant_set();
        for (rp, inputs) in recipients.iter().zip(&self.recipients) {
            if cache.admit(&rp.key, tenant_set) {
                cache.put_inputs(ticket, &rp.key, tenant_set, inputs);
            }
        }
    }
}

pub async fn evaluate(ctx: &Context, p: EvaluateParams) -> Result<Json, Error> {
    let config = ctx.config();
    let req = parse(&config, p)?;
    let limits = config.settings.limits.clone();
    let inline = req.recipients.iter().any(RecipientParam::is_inline)
        || req
            .tenant
            .as_ref()
            .is_some_and(TenantWrite::changes_anything)
        || req.actor.as_ref().is_some_and(|a| a.properties.is_some());
    let cache = ctx.db.cache();
    let (req, snapshot) = if inline {
        ctx.db
            .write(move |w| {
                persist(w, &req, &limits)?;
                let snapshot = load(w, &req, &req.recipients)?;
                Ok::<_, Error>((req, snapshot))
            })
            .await?
    } else if let Some(snapshot) = cache.lookup(|v| Snapshot::cached(v, &req)) {
        (req, snapshot)
    } else if req.recipients.len() > CHUNK_RECIPIENTS {
        return unless_stopping(ctx, evaluate_in_chunks(ctx, config, req)).await;
    } else {
        let ticket = cache.ticket();
        let (req, snapshot) = ctx
            .db
            .read(move |r| {
                let snapshot = load(r, &req, &req.recipients)?;
                Ok::<_, Error>((req, snapshot))
            })
            .await?;
        snapshot.remember(cache, ticket, &req, &req.recipients);
        (req, snapshot)
    };
    let max_items = config.settings.limits.max_list_items_per_call;
    if req.recipients.len() <= ON_WORKER_RECIPIENTS {
        // Tried on the worker with a small list budget: nearly every call fits, and one
        // that does not is decided again on a blocking thread, having cost the worker at
        // most ON_WORKER_LIST_ITEMS.
        let budget = eval::Budget::new(ON_WORKER_LIST_ITEMS.min(max_items));
        let evaluation = decide_all(&config, &req, &req.recipients, &snapshot, &budget);
        if !budget.spent() {
            return evaluation.render();
        }
    }
    let budget = Arc::new(eval::Budget::new(max_items));
    let _cancel = CancelOnDrop(Arc::clone(&budget));
    let work = tokio::task::spawn_blocking(move || {
        let evaluation = decide_all(&config, &req, &req.recipients, &snapshot, &budget);
        within(&budget, max_items)?;
        evaluation.render()
    });
    unless_stopping(ctx, async {
        work.await
            .map_err(|e| Error::Internal(format!("evaluation thread: {e}")))?
    })
    .await
}

/// Awaits `work`, unless the daemon begins to shut down first: then `work` is dropped,
/// which cancels its budget ([`CancelOnDrop`]), so the decisions running for it on other
/// threads stop at their next list condition or recipient instead of holding up the
/// graceful stop, and the call is answered with an internal error.
async fn unless_stopping<T>(
    ctx: &Context,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        result = work => result,
        () = ctx.stopping.cancelled() => Err(Error::Internal(
            "the daemon is shutting down; the evaluation was stopped".into(),
        )),
    }
}

/// The most recipients decided on the async worker. A larger batch is milliseconds of pure
/// CPU (about 3 µs per recipient and channel set), so it goes to a blocking thread and the
/// worker, of which a small machine runs one, goes on answering other calls meanwhile.
const ON_WORKER_RECIPIENTS: usize = 50;

/// The list items (see [`eval::Budget`]) a call may compare on the async worker before it
/// moves to a blocking thread: about a millisecond.
const ON_WORKER_LIST_ITEMS: u64 = 50_000;

/// Cancels a call's budget when the call's future is dropped (its caller went away, or the
/// connection was closed), so the decisions still running for it on other threads stop at
/// their next list condition and recipient instead of finishing for nobody.
struct CancelOnDrop(Arc<eval::Budget>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// `Ok` unless the budget of `max_items` (`limits.max_list_items_per_call`) ran out, or
/// was cancelled, in which case the decisions are not an answer and the call is refused.
/// The budget bounds what stored conditions can cost (issue 22: two 14 000-item conditions
/// stalled every client for 10 s) and how long a graceful shutdown waits for a call.
fn within(budget: &eval::Budget, max_items: u64) -> Result<(), Error> {
    if budget.spent() {
        return Err(Error::limit(
            "recipients",
            format!(
                "the conditions of this call compare more than {max_items} list items in \
                 all (limits.max_list_items_per_call); evaluate fewer recipients per call \
                 or shorten the lists"
            ),
        ));
    }
    Ok(())
}

/// The recipients of one read in a large evaluation that is not served from the cache.
const CHUNK_RECIPIENTS: usize = 100;

/// Chunks queued at once: one per reader thread and one more, so that a reader that
/// finishes finds the next chunk waiting while the async side takes the answer.
const CHUNKS_IN_FLIGHT: usize = 3;

/// A large evaluation read from the database: the recipients go in chunks of
/// [`CHUNK_RECIPIENTS`] to the reader threads, which each read a chunk in its own
/// transaction, decide it and write its part of the answer, so both cores work on one call
/// and only a few chunks of parsed rows are alive at once. Each chunk is consistent in
/// itself, as if it were a call of its own; the answer keeps request order.
async fn evaluate_in_chunks(
    ctx: &Context,
    config: Arc<Config>,
    req: Request,
) -> Result<Json, Error> {
    let req = Arc::new(req);
    let max_items = config.settings.limits.max_list_items_per_call;
    let budget = Arc::new(eval::Budget::new(max_items));
    let _cancel = CancelOnDrop(Arc::clone(&budget));
    let ticket = ctx.db.cache().ticket();
    let total = req.recipients.len();
    let mut starts = (0..total).step_by(CHUNK_RECIPIENTS);
    let mut in_flight = std::collections::VecDeque::with_capacity(CHUNKS_IN_FLIGHT);
    let per_recipient = Evaluation::bytes_per_recipient(req.channels.len());
    let mut out = Vec::with_capacity(16 + total * per_recipient);
    out.extend_from_slice(Evaluation::OPEN);
    let mut first = true;
    loop {
        while in_flight.len() < CHUNKS_IN_FLIGHT
            && let Some(start) = starts.next()
        {
            let (req, config) = (Arc::clone(&req), Arc::clone(&config));
            let budget = Arc::clone(&budget);
            let cache = Arc::clone(ctx.db.cache());
            let range = start..(start + CHUNK_RECIPIENTS).min(total);
            in_flight.push_back(ctx.db.read_queued(move |r| {
                // A chunk queued for a call already refused or gone reads nothing.
                within(&budget, max_items)?;
                let recipients = req.recipients.get(range).unwrap_or_default();
                let snapshot = load(r, &req, recipients)?;
                let mut part = Vec::with_capacity(recipients.len() * per_recipient);
                decide_all(&config, &req, recipients, &snapshot, &budget).write_results(&mut part);
                within(&budget, max_items)?;
                // Offered to the cache and dropped here, on the thread that parsed it, so
                // the allocator frees it where it was allocated and the async worker does
                // none of it. (Peak RSS measured the same either way, 60 vs 62 MiB.)
                snapshot.remember(&cache, ticket, &req, recipients);
                Ok::<_, Error>(part)
            }));
        }
        let Some(next) = in_flight.pop_front() else {
            break;
        };
        let part = next.await?;
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&part);
    }
    out.extend_from_slice(Evaluation::CLOSE);
    Evaluation::to_json(out)
}

fn parse(config: &Config, p: EvaluateParams) -> Result<Request, Error> {
    let mut errors = Errors::default();
    let limits = &config.settings.limits;
    let (workflow, catalog_channels) = parse_workflow(config, p.workflow.as_ref(), &mut errors)?;
    let channels = match &p.channels {
        Some(Value::Array(list)) if list.len() > MAX_CHANNELS => {
            return Err(Error::limit(
                "channels",
                format!(
                    "lists {} channels; at most {MAX_CHANNELS} are allowed",
                    list.len()
                ),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_channel(v, &FieldPath(&"channels", &i), &mut errors))
            .collect(),
        Some(other) => {
            errors.push(
                "channels",
                format!("must be an array of channels, got {}", type_name(other)),
            );
            Vec::new()
        }
        None if !catalog_channels.is_empty() => catalog_channels,
        None => Channel::all_types(),
    };
    let recipients = match &p.recipients {
        Some(Value::Array(list)) if list.is_empty() => {
            errors.push("recipients", "must list at least one recipient");
            Vec::new()
        }
        Some(Value::Array(list)) if list.len() > limits.max_recipients => {
            return Err(Error::limit(
                "recipients",
                format!(
                    "lists {} recipients; at most {} are allowed",
                    list.len(),
                    limits.max_recipients
                ),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_recipient(v, &FieldPath(&"recipients", &i), &mut errors))
            .collect(),
        Some(other) => {
            errors.push(
                "recipients",
                format!("must be an array, got {}", type_name(other)),
            );
            Vec::new()
        }
        None => {
            errors.push("recipients", "is required");
            Vec::new()
        }
    };
    let tenant = p.tenant.as_ref().and_then(|v| parse_tenant(v, &mut errors));
    let actor = p.actor.as_ref().and_then(|v| parse_actor(v, &mut errors));
    let data = object_param(p.data, "data", &mut errors).unwrap_or_else(|| json!({}));
    let run = object_param(p.run, "run", &mut errors).unwrap_or(Value::Null);
    let now = match &p.now {
        None => jiff::Timestamp::now(),
        Some(s) => s.parse().unwrap_or_else(|_| {
            errors.push(
                "now",
                "must be an RFC 3339 timestamp such as 2026-11-29T12:00:00Z",
            );
            jiff::Timestamp::UNIX_EPOCH
        }),
    };
    errors.finish()?;
    Ok(Request {
        workflow,
        channels,
        recipients,
        tenant,
        actor,
        data,
        run,
        now,
    })
}

/// An optional param that must be an object when given (`data`, `run`).
fn object_param(value: Option<Value>, field: &str, errors: &mut Errors) -> Option<Value> {
    match value {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => {
            errors.push(
                field,
                format!("must be an object, got {}", type_name(&other)),
            );
            None
        }
    }
}

/// The workflow by catalog key, or inline (an inline object overrides the catalog entry).
fn parse_workflow(
    config: &Config,
    value: Option<&Value>,
    errors: &mut Errors,
) -> Result<(Workflow, Vec<Channel>), Error> {
    let lookup = |key: &str| config.workflows.get(key);
    match value {
        Some(Value::String(key)) => {
            errors.id("workflow", key);
            match lookup(key) {
                Some(entry) => Ok((entry.workflow.clone(), entry.channels.clone())),
                None if config.settings.strict_workflows => {
                    Err(Error::WorkflowNotFound(key.clone()))
                }
                None => Ok((
                    Workflow {
                        key: key.clone(),
                        ..Workflow::default()
                    },
                    Vec::new(),
                )),
            }
        }
        Some(v @ Value::Object(_)) => match serde_json::from_value::<Workflow>(v.clone()) {
            Ok(workflow) => {
                errors.id("workflow.key", &workflow.key);
                let channels = lookup(&workflow.key)
                    .map(|e| e.channels.clone())
                    .unwrap_or_default();
                Ok((workflow, channels))
            }
            Err(e) => {
                errors.push("workflow", format!("{e}"));
                Ok((Workflow::default(), Vec::new()))
            }
        },
        Some(other) => {
            errors.push(
                "workflow",
                format!(
                    "must be a workflow key or an object, got {}",
                    type_name(other)
                ),
            );
            Ok((Workflow::default(), Vec::new()))
        }
        None => {
            errors.push("workflow", "is required");
            Ok((Workflow::default(), Vec::new()))
        }
    }
}

/// One channel; `field` (`channels.N`) is written out only to name an error.
fn parse_channel(value: &Value, field: &FieldPath<'_>, errors: &mut Errors) -> Option<Channel> {
    let Value::Object(map) = value else {
        errors.push(field.to_string(), "must be an object { type, id? }");
        return None;
    };
    for key in map.keys() {
        if key != "type" && key != "id" {
            errors.push(format!("{field}.{key}"), "unknown key; expected type or id");
        }
    }
    let channel_type = match map.get("type") {
        Some(Value::String(t)) => ChannelType::parse(t).or_else(|| {
            errors.push(format!("{field}.type"), "unknown channel type");
            None
        }),
        _ => {
            errors.push(
                format!("{field}.type"),
                "is required: one of email, sms, push, chat, in_app_feed, http",
            );
            None
        }
    };
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            errors.id(FieldPath(field, &"id"), id);
            Some(id.clone())
        }
        Some(_) => {
            errors.push(format!("{field}.id"), "must be a string");
            None
        }
    };
    Some(Channel {
        channel_type: channel_type?,
        id,
    })
}

/// Reads an optional object-valued key of an inline entity.
fn object_field(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    errors: &mut Errors,
) -> Option<Map<String, Value>> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(other) => {
            errors.push(
                format!("{field}.{key}"),
                format!("must be an object, got {}", type_name(other)),
            );
            None
        }
    }
}

fn string_field(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    errors: &mut Errors,
) -> Option<String> {
    match map.get(key) {
        Some(Value::String(s)) => {
            errors.id(format!("{field}.{key}"), s);
            Some(s.clone())
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            errors.push(format!("{field}.{key}"), "must be a string");
            None
        }
    }
}

fn check_keys(map: &Map<String, Value>, allowed: &[&str], field: &str, errors: &mut Errors) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(
                format!("{field}.{key}"),
                format!("unknown key; expected one of {}", allowed.join(", ")),
            );
        }
    }
}

/// One recipient; `field` (`recipients.N`) is written out only to name an error, or for an
/// inline identify, whose fields are checked one by one.
fn parse_recipient(
    value: &Value,
    field: &FieldPath<'_>,
    errors: &mut Errors,
) -> Option<RecipientParam> {
    match value {
        Value::String(id) => {
            errors.id(field, id);
            Some(RecipientParam {
                key: RecipientKey::user(id),
                properties: None,
                sets: Vec::new(),
            })
        }
        Value::Object(map) => {
            let field = &field.to_string();
            check_keys(
                map,
                &["id", "collection", "properties", "preferences"],
                field,
                errors,
            );
            let Some(id) = string_field(map, "id", field, errors) else {
                errors.push(format!("{field}.id"), "is required");
                return None;
            };
            let collection = string_field(map, "collection", field, errors);
            let properties = object_field(map, "properties", field, errors);
            let sets = object_field(map, "preferences", field, errors)
                .map(|sets| parse_inline_sets(&sets, &format!("{field}.preferences"), errors))
                .unwrap_or_default();
            Some(RecipientParam {
                key: RecipientKey { collection, id },
                properties,
                sets,
            })
        }
        other => {
            errors.push(
                field.to_string(),
                format!("must be a user id or an object, got {}", type_name(other)),
            );
            None
        }
    }
}

fn parse_tenant(value: &Value, errors: &mut Errors) -> Option<TenantWrite> {
    match value {
        Value::String(id) => {
            errors.id("tenant", id);
            Some(TenantWrite {
                id: id.clone(),
                name: None,
                properties: None,
                preference_set: None,
            })
        }
        Value::Object(map) => {
            check_keys(
                map,
                &["id", "name", "properties", "settings"],
                "tenant",
                errors,
            );
            let Some(id) = string_field(map, "id", "tenant", errors) else {
                errors.push("tenant.id", "is required");
                return None;
            };
            let name = map.get("name").map(|v| v.as_str().map(str::to_string));
            let properties = object_field(map, "properties", "tenant", errors);
            let settings = object_field(map, "settings", "tenant", errors);
            let preference_set = settings.as_ref().and_then(|s| {
                check_keys(s, &["preference_set"], "tenant.settings", errors);
                s.get("preference_set").map(|body| match body {
                    Value::Null => None,
                    body => errors.take(PreferenceSetRequest::parse(
                        body,
                        Strategy::Merge,
                        "tenant.settings.preference_set",
                    )),
                })
            });
            Some(TenantWrite {
                id,
                name,
                properties,
                preference_set,
            })
        }
        other => {
            errors.push(
                "tenant",
                format!("must be a tenant id or an object, got {}", type_name(other)),
            );
            None
        }
    }
}

fn parse_actor(value: &Value, errors: &mut Errors) -> Option<ActorParam> {
    match value {
        Value::String(id) => {
            errors.id("actor", id);
            Some(ActorParam {
                id: id.clone(),
                properties: None,
            })
        }
        Value::Object(map) => {
            check_keys(map, &["id", "properties"], "actor", errors);
            let Some(id) = string_field(map, "id", "actor", errors) else {
                errors.push("actor.id", "is required");
                return None;
            };
            Some(ActorParam {
                id,
                properties: object_field(map, "properties", "actor", errors),
            })
        }
        other => {
            errors.push(
                "actor",
                format!("must be a user id or an object, got {}", type_name(other)),
            );
            None
        }
    }
}

/// Persists the inline identifies of a request (Knock's inline identify), merging.
fn persist(w: &crate::store::Write<'_>, req: &Request, limits: &Limits) -> Result<(), Error> {
    let now = now();
    if let Some(t) = req.tenant.as_ref().filter(|t| t.changes_anything()) {
        t.apply(w, limits, "tenant.", &now)?;
    }
    if let Some(actor) = &req.actor
        && let Some(props) = &actor.properties
    {
        let key = RecipientKey::user(&actor.id);
        let properties = Some((props, "actor.properties"));
        write_inline(w, &key, properties, &[], limits, "actor", &now)?;
    }
    for (i, r) in req
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_inline())
    {
        let prefix = format!("recipients.{i}.preferences");
        let properties_field = format!("recipients.{i}.properties");
        write_inline(
            w,
            &r.key,
            r.properties
                .as_ref()
                .map(|p| (p, properties_field.as_str())),
            &r.sets,
            limits,
            &prefix,
            &now,
        )?;
    }
    Ok(())
}

/// Reads everything evaluation needs for `recipients` (the request's, or some of them),
/// in the caller's transaction.
fn load(r: &Read<'_>, req: &Request, recipients: &[RecipientParam]) -> Result<Snapshot, Error> {
    let tenant = match &req.tenant {
        Some(t) => r.tenant(&t.id)?.map(Arc::new),
        None => None,
    };
    let actor = match req.actor_key() {
        Some(key) => Some(Arc::new(r.evaluation_inputs(&key, None)?)),
        None => None,
    };
    let tenant_set = req.tenant_set();
    let recipients = recipients
        .iter()
        .map(|rp| r.evaluation_inputs(&rp.key, tenant_set).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        tenant,
        actor,
        recipients,
    })
}

/// The pure part: every (recipient, channel) decision for `recipients` (the request's, or
/// the ones `snapshot` was loaded for), in order.
///
/// Stops early, with the decisions made so far, once `budget` is spent: the caller then
/// refuses the call.
fn decide_all(
    config: &Config,
    req: &Request,
    recipients: &[RecipientParam],
    snapshot: &Snapshot,
    budget: &eval::Budget,
) -> Evaluation {
    let tenant_id = req.tenant.as_ref().map(|t| t.id.as_str());
    let tenant_default = tenant_id.and_then(|t| {
        snapshot
            .tenant
            .as_ref()
            .and_then(|row| row.preference_set.as_ref())
            .or_else(|| config.tenant_templates.get(t))
    });
    let tenant_value = match (&snapshot.tenant, tenant_id) {
        (Some(row), _) => json!({
            "id": row.id,
            "name": row.name,
            "properties": row.properties,
            "settings": { "preference_set": row.preference_set.as_ref().map(PreferenceSet::to_value) },
        }),
        (None, Some(id)) => json!({ "id": id }),
        (None, None) => Value::Null,
    };
    let workflow_value = req.workflow.to_value();
    let actor = req.actor.as_ref().map(|a| {
        let stored = snapshot.actor.as_deref();
        Entity {
            id: &a.id,
            collection: None,
            properties: stored.map_or(&Value::Null, |a| &a.properties),
            created_at: stored.and_then(|a| a.created_at.as_deref()),
            updated_at: stored.and_then(|a| a.updated_at.as_deref()),
        }
    });
    let mut results = Vec::with_capacity(recipients.len());
    for (rp, loaded) in recipients.iter().zip(&snapshot.recipients) {
        if budget.spent() {
            break;
        }
        let stack = Stack::for_recipient(&Sources {
            environment: &config.environment,
            tenant: tenant_id.map(|t| (t, tenant_default)),
            recipient_default: loaded.default_set.as_ref(),
            recipient_tenant: loaded.tenant_set.as_ref(),
        });
        let ctx = eval::Context {
            recipient: Entity {
                id: &rp.key.id,
                collection: rp.key.collection.as_deref(),
                properties: &loaded.properties,
                created_at: loaded.created_at.as_deref(),
                updated_at: loaded.updated_at.as_deref(),
            },
            actor,
            data: &req.data,
            tenant: &tenant_value,
            vars: &config.settings.vars,
            workflow: &workflow_value,
            run: &req.run,
            audiences: &loaded.audiences,
            now: req.now,
            budget,
        };
        let decisions = eval::decide_channels(
            &req.workflow,
            &req.channels,
            &stack,
            loaded.default_set.as_ref(),
            &ctx,
        );
        let channels = req
            .channels
            .iter()
            .zip(decisions)
            .map(|(channel, d)| ChannelResult {
                channel_type: channel.channel_type,
                id: channel.id.clone(),
                send: d.send,
                reason: d.reason,
            })
            .collect();
        results.push(RecipientResult {
            recipient: RecipientId {
                id: rp.key.id.clone(),
                collection: rp.key.collection.clone(),
            },
            channels,
        });
    }
    Evaluation { results }
}

/// The result of `preferences.evaluate` (rpc.md). It goes to the wire as [`Evaluation::render`]
/// writes it; the derived `Serialize` is the reference the writer is tested against.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    results: Vec<RecipientResult>,
}

impl Evaluation {
    /// What comes before and after the results.
    const OPEN: &'static [u8] = br#"{"results":["#;
    const CLOSE: &'static [u8] = b"]}";

    /// About what a recipient takes in the answer, to size buffers.
    fn bytes_per_recipient(channels: usize) -> usize {
        64 + channels * 112
    }

    /// The answer as JSON text, written directly: keys and names that need no escaping are
    /// copied, ids, paths and conditions go through serde_json. Serialising through serde
    /// escaped every key and grew its buffer by doubling; with jsonrpsee's own parse of the
    /// response, that was nine tenths of the async side of a 1000-recipient call.
    pub fn render(&self) -> Result<Json, Error> {
        let channels = self.results.first().map_or(0, |r| r.channels.len());
        let mut out =
            Vec::with_capacity(16 + self.results.len() * Self::bytes_per_recipient(channels));
        out.extend_from_slice(Self::OPEN);
        self.write_results(&mut out);
        out.extend_from_slice(Self::CLOSE);
        Self::to_json(out)
    }

    /// The results, comma-separated, without the brackets around them: [`Evaluation::render`]
    /// writes one evaluation, a chunked one joins the parts of several.
    fn write_results(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, s: &str) {
            // Writing a str to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        fn optional(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => string(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        for (i, r) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"recipient":{"id":"#);
            string(out, &r.recipient.id);
            if let Some(collection) = &r.recipient.collection {
                out.extend_from_slice(br#","collection":"#);
                string(out, collection);
            }
            out.extend_from_slice(br#"},"channels":["#);
            for (j, c) in r.channels.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"type":""#);
                out.extend_from_slice(c.channel_type.as_str().as_bytes());
                out.extend_from_slice(br#"","id":"#);
                optional(out, c.id.as_deref());
                out.extend_from_slice(if c.send {
                    br#","send":true,"reason":{"code":""#
                } else {
                    br#","send":false,"reason":{"code":""#
                });
                out.extend_from_slice(c.reason.code.as_str().as_bytes());
                out.extend_from_slice(br#"","path":"#);
                optional(out, c.reason.path.as_deref());
                out.extend_from_slice(br#","layer":"#);
                optional(out, c.reason.layer.as_deref());
                out.extend_from_slice(br#","condition":"#);
                match &c.reason.condition {
                    Some(condition) => {
                        let _ = serde_json::to_writer(&mut *out, condition);
                    }
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(br#","considered":["#);
                for (k, layer) in c.reason.considered.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    string(out, layer);
                }
                out.extend_from_slice(b"]}}");
            }
            out.extend_from_slice(b"]}");
        }
    }

    /// Text made by the writers above: only str, static ASCII and serde_json's own output
    /// went in, so this cannot fail.
    fn to_json(out: Vec<u8>) -> Result<Json, Error> {
        String::from_utf8(out)
            .map(Json)
            .map_err(|e| Error::Internal(format!("rendering an evaluation: {e}")))
    }
}

#[derive(Clone, Debug, Serialize)]
struct RecipientResult {
    recipient: RecipientId,
    channels: Vec<ChannelResult>,
}

#[derive(Clone, Debug, Serialize)]
struct RecipientId {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    collection: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
struct ChannelResult {
    #[serde(rename = "type")]
    channel_type: ChannelType,
    id: Option<String>,
    send: bool,
    reason: eval::Reason,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Reason, ReasonCode};

    fn channel(
        channel_type: ChannelType,
        id: Option<&str>,
        send: bool,
        reason: Reason,
    ) -> ChannelResult {
        ChannelResult {
            channel_type,
            id: id.map(str::to_string),
            send,
            reason,
        }
    }

    #[test]
    fn the_written_answer_is_what_serde_writes() {
        let plain = Reason {
            code: ReasonCode::OptedIn,
            path: None,
            layer: None,
            condition: None,
            considered: ["environment".to_string(), "recipient:default (none)".into()].into(),
        };
        let odd = Reason {
            code: ReasonCode::ConditionFailed,
            path: Some("workflows.\"quoted\" \u{e9}\n".into()),
            layer: Some("recipient:default".into()),
            condition: Some(json!({ "variable": "recipient.x", "argument": [1, "a\u{1}"] })),
            considered: std::sync::Arc::default(),
        };
        let codes = [
            ReasonCode::OptedOut,
            ReasonCode::CommercialUnsubscribed,
            ReasonCode::OverridePreferences,
        ];
        let mut results = vec![
            RecipientResult {
                recipient: RecipientId {
                    id: "u\"1".into(),
                    collection: None,
                },
                channels: vec![
                    channel(ChannelType::Email, None, true, plain.clone()),
                    channel(ChannelType::InAppFeed, Some("feed-1"), false, odd),
                ],
            },
            RecipientResult {
                recipient: RecipientId {
                    id: "p1".into(),
                    collection: Some("projects".into()),
                },
                channels: Vec::new(),
            },
        ];
        results.push(RecipientResult {
            recipient: RecipientId {
                id: "u2".into(),
                collection: None,
            },
            channels: ChannelType::ALL
                .iter()
                .zip(codes.iter().cycle())
                .map(|(t, code)| {
                    let reason = Reason {
                        code: *code,
                        ..plain.clone()
                    };
                    channel(*t, None, false, reason)
                })
                .collect(),
        });
        for evaluation in [
            Evaluation { results },
            Evaluation {
                results: Vec::new(),
            },
        ] {
            let written = evaluation.render().expect("renders").0;
            let parsed: Value = serde_json::from_str(&written).expect("valid JSON");
            let reference = serde_json::to_value(&evaluation).expect("serialises");
            assert_eq!(parsed, reference, "{written}");
            // Key order too: the text is what serde would have written.
            assert_eq!(
                written,
                serde_json::to_string(&evaluation).expect("serialises")
            );
        }
    }
}
