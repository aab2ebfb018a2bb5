//! Data-driven tests of the pure core: one JSON file per case under `tests/eval/`, one
//! [`check`] function that is the only caller of the core API. `UPDATE_EXPECT=1 cargo test`
//! rewrites each case's `expected` from what the code does; review the diff before keeping it.
//!
//! A case has a `kind`:
//! - `evaluate`: `environment`?, `tenant_default`?, `recipient_sets`? (set id → set),
//!   `tenant`?, `tenant_object`?, `workflow`, `channels`? (default: all six types),
//!   `recipient`? (`{id, collection?, properties?, created_at?, updated_at?}`, default
//!   `{"id": "u1"}`), `actor`? (the same shape), `data`?, `vars`?, `run`?, `audiences`?,
//!   `now`?; `expected`: one decision per channel, `{type, id, send, reason}`.
//! - `validate`: `set_kind` (`recipient` | `default`), `input`; `expected`: `{"ok": set}` or
//!   `{"errors": [{field, message?}]}` (a missing `message` is not compared).
//! - `write`: `set_kind`? (as for `validate`; default `recipient`), `stored`?, `request`,
//!   `default_strategy`? (`replace` | `merge`); `expected` as for `validate`.
//! - `effective`: `environment`?, `tenant_default`?, `recipient_sets`?, `tenant`?; `expected`:
//!   the response-shaped effective set.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::eval::{Context, Entity, Properties, decide, empty_object};
use crate::model::compact::{CompactSet, Interner};
use crate::model::{Channel, PreferenceSet, PreferenceSetRequest, SetKind, Strategy, Workflow};
use crate::resolve::{LayerId, SetRef, Sources, Stack};

const CASES: &str = "tests/eval";

#[test]
fn eval_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(CASES);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/eval exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 80,
        "expected at least 80 cases, found {}",
        paths.len()
    );
    let failures: Vec<String> = paths.iter().filter_map(|p| check(p).err()).collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn smoke() {
    let case = json!({
        "kind": "evaluate",
        "recipient_sets": { "default": { "categories": { "marketing": false } } },
        "workflow": { "key": "promo", "categories": ["marketing"] },
        "channels": [{ "type": "email" }],
    });
    let got = run(&case).expect("a valid case");
    assert_eq!(got[0]["send"], json!(false));
    assert_eq!(got[0]["reason"]["path"], json!("categories.marketing"));
}

/// Runs one case file and compares (or, with `UPDATE_EXPECT=1`, rewrites) its `expected`.
fn check(path: &Path) -> Result<(), String> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let mut case: Value =
        serde_json::from_str(&text).map_err(|e| format!("{name}: not JSON: {e}"))?;
    let actual = run(&case).map_err(|e| format!("{name}: {e}"))?;
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        case["expected"] = actual;
        let text = serde_json::to_string_pretty(&case).expect("a Value serialises") + "\n";
        std::fs::write(path, text).map_err(|e| format!("{name}: {e}"))?;
        return Ok(());
    }
    let expected = case
        .get("expected")
        .ok_or_else(|| format!("{name}: no `expected`"))?;
    if matches(expected, &actual) {
        Ok(())
    } else {
        Err(format!(
            "{name}: {}\nexpected: {}\nactual:   {}",
            case["description"].as_str().unwrap_or(""),
            expected,
            actual
        ))
    }
}

/// Exact equality, except that an expected error without `message` matches any message,
/// and an expected reason without `considered` matches any list of considered layers (the
/// cases of `considered` name it; the others are about the decision).
fn matches(expected: &Value, actual: &Value) -> bool {
    if let (Value::Array(want), Value::Array(got)) = (expected, actual)
        && want.iter().all(|d| d.get("reason").is_some())
    {
        return want.len() == got.len()
            && want.iter().zip(got).all(|(w, g)| {
                let mut g = g.clone();
                if w["reason"].get("considered").is_none()
                    && let Some(reason) = g.get_mut("reason").and_then(Value::as_object_mut)
                {
                    reason.remove("considered");
                }
                *w == g
            });
    }
    match (expected.get("errors"), actual.get("errors")) {
        (Some(Value::Array(want)), Some(Value::Array(got))) => {
            want.len() == got.len()
                && want.iter().zip(got).all(|(w, g)| {
                    w["field"] == g["field"]
                        && (w.get("message").is_none() || w["message"] == g["message"])
                })
        }
        _ => expected == actual,
    }
}

