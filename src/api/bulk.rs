//! `users.bulkSetPreferences` and `bulkOperations.*`: durable bulk jobs (the worker is
//! `jobs`). Submitting validates everything, stores one job row and wakes the worker; the
//! call returns at once with the queued `BulkOperation`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::api::recipients::check_size;
use crate::api::{Context, Errors, FieldPath, strict};
use crate::jobs::{Payload, SET_PREFERENCES};
use crate::model::{DEFAULT_SET, PreferenceSetRequest, Strategy};
use crate::store::time::now;
use crate::store::{JobRow, JobStatus, NewJob};

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
    let user_ids = p.user_ids.unwrap_or_default();
    if user_ids.len() > limits.max_bulk_users {
        return Err(Error::limit(
            "user_ids",
            format!(
                "lists {} users; at most {} are allowed",
                user_ids.len(),
                limits.max_bulk_users
            ),
        ));
    }
    if user_ids.is_empty() {
        errors.push("user_ids", "must list at least one user id");
    }
    for (i, id) in user_ids.iter().enumerate() {
        errors.id(FieldPath(&"user_ids", &i), id);
    }
    let set_id = p.preference_set.unwrap_or_else(|| DEFAULT_SET.to_string());
    errors.id("preference_set", &set_id);
    if let Some(key) = &p.idempotency_key {
        errors.id("idempotency_key", key);
    }
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
    let total = user_ids.len() as i64;
    let payload = serde_json::to_string(&Payload {
        user_ids,
        preference_set: set_id,
        preferences: set.to_value(),
    })
    .map_err(crate::store::Error::from)?;
    let key = p.idempotency_key;
    let job = ctx
        .db
        .write(move |w| {
            if let Some(key) = &key
                && let Some(existing) = w.job_by_key(key)?
            {
                if existing.payload == payload {
                    return Ok::<_, Error>(existing);
                }
                return Err(Error::Conflict(format!(
                    "idempotency_key {key:?} was used for bulk operation {} with a different payload",
                    existing.id
                )));
            }
            let id = uuid::Uuid::new_v4().to_string();
            w.insert_job(
                &NewJob {
                    id: &id,
                    name: SET_PREFERENCES,
                    payload: &payload,
                    idempotency_key: key.as_deref(),
                    total_rows: total,
                },
                &now(),
            )?;
            w.job(&id)?.ok_or_else(|| Error::NotFound(format!("bulk operation {id:?}")))
        })
        .await?;
    ctx.jobs.wake();
    Ok(operation_json(&job))
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
