//! The routes of rest.md §4.1, each a handler that builds the params of its JSON-RPC
//! method, authorizes the call, calls the method's `api` function and shapes the answer.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post, put};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::api::recipients::{self as r, Kind, Section};
use crate::api::{bulk, lists, tenants};
use crate::rest::Rest;
use crate::rest::shapes;
use crate::rest::wire::{Call, RestError, json_response, no_content, ok, params};

type Answer = Result<Response<Body>, RestError>;

/// The route table (rest.md §4.1, numbers in the comments). Paths match on the raw path;
/// axum percent-decodes each captured segment (rest.md §3). Anything else is Knock's 404.
pub fn router(rest: Arc<Rest>) -> Router {
    Router::new()
        // #4
        .route("/v1/users", get(list_users))
        // #1 #2 #3
        .route(
            "/v1/users/{user_id}",
            put(identify_user).get(get_user).delete(delete_user),
        )
        // #6
        .route("/v1/users/{user_id}/preferences", get(list_user_sets))
        // #7 #8 #9
        .route(
            "/v1/users/{user_id}/preferences/{id}",
            get(get_user_set).put(set_user_set).delete(unset_user_set),
        )
        // #5
        .route("/v1/users/{user_id}/merge", post(merge_users))
        // #10-15: the browser client's legacy granular PUTs (A7)
        .route(
            "/v1/users/{user_id}/preferences/{id}/channel_types",
            put(granular_channel_types),
        )
        .route(
            "/v1/users/{user_id}/preferences/{id}/channel_types/{key}",
            put(granular_channel_types),
        )
        .route(
            "/v1/users/{user_id}/preferences/{id}/workflows",
            put(granular_workflows),
        )
        .route(
            "/v1/users/{user_id}/preferences/{id}/workflows/{key}",
            put(granular_workflows),
        )
        .route(
            "/v1/users/{user_id}/preferences/{id}/categories",
            put(granular_categories),
        )
        .route(
            "/v1/users/{user_id}/preferences/{id}/categories/{key}",
            put(granular_categories),
        )
        // #16 #17 #18
        .route("/v1/users/bulk/preferences", post(bulk_set_preferences))
        .route("/v1/users/bulk/identify", post(bulk_identify_users))
        .route("/v1/users/bulk/delete", post(bulk_delete_users))
        // #22
        .route("/v1/objects/{collection}", get(list_objects))
        // #27 #28
        .route("/v1/objects/{collection}/bulk/set", post(bulk_set_objects))
        .route(
            "/v1/objects/{collection}/bulk/delete",
            post(bulk_delete_objects),
        )
        // #19 #20 #21
        .route(
            "/v1/objects/{collection}/{object_id}",
            put(set_object).get(get_object).delete(delete_object),
        )
        // #23
        .route(
            "/v1/objects/{collection}/{object_id}/preferences",
            get(list_object_sets),
        )
        // #24 #25 #26
        .route(
            "/v1/objects/{collection}/{object_id}/preferences/{id}",
            get(get_object_set)
                .put(set_object_set)
                .delete(unset_object_set),
        )
        // #32
        .route("/v1/tenants", get(list_tenants))
        // #33 #34
        .route("/v1/tenants/bulk/set", post(bulk_set_tenants))
        .route("/v1/tenants/bulk/delete", post(bulk_delete_tenants))
        // #29 #30 #31
        .route(
            "/v1/tenants/{tenant_id}",
            put(set_tenant).get(get_tenant).delete(delete_tenant),
        )
        // #35
        .route("/v1/bulk_operations/{id}", get(get_bulk_operation))
        .fallback(|| async { RestError::no_route() })
        .with_state(rest)
}

/// The params naming the recipient of a users or objects route (its first path params).
fn who(kind: Kind, call: &Call) -> Map<String, Value> {
    let mut p = Map::new();
    match kind {
        Kind::User => {
            p.insert("user_id".into(), json!(call.param(0)));
        }
        Kind::Object => {
            p.insert("collection".into(), json!(call.param(0)));
            p.insert("object_id".into(), json!(call.param(1)));
        }
    }
    p
}

