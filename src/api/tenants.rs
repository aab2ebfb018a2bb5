//! `tenants.*`: tenants and their default preference sets.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::recipients::check_size;
use crate::api::{Context, Deleted, Errors, check_properties_size, merge_properties, strict};
use crate::config::Limits;
use crate::model::{PreferenceSetRequest, SetKind, Strategy};
use crate::resolve::{LayerId, Stack};
use crate::store::TenantRow;
use crate::store::time::now;

/// The `Tenant` shape of rpc.md; `preference_set` is shown as given (stored or resolved).
fn tenant_json(row: &TenantRow, preference_set: Option<Value>) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "properties": row.properties,
        "settings": { "preference_set": preference_set },
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// A tenant that is not stored but has a template in the config: what evaluation uses for
/// it, said to come from the config (no name, properties or timestamps).
fn template_json(id: &str, preference_set: Value) -> Value {
    json!({
        "id": id,
        "name": null,
        "properties": {},
        "settings": { "preference_set": preference_set },
        "created_at": null,
        "updated_at": null,
        "source": "config",
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetParams {
    pub tenant_id: String,
    /// Absent keeps the name; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "strict::object")]
    pub properties: Option<Map<String, Value>>,
    pub settings: Option<SettingsParams>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsParams {
    /// Absent keeps the stored default; `null` removes it.
    #[serde(default, deserialize_with = "strict::present_value")]
    pub preference_set: Option<Option<Value>>,
}

/// Tells a present `null` (`Some(None)`) from an absent key (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A write to one tenant: what `tenants.set` and an inline tenant of `preferences.evaluate`
/// change. `None` keeps a field; `Some(None)` clears the name or removes the default set.
pub struct TenantWrite {
    pub id: String,
    pub name: Option<Option<String>>,
    pub properties: Option<Map<String, Value>>,
    pub preference_set: Option<Option<PreferenceSetRequest>>,
}

impl TenantWrite {
    /// Whether the write changes anything (an inline tenant may only name one).
    pub fn changes_anything(&self) -> bool {
        self.name.is_some() || self.properties.is_some() || self.preference_set.is_some()
    }

    /// Applies the write inside the caller's transaction, creating the tenant if needed:
    /// properties merge shallowly, the default set merges (or replaces, as its request
    /// says). `prefix` goes before `properties` and `settings.preference_set` in errors
    /// (`""` for `tenants.set`, `"tenant."` inline).
    pub fn apply(
        &self,
        w: &crate::store::Write<'_>,
        limits: &Limits,
        prefix: &str,
        now: &str,
    ) -> Result<TenantRow, Error> {
        let mut row = w.tenant(&self.id)?.unwrap_or_else(|| TenantRow {
            id: self.id.clone(),
            name: None,
            properties: Map::new(),
            preference_set: None,
            created_at: now.to_string(),
            updated_at: now.to_string(),
        });
        if let Some(name) = &self.name {
            row.name = name.clone();
        }
        if let Some(patch) = &self.properties {
            merge_properties(&mut row.properties, patch);
            let field = format!("{prefix}properties");
            check_properties_size(&row.properties, limits.max_properties_bytes, &field)?;
        }
        match &self.preference_set {
            None => {}
            Some(None) => row.preference_set = None,
            Some(Some(req)) => {
                let field = format!("{prefix}settings.preference_set");
                let set = req.apply(row.preference_set.as_ref(), SetKind::Default, &field)?;
                check_size(&set, limits.max_preference_set_bytes, &field)?;
                row.preference_set = Some(set);
            }
        }
        row.updated_at = now.to_string();
        w.put_tenant(&row)?;
        Ok(row)
    }
}

/// `tenants.set`: creates or updates a tenant; its default set is merged unless
/// `__persistence_strategy__: "replace"`, and `null` removes it (preferences.md §3).
pub async fn set(ctx: &Context, p: SetParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("tenant_id", &p.tenant_id);
    let preference_set = match p.settings.and_then(|s| s.preference_set) {
        None => None,
        Some(None) => Some(None),
        Some(Some(body)) => Some(errors.take(PreferenceSetRequest::parse(
            &body,
            Strategy::Merge,
            "settings.preference_set",
        ))),
    };
    errors.finish()?;
    let write = TenantWrite {
        id: p.tenant_id,
        name: p.name,
        properties: p.properties,
        preference_set,
    };
    let limits = ctx.config().settings.limits.clone();
    let row = ctx
        .db
        .write(move |w| write.apply(w, &limits, "", &now()))
        .await?;
    let set = row.preference_set.as_ref().map(|s| s.to_response(&row.id));
    Ok(tenant_json(&row, set))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    pub tenant_id: String,
    pub resolve_full_preference_settings: Option<bool>,
}

/// `tenants.get`; with `resolve_full_preference_settings`, the environment default is
/// merged under the tenant default (the stored one, else the config template). A tenant
/// that exists only as a config template is returned too, with `"source": "config"` (a
/// stored tenant has rpc.md's shape, without `source`), since evaluation uses it like a
/// stored one.
pub async fn get(ctx: &Context, p: GetParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("tenant_id", &p.tenant_id);
    errors.finish()?;
    let id = p.tenant_id.clone();
    let row = ctx.db.read(move |r| Ok::<_, Error>(r.tenant(&id)?)).await?;
    let config = ctx.config();
    let template = config.tenant_templates.get(&p.tenant_id);
    if row.is_none() && template.is_none() {
        return Err(Error::NotFound(format!("tenant {:?}", p.tenant_id)));
    }
    let stored_set = row.as_ref().and_then(|row| row.preference_set.as_ref());
    let preference_set = if p.resolve_full_preference_settings.unwrap_or(false) {
        let mut layers = vec![(LayerId::Environment, &config.environment)];
        if let Some(set) = stored_set.or(template) {
            layers.push((LayerId::Tenant(&p.tenant_id), set));
        }
        Some(
            Stack::from_layers(&layers)
                .effective()
                .to_response(&p.tenant_id),
        )
    } else {
        stored_set
            .or(if row.is_none() { template } else { None })
            .map(|s| s.to_response(&p.tenant_id))
    };
    Ok(match &row {
        Some(row) => tenant_json(row, preference_set),
        None => template_json(&p.tenant_id, preference_set.unwrap_or(Value::Null)),
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub tenant_id: String,
}

/// `tenants.delete`. Recipients' sets for the tenant stay: they are the recipients' own.
pub async fn delete(ctx: &Context, p: DeleteParams) -> Result<Deleted, Error> {
    let mut errors = Errors::default();
    errors.id("tenant_id", &p.tenant_id);
    errors.finish()?;
    let deleted = ctx
        .db
        .write(move |w| Ok::<_, Error>(w.delete_tenant(&p.tenant_id)?))
        .await?;
    Ok(Deleted { deleted })
}
