//! `preferences.evaluate`: decisions for many recipients and channels in one call.
//!
//! Inline identifies (recipient properties and preferences, an inline tenant or actor) are
//! persisted first, in one write transaction that then also reads everything evaluation
//! needs; without them, everything comes from the read cache when it holds it all, else
//! from one read transaction, or, past `CHUNK_RECIPIENTS` recipients, from one read
//! transaction per chunk on both reader threads at once (each chunk is consistent in
//! itself, as a call of its own would be). Either way the reads are a few point queries
//! per recipient, never one per channel, and evaluation itself is the pure `eval::decide`.
//!
//! This file is the order of those steps; `params` validates the request and `answer`
//! writes the result.

use std::cell::OnceCell;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::api::past::{config_at, parse_as_of};
use crate::api::recipients::write_inline;
use crate::api::tenants::TenantWrite;
use crate::api::{Context, Errors, Json, strict};
use crate::config::{Config, Limits};
use crate::eval::{self, Entity};
use crate::model::change::Origin;
use crate::model::{PreferenceSet, RecipientKey};
use crate::resolve::{SetRef, Sources, Stack};
use crate::store::time::now;
use crate::store::{Inputs, Snapshot, Wanted};

mod answer;
mod params;

use answer::{ChannelResult, Evaluation, RecipientId, RecipientResult};
use params::{RecipientParam, Request, parse};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    pub as_of: Option<String>,
}

/// What a request reads: its tenant's row, its actor, and its recipients with their sets
/// for its tenant.
fn wanted(req: &Request) -> Wanted<'_, RecipientParam> {
    Wanted {
        tenant: req.tenant.as_ref().map(|t| t.id.as_str()),
        tenant_set: req.tenant_set(),
        actor: req.actor_key(),
        recipients: &req.recipients,
    }
}

pub async fn evaluate(ctx: &Context, origin: Origin, p: EvaluateParams) -> Result<Json, Error> {
    let mut errors = Errors::default();
    let as_of = parse_as_of(p.as_of.as_deref(), &mut errors);
    errors.finish()?;
    let config = match as_of {
        None => ctx.config(),
        Some(as_of) => config_at(ctx, as_of).await?,
    };
    let now_given = p.now.is_some();
    let mut req = parse(&config, p)?;
    if let Some(as_of) = as_of {
        refuse_inline(&req)?;
        if !now_given {
            req.now = as_of.timestamp;
        }
        let req = Arc::new(req);
        let past = Arc::clone(&req);
        let snapshot = ctx
            .db
            .read(move |r| Ok::<_, Error>(r.past(as_of.at).snapshot(&wanted(&past))?))
            .await?;
        return decide_and_answer(ctx, config, req, snapshot).await;
    }
    let limits = config.settings.limits.clone();
    let inline = req.recipients.iter().any(RecipientParam::is_inline)
        || req
            .tenant
            .as_ref()
            .is_some_and(TenantWrite::changes_anything)
        || req.actor.as_ref().is_some_and(|a| a.properties.is_some());
    let req = Arc::new(req);
    let snapshot = if inline {
        let req = Arc::clone(&req);
        ctx.db
            .write_as(origin, move |w| {
                persist(w, &req, &limits)?;
                Ok::<_, Error>(w.snapshot(&wanted(&req))?)
            })
            .await?
    } else if let Some(snapshot) = ctx.db.cached_snapshot(&wanted(&req)) {
        snapshot
    } else if req.recipients.len() > CHUNK_RECIPIENTS {
        return unless_stopping(ctx, evaluate_in_chunks(ctx, config, req)).await;
    } else {
        ctx.db.read_snapshot(Arc::clone(&req), wanted).await?
    };
    decide_and_answer(ctx, config, req, snapshot).await
}

/// With `as_of`, nothing is written at a past instant: recipients, the tenant and the actor
/// must be named by id alone (history.md §3).
fn refuse_inline(req: &Request) -> Result<(), Error> {
    let mut errors = Errors::default();
    const WHY: &str = "must be named by id alone with as_of: nothing is written at a past instant";
    for (i, r) in req.recipients.iter().enumerate() {
        if r.properties.is_some() {
            errors.push(format!("recipients.{i}.properties"), WHY);
        }
        if !r.sets.is_empty() {
            errors.push(format!("recipients.{i}.preferences"), WHY);
        }
    }
    if req
        .tenant
        .as_ref()
        .is_some_and(TenantWrite::changes_anything)
    {
        errors.push("tenant", WHY);
    }
    if req.actor.as_ref().is_some_and(|a| a.properties.is_some()) {
        errors.push("actor.properties", WHY);
    }
    errors.finish()
}

