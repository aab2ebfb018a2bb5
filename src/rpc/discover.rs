//! `rpc.discover` (ops.md §8): the OpenRPC document of every registered method, made from
//! the same params types the server parses (their `schemars::JsonSchema`), not written by
//! hand. `rpc::module` records each method as it registers it ([`Described`]), so a method
//! cannot be served without being described, nor described without being served.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::rpc::error::{
    CONFLICT, FORBIDDEN, INTERNAL, INVALID_PARAMS, INVALID_REQUEST, LIMIT_EXCEEDED, NOT_FOUND,
    UNAUTHENTICATED, WORKFLOW_NOT_FOUND,
};

/// The OpenRPC version the document follows.
const OPENRPC: &str = "1.2.6";

/// One method as the document shows it.
#[derive(Debug)]
pub struct Described {
    name: &'static str,
    /// The params object's JSON Schema (draft 7, subschemas inlined: each param's schema
    /// stands alone, as OpenRPC's content descriptors need).
    params: Value,
    /// How params are given: `by-name` (an object), or `by-position` for the
    /// unsubscription, which jsonrpsee reads as `[subscription id]`.
    structure: &'static str,
}

impl Described {
    /// A method whose params object is `T`.
    pub fn of<T: JsonSchema>(name: &'static str) -> Described {
        let generator = SchemaSettings::draft07()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let schema = generator.into_root_schema_for::<T>();
        Described {
            name,
            params: serde_json::to_value(schema).unwrap_or(Value::Null),
            structure: "by-name",
        }
    }

    /// A method that takes one param by position, a string.
    pub fn positional(name: &'static str, param: &'static str) -> Described {
        Described {
            name,
            params: json!({
                "type": "object",
                "properties": { param: { "type": "string" } },
                "required": [param],
            }),
            structure: "by-position",
        }
    }

    /// The OpenRPC method object.
    fn method(&self) -> Value {
        let required: Vec<&str> = self.params["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let params: Vec<Value> = self.params["properties"]
            .as_object()
            .map(|properties| {
                properties
                    .iter()
                    .map(|(name, schema)| {
                        json!({
                            "name": name,
                            "required": required.contains(&name.as_str()),
                            "schema": schema,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut method = Map::new();
        method.insert("name".into(), json!(self.name));
        method.insert("paramStructure".into(), json!(self.structure));
        method.insert("params".into(), Value::Array(params));
        method.insert(
            "result".into(),
            json!({
                "name": "result",
                "description": "the method's result, as rpc.md shows it",
                "schema": {},
            }),
        );
        method.insert("errors".into(), errors());
        Value::Object(method)
    }
}

/// The errors of rpc.md every method may answer (with `data.type` naming the kind).
fn errors() -> Value {
    let list: [(i32, &str); 10] = [
        (INVALID_REQUEST, "invalid_request"),
        (-32601, "method_not_found"),
        (INVALID_PARAMS, "invalid_params"),
        (NOT_FOUND, "not_found"),
        (UNAUTHENTICATED, "unauthenticated"),
        (FORBIDDEN, "forbidden"),
        (LIMIT_EXCEEDED, "limit_exceeded"),
        (CONFLICT, "conflict"),
        (WORKFLOW_NOT_FOUND, "workflow_not_found"),
        (INTERNAL, "internal_error"),
    ];
    Value::Array(
        list.iter()
            .map(|(code, kind)| json!({ "code": code, "message": kind, "data": { "type": kind } }))
            .collect(),
    )
}

/// The whole document.
pub fn document(methods: &[Described]) -> Value {
    json!({
        "openrpc": OPENRPC,
        "info": {
            "title": "prefsd",
            "description": "Notification preferences (Knock's model) over JSON-RPC 2.0 on a Unix socket",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "methods": methods.iter().map(Described::method).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use crate::api::Context;
    use crate::config::{Config, ConfigHandle, Durability, Overrides};
    use crate::store::Db;

    /// The document names every registered method (subscriptions included) and nothing
    /// else, and each method's params are its params type's fields.
    #[test]
    fn every_registered_method_is_described_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("prefsd.db"), Durability::Normal).expect("open");
        let config = ConfigHandle::new(
            Config::default(),
            dir.path().to_path_buf(),
            Overrides::default(),
            None,
        )
        .expect("config");
        let module =
            crate::rpc::module(Arc::new(Context::new(db.clone(), config))).expect("module");
        let registered: BTreeSet<String> = module.method_names().map(String::from).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (answer, _) = runtime
            .block_on(
                module.raw_json_request(r#"{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}"#, 1),
            )
            .expect("answered");
        let document: serde_json::Value = serde_json::from_str(answer.get()).expect("JSON");
        let described: BTreeSet<String> = document["result"]["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .filter_map(|m| m["name"].as_str().map(String::from))
            .collect();
        assert_eq!(described, registered);
        let evaluate = document["result"]["methods"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "preferences.evaluate"))
            .expect("evaluate");
        let params: BTreeSet<&str> = evaluate["params"]
            .as_array()
            .expect("params")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            params.contains("recipients") && params.contains("workflow"),
            "{params:?}"
        );
        let get = document["result"]["methods"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "tenants.get"))
            .expect("tenants.get");
        let tenant_id = get["params"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "tenant_id"))
            .expect("tenant_id");
        assert_eq!(tenant_id["required"], true);
        assert_eq!(tenant_id["schema"]["type"], "string");
        drop(module);
        db.close();
    }
}
