//! `users.*` and `objects.*`: recipients, their properties and their preference sets.
//! Users and objects behave the same; [`Kind`] says which params name the recipient.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::{Context, Deleted, Errors, check_properties_size, merge_properties, strict};
use crate::config::{Config, Limits};
use crate::model::{
    DEFAULT_SET, PreferenceSet, PreferenceSetRequest, RecipientKey, SetKind, Strategy,
};
use crate::resolve::{Sources, Stack};
use crate::store::time::now;
use crate::store::{RecipientRow, TenantRow};

/// Which namespace a method is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Object,
}

/// The recipient a call names: `user_id` for users methods, `collection` and `object_id`
/// for objects methods; records what is missing or out of place.
pub fn recipient_key(
    kind: Kind,
    user_id: &Option<String>,
    collection: &Option<String>,
    object_id: &Option<String>,
    errors: &mut Errors,
) -> RecipientKey {
    let mut required = |field: &str, value: &Option<String>| match value {
        Some(v) => {
            errors.id(field, v);
            v.clone()
        }
        None => {
            errors.push(field, "is required");
            String::new()
        }
    };
    match kind {
        Kind::User => {
            let id = required("user_id", user_id);
            for (field, value) in [("collection", collection), ("object_id", object_id)] {
                if value.is_some() {
                    errors.push(field, "is not a param of users methods");
                }
            }
            RecipientKey::user(id)
        }
        Kind::Object => {
            let c = required("collection", collection);
            let id = required("object_id", object_id);
            if user_id.is_some() {
                errors.push("user_id", "is not a param of objects methods");
            }
            RecipientKey::object(c, id)
        }
    }
}

/// Declares a params struct for a method shared by users and objects: the three
/// recipient-naming fields plus the method's own, unknown fields refused.
macro_rules! recipient_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub user_id: Option<String>,
            pub collection: Option<String>,
            pub object_id: Option<String>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            fn key(&self, kind: Kind, errors: &mut Errors) -> RecipientKey {
                recipient_key(kind, &self.user_id, &self.collection, &self.object_id, errors)
            }
        }
    };
}

/// The `User` or `Object` shape of rpc.md.
pub fn recipient_json(row: &RecipientRow) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(row.key.id));
    if let Some(c) = &row.key.collection {
        out.insert("collection".into(), json!(c));
    }
    out.insert("properties".into(), Value::Object(row.properties.clone()));
    out.insert("created_at".into(), json!(row.created_at));
    out.insert("updated_at".into(), json!(row.updated_at));
    Value::Object(out)
}

fn not_found(key: &RecipientKey) -> Error {
    match &key.collection {
        None => Error::NotFound(format!("user {:?}", key.id)),
        Some(c) => Error::NotFound(format!("object {:?} in collection {c:?}", key.id)),
    }
}

recipient_params!(IdentifyParams {
    #[serde(default, deserialize_with = "strict::object")]
    properties: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "strict::object")]
    preferences: Option<Map<String, Value>>,
});

/// Inline preferences: set id → write request, merged (preferences.md §3).
pub fn parse_inline_sets(
    sets: &Map<String, Value>,
    prefix: &str,
    errors: &mut Errors,
) -> Vec<(String, PreferenceSetRequest)> {
    let mut out = Vec::new();
    for (set_id, body) in sets {
        let field = format!("{prefix}.{set_id}");
        errors.id(&field, set_id);
        if let Some(req) = errors.take(PreferenceSetRequest::parse(body, Strategy::Merge, &field)) {
            out.push((set_id.clone(), req));
        }
    }
    out
}

/// Writes inline properties and preference sets of one recipient, inside a transaction.
/// `properties` is the patch with the field that names it in errors; `prefix` names the
/// sets.
pub fn write_inline(
    w: &crate::store::Write<'_>,
    key: &RecipientKey,
    properties: Option<(&Map<String, Value>, &str)>,
    sets: &[(String, PreferenceSetRequest)],
    limits: &Limits,
    prefix: &str,
    now: &str,
) -> Result<RecipientRow, Error> {
    let mut props = w.recipient(key)?.map(|r| r.properties).unwrap_or_default();
    if let Some((patch, field)) = properties {
        merge_properties(&mut props, patch);
        check_properties_size(&props, limits.max_properties_bytes, field)?;
    }
    let row = w.put_recipient(key, &props, now)?;
    for (set_id, req) in sets {
        let field = format!("{prefix}.{set_id}");
        let stored = w.set(key, set_id)?;
        let set = req.apply(stored.as_ref(), SetKind::Recipient, &field)?;
        check_size(&set, limits.max_preference_set_bytes, &field)?;
        w.put_set(key, set_id, &set, now)?;
    }
    Ok(row)
}

