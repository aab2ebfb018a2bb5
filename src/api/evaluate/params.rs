//! The params of `preferences.evaluate`, read into a validated [`Request`]: the workflow
//! (a catalog key or inline), channels, recipients and their inline identifies, the tenant,
//! the actor, `data`, `run` and `now`, with every error named by its field.

use serde_json::{Map, Value, json};

use super::EvaluateParams;
use crate::Error;
use crate::api::recipients::parse_inline_sets;
use crate::api::tenants::TenantWrite;
use crate::api::{Errors, FieldPath};
use crate::config::Config;
use crate::model::{
    Channel, ChannelType, DEFAULT_SET, PreferenceSetRequest, RecipientKey, Strategy, Workflow,
    type_name,
};

/// The most channels one evaluation may name: every decision is made for every recipient,
/// so the work is recipients × channels, and both must be bounded.
const MAX_CHANNELS: usize = 64;

/// A recipient of the request, with what it identifies inline.
pub(super) struct RecipientParam {
    pub(super) key: RecipientKey,
    pub(super) properties: Option<Map<String, Value>>,
    pub(super) sets: Vec<(String, PreferenceSetRequest)>,
}

impl AsRef<RecipientKey> for RecipientParam {
    fn as_ref(&self) -> &RecipientKey {
        &self.key
    }
}

impl RecipientParam {
    pub(super) fn is_inline(&self) -> bool {
        self.properties.is_some() || !self.sets.is_empty()
    }
}

pub(super) struct ActorParam {
    pub(super) id: String,
    pub(super) properties: Option<Map<String, Value>>,
}

/// A validated request.
pub(super) struct Request {
    pub(super) workflow: Workflow,
    pub(super) channels: Vec<Channel>,
    pub(super) recipients: Vec<RecipientParam>,
    pub(super) tenant: Option<TenantWrite>,
    pub(super) actor: Option<ActorParam>,
    pub(super) data: Value,
    /// The `run` object, or `null` without one.
    pub(super) run: Value,
    pub(super) now: jiff::Timestamp,
}

impl Request {
    /// The per-tenant set each recipient's own tenant preferences are read from.
    pub(super) fn tenant_set(&self) -> Option<&str> {
        self.tenant
            .as_ref()
            .map(|t| t.id.as_str())
            .filter(|t| *t != DEFAULT_SET)
    }

    pub(super) fn actor_key(&self) -> Option<RecipientKey> {
        self.actor.as_ref().map(|a| RecipientKey::user(&a.id))
    }
}