fn run(case: &Value) -> Result<Value, String> {
    match case["kind"].as_str() {
        Some("evaluate") => evaluate(case),
        Some("validate") => Ok(outcome(PreferenceSet::parse(
            &case["input"],
            set_kind(case),
            "preferences",
        ))),
        Some("write") => {
            let kind = set_kind(case);
            let stored = optional_set(case, "stored", kind)?;
            let strategy = match case["default_strategy"].as_str() {
                Some("merge") => Strategy::Merge,
                _ => Strategy::Replace,
            };
            let result = PreferenceSetRequest::parse(&case["request"], strategy, "preferences")
                .and_then(|req| req.apply(stored.as_ref(), kind, "preferences"));
            Ok(outcome(result))
        }
        Some("effective") => {
            let sets = Sets::read(case)?;
            let set_id = sets.tenant.clone().unwrap_or_else(|| "default".into());
            let stack = sets.stack();
            let response = stack.effective().to_response(&set_id);
            // The writer `getPreferences` answers with writes the same bytes as serde_json
            // does for the materialised set (key order included).
            let mut written = Vec::new();
            stack.write_response(&set_id, &mut written);
            let serde = serde_json::to_string(&response).map_err(|e| e.to_string())?;
            let written = String::from_utf8(written).map_err(|e| e.to_string())?;
            if written != serde {
                return Err(format!("written {written}\nserde   {serde}"));
            }
            Ok(response)
        }
        other => Err(format!("unknown kind {other:?}")),
    }
}

/// The case's `set_kind`: `default` for the environment or a tenant default, else a
/// recipient's set.
fn set_kind(case: &Value) -> SetKind {
    match case["set_kind"].as_str() {
        Some("default") => SetKind::Default,
        _ => SetKind::Recipient,
    }
}

fn outcome(result: Result<PreferenceSet, crate::model::ValidationError>) -> Value {
    match result {
        Ok(set) => json!({ "ok": set.to_value() }),
        Err(e) => json!({ "errors": e.errors }),
    }
}

fn optional_set(case: &Value, key: &str, kind: SetKind) -> Result<Option<PreferenceSet>, String> {
    match case.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => PreferenceSet::parse(v, kind, key)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// The sets of a case, owned, so that a `Stack` can borrow them.
struct Sets {
    environment: PreferenceSet,
    tenant_default: Option<PreferenceSet>,
    recipient: Map<String, Value>,
    /// The recipient's sets in the compact form the daemon evaluates them in (the read
    /// cache's: `model::compact`), so every case checks that form too.
    parsed_recipient: Vec<(String, CompactSet)>,
    tenant: Option<String>,
}

impl Sets {
    fn read(case: &Value) -> Result<Sets, String> {
        let recipient = case["recipient_sets"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut parsed_recipient = Vec::new();
        let keys = Interner::default();
        for (id, set) in &recipient {
            let set =
                PreferenceSet::parse(set, SetKind::Recipient, &format!("recipient_sets.{id}"))
                    .map_err(|e| e.to_string())?;
            parsed_recipient.push((id.clone(), CompactSet::new(&set, &keys)));
        }
        Ok(Sets {
            environment: optional_set(case, "environment", SetKind::Default)?.unwrap_or_default(),
            tenant_default: optional_set(case, "tenant_default", SetKind::Default)?,
            recipient,
            parsed_recipient,
            tenant: case["tenant"].as_str().map(str::to_string),
        })
    }

    fn recipient_set(&self, id: &str) -> Option<SetRef<'_>> {
        debug_assert_eq!(self.recipient.len(), self.parsed_recipient.len());
        self.parsed_recipient
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, s)| SetRef::Compact(s))
    }

    fn stack(&self) -> Stack<'_> {
        Stack::for_recipient(&Sources {
            environment: &self.environment,
            tenant: self
                .tenant
                .as_deref()
                .map(|t| (t, self.tenant_default.as_ref())),
            recipient_default: self.recipient_set("default"),
            recipient_tenant: self.tenant.as_deref().and_then(|t| self.recipient_set(t)),
        })
    }
}