/// `users.identify` / `objects.set`.
pub async fn identify(ctx: &Context, kind: Kind, p: IdentifyParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let sets = p
        .preferences
        .as_ref()
        .map(|s| parse_inline_sets(s, "preferences", &mut errors))
        .unwrap_or_default();
    errors.finish()?;
    let limits = ctx.config().settings.limits.clone();
    let row = ctx
        .db
        .write(move |w| {
            write_inline(
                w,
                &key,
                p.properties.as_ref().map(|props| (props, "properties")),
                &sets,
                &limits,
                "preferences",
                &now(),
            )
        })
        .await?;
    Ok(recipient_json(&row))
}

recipient_params!(WhoParams {});

/// `users.get` / `objects.get`.
pub async fn get(ctx: &Context, kind: Kind, p: WhoParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    errors.finish()?;
    let row = ctx
        .db
        .read(move |r| Ok::<_, Error>((r.recipient(&key)?, key)))
        .await?;
    match row {
        (Some(row), _) => Ok(recipient_json(&row)),
        (None, key) => Err(not_found(&key)),
    }
}

/// `users.delete` / `objects.delete`.
pub async fn delete(ctx: &Context, kind: Kind, p: WhoParams) -> Result<Deleted, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    errors.finish()?;
    let deleted = ctx
        .db
        .write(move |w| Ok::<_, Error>(w.delete_recipient(&key)?))
        .await?;
    Ok(Deleted { deleted })
}

recipient_params!(GetPreferencesParams { preference_set: Option<String>, tenant: Option<String>, raw: Option<bool>, });

/// The set id a read names: `preference_set`, or `tenant` (which means the same).
fn read_set_id(
    preference_set: Option<String>,
    tenant: Option<String>,
    errors: &mut Errors,
) -> String {
    let set_id = match (preference_set, tenant) {
        (Some(set), Some(tenant)) if set != tenant && set != DEFAULT_SET => {
            errors.push(
                "tenant",
                format!("names tenant {tenant:?} but preference_set names {set:?}"),
            );
            set
        }
        (_, Some(tenant)) => tenant,
        (Some(set), None) => set,
        (None, None) => DEFAULT_SET.to_string(),
    };
    errors.id("preference_set", &set_id);
    set_id
}

/// `users.getPreferences` / `objects.getPreferences`: the effective set unless `raw`.
///
/// `may_read_default` is false for a tenant-scoped user token (access.md): the recipient's
/// `default` set is then left out of the §4.2 fallback, so a tenant with no tenant default
/// and no stored set reads as the environment default alone.
pub async fn get_preferences(
    ctx: &Context,
    kind: Kind,
    p: GetPreferencesParams,
    may_read_default: bool,
) -> Result<Box<RawValue>, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let set_id = read_set_id(p.preference_set, p.tenant, &mut errors);
    errors.finish()?;
    let tenant = (set_id != DEFAULT_SET).then_some(set_id.as_str());
    let raw = p.raw.unwrap_or(false);
    let (inputs, tenant_row) = ctx
        .db
        .recipient_for_read(key, tenant, tenant.filter(|_| !raw))
        .await?;
    if raw {
        let set = match tenant {
            None => inputs.default_set.as_ref(),
            Some(_) => inputs.tenant_set.as_ref(),
        };
        return render(&set.cloned().unwrap_or_default().into_response(&set_id));
    }
    let config = ctx.config();
    if let Some(r) = inputs.memo.get::<Rendered>()
        && r.is_for(&config, tenant_row.as_ref(), may_read_default)
    {
        return Ok(r.answer.clone());
    }
    let tenant_default = tenant_row
        .as_ref()
        .and_then(|row| row.preference_set.as_ref())
        .or_else(|| tenant.and_then(|t| config.tenant_templates.get(t)));
    let stack = Stack::for_recipient(&Sources {
        environment: &config.environment,
        tenant: tenant.map(|t| (t, tenant_default)),
        recipient_default: inputs.default_set.as_ref().filter(|_| may_read_default),
        recipient_tenant: inputs.tenant_set.as_ref(),
    });
    let answer = render(&stack.effective().into_response(&set_id))?;
    inputs.memo.set(Arc::new(Rendered {
        config,
        tenant: tenant_row,
        with_default: may_read_default,
        answer: answer.clone(),
    }));
    Ok(answer)
}

