//! JSON values inside params, read as serde_json reads them except that an object with the
//! same key twice is refused. serde_json keeps the last of two equal keys, so
//! `{"__persistence_strategy__": "merge", "__persistence_strategy__": "replace"}` would
//! silently replace a whole set; the derived params structs already refuse a repeated field
//! ("duplicate field"), and every `Value` or `Map` field of a params struct is read through
//! here (`#[serde(default, deserialize_with = "strict::...")]`), so no repeated key is
//! accepted anywhere in params.
//!
//! It costs nothing over serde_json's own reading: the repeat is found by the one map
//! lookup that inserting the key makes anyway.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// `Option<Value>`: absent or `null` is `None`.
pub fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Strict>::deserialize(d)?.map(|s| s.0))
}

/// `Option<Map>`: absent or `null` is `None`; anything but an object is refused as serde_json
/// refuses it ("expected a map").
pub fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    Ok(Option::<StrictObject>::deserialize(d)?.map(|s| s.0))
}

/// `Option<Option<Value>>`: a present `null` is `Some(None)`, an absent key `None` (with
/// `#[serde(default)]`).
pub fn present_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Value>>, D::Error> {
    Ok(Some(Option::<Strict>::deserialize(d)?.map(|s| s.0)))
}

/// The message of a repeated key; `rpc::parse_params` names the key as the field.
pub const DUPLICATE_KEY: &str = "duplicate key";

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(ValueVisitor).map(Strict)
    }
}

struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrictObject, D::Error> {
        d.deserialize_map(ObjectVisitor).map(StrictObject)
    }
}

/// The entries of an object, refusing a key given twice.
fn entries<'de, A: MapAccess<'de>>(mut access: A) -> Result<Map<String, Value>, A::Error> {
    let mut map = Map::new();
    while let Some(key) = access.next_key::<String>()? {
        let Strict(value) = access.next_value()?;
        match map.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
            Entry::Occupied(slot) => {
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE_KEY} `{}`",
                    slot.key()
                )));
            }
        }
    }
    Ok(map)
}

/// serde_json's own `Value` visitor, with [`entries`] for objects.
struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        entries(access).map(Value::Object)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Map<String, Value>, A::Error> {
        entries(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Params {
        #[serde(default, deserialize_with = "value")]
        v: Option<Value>,
        #[serde(default, deserialize_with = "object")]
        o: Option<Map<String, Value>>,
    }

    /// Whatever serde_json reads into a `Value` (with no repeated key), this reads the same.
    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"v": null}"#,
            r#"{"v": {"a": [1, -2, 3.5, 1e300, "x\u00e9", true, null, {}], "b": {"c": {}}}}"#,
            r#"{"v": 18446744073709551615, "o": {"k": [{"a": 1}, {"a": 2}]}}"#,
            r#"{"o": null}"#,
            r#"{}"#,
        ] {
            let ours: Params = serde_json::from_str(text).expect(text);
            let theirs: Value = serde_json::from_str(text).expect(text);
            assert_eq!(
                ours.v.as_ref(),
                theirs.get("v").filter(|v| !v.is_null()),
                "{text}"
            );
            assert_eq!(
                ours.o.map(Value::Object).as_ref(),
                theirs.get("o").filter(|v| !v.is_null()),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_a_repeated_key_at_any_depth() {
        for (text, key) in [
            (r#"{"v": {"a": 1, "a": 2}}"#, "a"),
            (r#"{"v": [{"x": {"b": 1, "c": 2, "b": 1}}]}"#, "b"),
            (r#"{"o": {"k": 1, "k": 1}}"#, "k"),
            (r#"{"o": {"k": {"j": 1, "\u006a": 1}}}"#, "j"),
        ] {
            let error = serde_json::from_str::<Params>(text)
                .expect_err(text)
                .to_string();
            assert!(
                error.starts_with(&format!("{DUPLICATE_KEY} `{key}`")),
                "{text}: {error}"
            );
        }
        let error = serde_json::from_str::<Params>(r#"{"o": 5}"#).expect_err("not a map");
        assert!(error.to_string().contains("expected a map"), "{error}");
    }
}
