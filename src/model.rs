//! The preference model: validated preference sets, channels, workflows and conditions.
//!
//! A [`PreferenceSet`] is kept as the JSON object the client wrote, after validation and
//! normalisation, because every operation on it (RFC 7396 merge on write, the deep merge of
//! the default hierarchy on read, lazy lookups during evaluation) is a walk over the same
//! tree. The type guarantees that the tree obeys preferences.md §2: it can only be built by
//! [`PreferenceSet::parse`] or by the merge functions in `resolve`, which only combine valid
//! sets.
//!
//! This module does no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod change;
pub mod compact;
pub mod condition;
mod validate;

/// The longest workflow key, category key, channel id or recipient id, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The key that locks a node of a default set (preferences.md §4.3).
pub const STRATEGY_KEY: &str = "__strategy__";

/// The key of a write request that picks merge or replace (preferences.md §3).
pub const PERSISTENCE_KEY: &str = "__persistence_strategy__";

/// The set id of a recipient's set that applies when no tenant is given.
pub const DEFAULT_SET: &str = "default";

/// One of the six channel types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    Email,
    Sms,
    Push,
    Chat,
    InAppFeed,
    Http,
}

impl ChannelType {
    pub const ALL: [ChannelType; 6] = [
        ChannelType::Email,
        ChannelType::Sms,
        ChannelType::Push,
        ChannelType::Chat,
        ChannelType::InAppFeed,
        ChannelType::Http,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Email => "email",
            ChannelType::Sms => "sms",
            ChannelType::Push => "push",
            ChannelType::Chat => "chat",
            ChannelType::InAppFeed => "in_app_feed",
            ChannelType::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelType> {
        ChannelType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ChannelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message goes: a channel type and, optionally, one channel instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Channel {
    /// The six channel types without ids: what a workflow goes to when nobody says otherwise.
    pub fn all_types() -> Vec<Channel> {
        ChannelType::ALL
            .into_iter()
            .map(|channel_type| Channel {
                channel_type,
                id: None,
            })
            .collect()
    }
}

/// A kind of notification, as evaluation sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub key: String,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub commercial: bool,
    #[serde(default)]
    pub override_preferences: bool,
}

impl Workflow {
    /// The `workflow` namespace of conditions (preferences.md §6.1).
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "key": self.key,
            "categories": self.categories,
            "commercial": self.commercial,
            "override_preferences": self.override_preferences,
        })
    }
}

/// One field that failed validation: a JSON path and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every field that failed validation in one input; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            errors: vec![FieldError::new(field, message)],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Who wrote a preference set, which decides what it may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// A user's or object's own set: no `__strategy__`.
    Recipient,
    /// The environment default or a tenant default: `__strategy__: "replace"` allowed on
    /// `channel_types`, `channels` and workflow or category settings (and `"merge"`, which
    /// is dropped: it means "not locked").
    Default,
}

/// A valid, normalised preference set: a JSON object with only the five known sections,
/// no `null` anywhere, no empty top-level section, and no `id`, `__typename` or
/// `__persistence_strategy__`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreferenceSet(Map<String, Value>);

impl PreferenceSet {
    /// The five sections, in the order responses show them.
    pub const SECTIONS: [&'static str; 5] = [
        "workflows",
        "categories",
        "channel_types",
        "channels",
        "commercial_subscribed",
    ];

    pub fn empty() -> PreferenceSet {
        PreferenceSet(Map::new())
    }

    /// Validates `value` as a preference set of `kind`; `prefix` is the JSON path of `value`
    /// in the request (e.g. `preferences`), used to name fields in errors.
    pub fn parse(
        value: &Value,
        kind: SetKind,
        prefix: &str,
    ) -> Result<PreferenceSet, ValidationError> {
        validate::validate(value, kind, prefix)
            .map(PreferenceSet)
            .map_err(|errors| ValidationError { errors })
    }