fn evaluate(case: &Value) -> Result<Value, String> {
    let sets = Sets::read(case)?;
    let workflow: Workflow =
        serde_json::from_value(case["workflow"].clone()).map_err(|e| format!("workflow: {e}"))?;
    let channels: Vec<Channel> = match case.get("channels") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("channels: {e}"))?,
        None => Channel::all_types(),
    };
    let recipient = case
        .get("recipient")
        .cloned()
        .unwrap_or_else(|| json!({ "id": "u1" }));
    let actor = case.get("actor").cloned();
    let tenant_object = match (case.get("tenant_object"), &sets.tenant) {
        (Some(t), _) => t.clone(),
        (None, Some(id)) => json!({ "id": id }),
        (None, None) => Value::Null,
    };
    let audiences: Vec<String> =
        serde_json::from_value(case.get("audiences").cloned().unwrap_or(json!([])))
            .map_err(|e| format!("audiences: {e}"))?;
    let audiences: Vec<std::sync::Arc<str>> = audiences.iter().map(|a| a.as_str().into()).collect();
    let now: Timestamp = case["now"]
        .as_str()
        .unwrap_or("2026-11-29T12:00:00Z")
        .parse()
        .map_err(|e| format!("now: {e}"))?;
    let workflow_value = workflow.to_value();
    let null = Value::Null;
    let ctx = Context {
        recipient: entity(&recipient).ok_or("recipient needs an id")?,
        actor: actor.as_ref().and_then(entity),
        data: case.get("data").unwrap_or(empty_object()),
        tenant: &tenant_object,
        vars: case.get("vars").unwrap_or(&null),
        workflow: &workflow_value,
        run: case.get("run").unwrap_or(&null),
        audiences: &audiences,
        now,
        budget: crate::eval::Budget::unlimited(),
    };
    let stack = sets.stack();
    let default_set = sets.recipient_set("default");
    // Invariant: deciding against the materialised effective set gives the same answer as the
    // lazy walk, so reads and evaluation cannot disagree.
    let effective = stack.effective();
    let flat = Stack::from_layers(&[(LayerId::Environment, SetRef::Json(&effective))]);
    let mut out = Vec::new();
    for channel in &channels {
        let decision = decide(&workflow, channel, &stack, default_set, &ctx);
        let check = decide(&workflow, channel, &flat, default_set, &ctx);
        if (check.send, check.reason.code, &check.reason.path)
            != (decision.send, decision.reason.code, &decision.reason.path)
        {
            return Err(format!(
                "lazy and materialised evaluation disagree: {decision:?} vs {check:?}"
            ));
        }
        let mut row = serde_json::to_value(&decision).map_err(|e| e.to_string())?;
        row["type"] = json!(channel.channel_type);
        row["id"] = json!(channel.id);
        out.push(row);
    }
    Ok(Value::Array(out))
}

/// A case's `recipient` or `actor` as evaluation sees it; `None` without an `id`.
fn entity(v: &Value) -> Option<Entity<'_>> {
    static NULL: Value = Value::Null;
    Some(Entity {
        id: v["id"].as_str()?,
        collection: v["collection"].as_str(),
        properties: Properties::Parsed(v.get("properties").unwrap_or(&NULL)),
        created_at: v["created_at"].as_str(),
        updated_at: v["updated_at"].as_str(),
    })
}

#[test]
fn reason_codes_are_named_as_serde_names_them() {
    use crate::eval::ReasonCode;
    for code in ReasonCode::ALL {
        assert_eq!(serde_json::to_value(code).ok(), Some(json!(code.as_str())));
    }
}

/// The hash keys that make list conditions O(n+m) (issue 22.2) must agree with `equal`, the
/// pairwise comparison they replace, on every pair of a sample of the coercion's corners.
#[test]
fn list_keys_agree_with_equal() {
    use super::{Key, equal};
    let values = [
        json!(null),
        json!(""),
        json!(" "),
        json!(true),
        json!(false),
        json!("true"),
        json!("false"),
        json!(0),
        json!(-0.0),
        json!("0"),
        json!("-0"),
        json!(1),
        json!(1.0),
        json!("1"),
        json!("1.0"),
        json!(" 1 "),
        json!("1e0"),
        json!(2.5),
        json!("2.5"),
        json!("NaN"),
        json!("inf"),
        json!("abc"),
        json!([]),
        json!([1]),
        json!([1.0]),
        json!(["1"]),
        json!({}),
        json!({ "a": 1, "b": [true] }),
        json!({ "b": [true], "a": 1 }),
        json!({ "a": "1" }),
    ];
    for a in &values {
        for b in &values {
            assert_eq!(
                equal(a, b),
                Key::of(a) == Key::of(b),
                "equal and the list keys disagree on {a} and {b}"
            );
        }
    }
}
