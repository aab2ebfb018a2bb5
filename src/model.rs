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
        let mut v = Validator {
            kind,
            errors: Vec::new(),
        };
        let set = v.set(value, prefix);
        if v.errors.is_empty() {
            Ok(PreferenceSet(set))
        } else {
            Err(ValidationError { errors: v.errors })
        }
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

    /// [`PreferenceSet::to_response`], reusing this set's values instead of copying them.
    pub fn into_response(mut self, id: &str) -> Value {
        let mut out = Map::new();
        out.insert("__typename".into(), Value::from("PreferenceSet"));
        out.insert("id".into(), Value::from(id));
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

/// The condition operators of preferences.md §6.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    EqualTo,
    NotEqualTo,
    GreaterThan,
    LessThan,
    GreaterThanOrEqualTo,
    LessThanOrEqualTo,
    Contains,
    NotContains,
    ContainsAll,
    NotContainsAll,
    Empty,
    NotEmpty,
    Exists,
    NotExists,
    IsTimestamp,
    IsNotTimestamp,
    IsTimestampBefore,
    IsTimestampOnOrAfter,
    IsTimestampBeforeDate,
    IsTimestampOnOrAfterDate,
    IsTimestampBetween,
    IsBetween,
    IsAudienceMember,
    IsNotAudienceMember,
}

/// What kind of argument an operator reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgumentKind {
    /// The operator ignores its argument.
    None,
    /// Any JSON value.
    Any,
    /// A number, or a string that parses as one.
    Number,
    /// A list: a JSON array or a string holding one.
    List,
    /// A time: RFC 3339, an ISO 8601 date, unix seconds, or relative to now.
    Time,
    /// A list of two times.
    TimeRange,
    /// A list of two numbers.
    NumberRange,
    /// A string (an audience key).
    Text,
}

impl Operator {
    pub const ALL: [Operator; 24] = [
        Operator::EqualTo,
        Operator::NotEqualTo,
        Operator::GreaterThan,
        Operator::LessThan,
        Operator::GreaterThanOrEqualTo,
        Operator::LessThanOrEqualTo,
        Operator::Contains,
        Operator::NotContains,
        Operator::ContainsAll,
        Operator::NotContainsAll,
        Operator::Empty,
        Operator::NotEmpty,
        Operator::Exists,
        Operator::NotExists,
        Operator::IsTimestamp,
        Operator::IsNotTimestamp,
        Operator::IsTimestampBefore,
        Operator::IsTimestampOnOrAfter,
        Operator::IsTimestampBeforeDate,
        Operator::IsTimestampOnOrAfterDate,
        Operator::IsTimestampBetween,
        Operator::IsBetween,
        Operator::IsAudienceMember,
        Operator::IsNotAudienceMember,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::EqualTo => "equal_to",
            Operator::NotEqualTo => "not_equal_to",
            Operator::GreaterThan => "greater_than",
            Operator::LessThan => "less_than",
            Operator::GreaterThanOrEqualTo => "greater_than_or_equal_to",
            Operator::LessThanOrEqualTo => "less_than_or_equal_to",
            Operator::Contains => "contains",
            Operator::NotContains => "not_contains",
            Operator::ContainsAll => "contains_all",
            Operator::NotContainsAll => "not_contains_all",
            Operator::Empty => "empty",
            Operator::NotEmpty => "not_empty",
            Operator::Exists => "exists",
            Operator::NotExists => "not_exists",
            Operator::IsTimestamp => "is_timestamp",
            Operator::IsNotTimestamp => "is_not_timestamp",
            Operator::IsTimestampBefore => "is_timestamp_before",
            Operator::IsTimestampOnOrAfter => "is_timestamp_on_or_after",
            Operator::IsTimestampBeforeDate => "is_timestamp_before_date",
            Operator::IsTimestampOnOrAfterDate => "is_timestamp_on_or_after_date",
            Operator::IsTimestampBetween => "is_timestamp_between",
            Operator::IsBetween => "is_between",
            Operator::IsAudienceMember => "is_audience_member",
            Operator::IsNotAudienceMember => "is_not_audience_member",
        }
    }

    pub fn parse(s: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|op| op.as_str() == s)
    }

    pub fn argument_kind(self) -> ArgumentKind {
        use Operator::*;
        match self {
            Empty | NotEmpty | Exists | NotExists | IsTimestamp | IsNotTimestamp => {
                ArgumentKind::None
            }
            EqualTo | NotEqualTo | Contains | NotContains => ArgumentKind::Any,
            GreaterThan | LessThan | GreaterThanOrEqualTo | LessThanOrEqualTo => {
                ArgumentKind::Number
            }
            ContainsAll | NotContainsAll => ArgumentKind::List,
            IsTimestampBefore
            | IsTimestampOnOrAfter
            | IsTimestampBeforeDate
            | IsTimestampOnOrAfterDate => ArgumentKind::Time,
            IsTimestampBetween => ArgumentKind::TimeRange,
            IsBetween => ArgumentKind::NumberRange,
            IsAudienceMember | IsNotAudienceMember => ArgumentKind::Text,
        }
    }
}