/// A `getPreferences` answer as JSON text. (Serialising a `Value` cannot fail; the error
/// is mapped for form's sake.)
fn render(answer: &Value) -> Result<Box<RawValue>, Error> {
    serde_json::value::to_raw_value(answer).map_err(|e| Error::Internal(e.to_string()))
}

/// The effective set of a `getPreferences` answer, rendered once per cached entry: the
/// merge is redone only when the recipient's sets (a new entry), the tenant row or the
/// config changed. The config and tenant row are held, so their identity cannot be reused.
struct Rendered {
    config: Arc<Config>,
    tenant: Option<Arc<TenantRow>>,
    /// Whether the `default` set could take part (see `get_preferences`).
    with_default: bool,
    answer: Box<RawValue>,
}

impl Rendered {
    fn is_for(
        &self,
        config: &Arc<Config>,
        tenant: Option<&Arc<TenantRow>>,
        with_default: bool,
    ) -> bool {
        Arc::ptr_eq(&self.config, config)
            && self.with_default == with_default
            && match (&self.tenant, tenant) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

recipient_params!(SetPreferencesParams {
    preference_set: Option<String>,
    #[serde(default, deserialize_with = "strict::value")]
    preferences: Option<Value>,
});

/// Refuses a set larger than `limits.max_preference_set_bytes` of JSON.
pub fn check_size(set: &PreferenceSet, max: usize, field: &str) -> Result<(), Error> {
    let len = serde_json::to_string(set.as_map())
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if len > max {
        return Err(Error::limit(
            field,
            format!("is {len} bytes of JSON; the limit is {max}"),
        ));
    }
    Ok(())
}

/// `users.setPreferences` / `objects.setPreferences`: replace, or merge on request.
pub async fn set_preferences(
    ctx: &Context,
    kind: Kind,
    p: SetPreferencesParams,
) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let set_id = p.preference_set.unwrap_or_else(|| DEFAULT_SET.to_string());
    errors.id("preference_set", &set_id);
    let req = match &p.preferences {
        Some(body) => errors.take(PreferenceSetRequest::parse(
            body,
            Strategy::Replace,
            "preferences",
        )),
        None => {
            errors.push("preferences", "is required");
            None
        }
    };
    errors.finish()?;
    let Some(req) = req else {
        return Err(Error::invalid("preferences", "is required"));
    };
    let max = ctx.config().settings.limits.max_preference_set_bytes;
    let id = set_id.clone();
    let set = ctx
        .db
        .write(move |w| {
            let stored = w.set(&key, &id)?;
            let set = req.apply(stored.as_ref(), SetKind::Recipient, "preferences")?;
            check_size(&set, max, "preferences")?;
            w.put_set(&key, &id, &set, &now())?;
            Ok::<_, Error>(set)
        })
        .await?;
    Ok(set.into_response(&set_id))
}

recipient_params!(UnsetPreferencesParams { preference_set: Option<String>, });

/// `users.unsetPreferences` / `objects.unsetPreferences`: deletes the stored set.
pub async fn unset_preferences(
    ctx: &Context,
    kind: Kind,
    p: UnsetPreferencesParams,
) -> Result<Deleted, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    match &p.preference_set {
        Some(set_id) => errors.id("preference_set", set_id),
        None => errors.push("preference_set", "is required"),
    }
    errors.finish()?;
    let set_id = p.preference_set.unwrap_or_default();
    let deleted = ctx
        .db
        .write(move |w| Ok::<_, Error>(w.delete_set(&key, &set_id)?))
        .await?;
    Ok(Deleted { deleted })
}

/// `users.listPreferences` / `objects.listPreferences`: the stored sets, raw.
pub async fn list_preferences(
    ctx: &Context,
    kind: Kind,
    p: WhoParams,
) -> Result<Vec<Value>, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    errors.finish()?;
    let sets = ctx.db.read(move |r| Ok::<_, Error>(r.sets(&key)?)).await?;
    Ok(sets.iter().map(|(id, set)| set.to_response(id)).collect())
}
