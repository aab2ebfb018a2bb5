//! The write steps that a method and a bulk job share, over one `store::Write`: identify a
//! recipient (properties and inline sets), set a tenant, and the size checks and property
//! merge they make. `api` runs them for one call; `jobs` runs them per item of a bulk job,
//! so an item is applied exactly as the single method applies it.
//!
//! Each step checks everything that can fail before its first write, so an item that fails
//! in a bulk job leaves nothing behind in the chunk's transaction.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;
use crate::config::Limits;
use crate::model::{
    FieldError, PreferenceSet, PreferenceSetRequest, RecipientKey, SetKind, Strategy,
    ValidationError,
};
use crate::store::{RecipientRow, TenantRow, Write};

/// Refuses `properties` larger than `limits.max_properties_bytes` of JSON (issue 22.5: large
/// properties made the read cache hold 205 MB). Checked on the merged result, so a merge
/// cannot grow them past it either.
pub fn check_properties_size(
    properties: &Map<String, Value>,
    max: usize,
    field: &str,
) -> Result<(), Error> {
    let len = serde_json::to_string(properties).map_or(usize::MAX, |s| s.len());
    if len > max {
        return Err(Error::limit(
            field,
            format!("is {len} bytes of JSON; the limit is {max} (limits.max_properties_bytes)"),
        ));
    }
    Ok(())
}

/// Shallow property merge (rpc.md `users.identify`): a `null` value deletes the property.
pub fn merge_properties(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            target.insert(key.clone(), value.clone());
        }
    }
}

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

/// Inline preferences: set id → write request, merged (preferences.md §3). Every bad set
/// id and body is reported.
pub fn inline_sets(
    sets: &Map<String, Value>,
    prefix: &str,
) -> Result<Vec<(String, PreferenceSetRequest)>, ValidationError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (set_id, body) in sets {
        let field = format!("{prefix}.{set_id}");
        if let Some(message) = crate::model::id_problem(set_id) {
            errors.push(FieldError::new(&field, message));
        }
        match PreferenceSetRequest::parse(body, Strategy::Merge, &field) {
            Ok(req) => out.push((set_id.clone(), req)),
            Err(e) => errors.extend(e.errors),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ValidationError { errors })
    }
}

/// Writes inline properties and preference sets of one recipient, inside a transaction.
/// `properties` is the patch with the field that names it in errors; `prefix` names the
/// sets. Nothing is written unless every step passes.
pub fn write_inline(
    w: &Write<'_>,
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
    let mut merged = Vec::with_capacity(sets.len());
    for (set_id, req) in sets {
        let field = format!("{prefix}.{set_id}");
        let stored = w.set(key, set_id)?;
        let set = req.apply(stored.as_ref(), SetKind::Recipient, &field)?;
        check_size(&set, limits.max_preference_set_bytes, &field)?;
        merged.push((set_id, set));
    }
    let row = w.put_recipient(key, &props, now)?;
    for (set_id, set) in &merged {
        w.put_set(key, set_id, set, now)?;
    }
    Ok(row)
}

/// A write to one tenant: what `tenants.set` and an inline tenant of `preferences.evaluate`
/// change. `None` keeps a field; `Some(None)` clears the name, removes the default set or
/// the branding.
pub struct TenantWrite {
    pub id: String,
    pub name: Option<Option<String>>,
    pub properties: Option<Map<String, Value>>,
    pub preference_set: Option<Option<PreferenceSetRequest>>,
    /// `settings.branding`: `None` keeps it, `Some(None)` removes it.
    pub branding: Option<Option<Map<String, Value>>>,
}

impl TenantWrite {
    /// Whether the write changes anything (an inline tenant may only name one).
    pub fn changes_anything(&self) -> bool {
        self.name.is_some()
            || self.properties.is_some()
            || self.preference_set.is_some()
            || self.branding.is_some()
    }

    /// Applies the write inside the caller's transaction, creating the tenant if needed:
    /// properties merge shallowly, the default set merges (or replaces, as its request
    /// says). `prefix` goes before `properties` and `settings.preference_set` in errors
    /// (`""` for `tenants.set`, `"tenant."` inline).
    pub fn apply(
        &self,
        w: &Write<'_>,
        limits: &Limits,
        prefix: &str,
        now: &str,
    ) -> Result<TenantRow, Error> {
        let mut row = w.tenant(&self.id)?.unwrap_or_else(|| TenantRow {
            id: self.id.clone(),
            name: None,
            properties: Map::new(),
            preference_set: None,
            branding: None,
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
        if let Some(branding) = &self.branding {
            row.branding = branding.clone();
        }
        row.updated_at = now.to_string();
        w.put_tenant(&row)?;
        Ok(row)
    }
}

/// Tells a present `null` (`Some(None)`) from an absent key (`None`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One user or object of `users.bulkIdentify` / `objects.bulkSet`, as a job stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientItem {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    /// Set id → write request, as given (merged, as `users.identify` merges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Map<String, Value>>,
}

impl RecipientItem {
    /// Applies the item as `users.identify` / `objects.set` would; `prefix` names its fields
    /// in errors (`users.3`).
    pub fn apply(
        &self,
        w: &Write<'_>,
        collection: Option<&str>,
        limits: &Limits,
        prefix: &str,
        now: &str,
    ) -> Result<(), Error> {
        let sets = match &self.preferences {
            Some(sets) => inline_sets(sets, &format!("{prefix}.preferences"))?,
            None => Vec::new(),
        };
        let key = RecipientKey {
            collection: collection.map(str::to_string),
            id: self.id.clone(),
        };
        let field = format!("{prefix}.properties");
        write_inline(
            w,
            &key,
            self.properties.as_ref().map(|p| (p, field.as_str())),
            &sets,
            limits,
            &format!("{prefix}.preferences"),
            now,
        )?;
        Ok(())
    }
}

/// One tenant of `tenants.bulkSet`, as a job stores it: `tenants.set`'s params flattened.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantItem {
    pub id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub branding: Option<Option<Map<String, Value>>>,
    /// The write request as given; `null` removes the tenant default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub preference_set: Option<Option<Value>>,
}

impl TenantItem {
    /// The write this item makes; `prefix` names its fields in errors (`tenants.3.`).
    pub fn to_write(&self, prefix: &str) -> Result<TenantWrite, ValidationError> {
        let preference_set = match &self.preference_set {
            None => None,
            Some(None) => Some(None),
            Some(Some(body)) => Some(Some(PreferenceSetRequest::parse(
                body,
                Strategy::Merge,
                &format!("{prefix}settings.preference_set"),
            )?)),
        };
        Ok(TenantWrite {
            id: self.id.clone(),
            name: self.name.clone(),
            properties: self.properties.clone(),
            preference_set,
            branding: self.branding.clone(),
        })
    }
}