/// The namespaces a condition variable or dynamic argument may name (preferences.md §6.1).
pub const NAMESPACES: [&str; 7] = [
    "recipient",
    "actor",
    "data",
    "tenant",
    "vars",
    "workflow",
    "run",
];

/// A condition, borrowed from a valid set. Building one re-checks the shape, so evaluation
/// stays total even if it were handed something unvalidated.
#[derive(Clone, Copy, Debug)]
pub struct Condition<'a> {
    pub variable: &'a str,
    pub operator: Operator,
    pub argument: &'a Value,
    /// The condition as written, for reasons.
    pub source: &'a Value,
}

impl<'a> Condition<'a> {
    pub fn from_value(value: &'a Value) -> Result<Condition<'a>, String> {
        static NULL: Value = Value::Null;
        let map = value.as_object().ok_or("must be an object")?;
        let variable = map
            .get("variable")
            .and_then(Value::as_str)
            .ok_or("variable must be a string")?;
        let operator = map
            .get("operator")
            .and_then(Value::as_str)
            .and_then(Operator::parse)
            .ok_or("operator must be a known operator")?;
        Ok(Condition {
            variable,
            operator,
            argument: map.get("argument").unwrap_or(&NULL),
            source: value,
        })
    }
}

/// Splits `ns.path` into a known namespace and a non-empty path.
pub fn split_variable(s: &str) -> Option<(&str, &str)> {
    let (ns, path) = s.split_once('.')?;
    (NAMESPACES.contains(&ns) && !path.is_empty()).then_some((ns, path))
}

/// Walks a value and collects every rule it breaks.
struct Validator {
    kind: SetKind,
    errors: Vec<FieldError>,
}

impl Validator {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn set(&mut self, value: &Value, path: &str) -> Map<String, Value> {
        let mut out = Map::new();
        let Some(map) = self.object(value, path) else {
            return out;
        };
        for (key, value) in map {
            let field = join(path, key);
            if value.is_null() || key == "id" || key == "__typename" {
                continue;
            }
            let normalised = match key.as_str() {
                "workflows" | "categories" => self.settings(value, &field),
                "channel_types" => self.channel_types(value, &field),
                "channels" => self.channels(value, &field),
                "commercial_subscribed" => self.toggle(value, &field),
                STRATEGY_KEY => {
                    self.err(&field, "is allowed only on channel_types, channels and workflow or category settings");
                    continue;
                }
                _ => {
                    self.err(&field, "unknown key");
                    continue;
                }
            };
            let empty_section = normalised.as_object().is_some_and(Map::is_empty);
            if !empty_section {
                out.insert(key.clone(), normalised);
            }
        }
        out
    }

