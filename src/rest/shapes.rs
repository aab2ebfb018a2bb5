//! Knock's representations (rest.md §5) from prefsd's shapes (rpc.md), and Knock's request
//! bodies as the params of the JSON-RPC methods.

use serde_json::{Map, Value, json};

use crate::rest::wire::RestError;

/// The keys a recipient or tenant body never stores: they name the resource or are the
/// server's (§5.1–5.3), or are accepted and ignored (`channel_data`, A12).
const IGNORED_BODY_KEYS: [&str; 4] = ["id", "__typename", "updated_at", "channel_data"];

/// `created_at` of a body (A9): an RFC 3339 timestamp or null, kept as a property.
fn check_created_at(body: &Map<String, Value>) -> Result<(), RestError> {
    match body.get("created_at") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.parse::<jiff::Timestamp>().is_ok() => Ok(()),
        Some(_) => Err(RestError::invalid(
            "created_at",
            "must be an RFC 3339 timestamp or null",
        )),
    }
}

/// Removes every `__strategy__` key at any depth (A3): an effective set read back carries
/// lock markers, and a preference center PUTs it back whole.
pub fn strip_strategies(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("__strategy__");
            map.values_mut().for_each(strip_strategies);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_strategies),
        _ => {}
    }
}

/// A user or object body (§5.1, §5.2) as `users.identify` / `objects.set` params (without
/// the recipient's ids): `preferences` inline, every other key a property.
pub fn recipient_body(
    mut body: Map<String, Value>,
    extra_ignored: &[&str],
) -> Result<Map<String, Value>, RestError> {
    check_created_at(&body)?;
    for key in IGNORED_BODY_KEYS.iter().chain(extra_ignored) {
        body.remove(*key);
    }
    let mut params = Map::new();
    if let Some(mut preferences) = body.remove("preferences") {
        strip_strategies(&mut preferences);
        params.insert("preferences".into(), preferences);
    }
    params.insert("properties".into(), Value::Object(body));
    Ok(params)
}

/// A PreferenceSetRequest body (§5.4) as the `preferences` param: `id` and `__typename`
/// ignored, `__strategy__` removed (A3).
pub fn preference_body(mut body: Map<String, Value>) -> Value {
    body.remove("id");
    body.remove("__typename");
    let mut value = Value::Object(body);
    strip_strategies(&mut value);
    value
}

/// The emitted `created_at` (A9): the stored property when set, else the insert time.
fn created_at(properties: &Map<String, Value>, stored: &Value) -> Value {
    match properties.get("created_at") {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => stored.clone(),
    }
}

/// Knock's User (§5.1) from rpc.md's: properties flattened, the reserved keys winning.
pub fn user(rpc: Value) -> Value {
    let Value::Object(mut rpc) = rpc else {
        return rpc;
    };
    let properties = match rpc.remove("properties") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let created = created_at(&properties, rpc.get("created_at").unwrap_or(&Value::Null));
    let mut out = properties;
    out.insert("__typename".into(), json!("User"));
    out.insert("id".into(), rpc.remove("id").unwrap_or(Value::Null));
    out.insert("created_at".into(), created);
    out.insert(
        "updated_at".into(),
        rpc.remove("updated_at").unwrap_or(Value::Null),
    );
    // `include[]=preferences` of a list (A10).
    if let Some(sets) = rpc.remove("preferences") {
        out.insert("preferences".into(), sets);
    }
    Value::Object(out)
}

/// Knock's Object (§5.2) from rpc.md's: properties nested.
pub fn object(rpc: Value) -> Value {
    let Value::Object(mut out) = rpc else {
        return rpc;
    };
    let created = match out.get("properties") {
        Some(Value::Object(properties)) => {
            created_at(properties, out.get("created_at").unwrap_or(&Value::Null))
        }
        _ => out.get("created_at").cloned().unwrap_or(Value::Null),
    };
    out.insert("__typename".into(), json!("Object"));
    out.insert("created_at".into(), created);
    Value::Object(out)
}

/// Knock's Tenant (§5.3) from rpc.md's: properties flattened, `settings.preference_set`
/// with `"id": "default"`.
pub fn tenant(rpc: Value) -> Value {
    let Value::Object(mut rpc) = rpc else {
        return rpc;
    };
    let properties = match rpc.remove("properties") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let created = created_at(&properties, rpc.get("created_at").unwrap_or(&Value::Null));
    let mut settings = match rpc.remove("settings") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if let Some(Value::Object(set)) = settings.get_mut("preference_set") {
        set.insert("id".into(), json!(crate::model::DEFAULT_SET));
    }
    settings.entry("branding").or_insert(Value::Null);
    settings.entry("preference_set").or_insert(Value::Null);
    let mut out = properties;
    out.insert("__typename".into(), json!("Tenant"));
    out.insert("id".into(), rpc.remove("id").unwrap_or(Value::Null));
    out.insert("name".into(), rpc.remove("name").unwrap_or(Value::Null));
    out.insert("settings".into(), Value::Object(settings));
    out.insert("created_at".into(), created);
    out.insert(
        "updated_at".into(),
        rpc.remove("updated_at").unwrap_or(Value::Null),
    );
    Value::Object(out)
}

/// A tenant body (§5.3) as `tenants.set` params (without `tenant_id`): `name`, `settings`,
/// every other key a property; `preferences` is refused (A12).
pub fn tenant_body(mut body: Map<String, Value>) -> Result<Map<String, Value>, RestError> {
    if body.contains_key("preferences") {
        return Err(RestError::invalid(
            "preferences",
            "tenants are not recipients in prefsd; a tenant's default set is settings.preference_set",
        ));
    }
    check_created_at(&body)?;
    for key in IGNORED_BODY_KEYS {
        body.remove(key);
    }
    let mut params = Map::new();
    if let Some(name) = body.remove("name") {
        params.insert("name".into(), name);
    }
    match body.remove("settings") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut settings)) => {
            if let Some(Value::Object(set)) = settings.get_mut("preference_set") {
                set.remove("id");
                set.remove("__typename");
            }
            params.insert("settings".into(), Value::Object(settings));
        }
        Some(_) => return Err(RestError::invalid("settings", "must be an object")),
    }
    params.insert("properties".into(), Value::Object(body));
    Ok(params)
}

/// A page of a list (§8) from the RPC's `{ items, next, prev }`.
pub fn page(rpc: Value, page_size: u32, shape: fn(Value) -> Value) -> Value {
    let Value::Object(mut rpc) = rpc else {
        return rpc;
    };
    let entries: Vec<Value> = match rpc.remove("items") {
        Some(Value::Array(items)) => items.into_iter().map(shape).collect(),
        _ => Vec::new(),
    };
    json!({
        "entries": entries,
        "page_info": {
            "__typename": "PageInfo",
            "after": rpc.remove("next").unwrap_or(Value::Null),
            "before": rpc.remove("prev").unwrap_or(Value::Null),
            "page_size": page_size,
        },
    })
}