    /// Wraps a map that is known to be valid. Only `resolve` uses it, for sets it built by
    /// merging valid sets.
    pub(crate) fn from_valid(map: Map<String, Value>) -> PreferenceSet {
        PreferenceSet(map)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form: the normalised JSON object.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The response shape of rpc.md: all six top-level keys plus `__typename`, with `null`
    /// for an empty section.
    pub fn to_response(&self, id: &str) -> Value {
        self.clone().into_response(id)
    }

    /// The keys of the response shape, `__typename` and `id` besides the sections, in the
    /// order serde_json's map writes them (sorted), for the writers that skip the map
    /// (`resolve::Stack::write_response`).
    pub const RESPONSE_KEYS: [&'static str; 7] = [
        PreferenceSet::TYPENAME_KEY,
        "categories",
        "channel_types",
        "channels",
        "commercial_subscribed",
        PreferenceSet::ID_KEY,
        "workflows",
    ];
    pub const TYPENAME_KEY: &'static str = "__typename";
    pub const TYPENAME: &'static str = "PreferenceSet";
    pub const ID_KEY: &'static str = "id";

    /// [`PreferenceSet::to_response`], reusing this set's values instead of copying them.
    pub fn into_response(mut self, id: &str) -> Value {
        let mut out = Map::new();
        out.insert(
            PreferenceSet::TYPENAME_KEY.into(),
            Value::from(PreferenceSet::TYPENAME),
        );
        out.insert(PreferenceSet::ID_KEY.into(), Value::from(id));
        for section in PreferenceSet::SECTIONS {
            out.insert(
                section.into(),
                self.0.remove(section).unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }
}

/// How a write combines with what is stored (preferences.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Replace,
    Merge,
}

/// A validated write: the body of `setPreferences` and friends, with its strategy taken out.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceSetRequest {
    pub strategy: Strategy,
    /// The body without `__persistence_strategy__`, `id` and `__typename`. For a replace it is
    /// a valid set; for a merge it is an RFC 7396 patch whose result is validated by
    /// [`PreferenceSetRequest::apply`].
    body: Value,
}

impl PreferenceSetRequest {
    /// Reads a write body. `default` is the strategy when the body does not name one.
    /// A replace is validated whole here; a merge is checked for shape here and validated
    /// again, merged, in `apply`, so that `null` can delete what a valid set holds.
    ///
    /// This does not know who writes, so it accepts what a default set may hold (a
    /// `__strategy__` lock included, for `tenants.set`); [`PreferenceSetRequest::apply`]
    /// enforces the kind. [`PreferenceSetRequest::parse_as`] checks the kind up front.
    pub fn parse(
        value: &Value,
        default: Strategy,
        prefix: &str,
    ) -> Result<PreferenceSetRequest, ValidationError> {
        PreferenceSetRequest::parse_as(value, default, SetKind::Default, prefix)
    }

    /// [`PreferenceSetRequest::parse`] for a write of a set of `kind`, so that every error,
    /// a misplaced `__strategy__` included, is reported at once.
    pub fn parse_as(
        value: &Value,
        default: Strategy,
        kind: SetKind,
        prefix: &str,
    ) -> Result<PreferenceSetRequest, ValidationError> {
        let Value::Object(map) = value else {
            return Err(ValidationError::one(prefix, "must be an object"));
        };
        let strategy = match map.get(PERSISTENCE_KEY) {
            None | Some(Value::Null) => default,
            Some(Value::String(s)) if s == "merge" => Strategy::Merge,
            Some(Value::String(s)) if s == "replace" => Strategy::Replace,
            Some(_) => {
                return Err(ValidationError::one(
                    join(prefix, PERSISTENCE_KEY),
                    "must be \"merge\" or \"replace\"",
                ));
            }
        };
        let mut body = map.clone();
        body.remove(PERSISTENCE_KEY);
        body.remove("id");
        body.remove("__typename");
        let body = Value::Object(body);
        match strategy {
            Strategy::Replace => {
                PreferenceSet::parse(&body, kind, prefix)?;
            }
            Strategy::Merge => {
                // A patch is validated after merging; a patch that is valid on its own
                // (nulls aside) gives better errors, so check it now with nulls removed.
                PreferenceSet::parse(&strip_nulls(&body), kind, prefix)?;
            }
        }
        Ok(PreferenceSetRequest { strategy, body })
    }

    /// The set that results from applying this write to what is stored.
    pub fn apply(
        &self,
        stored: Option<&PreferenceSet>,
        kind: SetKind,
        prefix: &str,
    ) -> Result<PreferenceSet, ValidationError> {
        match (self.strategy, stored) {
            (Strategy::Merge, Some(stored)) => {
                let mut target = stored.to_value();
                merge_patch(&mut target, &self.body);
                PreferenceSet::parse(&target, kind, prefix)
            }
            _ => PreferenceSet::parse(&self.body, kind, prefix),
        }
    }
}

/// RFC 7396 JSON Merge Patch: objects merge key by key, recursively; any other patch value
/// replaces; `null` deletes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("target was just made an object")
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Joins a JSON path and a key: `join("preferences", "workflows")`.
pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks an id (user, object, collection, tenant, set id): non-empty, at most 256 bytes.
pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    match id_problem(id) {
        Some(message) => Err(FieldError::new(field, message)),
        None => Ok(()),
    }
}

/// What is wrong with an id, if anything: [`check_id`] without a field name, for callers
/// that build the name only when there is an error to name.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("must not be empty".to_string())
    } else if id.len() > MAX_KEY_BYTES {
        Some(format!("must be at most {MAX_KEY_BYTES} bytes"))
    } else {
        None
    }
}

/// The JSON type of a value, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Who receives a message: a user (no collection) or an object in a collection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecipientKey {
    pub collection: Option<String>,
    pub id: String,
}

impl RecipientKey {
    pub fn user(id: impl Into<String>) -> RecipientKey {
        RecipientKey {
            collection: None,
            id: id.into(),
        }
    }

    pub fn object(collection: impl Into<String>, id: impl Into<String>) -> RecipientKey {
        RecipientKey {
            collection: Some(collection.into()),
            id: id.into(),
        }
    }
}

impl fmt::Display for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.collection {
            Some(c) => write!(f, "{c}/{}", self.id),
            None => f.write_str(&self.id),
        }
    }
}
