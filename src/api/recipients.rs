//! `users.*` and `objects.*`: recipients, their properties and their preference sets.
//! Users and objects behave the same; [`Kind`] says which params name the recipient.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::past::{parse_as_of, read_at};
use crate::api::{Context, Deleted, Errors, Json, strict};
use crate::model::change::Origin;
use crate::model::compact::CompactSet;
use crate::model::{
    DEFAULT_SET, PreferenceSet, PreferenceSetRequest, RecipientKey, SetKind, Strategy,
};
use crate::resolve::{SetRef, Sources, Stack};
use crate::store::time::now;
use crate::store::{Inputs, RecipientRow};
use crate::writes::inline_sets;
pub use crate::writes::{check_size, write_inline};

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
    errors.take(inline_sets(sets, prefix)).unwrap_or_default()
}

/// `users.identify` / `objects.set`.
pub async fn identify(
    ctx: &Context,
    origin: Origin,
    kind: Kind,
    p: IdentifyParams,
) -> Result<Value, Error> {
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
        .write_as(origin, move |w| {
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

recipient_params!(ReadParams { as_of: Option<String> });

/// `users.get` / `objects.get`; with `as_of`, as the recipient was then.
pub async fn get(ctx: &Context, kind: Kind, p: ReadParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let as_of = parse_as_of(p.as_of.as_deref(), &mut errors);
    errors.finish()?;
    let row = match as_of {
        None => {
            ctx.db
                .read(move |r| Ok::<_, Error>((r.recipient(&key)?, key)))
                .await?
        }
        Some(as_of) => {
            read_at(ctx, as_of, move |past| Ok((past.recipient(&key)?.row, key)))
                .await?
                .1
        }
    };
    match row {
        (Some(row), _) => Ok(recipient_json(&row)),
        (None, key) => Err(not_found(&key)),
    }
}

/// `users.delete` / `objects.delete`.
pub async fn delete(
    ctx: &Context,
    origin: Origin,
    kind: Kind,
    p: WhoParams,
) -> Result<Deleted, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    errors.finish()?;
    let deleted = ctx
        .db
        .write_as(origin, move |w| Ok::<_, Error>(w.delete_recipient(&key)?))
        .await?;
    Ok(Deleted { deleted })
}

recipient_params!(GetPreferencesParams { preference_set: Option<String>, tenant: Option<String>, raw: Option<bool>, as_of: Option<String>, });

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
///
/// The answer is written from the recipient's compact sets on every call, cached or not:
/// keeping each cached recipient's rendered answer cost a quarter of its entry, and the
/// writer (`Stack::write_response`) takes less time than building the merged set did.
pub async fn get_preferences(
    ctx: &Context,
    kind: Kind,
    p: GetPreferencesParams,
    may_read_default: bool,
) -> Result<Json, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let set_id = read_set_id(p.preference_set, p.tenant, &mut errors);
    let as_of = parse_as_of(p.as_of.as_deref(), &mut errors);
    errors.finish()?;
    let tenant = (set_id != DEFAULT_SET).then_some(set_id.as_str());
    let raw = p.raw.unwrap_or(false);
    let (config, inputs, tenant_row) = match as_of {
        None => {
            let (inputs, row) = ctx
                .db
                .recipient_for_read(key, tenant, tenant.filter(|_| !raw))
                .await?;
            (ctx.config(), inputs, row)
        }
        Some(as_of) => {
            let (set, row) = (
                tenant.map(str::to_string),
                tenant.filter(|_| !raw).map(str::to_string),
            );
            let (config, (inputs, row)) = read_at(ctx, as_of, move |past| {
                let inputs = past.evaluation_inputs(&key, set.as_deref())?;
                let row = row.map(|t| past.tenant(&t)).transpose()?.flatten();
                Ok((Arc::new(Inputs::from(inputs)), row.map(Arc::new)))
            })
            .await?;
            (config, inputs, row)
        }
    };
    if raw {
        let set = match tenant {
            None => inputs.default_set.as_ref(),
            Some(_) => inputs.tenant_set.as_ref(),
        };
        let set = set.map(CompactSet::to_set).unwrap_or_default();
        return render(&set.into_response(&set_id));
    }
    let tenant_default = tenant_row
        .as_ref()
        .and_then(|row| row.preference_set.as_ref())
        .or_else(|| tenant.and_then(|t| config.tenant_templates.get(t)));
    let stack = Stack::for_recipient(&Sources {
        environment: &config.environment,
        tenant: tenant.map(|t| (t, tenant_default)),
        recipient_default: inputs
            .default_set
            .as_ref()
            .filter(|_| may_read_default)
            .map(SetRef::from),
        recipient_tenant: inputs.tenant_set.as_ref().map(SetRef::from),
    });
    let mut out = Vec::with_capacity(ANSWER_CAPACITY);
    stack.write_response(&set_id, &mut out);
    Json::from_utf8(out, "a getPreferences answer")
}

/// Room for most answers in one allocation: those of `prefsd bench seed`'s users over the
/// example environment take 250–450 bytes.
const ANSWER_CAPACITY: usize = 512;

/// A `getPreferences` answer as JSON text. (Serialising a `Value` cannot fail; the error
/// is mapped for form's sake.)
fn render(answer: &Value) -> Result<Json, Error> {
    serde_json::to_string(answer)
        .map(Json)
        .map_err(|e| Error::Internal(e.to_string()))
}

recipient_params!(SetPreferencesParams {
    preference_set: Option<String>,
    #[serde(default, deserialize_with = "strict::value")]
    preferences: Option<Value>,
});

/// `users.setPreferences` / `objects.setPreferences`: replace, or merge on request.
pub async fn set_preferences(
    ctx: &Context,
    origin: Origin,
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
        .write_as(origin, move |w| {
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
    origin: Origin,
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
        .write_as(origin, move |w| {
            Ok::<_, Error>(w.delete_set(&key, &set_id)?)
        })
        .await?;
    Ok(Deleted { deleted })
}

/// `users.listPreferences` / `objects.listPreferences`: the stored sets, raw; with `as_of`,
/// as they were then.
pub async fn list_preferences(
    ctx: &Context,
    kind: Kind,
    p: ReadParams,
) -> Result<Vec<Value>, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let as_of = parse_as_of(p.as_of.as_deref(), &mut errors);
    errors.finish()?;
    let sets = match as_of {
        None => ctx.db.read(move |r| Ok::<_, Error>(r.sets(&key)?)).await?,
        Some(as_of) => {
            read_at(ctx, as_of, move |past| Ok(past.recipient(&key)?.sets))
                .await?
                .1
        }
    };
    Ok(sets.iter().map(|(id, set)| set.to_response(id)).collect())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeParams {
    pub user_id: String,
    pub from_user_id: String,
}

/// `users.merge` (rest.md §4.2), in one transaction: the target is created if absent; the
/// source's properties go under the target's (shallow, the target wins); each stored set
/// of the source whose set id the target lacks is copied; the source's audience
/// memberships are added to the target; then the source is deleted as by `users.delete`.
pub async fn merge(ctx: &Context, origin: Origin, p: MergeParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("user_id", &p.user_id);
    errors.id("from_user_id", &p.from_user_id);
    if p.user_id == p.from_user_id {
        errors.push(
            "from_user_id",
            "names the target user; a user cannot merge into itself",
        );
    }
    errors.finish()?;
    let limits = ctx.config().settings.limits.clone();
    let row = ctx
        .db
        .write_as(origin, move |w| {
            let from = RecipientKey::user(&p.from_user_id);
            let into = RecipientKey::user(&p.user_id);
            let Some(source) = w.recipient(&from)? else {
                return Err(not_found(&from));
            };
            let mut properties = source.properties;
            let target = w
                .recipient(&into)?
                .map(|r| r.properties)
                .unwrap_or_default();
            properties.extend(target);
            crate::writes::check_properties_size(
                &properties,
                limits.max_properties_bytes,
                "from_user_id",
            )?;
            let now = now();
            let row = w.put_recipient(&into, &properties, &now)?;
            let has: Vec<String> = w.sets(&into)?.into_iter().map(|(id, _)| id).collect();
            for (set_id, set) in w.sets(&from)? {
                if !has.contains(&set_id) {
                    w.put_set(&into, &set_id, &set, &now)?;
                }
            }
            for audience in w.audiences_of(&from)? {
                w.add_members(&audience, std::slice::from_ref(&into), &now)?;
            }
            w.delete_recipient(&from)?;
            Ok::<_, Error>(row)
        })
        .await?;
    Ok(recipient_json(&row))
}

/// The section a legacy granular preference write replaces (rest.md A7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    ChannelTypes,
    Workflows,
    Categories,
}

impl Section {
    pub fn key(self) -> &'static str {
        match self {
            Section::ChannelTypes => "channel_types",
            Section::Workflows => "workflows",
            Section::Categories => "categories",
        }
    }
}

recipient_params!(
    /// A legacy granular write (rest.md A7, routes #10–15): `value` replaces the whole
    /// `section` of set `preference_set`, or with `key` that one entry of it.
    GranularParams {
        preference_set: Option<String>,
        key: Option<String>,
        value: Value,
    }
);

/// The legacy granular set (rest.md A7; no JSON-RPC method, for the REST layer): in one
/// transaction, load the stored set (empty when none), assign the whole section or the one
/// key — `{"subscribed": b}` stores `b`, any other object is stored as given as a setting
/// object — validate the whole set and store it (replace). Answers as a `getPreferences` of
/// the same set id (A2), read after the commit.
pub async fn granular_set(
    ctx: &Context,
    origin: Origin,
    kind: Kind,
    section: Section,
    p: GranularParams,
    may_read_default: bool,
) -> Result<Json, Error> {
    let mut errors = Errors::default();
    let key = p.key(kind, &mut errors);
    let set_id = p
        .preference_set
        .clone()
        .unwrap_or_else(|| DEFAULT_SET.to_string());
    errors.id("preference_set", &set_id);
    let field = match &p.key {
        Some(k) => format!("preferences.{}.{k}", section.key()),
        None => format!("preferences.{}", section.key()),
    };
    let value = match (&p.key, p.value) {
        (Some(_), Value::Object(body)) if body.len() == 1 && body.contains_key("subscribed") => {
            match body.get("subscribed") {
                Some(Value::Bool(b)) => Value::Bool(*b),
                _ => {
                    errors.push(format!("{field}.subscribed"), "must be true or false");
                    Value::Null
                }
            }
        }
        (_, Value::Object(body)) => Value::Object(body),
        (_, _) => {
            errors.push(&field, "must be an object");
            Value::Null
        }
    };
    errors.finish()?;
    let max = ctx.config().settings.limits.max_preference_set_bytes;
    let (write_key, id) = (key.clone(), set_id.clone());
    ctx.db
        .write_as(origin, move |w| {
            let stored = w.set(&write_key, &id)?;
            let mut body = stored.map(|s| s.as_map().clone()).unwrap_or_default();
            match &p.key {
                None => {
                    body.insert(section.key().to_string(), value);
                }
                Some(k) => {
                    let entry = body
                        .entry(section.key().to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    if let Value::Object(map) = entry {
                        map.insert(k.clone(), value);
                    }
                }
            }
            let set =
                PreferenceSet::parse(&Value::Object(body), SetKind::Recipient, "preferences")?;
            check_size(&set, max, "preferences")?;
            w.put_set(&write_key, &id, &set, &now())?;
            Ok::<_, Error>(())
        })
        .await?;
    let read = GetPreferencesParams {
        user_id: p.user_id,
        collection: p.collection,
        object_id: p.object_id,
        preference_set: Some(set_id),
        tenant: None,
        raw: None,
        as_of: None,
    };
    get_preferences(ctx, kind, read, may_read_default).await
}
