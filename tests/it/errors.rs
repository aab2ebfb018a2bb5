//! The error vocabulary of rpc.md (code, `data.type`, `data.errors[].field`), and bad input:
//! each gets its documented error, never a panic, and changes nothing.

use serde_json::{Value, json};

use crate::support::{Daemon, RpcError, SMALL_LIMITS_TOML};

/// A JSON-RPC request body.
fn request(method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params }).to_string()
}

/// POSTs raw bytes and returns the error of the (single) response.
async fn post_err(d: &Daemon, body: impl Into<Vec<u8>>) -> (Value, RpcError) {
    let response = d.http().await.post_json(body.into()).await;
    let json = response.json.clone().unwrap_or_else(|| {
        panic!(
            "status {}: not a JSON body: {:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    });
    // A top-level array is a batch: its one answer is the error.
    let json = match json {
        Value::Array(mut items) if items.len() == 1 => items.remove(0),
        other => other,
    };
    match RpcError::split(json.clone()) {
        Ok(result) => panic!("expected an error, got the result {result}"),
        Err(e) => (json, e),
    }
}

/// The `data.type` of each code (rpc.md, Errors).
fn type_of(code: i64) -> &'static str {
    match code {
        -32700 => "parse_error",
        -32600 => "invalid_request",
        -32601 => "method_not_found",
        -32602 => "invalid_params",
        -32001 => "not_found",
        -32002 => "unauthenticated",
        -32003 => "forbidden",
        -32004 => "limit_exceeded",
        -32005 => "conflict",
        -32006 => "workflow_not_found",
        _ => "internal_error",
    }
}

/// `depth` nested arrays.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_error_for_a_body_that_is_not_json() {
    let d = Daemon::start().await;
    for body in [
        &b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": "[..],
        b"hello",
        b"",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}}",
    ] {
        let (response, e) = post_err(&d, body).await;
        e.assert(-32700, "parse_error");
        assert_eq!(response["id"], Value::Null, "{response}");
    }
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request_for_what_is_not_a_json_rpc_request() {
    let d = Daemon::start().await;
    for body in [
        r#"{"jsonrpc":"1.0","id":1,"method":"daemon.ping"}"#,
        r#"{"id":1,"method":"daemon.ping"}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":42}"#,
        r#"42"#,
        r#""daemon.ping""#,
    ] {
        let (_, e) = post_err(&d, body).await;
        assert_eq!(
            (e.code, e.kind()),
            (-32600, "invalid_request"),
            "{body}: {e:?}"
        );
    }
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_found_for_an_unknown_method() {
    let d = Daemon::start().await;
    for method in ["users.nope", "", "Daemon.Ping", "bulkOperations.nope"] {
        let e = d.call_err(method, json!({})).await;
        e.assert(-32601, "method_not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_params_name_the_field() {
    let d = Daemon::start().await;
    let bad_condition = json!({ "workflows": { "w": { "conditions": [
        { "variable": "recipient.plan", "operator": "is_roughly", "argument": "pro" } ] } } });
    let cases = [
        // A missing param.
        ("users.get", json!({}), "user_id"),
        ("objects.get", json!({ "collection": "c" }), "object_id"),
        ("tenants.get", json!({}), "tenant_id"),
        (
            "users.setPreferences",
            json!({ "preferences": { "workflows": { "w": true } } }),
            "user_id",
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "u" }),
            "preferences",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w" }),
            "recipients",
        ),
        (
            "preferences.evaluate",
            json!({ "recipients": ["u"] }),
            "workflow",
        ),
        (
            "audiences.addMembers",
            json!({ "audience_key": "a" }),
            "members",
        ),
        // A param of the wrong type.
        ("users.get", json!({ "user_id": 5 }), "user_id"),
        (
            "users.identify",
            json!({ "user_id": "u", "properties": "tall" }),
            "properties",
        ),
        (
            "users.getPreferences",
            json!({ "user_id": "u", "raw": "yes" }),
            "raw",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": "u" }),
            "recipients",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u"], "data": [1] }),
            "data",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u"], "now": "tomorrow" }),
            "now",
        ),
        (
            "audiences.listMembers",
            json!({ "audience_key": "a", "limit": "ten" }),
            "limit",
        ),
        // An unknown param.
        ("users.get", json!({ "user_id": "u", "bogus": 1 }), "bogus"),
        (
            "tenants.set",
            json!({ "tenant_id": "t", "colour": "red" }),
            "colour",
        ),
        (
            "tenants.set",
            json!({ "tenant_id": "t", "settings": { "preference_set": null, "extra": 1 } }),
            "settings.extra",
        ),
        ("daemon.ping", json!({ "loud": true }), "loud"),
        (
            "users.get",
            json!({ "user_id": "u", "collection": "c" }),
            "collection",
        ),
        // Validation.
        ("users.identify", json!({ "user_id": "" }), "user_id"),
        (
            "users.identify",
            json!({ "user_id": "x".repeat(257) }),
            "user_id",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": [] }),
            "recipients",
        ),
        (
            "audiences.listMembers",
            json!({ "audience_key": "a", "limit": 0 }),
            "limit",
        ),
        (
            "audiences.listMembers",
            json!({ "audience_key": "a", "after": "not a cursor" }),
            "after",
        ),
        (
            "audiences.addMembers",
            json!({ "audience_key": "a", "members": [{ "user_id": "u" }, { "object_id": "o" }] }),
            "members.1",
        ),
        // Bad channel types, wherever they are.
        (
            "users.setPreferences",
            json!({ "user_id": "u", "preferences": { "channel_types": { "fax": true } } }),
            "preferences.channel_types.fax",
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "u", "preferences": { "categories": { "c": { "channel_types": { "fax": false } } } } }),
            "preferences.categories.c.channel_types.fax",
        ),
        (
            "tenants.set",
            json!({ "tenant_id": "t", "settings": { "preference_set": { "channel_types": { "fax": true } } } }),
            "settings.preference_set.channel_types.fax",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u"], "channels": [{ "type": "email" }, { "type": "fax" }] }),
            "channels.1.type",
        ),
        // Names built only when there is an error to name (`api::FieldPath`).
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u", ""] }),
            "recipients.1",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u", 5] }),
            "recipients.1",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u", { "id": "" }] }),
            "recipients.1.id",
        ),
        (
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u"], "channels": [{ "type": "email", "id": "" }] }),
            "channels.0.id",
        ),
        // Bad conditions and unknown sections.
        (
            "users.setPreferences",
            json!({ "user_id": "u", "preferences": bad_condition }),
            "preferences.workflows.w.conditions.0.operator",
        ),
        (
            "users.identify",
            json!({ "user_id": "u", "preferences": { "default": bad_condition } }),
            "preferences.default.workflows.w.conditions.0.operator",
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "u", "preferences": { "workflows": { "w": { "conditions": [
                { "variable": "recipient.plan", "operator": "equal_to" } ] } } } }),
            "preferences.workflows.w.conditions.0.argument",
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "u", "preferences": { "channel_typez": { "email": true } } }),
            "preferences.channel_typez",
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "u", "preferences": { "__persistence_strategy__": "append" } }),
            "preferences.__persistence_strategy__",
        ),
    ];
    for (method, params, field) in cases {
        let e = d.call_err(method, params.clone()).await;
        assert!(
            e.code == -32602
                && e.kind() == "invalid_params"
                && e.fields().iter().any(|f| f == field),
            "{method} {params}: expected invalid_params naming {field:?}, got {e:?}"
        );
        assert!(
            e.message.contains(field),
            "{method}: the message names the field {field:?}: {:?}",
            e.message
        );
    }
    // Params by position are refused: rpc.md params are by name.
    let e = d.call_err("users.get", json!(["u"])).await;
    e.assert_invalid("params");
    // None of these wrote anything.
    assert_eq!(
        d.counts().await,
        json!({ "users": 0, "objects": 0, "tenants": 0, "preference_sets": 0 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_where_a_method_says_so() {
    let d = Daemon::start().await;
    let e = d.call_err("users.get", json!({ "user_id": "ghost" })).await;
    e.assert(-32001, "not_found");
    assert!(e.message.contains("ghost"), "{e:?}");
    let e = d
        .call_err(
            "objects.get",
            json!({ "collection": "projects", "object_id": "p0" }),
        )
        .await;
    e.assert(-32001, "not_found");
    assert!(e.message.contains("p0"), "{e:?}");
    let e = d
        .call_err("tenants.get", json!({ "tenant_id": "t0" }))
        .await;
    e.assert(-32001, "not_found");
    assert!(e.message.contains("t0"), "{e:?}");
    // Reads of preferences are not errors for unknown recipients.
    d.call("users.getPreferences", json!({ "user_id": "ghost" }))
        .await;
    d.call("users.listPreferences", json!({ "user_id": "ghost" }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_exceeded_for_recipients_sets_and_bodies() {
    let d = Daemon::start_with(&[("prefsd.toml", SMALL_LIMITS_TOML)]).await;
    // 1000 recipients are fine; 1001 are not.
    let recipients: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": recipients, "channels": [{ "type": "email" }] }),
        )
        .await;
    assert_eq!(result["results"].as_array().map(Vec::len), Some(1000));
    let recipients: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let e = d
        .call_err(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": recipients }),
        )
        .await;
    e.assert(-32004, "limit_exceeded");
    assert_eq!(e.fields(), ["recipients"]);
    assert!(e.message.contains("1001"), "{e:?}");

    // A preference set over limits.max_preference_set_bytes (2048).
    let workflows: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("workflow-number-{i}"), json!(false)))
        .collect();
    let e = d
        .call_err(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": { "workflows": workflows } }),
        )
        .await;
    e.assert(-32004, "limit_exceeded");
    assert_eq!(e.fields(), ["preferences"]);
    assert!(e.message.contains("2048"), "{e:?}");
    let e = d
        .call_err(
            "tenants.set",
            json!({ "tenant_id": "t1", "settings": { "preference_set": { "workflows": workflows } } }),
        )
        .await;
    e.assert(-32004, "limit_exceeded");
    // A merge that grows a set past the limit is refused too.
    let half: serde_json::Map<String, Value> = workflows.clone().into_iter().take(50).collect();
    let rest: serde_json::Map<String, Value> = workflows.clone().into_iter().skip(50).collect();
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "workflows": half } }),
    )
    .await;
    let e = d
        .call_err(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {
                "__persistence_strategy__": "merge", "workflows": rest } }),
        )
        .await;
    e.assert(-32004, "limit_exceeded");
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "raw": true })
        )
        .await["workflows"],
        json!(half)
    );

    // A body over limits.max_request_bytes (65536).
    let big = "x".repeat(70_000);
    let (_, e) = post_err(
        &d,
        request(
            "users.identify",
            json!({ "user_id": "big", "properties": { "blob": big } }),
        ),
    )
    .await;
    e.assert(-32004, "limit_exceeded");
    assert!(e.message.contains("65536"), "{e:?}");
    d.call_err("users.get", json!({ "user_id": "big" }))
        .await
        .assert(-32001, "not_found");
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_not_found_with_a_strict_catalog() {
    let d = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\nstrict_workflows = true\n",
    )])
    .await;
    let e = d
        .call_err(
            "preferences.evaluate",
            json!({ "workflow": "nope", "recipients": [{ "id": "u1", "properties": { "a": 1 } }] }),
        )
        .await;
    e.assert(-32006, "workflow_not_found");
    // The inline identify of the refused call was not persisted.
    d.call_err("users.get", json!({ "user_id": "u1" }))
        .await
        .assert(-32001, "not_found");
    // An inline workflow object is not looked up in the catalog.
    d.call(
        "preferences.evaluate",
        json!({ "workflow": { "key": "nope" }, "recipients": ["u1"] }),
    )
    .await;
}