    fn object<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            _ => {
                self.err(path, format!("must be an object, got {}", type_name(value)));
                None
            }
        }
    }

    fn key(&mut self, field: &str, key: &str) -> bool {
        match check_id(field, key) {
            Ok(()) => true,
            Err(e) => {
                self.errors.push(e);
                false
            }
        }
    }

    /// `__strategy__` on a node that may be locked: `"replace"` is kept; `"merge"`, which
    /// means "not locked" (§4.3), is accepted and dropped, so that a merge write of it onto a
    /// locked node removes the lock and reads never echo it.
    fn strategy(&mut self, value: &Value, field: &str) -> Option<Value> {
        if self.kind == SetKind::Recipient {
            self.err(
                field,
                "is allowed only in the environment default and tenant defaults",
            );
            return None;
        }
        match value.as_str() {
            Some("replace") => Some(value.clone()),
            Some("merge") => None,
            _ => {
                self.err(field, "must be \"replace\" or \"merge\"");
                None
            }
        }
    }

    /// `workflows` or `categories`: key → bool or setting object.
    fn settings(&mut self, value: &Value, path: &str) -> Value {
        let mut out = Map::new();
        let Some(map) = self.object(value, path) else {
            return Value::Object(out);
        };
        for (key, value) in map {
            let field = join(path, key);
            if !self.key(&field, key) || value.is_null() {
                continue;
            }
            let setting = match value {
                Value::Bool(b) => Value::Bool(*b),
                Value::Object(setting) => self.setting(setting, &field),
                other => {
                    self.err(
                        &field,
                        format!("must be a boolean or an object, got {}", type_name(other)),
                    );
                    continue;
                }
            };
            out.insert(key.clone(), setting);
        }
        Value::Object(out)
    }

    fn setting(&mut self, map: &Map<String, Value>, path: &str) -> Value {
        let mut out = Map::new();
        for (key, value) in map {
            let field = join(path, key);
            if value.is_null() {
                continue;
            }
            let normalised = match key.as_str() {
                "channel_types" => self.channel_types(value, &field),
                "channels" => self.channels(value, &field),
                "conditions" => self.conditions(value, &field),
                STRATEGY_KEY => match self.strategy(value, &field) {
                    Some(v) => v,
                    None => continue,
                },
                _ => {
                    self.err(
                        &field,
                        "unknown key; expected channel_types, channels or conditions",
                    );
                    continue;
                }
            };
            out.insert(key.clone(), normalised);
        }
        Value::Object(out)
    }

    /// `channel_types`: the six types → toggle, optionally locked.
    fn channel_types(&mut self, value: &Value, path: &str) -> Value {
        self.channel_map(value, path, |v, field, key| {
            let known = ChannelType::parse(key).is_some();
            if !known {
                v.err(field, "unknown channel type");
            }
            known
        })
    }

    /// `channels`: channel ids → toggle, optionally locked.
    fn channels(&mut self, value: &Value, path: &str) -> Value {
        self.channel_map(value, path, |v, field, key| v.key(field, key))
    }

    /// A map of channel keys (checked by `check_key`) to toggles, with `__strategy__`.
    fn channel_map(
        &mut self,
        value: &Value,
        path: &str,
        check_key: impl Fn(&mut Self, &str, &str) -> bool,
    ) -> Value {
        let mut out = Map::new();
        let Some(map) = self.object(value, path) else {
            return Value::Object(out);
        };
        for (key, value) in map {
            let field = join(path, key);
            if key == STRATEGY_KEY {
                if let Some(v) = self.strategy(value, &field) {
                    out.insert(key.clone(), v);
                }
                continue;
            }
            if !check_key(self, &field, key) {
                continue;
            }
            if let Some(v) = self.toggle_or_null(value, &field) {
                out.insert(key.clone(), v);
            }
        }
        Value::Object(out)
    }

    fn toggle_or_null(&mut self, value: &Value, field: &str) -> Option<Value> {
        (!value.is_null()).then(|| self.toggle(value, field))
    }

    /// A bool, or `{ "conditions": [...] }`. Unlike a workflow or category setting, the
    /// object must carry its list (§2, as in Knock's schema): `{}` would be stored and echoed
    /// in a shape Knock's SDKs reject.
    fn toggle(&mut self, value: &Value, path: &str) -> Value {
        match value {
            Value::Bool(b) => Value::Bool(*b),
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, value) in map {
                    let field = join(path, key);
                    if value.is_null() {
                        continue;
                    }
                    if key == "conditions" {
                        out.insert(key.clone(), self.conditions(value, &field));
                    } else {
                        self.err(&field, "unknown key; expected conditions");
                    }
                }
                // An unknown key has its error already; this one is for what normalises
                // to `{}`: `{}`, `{"conditions": null}`, any keys that are all `null`.
                let unknown_key = map
                    .iter()
                    .any(|(key, value)| key != "conditions" && !value.is_null());
                if !out.contains_key("conditions") && !unknown_key {
                    self.err(
                        path,
                        "an object here must carry conditions, a list of conditions",
                    );
                }
                Value::Object(out)
            }
            other => {
                self.err(
                    path,
                    format!(
                        "must be a boolean or an object with conditions, got {}",
                        type_name(other)
                    ),
                );
                Value::Null
            }
        }
    }

    fn conditions(&mut self, value: &Value, path: &str) -> Value {
        let Value::Array(list) = value else {
            self.err(
                path,
                format!("must be an array of conditions, got {}", type_name(value)),
            );
            return Value::Array(Vec::new());
        };
        for (i, condition) in list.iter().enumerate() {
            self.condition(condition, &format!("{path}.{i}"));
        }
        value.clone()
    }

    fn condition(&mut self, value: &Value, path: &str) {
        let Some(map) = self.object(value, path) else {
            return;
        };
        for key in map.keys() {
            if !matches!(key.as_str(), "variable" | "operator" | "argument") {
                self.err(
                    &join(path, key),
                    "unknown key; expected variable, operator or argument",
                );
            }
        }
        match map.get("variable") {
            Some(Value::String(s)) if split_variable(s).is_some() => {}
            Some(Value::String(_)) => self.err(
                &join(path, "variable"),
                format!(
                    "must be <namespace>.<path> with a namespace of {}",
                    NAMESPACES.join(", ")
                ),
            ),
            Some(other) => self.err(
                &join(path, "variable"),
                format!("must be a string, got {}", type_name(other)),
            ),
            None => self.err(&join(path, "variable"), "is required"),
        }
        let operator = match map.get("operator") {
            Some(Value::String(s)) => match Operator::parse(s) {
                Some(op) => Some(op),
                None => {
                    self.err(&join(path, "operator"), format!("unknown operator {s:?}"));
                    None
                }
            },
            Some(other) => {
                self.err(
                    &join(path, "operator"),
                    format!("must be a string, got {}", type_name(other)),
                );
                None
            }
            None => {
                self.err(&join(path, "operator"), "is required");
                None
            }
        };
        let Some(operator) = operator else { return };
        let field = join(path, "argument");
        match map.get("argument") {
            None if operator.argument_kind() != ArgumentKind::None => {
                self.err(&field, format!("is required by {}", operator.as_str()));
            }
            None => {}
            Some(argument) => {
                if let Err(message) = crate::eval::check_literal_argument(operator, argument) {
                    self.err(&field, message);
                }
            }
        }
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