/// Decides every (recipient, channel) of `req` on `snapshot` and writes the answer: on the
/// worker when the call is small, else on a blocking thread with the call's list budget.
async fn decide_and_answer(
    ctx: &Context,
    config: Arc<Config>,
    req: Arc<Request>,
    snapshot: Snapshot,
) -> Result<Json, Error> {
    let max_items = config.settings.limits.max_list_items_per_call;
    if req.recipients.len() <= ON_WORKER_RECIPIENTS {
        // Tried on the worker with a small list budget: nearly every call fits, and one
        // that does not is decided again on a blocking thread, having cost the worker at
        // most ON_WORKER_LIST_ITEMS.
        let budget = eval::Budget::new(ON_WORKER_LIST_ITEMS.min(max_items));
        let evaluation = decide_all(&config, &req, &req.recipients, &snapshot, &budget);
        if !budget.spent() {
            ctx.metrics.record_decisions(&evaluation.decision_counts());
            return evaluation.render();
        }
    }
    let budget = Arc::new(eval::Budget::new(max_items));
    let _cancel = CancelOnDrop(Arc::clone(&budget));
    let metrics = Arc::clone(&ctx.metrics);
    let work = tokio::task::spawn_blocking(move || {
        let evaluation = decide_all(&config, &req, &req.recipients, &snapshot, &budget);
        within(&budget, max_items)?;
        metrics.record_decisions(&evaluation.decision_counts());
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

/// Gives a closure the signature the store asks for: one that returns what it borrows from
/// the request (Rust does not infer that for a closure by itself).
fn borrowing<F>(f: F) -> F
where
    F: for<'a> Fn(&'a Request) -> Wanted<'a, RecipientParam>,
{
    f
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
    req: Arc<Request>,
) -> Result<Json, Error> {
    let max_items = config.settings.limits.max_list_items_per_call;
    let budget = Arc::new(eval::Budget::new(max_items));
    let _cancel = CancelOnDrop(Arc::clone(&budget));
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
            let config = Arc::clone(&config);
            let (reading, budget) = (Arc::clone(&budget), Arc::clone(&budget));
            let range = start..(start + CHUNK_RECIPIENTS).min(total);
            let deciding = range.clone();
            let metrics = Arc::clone(&ctx.metrics);
            // A chunk queued for a call already refused or gone reads nothing; the rows of
            // the others are offered to the cache and dropped on the reader thread that
            // parsed them, so the async worker does none of it.
            let chunk = borrowing(move |req: &Request| Wanted {
                recipients: match within(&reading, max_items) {
                    Ok(()) => req.recipients.get(range.clone()).unwrap_or_default(),
                    Err(_) => &[],
                },
                ..wanted(req)
            });
            in_flight.push_back(ctx.db.snapshot_queued(
                Arc::clone(&req),
                chunk,
                move |req, snapshot| {
                    within(&budget, max_items)?;
                    let recipients = req.recipients.get(deciding).unwrap_or_default();
                    let mut part = Vec::with_capacity(recipients.len() * per_recipient);
                    let evaluation = decide_all(&config, req, recipients, snapshot, &budget);
                    within(&budget, max_items)?;
                    metrics.record_decisions(&evaluation.decision_counts());
                    evaluation.write_results(&mut part);
                    Ok::<_, Error>(part)
                },
            ));
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
    let actor_properties = OnceCell::new();
    let actor = req.actor.as_ref().map(|a| {
        let stored = snapshot.actor.as_deref();
        Entity {
            id: &a.id,
            collection: None,
            properties: properties(stored, &actor_properties),
            created_at: stored.and_then(Inputs::created_at),
            updated_at: stored.and_then(Inputs::updated_at),
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
            recipient_default: loaded.default_set.as_ref().map(SetRef::from),
            recipient_tenant: loaded.tenant_set.as_ref().map(SetRef::from),
        });
        let recipient_properties = OnceCell::new();
        let ctx = eval::Context {
            recipient: Entity {
                id: &rp.key.id,
                collection: rp.key.collection.as_deref(),
                properties: properties(Some(loaded), &recipient_properties),
                created_at: loaded.created_at(),
                updated_at: loaded.updated_at(),
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
            loaded.default_set.as_ref().map(SetRef::from),
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

/// A stored entity's properties as conditions read them: its JSON text, parsed into `cell`
/// only if a condition reads it (the cache keeps the text: `store::cache`).
fn properties<'a>(stored: Option<&'a Inputs>, cell: &'a OnceCell<Value>) -> eval::Properties<'a> {
    static NULL: Value = Value::Null;
    match stored.and_then(Inputs::properties_text) {
        Some(text) => eval::Properties::Text(text, cell),
        None => eval::Properties::Parsed(&NULL),
    }
}