/// What the bad-input test compares before and after each request.
async fn state(d: &Daemon) -> Value {
    json!({
        "counts": d.counts().await,
        "u1": d.call("users.get", json!({ "user_id": "u1" })).await,
        "u1_sets": d.call("users.listPreferences", json!({ "user_id": "u1" })).await,
        "t1": d.call("tenants.get", json!({ "tenant_id": "t1" })).await,
        "beta": d.call("audiences.listMembers", json!({ "audience_key": "beta" })).await,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_error_and_changes_nothing() {
    let d = Daemon::start_with(&[("prefsd.toml", SMALL_LIMITS_TOML)]).await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "properties": { "name": "Ada" },
                "preferences": { "default": { "channel_types": { "sms": true } } } }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "t1", "name": "One",
                "settings": { "preference_set": { "categories": { "marketing": false } } } }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "u1" }] }),
    )
    .await;
    let before = state(&d).await;

    let mut invalid_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"users.identify","params":{"user_id":"u1","properties":{"name":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#""}}}"#);
    let deep_params = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"users.identify","params":{{"user_id":"u1","properties":{{"deep":{}}}}}}}"#,
        nested(10_000)
    );
    let inline_recipients: Vec<Value> = (0..1001)
        .map(|i| json!({ "id": format!("n{i}"), "properties": { "a": 1 } }))
        .collect();
    let big_set: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("workflow-number-{i}"), json!(false)))
        .collect();

    let cases: Vec<(&str, Vec<u8>, &[i64])> = vec![
        (
            "not JSON",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"users.identify\",\"params\":{\"user_id\":".to_vec(),
            &[-32700],
        ),
        ("invalid UTF-8 in a string", invalid_utf8, &[-32700]),
        (
            "a wrong type",
            request(
                "users.identify",
                json!({ "user_id": "u1", "properties": ["name", "Eve"] }),
            )
            .into(),
            &[-32602],
        ),
        (
            "a missing field",
            request(
                "users.setPreferences",
                json!({ "preferences": { "channel_types": { "sms": false } } }),
            )
            .into(),
            &[-32602],
        ),
        (
            "an unknown field",
            request(
                "users.identify",
                json!({ "user_id": "u1", "properties": { "name": "Eve" }, "nickname": "e" }),
            )
            .into(),
            &[-32602],
        ),
        (
            "an unknown field in a tenant",
            request(
                "tenants.set",
                json!({ "tenant_id": "t1", "name": "Two", "settings": { "preference_set": null, "extra": 1 } }),
            )
            .into(),
            &[-32602],
        ),
        (
            "a body over the limit",
            request(
                "users.identify",
                json!({ "user_id": "u1", "properties": { "name": "x".repeat(70_000) } }),
            )
            .into(),
            &[-32004],
        ),
        // Valid JSON, but deeper than any parser should recurse: refused as a parse error
        // or as invalid params, not a stack overflow.
        ("JSON nested 10 000 deep in params", deep_params.into(), &[-32700, -32602]),
        (
            "JSON nested 10 000 deep at the top",
            nested(10_000).into(),
            &[-32700, -32600],
        ),
        (
            "1001 recipients identified inline",
            request(
                "preferences.evaluate",
                json!({ "workflow": "w", "recipients": inline_recipients }),
            )
            .into(),
            &[-32004],
        ),
        (
            "a set over the size limit",
            request(
                "users.setPreferences",
                json!({ "user_id": "u1", "preferences": { "workflows": big_set } }),
            )
            .into(),
            &[-32004],
        ),
        (
            "inline identify: recipient 0 valid, recipient 1 invalid",
            request(
                "preferences.evaluate",
                json!({ "workflow": "w", "recipients": [
                    { "id": "u1", "properties": { "name": "Eve" },
                      "preferences": { "default": { "channel_types": { "sms": false } } } },
                    { "id": "fresh", "preferences": { "default": { "channel_types": { "fax": true } } } } ] }),
            )
            .into(),
            &[-32602],
        ),
        (
            "inline identify: recipient 1 fails inside the write (set too large)",
            request(
                "preferences.evaluate",
                json!({ "workflow": "w",
                        "tenant": { "id": "t1", "name": "Renamed" },
                        "actor": { "id": "actor-1", "properties": { "role": "admin" } },
                        "recipients": [
                    { "id": "u1", "properties": { "name": "Eve" } },
                    { "id": "fresh", "properties": { "a": 1 } },
                    { "id": "fresh-2", "preferences": { "default": { "workflows": big_set } } } ] }),
            )
            .into(),
            &[-32004],
        ),
        (
            "inline tenant invalid after valid recipients",
            request(
                "preferences.evaluate",
                json!({ "workflow": "w",
                        "tenant": { "id": "t1", "settings": { "preference_set": { "channels": { "": true } } } },
                        "recipients": [{ "id": "fresh", "properties": { "a": 1 } }] }),
            )
            .into(),
            &[-32602],
        ),
    ];
    // Every case runs, then every failure is reported at once.
    let mut failures = Vec::new();
    for (name, body, codes) in cases {
        let (_, e) = post_err(&d, body).await;
        if !codes.contains(&e.code) || e.kind() != type_of(e.code) || e.message.is_empty() {
            failures.push(format!("{name}: expected one of {codes:?}, got {e:?}"));
        }
        d.assert_alive().await;
        if state(&d).await != before {
            failures.push(format!("{name} changed the state"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for user in ["fresh", "fresh-2", "n0", "actor-1"] {
        d.call_err("users.get", json!({ "user_id": user }))
            .await
            .assert(-32001, "not_found");
    }
}