/// Validates the params into a [`Request`], naming every field that is wrong.
pub(super) fn parse(config: &Config, p: EvaluateParams) -> Result<Request, Error> {
    let mut errors = Errors::default();
    let limits = &config.settings.limits;
    let (workflow, catalog_channels) = parse_workflow(config, p.workflow.as_ref(), &mut errors)?;
    let channels = match &p.channels {
        Some(Value::Array(list)) if list.len() > MAX_CHANNELS => {
            return Err(Error::limit(
                "channels",
                format!(
                    "lists {} channels; at most {MAX_CHANNELS} are allowed",
                    list.len()
                ),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_channel(v, &FieldPath(&"channels", &i), &mut errors))
            .collect(),
        Some(other) => {
            errors.push(
                "channels",
                format!("must be an array of channels, got {}", type_name(other)),
            );
            Vec::new()
        }
        None if !catalog_channels.is_empty() => catalog_channels,
        None => Channel::all_types(),
    };
    let recipients = match &p.recipients {
        Some(Value::Array(list)) if list.is_empty() => {
            errors.push("recipients", "must list at least one recipient");
            Vec::new()
        }
        Some(Value::Array(list)) if list.len() > limits.max_recipients => {
            return Err(Error::limit(
                "recipients",
                format!(
                    "lists {} recipients; at most {} are allowed",
                    list.len(),
                    limits.max_recipients
                ),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_recipient(v, &FieldPath(&"recipients", &i), &mut errors))
            .collect(),
        Some(other) => {
            errors.push(
                "recipients",
                format!("must be an array, got {}", type_name(other)),
            );
            Vec::new()
        }
        None => {
            errors.push("recipients", "is required");
            Vec::new()
        }
    };
    let tenant = p.tenant.as_ref().and_then(|v| parse_tenant(v, &mut errors));
    let actor = p.actor.as_ref().and_then(|v| parse_actor(v, &mut errors));
    let data = object_param(p.data, "data", &mut errors).unwrap_or_else(|| json!({}));
    let run = object_param(p.run, "run", &mut errors).unwrap_or(Value::Null);
    let now = match &p.now {
        None => jiff::Timestamp::now(),
        Some(s) => s.parse().unwrap_or_else(|_| {
            errors.push(
                "now",
                "must be an RFC 3339 timestamp such as 2026-11-29T12:00:00Z",
            );
            jiff::Timestamp::UNIX_EPOCH
        }),
    };
    errors.finish()?;
    Ok(Request {
        workflow,
        channels,
        recipients,
        tenant,
        actor,
        data,
        run,
        now,
    })
}

/// An optional param that must be an object when given (`data`, `run`).
fn object_param(value: Option<Value>, field: &str, errors: &mut Errors) -> Option<Value> {
    match value {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => {
            errors.push(
                field,
                format!("must be an object, got {}", type_name(&other)),
            );
            None
        }
    }
}

/// The workflow by catalog key, or inline (an inline object overrides the catalog entry).
fn parse_workflow(
    config: &Config,
    value: Option<&Value>,
    errors: &mut Errors,
) -> Result<(Workflow, Vec<Channel>), Error> {
    let lookup = |key: &str| config.workflows.get(key);
    match value {
        Some(Value::String(key)) => {
            errors.id("workflow", key);
            match lookup(key) {
                Some(entry) => Ok((entry.workflow.clone(), entry.channels.clone())),
                None if config.strict_workflows() => Err(Error::WorkflowNotFound(key.clone())),
                None => Ok((
                    Workflow {
                        key: key.clone(),
                        ..Workflow::default()
                    },
                    Vec::new(),
                )),
            }
        }
        Some(v @ Value::Object(_)) => match serde_json::from_value::<Workflow>(v.clone()) {
            Ok(workflow) => {
                errors.id("workflow.key", &workflow.key);
                let channels = lookup(&workflow.key)
                    .map(|e| e.channels.clone())
                    .unwrap_or_default();
                Ok((workflow, channels))
            }
            Err(e) => {
                errors.push("workflow", format!("{e}"));
                Ok((Workflow::default(), Vec::new()))
            }
        },
        Some(other) => {
            errors.push(
                "workflow",
                format!(
                    "must be a workflow key or an object, got {}",
                    type_name(other)
                ),
            );
            Ok((Workflow::default(), Vec::new()))
        }
        None => {
            errors.push("workflow", "is required");
            Ok((Workflow::default(), Vec::new()))
        }
    }
}

/// One channel; `field` (`channels.N`) is written out only to name an error.
fn parse_channel(value: &Value, field: &FieldPath<'_>, errors: &mut Errors) -> Option<Channel> {
    let Value::Object(map) = value else {
        errors.push(field.to_string(), "must be an object { type, id? }");
        return None;
    };
    for key in map.keys() {
        if key != "type" && key != "id" {
            errors.push(format!("{field}.{key}"), "unknown key; expected type or id");
        }
    }
    let channel_type = match map.get("type") {
        Some(Value::String(t)) => ChannelType::parse(t).or_else(|| {
            errors.push(format!("{field}.type"), "unknown channel type");
            None
        }),
        _ => {
            errors.push(
                format!("{field}.type"),
                "is required: one of email, sms, push, chat, in_app_feed, http",
            );
            None
        }
    };
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            errors.id(FieldPath(field, &"id"), id);
            Some(id.clone())
        }
        Some(_) => {
            errors.push(format!("{field}.id"), "must be a string");
            None
        }
    };
    Some(Channel {
        channel_type: channel_type?,
        id,
    })
}

/// Reads an optional object-valued key of an inline entity.
fn object_field(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    errors: &mut Errors,
) -> Option<Map<String, Value>> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(other) => {
            errors.push(
                format!("{field}.{key}"),
                format!("must be an object, got {}", type_name(other)),
            );
            None
        }
    }
}

fn string_field(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    errors: &mut Errors,
) -> Option<String> {
    match map.get(key) {
        Some(Value::String(s)) => {
            errors.id(format!("{field}.{key}"), s);
            Some(s.clone())
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            errors.push(format!("{field}.{key}"), "must be a string");
            None
        }
    }
}

