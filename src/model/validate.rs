//! Validation of a preference set as written (preferences.md §2): walks the JSON and
//! collects every rule it breaks, each with the path it breaks it at.

use serde_json::{Map, Value};

use crate::model::condition::{ArgumentKind, NAMESPACES, Operator, split_variable};
use crate::model::{ChannelType, FieldError, STRATEGY_KEY, SetKind, check_id, join, type_name};

/// `value` as a valid set of `kind` (normalised), or every rule it breaks; `prefix` names
/// `value`'s place in the request.
pub(super) fn validate(
    value: &Value,
    kind: SetKind,
    prefix: &str,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut v = Validator {
        kind,
        errors: Vec::new(),
    };
    let set = v.set(value, prefix);
    if v.errors.is_empty() {
        Ok(set)
    } else {
        Err(v.errors)
    }
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
                if let Err(message) =
                    crate::model::condition::check_literal_argument(operator, argument)
                {
                    self.err(&field, message);
                }
            }
        }
    }
}
