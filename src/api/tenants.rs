//! `tenants.*`: tenants and their default preference sets.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::past::{parse_as_of, read_at};
use crate::api::{Context, Deleted, Errors, strict};
use crate::model::change::Origin;
use crate::model::{PreferenceSetRequest, Strategy};
use crate::resolve::{LayerId, SetRef, Stack};
use crate::store::TenantRow;
use crate::store::time::now;
pub use crate::writes::TenantWrite;
use crate::writes::present;

/// The `Tenant` shape of rpc.md; `preference_set` is shown as given (stored or resolved).
pub fn tenant_json(row: &TenantRow, preference_set: Option<Value>) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "properties": row.properties,
        "settings": { "branding": row.branding, "preference_set": preference_set },
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
        "settings": { "branding": null, "preference_set": preference_set },
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
    /// Applied to the result as in `tenants.get`.
    pub resolve_full_preference_settings: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsParams {
    /// Absent keeps the stored branding; `null` removes it; an object replaces it.
    #[serde(default, deserialize_with = "present")]
    pub branding: Option<Option<Map<String, Value>>>,
    /// Absent keeps the stored default; `null` removes it.
    #[serde(default, deserialize_with = "strict::present_value")]
    pub preference_set: Option<Option<Value>>,
}

/// `tenants.set`: creates or updates a tenant; its default set is merged unless
/// `__persistence_strategy__: "replace"`, and `null` removes it (preferences.md §3).
pub async fn set(ctx: &Context, origin: Origin, p: SetParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("tenant_id", &p.tenant_id);
    let (branding, preference_set) = match p.settings {
        Some(s) => (s.branding, s.preference_set),
        None => (None, None),
    };
    let preference_set = match preference_set {
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
        branding,
    };
    let config = ctx.config();
    let limits = config.settings.limits.clone();
    let row = ctx
        .db
        .write_as(origin, move |w| write.apply(w, &limits, "", &now()))
        .await?;
    let resolve = p.resolve_full_preference_settings.unwrap_or(false);
    let set = shown_set(&config, &row.id, Some(&row), resolve);
    Ok(tenant_json(&row, set))
}

/// The `settings.preference_set` a tenant read shows: the stored default (else the config
/// template when nothing is stored), or with `resolve` the environment default merged
/// under it.
fn shown_set(
    config: &crate::config::Config,
    id: &str,
    row: Option<&TenantRow>,
    resolve: bool,
) -> Option<Value> {
    let template = config.tenant_templates.get(id);
    let stored_set = row.and_then(|row| row.preference_set.as_ref());
    if resolve {
        let mut layers = vec![(LayerId::Environment, SetRef::Json(&config.environment))];
        if let Some(set) = stored_set.or(template) {
            layers.push((LayerId::Tenant(id), SetRef::Json(set)));
        }
        Some(Stack::from_layers(&layers).effective().to_response(id))
    } else {
        stored_set
            .or(if row.is_none() { template } else { None })
            .map(|s| s.to_response(id))
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    pub tenant_id: String,
    pub resolve_full_preference_settings: Option<bool>,
    pub as_of: Option<String>,
}

/// `tenants.get`; with `resolve_full_preference_settings`, the environment default is
/// merged under the tenant default (the stored one, else the config template). A tenant
/// that exists only as a config template is returned too, with `"source": "config"` (a
/// stored tenant has rpc.md's shape, without `source`), since evaluation uses it like a
/// stored one.
pub async fn get(ctx: &Context, p: GetParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("tenant_id", &p.tenant_id);
    let as_of = parse_as_of(p.as_of.as_deref(), &mut errors);
    errors.finish()?;
    let id = p.tenant_id.clone();
    let (row, config) = match as_of {
        None => (
            ctx.db.read(move |r| Ok::<_, Error>(r.tenant(&id)?)).await?,
            ctx.config(),
        ),
        Some(as_of) => {
            let (config, row) = read_at(ctx, as_of, move |past| Ok(past.tenant(&id)?)).await?;
            (row, config)
        }
    };
    let template = config.tenant_templates.get(&p.tenant_id);
    if row.is_none() && template.is_none() {
        return Err(Error::NotFound(format!("tenant {:?}", p.tenant_id)));
    }
    let preference_set = shown_set(
        &config,
        &p.tenant_id,
        row.as_ref(),
        p.resolve_full_preference_settings.unwrap_or(false),
    );
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
pub async fn delete(ctx: &Context, origin: Origin, p: DeleteParams) -> Result<Deleted, Error> {
    let mut errors = Errors::default();
    errors.id("tenant_id", &p.tenant_id);
    errors.finish()?;
    let deleted = ctx
        .db
        .write_as(origin, move |w| {
            Ok::<_, Error>(w.delete_tenant(&p.tenant_id)?)
        })
        .await?;
    Ok(Deleted { deleted })
}