/// The set id path param of a preference route: after the recipient's ids.
fn set_id(kind: Kind, call: &Call) -> String {
    call.param(match kind {
        Kind::User => 1,
        Kind::Object => 2,
    })
}

/// The JSON-RPC name of a method shared by users and objects.
fn method(kind: Kind, users: &'static str, objects: &'static str) -> &'static str {
    match kind {
        Kind::User => users,
        Kind::Object => objects,
    }
}

/// Shapes a recipient as Knock does: users flattened, objects nested.
fn recipient_shape(kind: Kind) -> fn(Value) -> Value {
    match kind {
        Kind::User => shapes::user,
        Kind::Object => shapes::object,
    }
}

// --- Recipients: #1-3, #19-21 ---

async fn identify(kind: Kind, call: Call) -> Answer {
    let ignored: &[&str] = match kind {
        Kind::User => &[],
        Kind::Object => &["collection"],
    };
    let mut p = who(kind, &call);
    p.extend(shapes::recipient_body(call.body_object()?, ignored)?);
    let p = Value::Object(p);
    call.authorize(method(kind, "users.identify", "objects.set"), &p)?;
    let origin = call.origin(method(kind, "users.identify", "objects.set"));
    let row = r::identify(&call.rest.ctx, origin, kind, params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "properties", ""))?;
    Ok(ok(&recipient_shape(kind)(row)))
}

async fn get_recipient(kind: Kind, call: Call) -> Answer {
    let p = Value::Object(who(kind, &call));
    call.authorize(method(kind, "users.get", "objects.get"), &p)?;
    let row = r::get(&call.rest.ctx, kind, params(&p)?).await?;
    Ok(ok(&recipient_shape(kind)(row)))
}

async fn delete_recipient(kind: Kind, call: Call) -> Answer {
    let p = Value::Object(who(kind, &call));
    call.authorize(method(kind, "users.delete", "objects.delete"), &p)?;
    let origin = call.origin(method(kind, "users.delete", "objects.delete"));
    r::delete(&call.rest.ctx, origin, kind, params(&p)?).await?;
    Ok(no_content())
}

async fn identify_user(call: Call) -> Answer {
    identify(Kind::User, call).await
}
async fn get_user(call: Call) -> Answer {
    get_recipient(Kind::User, call).await
}
async fn delete_user(call: Call) -> Answer {
    delete_recipient(Kind::User, call).await
}
async fn set_object(call: Call) -> Answer {
    identify(Kind::Object, call).await
}
async fn get_object(call: Call) -> Answer {
    get_recipient(Kind::Object, call).await
}
async fn delete_object(call: Call) -> Answer {
    delete_recipient(Kind::Object, call).await
}

// --- Preference sets: #6-9, #23-26 ---

async fn list_sets(kind: Kind, call: Call) -> Answer {
    let p = Value::Object(who(kind, &call));
    call.authorize(
        method(kind, "users.listPreferences", "objects.listPreferences"),
        &p,
    )?;
    let sets = r::list_preferences(&call.rest.ctx, kind, params(&p)?).await?;
    Ok(ok(&Value::Array(sets)))
}

/// The effective set (A1), as #7/#24 answer and #8/#25 answer after a write (A2).
async fn effective_set(kind: Kind, call: &Call, tenant: Option<&str>) -> Answer {
    let mut p = who(kind, call);
    p.insert("preference_set".into(), json!(set_id(kind, call)));
    if let Some(tenant) = tenant {
        p.insert("tenant".into(), json!(tenant));
    }
    let p = Value::Object(p);
    call.authorize(
        method(kind, "users.getPreferences", "objects.getPreferences"),
        &p,
    )?;
    let answer = r::get_preferences(&call.rest.ctx, kind, params(&p)?, call.may_read_default())
        .await
        .map_err(|e| RestError::renamed(e, "preference_set", "id"))?;
    Ok(json_response(StatusCode::OK, answer.0))
}

async fn get_set(kind: Kind, call: Call) -> Answer {
    let tenant = call.query("tenant").map(str::to_string);
    effective_set(kind, &call, tenant.as_deref()).await
}

