//! The one check of a request's envelope that jsonrpsee does not make: whether its `id` can
//! be read. jsonrpsee reads a request object as a call and, failing that, as a
//! notification, whose shape has no `id` and ignores one if present. So a request whose `id`
//! it cannot read (`1e400`, `-1`, `{}`) or that gives `id` twice would run as a notification,
//! unanswered. This module finds such requests in the message text, the way jsonrpsee would
//! read them, so that `rpc::wire` can refuse them with `invalid_request` instead: over HTTP
//! from the recorded body, over WebSocket from the message (`rpc::ws`).
//!
//! It also holds what those outer layers hand `rpc::wire` about a request — the recorded
//! body ([`RequestBody`]) and the stand-in call for a refused message ([`REFUSED`],
//! [`Refusal`]) — so that the layers import downwards only: `http` and `ws` and `wire` all
//! import this module, and `wire` imports neither of the other two.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use jsonrpsee::types::Id;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;

/// What is wrong with a request's `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdProblem {
    /// Not a string, a non-negative integer or `null` (jsonrpsee reads no other id).
    Unreadable,
    /// The key `id` is given more than once.
    Repeated,
}

impl IdProblem {
    /// What is wrong, as the message of the field `id`.
    pub fn message(self) -> &'static str {
        match self {
            IdProblem::Unreadable => "must be a string, a non-negative integer or null",
            IdProblem::Repeated => "is given more than once",
        }
    }
}

/// The problem with the `id` of `text`, one request object. `None` when its id is fine or
/// absent, and when `text` is not a JSON object at all (jsonrpsee refuses that itself).
pub fn id_problem(text: &[u8]) -> Option<IdProblem> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let problem = de.deserialize_map(Envelope).ok()?;
    de.end().ok()?;
    problem
}

/// The elements of the batch `text` (a JSON array) whose `id` has a problem: their index,
/// their place in `text`, and the problem. Empty when `text` is not a JSON array.
pub fn batch_id_problems(text: &[u8]) -> Vec<(usize, Range<usize>, IdProblem)> {
    let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(text) else {
        return Vec::new();
    };
    let start = text.as_ptr() as usize;
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let problem = id_problem(item.get().as_bytes())?;
            // `item` borrows from `text`, so its address is inside it.
            let from = item.get().as_ptr() as usize - start;
            Some((i, from..from + item.get().len(), problem))
        })
        .collect()
}

/// Reads an object's keys, and the value of `id` as jsonrpsee would.
struct Envelope;

impl<'de> Visitor<'de> for Envelope {
    type Value = Option<IdProblem>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<IdProblem>, A::Error> {
        let mut ids = 0;
        let mut problem = None;
        while let Some(is_id) = map.next_key_seed(IsId)? {
            if !is_id {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            ids += 1;
            // The raw text, so that a number serde_json cannot hold (1e400) is still read
            // here, and then judged by jsonrpsee's own `Id`.
            let raw: &RawValue = map.next_value()?;
            if serde_json::from_str::<Id<'_>>(raw.get()).is_err() {
                problem = Some(IdProblem::Unreadable);
            }
        }
        Ok(if ids > 1 {
            Some(IdProblem::Repeated)
        } else {
            problem
        })
    }
}

/// Whether a key is `id` (escaped or not).
struct IsId;

impl<'de> de::DeserializeSeed<'de> for IsId {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IsId {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == "id")
    }
}

// ---------------------------------------------------------------------------------------
// What the outer layers (`rpc::http`, `rpc::ws`) hand the RPC middleware (`rpc::wire`) about
// a request: they sit in the request's extensions or stand in for a refused message.

/// The body of the HTTP request a call came in, as jsonrpsee read it (the chunks are shared,
/// not copied), for the RPC middleware: it travels in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestBody(pub Arc<Mutex<Vec<Bytes>>>);

impl RequestBody {
    /// The problem with the `id` of a body that is one request object (`rpc::envelope`).
    pub fn id_problem(&self) -> Option<IdProblem> {
        id_problem(&recorded(&self.0))
    }