fn check_keys(map: &Map<String, Value>, allowed: &[&str], field: &str, errors: &mut Errors) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(
                format!("{field}.{key}"),
                format!("unknown key; expected one of {}", allowed.join(", ")),
            );
        }
    }
}

/// One recipient; `field` (`recipients.N`) is written out only to name an error, or for an
/// inline identify, whose fields are checked one by one.
fn parse_recipient(
    value: &Value,
    field: &FieldPath<'_>,
    errors: &mut Errors,
) -> Option<RecipientParam> {
    match value {
        Value::String(id) => {
            errors.id(field, id);
            Some(RecipientParam {
                key: RecipientKey::user(id),
                properties: None,
                sets: Vec::new(),
            })
        }
        Value::Object(map) => {
            let field = &field.to_string();
            check_keys(
                map,
                &["id", "collection", "properties", "preferences"],
                field,
                errors,
            );
            let Some(id) = string_field(map, "id", field, errors) else {
                errors.push(format!("{field}.id"), "is required");
                return None;
            };
            let collection = string_field(map, "collection", field, errors);
            let properties = object_field(map, "properties", field, errors);
            let sets = object_field(map, "preferences", field, errors)
                .map(|sets| parse_inline_sets(&sets, &format!("{field}.preferences"), errors))
                .unwrap_or_default();
            Some(RecipientParam {
                key: RecipientKey { collection, id },
                properties,
                sets,
            })
        }
        other => {
            errors.push(
                field.to_string(),
                format!("must be a user id or an object, got {}", type_name(other)),
            );
            None
        }
    }
}

fn parse_tenant(value: &Value, errors: &mut Errors) -> Option<TenantWrite> {
    match value {
        Value::String(id) => {
            errors.id("tenant", id);
            Some(TenantWrite {
                id: id.clone(),
                name: None,
                properties: None,
                preference_set: None,
                branding: None,
            })
        }
        Value::Object(map) => {
            check_keys(
                map,
                &["id", "name", "properties", "settings"],
                "tenant",
                errors,
            );
            let Some(id) = string_field(map, "id", "tenant", errors) else {
                errors.push("tenant.id", "is required");
                return None;
            };
            let name = map.get("name").map(|v| v.as_str().map(str::to_string));
            let properties = object_field(map, "properties", "tenant", errors);
            let settings = object_field(map, "settings", "tenant", errors);
            let branding = settings.as_ref().and_then(|s| {
                s.get("branding").map(|value| match value {
                    Value::Object(branding) => Some(branding.clone()),
                    Value::Null => None,
                    other => {
                        errors.push(
                            "tenant.settings.branding",
                            format!("must be an object or null, got {}", type_name(other)),
                        );
                        None
                    }
                })
            });
            let preference_set = settings.as_ref().and_then(|s| {
                check_keys(
                    s,
                    &["branding", "preference_set"],
                    "tenant.settings",
                    errors,
                );
                s.get("preference_set").map(|body| match body {
                    Value::Null => None,
                    body => errors.take(PreferenceSetRequest::parse(
                        body,
                        Strategy::Merge,
                        "tenant.settings.preference_set",
                    )),
                })
            });
            Some(TenantWrite {
                id,
                name,
                properties,
                preference_set,
                branding,
            })
        }
        other => {
            errors.push(
                "tenant",
                format!("must be a tenant id or an object, got {}", type_name(other)),
            );
            None
        }
    }
}

fn parse_actor(value: &Value, errors: &mut Errors) -> Option<ActorParam> {
    match value {
        Value::String(id) => {
            errors.id("actor", id);
            Some(ActorParam {
                id: id.clone(),
                properties: None,
            })
        }
        Value::Object(map) => {
            check_keys(map, &["id", "properties"], "actor", errors);
            let Some(id) = string_field(map, "id", "actor", errors) else {
                errors.push("actor.id", "is required");
                return None;
            };
            Some(ActorParam {
                id,
                properties: object_field(map, "properties", "actor", errors),
            })
        }
        other => {
            errors.push(
                "actor",
                format!("must be a user id or an object, got {}", type_name(other)),
            );
            None
        }
    }
}