async fn set_set(kind: Kind, call: Call) -> Answer {
    let mut p = who(kind, &call);
    p.insert("preference_set".into(), json!(set_id(kind, &call)));
    p.insert(
        "preferences".into(),
        shapes::preference_body(call.body_object()?),
    );
    let p = Value::Object(p);
    call.authorize(
        method(kind, "users.setPreferences", "objects.setPreferences"),
        &p,
    )?;
    let origin = call.origin(method(
        kind,
        "users.setPreferences",
        "objects.setPreferences",
    ));
    r::set_preferences(&call.rest.ctx, origin, kind, params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "preferences", ""))?;
    effective_set(kind, &call, None).await
}

async fn unset_set(kind: Kind, call: Call) -> Answer {
    let mut p = who(kind, &call);
    p.insert("preference_set".into(), json!(set_id(kind, &call)));
    let p = Value::Object(p);
    call.authorize(
        method(kind, "users.unsetPreferences", "objects.unsetPreferences"),
        &p,
    )?;
    let origin = call.origin(method(
        kind,
        "users.unsetPreferences",
        "objects.unsetPreferences",
    ));
    r::unset_preferences(&call.rest.ctx, origin, kind, params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "preference_set", "id"))?;
    Ok(no_content())
}

async fn list_user_sets(call: Call) -> Answer {
    list_sets(Kind::User, call).await
}
async fn get_user_set(call: Call) -> Answer {
    get_set(Kind::User, call).await
}
async fn set_user_set(call: Call) -> Answer {
    set_set(Kind::User, call).await
}
async fn unset_user_set(call: Call) -> Answer {
    unset_set(Kind::User, call).await
}
async fn list_object_sets(call: Call) -> Answer {
    list_sets(Kind::Object, call).await
}
async fn get_object_set(call: Call) -> Answer {
    get_set(Kind::Object, call).await
}
async fn set_object_set(call: Call) -> Answer {
    set_set(Kind::Object, call).await
}
async fn unset_object_set(call: Call) -> Answer {
    unset_set(Kind::Object, call).await
}

// --- #5 merge ---

async fn merge_users(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    p.insert("user_id".into(), json!(call.param(0)));
    take(&mut body, &mut p, "from_user_id");
    let p = Value::Object(p);
    call.authorize("users.merge", &p)?;
    let user = r::merge(&call.rest.ctx, call.origin("users.merge"), params(&p)?).await?;
    Ok(ok(&shapes::user(user)))
}

// --- #10-15: legacy granular writes (A7) ---

/// Assigns the whole `section` of the set, or with a `{key}` path param that one entry,
/// and answers the effective set (A2). Authorized as the write of the set it is.
async fn granular(section: Section, call: Call) -> Answer {
    let mut value = Value::Object(call.body_object()?);
    shapes::strip_strategies(&mut value);
    let mut p = who(Kind::User, &call);
    p.insert("preference_set".into(), json!(call.param(1)));
    call.authorize("users.setPreferences", &Value::Object(p.clone()))?;
    if call.path.len() > 2 {
        p.insert("key".into(), json!(call.param(2)));
    }
    p.insert("value".into(), value);
    let answer = r::granular_set(
        &call.rest.ctx,
        call.origin("users.setPreferences"),
        Kind::User,
        section,
        params(&Value::Object(p))?,
        call.may_read_default(),
    )
    .await
    .map_err(|e| RestError::renamed(e, "value", ""))?;
    Ok(json_response(StatusCode::OK, answer.0))
}

/// #10 and #11 (one key).
async fn granular_channel_types(call: Call) -> Answer {
    granular(Section::ChannelTypes, call).await
}
/// #12 and #13 (one key).
async fn granular_workflows(call: Call) -> Answer {
    granular(Section::Workflows, call).await
}
/// #14 and #15 (one key).
async fn granular_categories(call: Call) -> Answer {
    granular(Section::Categories, call).await
}

// --- Bulk: #16, #35 ---

/// The bulk POSTs' `Idempotency-Key` header as the RPC's `idempotency_key` (§9).
fn with_idempotency_key(call: &Call, p: &mut Map<String, Value>) {
    if let Some(key) = &call.idempotency_key {
        p.insert("idempotency_key".into(), json!(key));
    }
}