    /// The problems with the `id`s in a batch body, by position (`rpc::envelope`).
    pub fn batch_id_problems(&self) -> Vec<(usize, IdProblem)> {
        batch_id_problems(&recorded(&self.0))
            .into_iter()
            .map(|(i, _, problem)| (i, problem))
            .collect()
    }
}

/// The recorded body in one piece (empty if the lock was poisoned).
pub fn recorded(seen: &Mutex<Vec<Bytes>>) -> Vec<u8> {
    seen.lock()
        .map(|chunks| chunks.iter().flat_map(|c| c.iter().copied()).collect())
        .unwrap_or_default()
}

/// The method of the call that stands for a refused message (`rpc.` names are reserved by
/// JSON-RPC 2.0 for the protocol itself, so no method of ours can collide with it).
/// `rpc::wire` answers it with the error its params name and runs nothing.
pub const REFUSED: &str = "rpc.prefsd.refused";

/// Why a message was refused, as [`REFUSED`]'s params.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Id(IdProblem),
    /// Larger than this many bytes.
    TooLarge(u32),
}

impl Refusal {
    /// The [`REFUSED`] call for this refusal.
    pub fn call(self) -> String {
        let params = match self {
            Refusal::Id(IdProblem::Unreadable) => json!({ "id": "unreadable" }),
            Refusal::Id(IdProblem::Repeated) => json!({ "id": "repeated" }),
            Refusal::TooLarge(limit) => json!({ "too_large": limit }),
        };
        json!({ "jsonrpc": "2.0", "id": null, "method": REFUSED, "params": params }).to_string()
    }

    /// Reads the params of a [`REFUSED`] call; `None` if they are not one of ours.
    pub fn from_params(params: Option<&str>) -> Option<Refusal> {
        let params: serde_json::Value = serde_json::from_str(params?).ok()?;
        match (
            params.get("id").and_then(|v| v.as_str()),
            params.get("too_large"),
        ) {
            (Some("unreadable"), None) => Some(Refusal::Id(IdProblem::Unreadable)),
            (Some("repeated"), None) => Some(Refusal::Id(IdProblem::Repeated)),
            (None, Some(limit)) => Some(Refusal::TooLarge(u32::try_from(limit.as_u64()?).ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ids_jsonrpsee_cannot_read() {
        let request = |id: &str| format!(r#"{{"jsonrpc":"2.0","method":"m","id":{id}}}"#);
        for id in ["1", "0", "18446744073709551615", "\"a\"", "\"\"", "null"] {
            assert_eq!(id_problem(request(id).as_bytes()), None, "{id}");
        }
        for id in [
            "1e400",
            "-1",
            "1.5",
            "1e2",
            "18446744073709551616",
            "{}",
            "[1]",
            "true",
        ] {
            assert_eq!(
                id_problem(request(id).as_bytes()),
                Some(IdProblem::Unreadable),
                "{id}"
            );
        }
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m","id":2}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","\u0069d":1}"#,
            r#"{"id":1e400,"id":"a"}"#,
        ] {
            assert_eq!(
                id_problem(text.as_bytes()),
                Some(IdProblem::Repeated),
                "{text}"
            );
        }
        // No id, or not a request object: not this module's to judge.
        for text in [
            r#"{"jsonrpc":"2.0","method":"m"}"#,
            "[1]",
            "42",
            r#"{"id":1e400"#,
            "",
        ] {
            assert_eq!(id_problem(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn places_the_bad_elements_of_a_batch() {
        let text = r#"[ {"id":1,"method":"a"}, {"id":1e400,"method":"b"},{"method":"c"},{"id":2,"id":3} ]"#;
        let problems = batch_id_problems(text.as_bytes());
        let found: Vec<_> = problems
            .iter()
            .map(|(i, range, problem)| (*i, &text[range.clone()], *problem))
            .collect();
        assert_eq!(
            found,
            [
                (1, r#"{"id":1e400,"method":"b"}"#, IdProblem::Unreadable),
                (3, r#"{"id":2,"id":3}"#, IdProblem::Repeated),
            ]
        );
        assert!(batch_id_problems(b"{}").is_empty());
    }
}
