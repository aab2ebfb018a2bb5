//! The bulk methods (`users.bulkSetPreferences`, `users.bulkIdentify`, `users.bulkDelete`,
//! `objects.bulkSet`, `objects.bulkDelete`, `tenants.bulkSet`, `tenants.bulkDelete`) and
//! `bulkOperations.*`: durable bulk jobs (the worker is `jobs`). Submitting validates the
//! whole request, stores one job row and wakes the worker ([`queue`]); the call returns at
//! once with the queued `BulkOperation`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::tenants::SettingsParams;
use crate::api::{Context, Errors, FieldPath, strict};
use crate::jobs::{DeletePayload, IdentifyPayload, Payload, TenantsPayload, Work};
use crate::model::{DEFAULT_SET, PreferenceSetRequest, Strategy};
use crate::store::time::{format_time, now};
use crate::store::{JobRow, JobStatus, NewJob};
use crate::writes::{RecipientItem, TenantItem, check_size, inline_sets, present};

/// Knock's `BulkOperation` shape.
pub fn operation_json(job: &JobRow) -> Value {
    json!({
        "__typename": "BulkOperation",
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "estimated_total_rows": job.estimated_total_rows,
        "processed_rows": job.processed_rows,
        "success_count": job.success_count,
        "error_count": job.error_count,
        "error_items": job.error_items,
        "progress_path": format!("/v1/bulk_operations/{}", job.id),
        "inserted_at": job.inserted_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "failed_at": job.failed_at,
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSetParams {
    pub user_ids: Option<Vec<String>>,
    pub preference_set: Option<String>,
    #[serde(default, deserialize_with = "strict::value")]
    pub preferences: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// `users.bulkSetPreferences`: replaces the named set for every listed user, as a job.
pub async fn bulk_set(ctx: &Context, p: BulkSetParams) -> Result<Value, Error> {
    let config = ctx.config();
    let limits = &config.settings.limits;
    let mut errors = Errors::default();
    let user_ids = ids(
        p.user_ids,
        "user_ids",
        "users",
        limits.max_bulk_users,
        &mut errors,
    )?;
    let set_id = p.preference_set.unwrap_or_else(|| DEFAULT_SET.to_string());
    errors.id("preference_set", &set_id);
    check_key(&p.idempotency_key, &mut errors);
    // A bulk set always replaces (preferences.md §3); a body that asks to merge is refused
    // rather than silently replaced.
    let set = match &p.preferences {
        None => {
            errors.push("preferences", "is required");
            None
        }
        Some(body) => match errors.take(PreferenceSetRequest::parse(
            body,
            Strategy::Replace,
            "preferences",
        )) {
            Some(req) if req.strategy == Strategy::Merge => {
                errors.push(
                    "preferences.__persistence_strategy__",
                    "bulk sets always replace; merge is not supported",
                );
                None
            }
            Some(req) => {
                errors.take(req.apply(None, crate::model::SetKind::Recipient, "preferences"))
            }
            None => None,
        },
    };
    errors.finish()?;
    let Some(set) = set else {
        return Err(Error::invalid("preferences", "is required"));
    };
    check_size(&set, limits.max_preference_set_bytes, "preferences")?;
    let payload = Payload {
        user_ids,
        preference_set: set_id,
        preferences: set.to_value(),
    };
    queue(ctx, Work::SetPreferences(payload, set), p.idempotency_key).await
}

/// How long an idempotency key is kept (rpc.md): within it, the same key with the same
/// method and params answers the job it queued, and anything else is `conflict`; after
/// it, the key queues a new job.
pub const IDEMPOTENCY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Queues a validated job and wakes the worker; answers the queued `BulkOperation`, or the
/// one an earlier call with the same idempotency key queued. What `prefsd import` and the
/// REST layer call too.
pub async fn queue(ctx: &Context, work: Work, key: Option<String>) -> Result<Value, Error> {
    let payload = work.payload().map_err(crate::store::Error::from)?;
    let kind = work.kind().method();
    let name = work.name();
    let total = work.len() as i64;
    let window_start = jiff::Timestamp::now()
        .checked_sub(IDEMPOTENCY_WINDOW)
        .map(format_time)
        .map_err(|e| Error::Internal(e.to_string()))?;
    // Fleet mode: a daemon whose worker waits for work holds the job it queues for a
    // moment, so that it runs the job itself instead of a daemon that heard of it by
    // NOTIFY, whose progress would then reach this daemon's subscribers one hop later.
    let held_by = ctx.jobs.is_idle().then(|| {
        let lease =
            std::time::Duration::from_secs(ctx.config.current().settings.jobs.lease_s.into());
        (
            ctx.db.node().to_string(),
            crate::jobs::SUBMIT_GRACE.min(lease),
        )
    });
    let job = ctx
        .db
        .write(move |w| {
            if let Some(key) = &key
                && let Some(existing) = w.job_by_key(key)?
            {
                if existing.inserted_at > window_start {
                    if existing.kind == kind && existing.payload == payload {
                        return Ok::<_, Error>(existing);
                    }
                    return Err(Error::Conflict(format!(
                        "idempotency_key {key:?} was used for bulk operation {} with a different method or params",
                        existing.id
                    )));
                }
                w.release_job_key(&existing.id)?;
            }
            let id = uuid::Uuid::new_v4().to_string();
            w.insert_job(
                &NewJob {
                    id: &id,
                    name: &name,
                    kind,
                    payload: &payload,
                    idempotency_key: key.as_deref(),
                    total_rows: total,
                    held_by: held_by.as_ref().map(|(me, grace)| (me.as_str(), *grace)),
                },
                &now(),
            )?;
            w.job(&id)?.ok_or_else(|| Error::NotFound(format!("bulk operation {id:?}")))
        })
        .await?;
    ctx.jobs.wake();
    Ok(operation_json(&job))
}

/// Checks the size of a bulk list: `limit_exceeded` past `limits.max_bulk_users`, invalid
/// when empty. `what` names the items in the message.
fn check_count(
    len: usize,
    field: &str,
    what: &str,
    max: usize,
    errors: &mut Errors,
) -> Result<(), Error> {
    if len > max {
        return Err(Error::limit(
            field,
            format!("lists {len} {what}; at most {max} are allowed"),
        ));
    }
    if len == 0 {
        errors.push(field, "must not be empty");
    }
    Ok(())
}

/// The items of a bulk list param given as a JSON value: an array, checked for its size.
/// Taken by value, so that each item can be moved into what it becomes.
fn items(
    value: Option<Value>,
    field: &str,
    what: &str,
    max: usize,
    errors: &mut Errors,
) -> Result<Vec<Value>, Error> {
    let items = match value {
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(field, "must be an array");
            Vec::new()
        }
        None => {
            errors.push(field, "is required");
            return Ok(Vec::new());
        }
    };
    check_count(items.len(), field, what, max, errors)?;
    Ok(items)
}

/// A list of ids (`user_ids`, `object_ids`, `tenant_ids`), each checked.
fn ids(
    value: Option<Vec<String>>,
    field: &str,
    what: &str,
    max: usize,
    errors: &mut Errors,
) -> Result<Vec<String>, Error> {
    let Some(ids) = value else {
        errors.push(field, "is required");
        return Ok(Vec::new());
    };
    check_count(ids.len(), field, what, max, errors)?;
    for (i, id) in ids.iter().enumerate() {
        errors.id(FieldPath(&field, &i), id);
    }
    Ok(ids)
}

/// serde's message without its position, which means nothing inside a params object.
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.split(" at line ").next().unwrap_or(&text).to_string()
}

/// Users or objects to identify: `{ id, properties?, preferences? }` each. Each item's JSON
/// is moved into its `RecipientItem`, not copied: a 1000-item `users.bulkIdentify` (about
/// 1 MB of JSON) held both copies at once, several MiB of the daemon's peak during an
/// import.
fn recipient_items(items: Vec<Value>, field: &str, errors: &mut Errors) -> Vec<RecipientItem> {
    let mut out = Vec::with_capacity(items.len());
    for (i, value) in items.into_iter().enumerate() {
        let prefix = format!("{field}.{i}");
        if !value.is_object() {
            errors.push(&prefix, "must be an object with an id");
            continue;
        }
        let item: RecipientItem = match serde_json::from_value(value) {
            Ok(item) => item,
            Err(e) => {
                errors.push(&prefix, serde_message(&e));
                continue;
            }
        };
        errors.id(format!("{prefix}.id"), &item.id);
        if let Some(sets) = &item.preferences {
            errors.take(inline_sets(sets, &format!("{prefix}.preferences")));
        }
        out.push(item);
    }
    out
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkIdentifyParams {
    #[serde(default, deserialize_with = "strict::value")]
    pub users: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// `users.bulkIdentify`: each user as `users.identify` would, as a job.
pub async fn bulk_identify(ctx: &Context, p: BulkIdentifyParams) -> Result<Value, Error> {
    let max = ctx.config().settings.limits.max_bulk_users;
    let mut errors = Errors::default();
    let list = items(p.users, "users", "users", max, &mut errors)?;
    let items = recipient_items(list, "users", &mut errors);
    check_key(&p.idempotency_key, &mut errors);
    errors.finish()?;
    let work = Work::Identify(IdentifyPayload {
        collection: None,
        items,
    });
    queue(ctx, work, p.idempotency_key).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSetObjectsParams {
    pub collection: Option<String>,
    #[serde(default, deserialize_with = "strict::value")]
    pub objects: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// `objects.bulkSet`: each object as `objects.set` would, as a job.
pub async fn bulk_set_objects(ctx: &Context, p: BulkSetObjectsParams) -> Result<Value, Error> {
    let max = ctx.config().settings.limits.max_bulk_users;
    let mut errors = Errors::default();
    let collection = collection(&p.collection, &mut errors);
    let list = items(p.objects, "objects", "objects", max, &mut errors)?;
    let items = recipient_items(list, "objects", &mut errors);
    check_key(&p.idempotency_key, &mut errors);
    errors.finish()?;
    let work = Work::Identify(IdentifyPayload {
        collection: Some(collection),
        items,
    });
    queue(ctx, work, p.idempotency_key).await
}

fn collection(value: &Option<String>, errors: &mut Errors) -> String {
    match value {
        Some(c) => {
            errors.id("collection", c);
            c.clone()
        }
        None => {
            errors.push("collection", "is required");
            String::new()
        }
    }
}

fn check_key(key: &Option<String>, errors: &mut Errors) {
    if let Some(key) = key {
        errors.id("idempotency_key", key);
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDeleteUsersParams {
    pub user_ids: Option<Vec<String>>,
    pub idempotency_key: Option<String>,
}

/// `users.bulkDelete`: each user as `users.delete` would, as a job; an absent user counts
/// as deleted.
pub async fn bulk_delete_users(ctx: &Context, p: BulkDeleteUsersParams) -> Result<Value, Error> {
    let ids = ("user_ids", "users", p.user_ids);
    queue_deletes(ctx, ids, None, p.idempotency_key, Work::DeleteRecipients).await
}

/// The bulk deletes: checks the ids (`field`, of `what`) and, for objects, the collection;
/// then queues `work` of them.
async fn queue_deletes(
    ctx: &Context,
    (field, what, ids_param): (&str, &str, Option<Vec<String>>),
    collection_param: Option<&Option<String>>,
    key: Option<String>,
    work: fn(DeletePayload) -> Work,
) -> Result<Value, Error> {
    let max = ctx.config().settings.limits.max_bulk_users;
    let mut errors = Errors::default();
    let collection = collection_param.map(|c| collection(c, &mut errors));
    let ids = ids(ids_param, field, what, max, &mut errors)?;
    check_key(&key, &mut errors);
    errors.finish()?;
    queue(ctx, work(DeletePayload { collection, ids }), key).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDeleteObjectsParams {
    pub collection: Option<String>,
    pub object_ids: Option<Vec<String>>,
    pub idempotency_key: Option<String>,
}

/// `objects.bulkDelete`.
pub async fn bulk_delete_objects(
    ctx: &Context,
    p: BulkDeleteObjectsParams,
) -> Result<Value, Error> {
    let ids = ("object_ids", "objects", p.object_ids);
    let collection = Some(&p.collection);
    queue_deletes(
        ctx,
        ids,
        collection,
        p.idempotency_key,
        Work::DeleteRecipients,
    )
    .await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSetTenantsParams {
    #[serde(default, deserialize_with = "strict::value")]
    pub tenants: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// One tenant of `tenants.bulkSet` as given: `tenants.set`'s params with `id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkTenant {
    id: String,
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    properties: Option<Map<String, Value>>,
    settings: Option<SettingsParams>,
}

/// `tenants.bulkSet`: each tenant (an id, or `{ id, name?, properties?, settings? }`) as
/// `tenants.set` would, as a job.
pub async fn bulk_set_tenants(ctx: &Context, p: BulkSetTenantsParams) -> Result<Value, Error> {
    let max = ctx.config().settings.limits.max_bulk_users;
    let mut errors = Errors::default();
    let list = items(p.tenants, "tenants", "tenants", max, &mut errors)?;
    let mut items = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let prefix = format!("tenants.{i}");
        let item = match value {
            Value::String(id) => TenantItem {
                id: id.clone(),
                ..TenantItem::default()
            },
            Value::Object(_) => match serde_json::from_value::<BulkTenant>(value.clone()) {
                Ok(t) => {
                    let (branding, preference_set) = match t.settings {
                        Some(s) => (s.branding, s.preference_set),
                        None => (None, None),
                    };
                    TenantItem {
                        id: t.id,
                        name: t.name,
                        properties: t.properties,
                        branding,
                        preference_set,
                    }
                }
                Err(e) => {
                    errors.push(&prefix, serde_message(&e));
                    continue;
                }
            },
            _ => {
                errors.push(&prefix, "must be a tenant id or an object with an id");
                continue;
            }
        };
        errors.id(format!("{prefix}.id"), &item.id);
        errors.take(item.to_write(&format!("{prefix}.")));
        items.push(item);
    }
    check_key(&p.idempotency_key, &mut errors);
    errors.finish()?;
    queue(
        ctx,
        Work::SetTenants(TenantsPayload { items }),
        p.idempotency_key,
    )
    .await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDeleteTenantsParams {
    pub tenant_ids: Option<Vec<String>>,
    pub idempotency_key: Option<String>,
}

/// `tenants.bulkDelete`.
pub async fn bulk_delete_tenants(
    ctx: &Context,
    p: BulkDeleteTenantsParams,
) -> Result<Value, Error> {
    let ids = ("tenant_ids", "tenants", p.tenant_ids);
    queue_deletes(ctx, ids, None, p.idempotency_key, Work::DeleteTenants).await
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    pub id: String,
}

/// `bulkOperations.get`.
pub async fn get(ctx: &Context, p: GetParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("id", &p.id);
    errors.finish()?;
    let id = p.id.clone();
    match ctx.db.read(move |r| Ok::<_, Error>(r.job(&id)?)).await? {
        Some(job) => Ok(operation_json(&job)),
        None => Err(Error::NotFound(format!("bulk operation {:?}", p.id))),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

const MAX_PAGE: u32 = 1000;

/// `bulkOperations.list`: newest first, `{ items, next }`.
pub async fn list(ctx: &Context, p: ListParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let status = match p.status.as_deref() {
        None => None,
        Some(s) => JobStatus::parse(s).or_else(|| {
            errors.push(
                "status",
                "must be one of queued, processing, completed, failed",
            );
            None
        }),
    };
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        errors.push("limit", format!("must be from 1 to {MAX_PAGE}"));
    }
    let before = match p.after.as_deref() {
        None => None,
        Some(cursor) => cursor.parse::<i64>().ok().or_else(|| {
            errors.push("after", "is not a cursor returned by bulkOperations.list");
            None
        }),
    };
    errors.finish()?;
    let mut jobs = ctx
        .db
        .read(move |r| Ok::<_, Error>(r.jobs(status, limit + 1, before)?))
        .await?;
    let next = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| j.seq.to_string())
    } else {
        None
    };
    Ok(json!({ "items": jobs.iter().map(operation_json).collect::<Vec<_>>(), "next": next }))
}