async fn bulk_set_preferences(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    if let Some(ids) = body.remove("user_ids") {
        p.insert("user_ids".into(), ids);
    }
    match body.remove("preferences") {
        Some(Value::Object(mut prefs)) => {
            let set = prefs
                .remove("id")
                .unwrap_or_else(|| json!(crate::model::DEFAULT_SET));
            p.insert("preference_set".into(), set);
            p.insert("preferences".into(), shapes::preference_body(prefs));
        }
        Some(other) => {
            p.insert("preferences".into(), other);
        }
        None => {}
    }
    with_idempotency_key(&call, &mut p);
    let p = Value::Object(p);
    call.authorize("users.bulkSetPreferences", &p)?;
    let operation = bulk::bulk_set(&call.rest.ctx, params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "preference_set", "preferences.id"))?;
    Ok(ok(&operation))
}

/// The list `key` of a bulk body with each object item converted from Knock's body to the
/// RPC's item (its `id` kept); other items are passed on for the RPC to name.
fn bulk_items(
    body: &mut Map<String, Value>,
    key: &str,
    convert: impl Fn(Map<String, Value>) -> Result<Map<String, Value>, RestError>,
) -> Result<Option<Value>, RestError> {
    let Some(Value::Array(items)) = body.remove(key) else {
        return Ok(body.remove(key));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(match item {
            Value::Object(mut item) => {
                let id = item.remove("id");
                let mut converted = convert(item)?;
                if let Some(id) = id {
                    converted.insert("id".into(), id);
                }
                Value::Object(converted)
            }
            other => other,
        });
    }
    Ok(Some(Value::Array(out)))
}

/// Runs a bulk method: `p` plus the `Idempotency-Key`, authorized as `method`.
async fn bulk<T, F>(call: &Call, method: &str, mut p: Map<String, Value>, run: F) -> Answer
where
    T: serde::de::DeserializeOwned,
    F: AsyncFnOnce(&crate::api::Context, T) -> Result<Value, crate::Error>,
{
    with_idempotency_key(call, &mut p);
    let p = Value::Object(p);
    call.authorize(method, &p)?;
    let operation = run(&call.rest.ctx, params(&p)?).await?;
    Ok(ok(&operation))
}

/// Moves `key` from the body into the params, if present.
fn take(body: &mut Map<String, Value>, p: &mut Map<String, Value>, key: &str) {
    if let Some(value) = body.remove(key) {
        p.insert(key.into(), value);
    }
}

async fn bulk_identify_users(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    if let Some(users) = bulk_items(&mut body, "users", |b| shapes::recipient_body(b, &[]))? {
        p.insert("users".into(), users);
    }
    bulk(&call, "users.bulkIdentify", p, bulk::bulk_identify).await
}

async fn bulk_delete_users(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    take(&mut body, &mut p, "user_ids");
    bulk(&call, "users.bulkDelete", p, bulk::bulk_delete_users).await
}

async fn bulk_set_objects(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    p.insert("collection".into(), json!(call.param(0)));
    let convert = |b| shapes::recipient_body(b, &["collection"]);
    if let Some(objects) = bulk_items(&mut body, "objects", convert)? {
        p.insert("objects".into(), objects);
    }
    bulk(&call, "objects.bulkSet", p, bulk::bulk_set_objects).await
}

async fn bulk_delete_objects(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    p.insert("collection".into(), json!(call.param(0)));
    take(&mut body, &mut p, "object_ids");
    bulk(&call, "objects.bulkDelete", p, bulk::bulk_delete_objects).await
}

async fn bulk_set_tenants(call: Call) -> Answer {
    let mut body = call.body_object()?;
    let mut p = Map::new();
    // A bare string is a tenant id with no other fields (#33).
    if let Some(tenants) = bulk_items(&mut body, "tenants", shapes::tenant_body)? {
        p.insert("tenants".into(), tenants);
    }
    bulk(&call, "tenants.bulkSet", p, bulk::bulk_set_tenants).await
}

/// #34 carries its ids in the query (`tenant_ids[]`); its body is empty.
async fn bulk_delete_tenants(call: Call) -> Answer {
    let ids = call.query_list("tenant_ids");
    let mut p = Map::new();
    if !ids.is_empty() {
        p.insert("tenant_ids".into(), json!(ids));
    }
    bulk(&call, "tenants.bulkDelete", p, bulk::bulk_delete_tenants).await
}

async fn get_bulk_operation(call: Call) -> Answer {
    let p = json!({ "id": call.param(0) });
    call.authorize("bulkOperations.get", &p)?;
    // An id that could never name an operation is as absent as an unknown one (#35).
    let got = match params(&p) {
        Ok(p) => bulk::get(&call.rest.ctx, p).await,
        Err(e) => Err(e),
    };
    match got {
        Ok(operation) => Ok(ok(&operation)),
        Err(crate::Error::Invalid(_)) => Err(RestError::from(crate::Error::NotFound(format!(
            "bulk operation {:?}",
            call.param(0)
        )))),
        Err(e) => Err(e.into()),
    }
}

// --- Tenants: #29-31 ---

async fn set_tenant(call: Call) -> Answer {
    let mut p = Map::new();
    p.insert("tenant_id".into(), json!(call.param(0)));
    if let Some(resolve) = call.query_bool("resolve_full_preference_settings")? {
        p.insert("resolve_full_preference_settings".into(), json!(resolve));
    }
    p.extend(shapes::tenant_body(call.body_object()?)?);
    let p = Value::Object(p);
    call.authorize("tenants.set", &p)?;
    let tenant = tenants::set(&call.rest.ctx, call.origin("tenants.set"), params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "properties", ""))?;
    Ok(ok(&shapes::tenant(tenant)))
}

async fn get_tenant(call: Call) -> Answer {
    let resolve = call.query_bool("resolve_full_preference_settings")?;
    read_tenant(&call, resolve).await
}

/// #30: a stored tenant; one that is only a config template is 404 here (A6).
async fn read_tenant(call: &Call, resolve: Option<bool>) -> Answer {
    let mut p = Map::new();
    p.insert("tenant_id".into(), json!(call.param(0)));
    if let Some(resolve) = resolve {
        p.insert("resolve_full_preference_settings".into(), json!(resolve));
    }
    let p = Value::Object(p);
    call.authorize("tenants.get", &p)?;
    let tenant = tenants::get(&call.rest.ctx, params(&p)?).await?;
    if tenant.get("source").is_some() {
        return Err(RestError::from(crate::Error::NotFound(format!(
            "tenant {:?}",
            call.param(0)
        ))));
    }
    Ok(ok(&shapes::tenant(tenant)))
}

async fn delete_tenant(call: Call) -> Answer {
    let p = json!({ "tenant_id": call.param(0) });
    call.authorize("tenants.delete", &p)?;
    tenants::delete(&call.rest.ctx, call.origin("tenants.delete"), params(&p)?).await?;
    Ok(no_content())
}

// --- Lists: #4, #22, #32 (§8) ---

async fn list_recipients(kind: Kind, call: Call) -> Answer {
    let (mut p, applied) = call.page_params()?;
    if kind == Kind::Object {
        p.insert("collection".into(), json!(call.param(0)));
    }
    if call.query_list("include").contains(&"preferences") {
        p.insert("include_preferences".into(), json!(true));
    }
    if kind == Kind::User
        && let Some(order) = call.query("order")
    {
        p.insert("order".into(), json!(order));
    }
    let p = Value::Object(p);
    call.authorize(method(kind, "users.list", "objects.list"), &p)?;
    let page = lists::recipients(&call.rest.ctx, kind, params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "limit", "page_size"))?;
    Ok(ok(&shapes::page(page, applied, recipient_shape(kind))))
}

async fn list_users(call: Call) -> Answer {
    list_recipients(Kind::User, call).await
}

async fn list_objects(call: Call) -> Answer {
    list_recipients(Kind::Object, call).await
}

async fn list_tenants(call: Call) -> Answer {
    let (mut p, applied) = call.page_params()?;
    for name in ["name", "tenant_id"] {
        if let Some(value) = call.query(name) {
            p.insert(name.into(), json!(value));
        }
    }
    let p = Value::Object(p);
    call.authorize("tenants.list", &p)?;
    let page = lists::tenants(&call.rest.ctx, params(&p)?)
        .await
        .map_err(|e| RestError::renamed(e, "limit", "page_size"))?;
    Ok(ok(&shapes::page(page, applied, shapes::tenant)))
}
