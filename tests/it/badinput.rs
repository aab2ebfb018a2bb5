//! Bad input that `errors.rs` and `transport.rs` do not already try: request ids, params
//! that are not an object, duplicate keys and bad escapes, numbers out of range, opaque ids,
//! huge arrays and deep nesting within the limits, bad conditions, HTTP methods, paths,
//! headers and framing. Each gets a clear answer (or is served, where that is the
//! documented behaviour), changes nothing when refused, and leaves the daemon up.
//!
//! Tests marked `#[ignore = "pending: ..."]` state the behaviour wanted where the daemon
//! does not have it yet; the catalogue in the README lists them as gaps.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Daemon, RpcError, TIMEOUT};

/// POSTs a raw body and returns the single response object.
async fn post(d: &Daemon, body: impl Into<Vec<u8>>) -> Value {
    let response = d.http().await.post_json(body.into()).await;
    response.json.clone().unwrap_or_else(|| {
        panic!(
            "status {}: not JSON: {:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })
}

/// One raw HTTP/1.1 exchange (the request should say `connection: close`): the status and
/// the body.
async fn exchange(d: &Daemon, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connecting");
    // The daemon may answer (431, 400) and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer, then the connection closed");
    // A daemon that closes with some of the request unread makes the kernel report a reset
    // once its answer has been read; the answer is what is checked below.
    if let Err(e) = read {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "reading: {e}"
        );
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#;

fn request_with(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_of_every_valid_kind_are_echoed_back() {
    let d = Daemon::start().await;
    let long = "i".repeat(5000);
    for id in [
        json!("a"),
        json!(""),
        json!(long),
        json!("é ✓ \u{0}"),
        json!(0),
        json!(i64::MAX),
        json!(u64::MAX),
        Value::Null,
    ] {
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "daemon.ping" });
        let response = post(&d, body.to_string()).await;
        assert_eq!(
            response,
            json!({ "jsonrpc": "2.0", "id": id, "result": "pong" })
        );
    }
}

/// Requests, each writing user `{prefix}-{i}`, whose `id` jsonrpsee cannot read: JSON-RPC
/// allows any number as an id, jsonrpsee reads only unsigned integers (and serde_json no
/// number beyond f64, `1e400`), and an `id` given twice fails jsonrpsee's request shape.
/// Each would run as a notification if not refused. Returns (body, user).
fn requests_with_unreadable_ids(prefix: &str) -> Vec<(String, String)> {
    let identify = |i: usize, id: &str| {
        let user = format!("{prefix}-{i}");
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"users.identify","params":{{"user_id":"{user}"}}}}"#
        );
        (body, user)
    };
    let mut requests: Vec<_> = [r#"{"a":1}"#, "[1]", "true", "1.5", "1e300", "-1", "1e400"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| identify(i, id))
        .collect();
    for (i, ids) in [r#"1,"id":2"#, r#""a","\u0069d":"a""#]
        .into_iter()
        .enumerate()
    {
        requests.push(identify(100 + i, ids));
    }
    requests
}

/// Asserts one answer is the refusal of a request with an unreadable `id`.
fn assert_refused_id(answer: &Value) {
    let e = RpcError::split(answer.clone()).expect_err("an invalid request, not a notification");
    e.assert(-32600, "invalid_request");
    assert_eq!(e.fields(), ["id"], "{answer}");
    assert_eq!(answer["id"], Value::Null, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_an_id_of_the_wrong_type_are_refused_and_not_run() {
    let d = Daemon::start().await;
    for (body, user) in requests_with_unreadable_ids("bad-id") {
        let response = post(&d, body.clone()).await;
        assert_refused_id(&response);
        d.call_err("users.get", json!({ "user_id": user }))
            .await
            .assert(-32001, "not_found");
    }
}

/// In a batch each such request gets its refusal in place, while the calls and true
/// notifications beside it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_unreadable_ids_in_a_batch_are_refused_in_place() {
    let d = Daemon::start().await;
    let bad = requests_with_unreadable_ids("batch-bad");
    let mut items = vec![
        r#"{"jsonrpc":"2.0","id":"first","method":"daemon.ping"}"#.to_string(),
        r#"{"jsonrpc":"2.0","method":"users.identify","params":{"user_id":"notified"}}"#
            .to_string(),
    ];
    items.extend(bad.iter().map(|(body, _)| body.clone()));
    let response = d
        .http()
        .await
        .post_json(format!("[{}]", items.join(",")))
        .await;
    let Some(Value::Array(answers)) = response.json.clone() else {
        panic!("a batch answer: {:?}", response.body);
    };
    // The ping, then one refusal per bad request; the notification is not answered.
    assert_eq!(answers.len(), 1 + bad.len(), "{answers:?}");
    assert_eq!(answers[0]["result"], "pong");
    answers[1..].iter().for_each(assert_refused_id);
    for (_, user) in &bad {
        d.call_err("users.get", json!({ "user_id": user }))
            .await
            .assert(-32001, "not_found");
    }
    d.call("users.get", json!({ "user_id": "notified" })).await;
    // A batch of bad requests only is answered too, not taken for notifications.
    let only_bad: Vec<_> = bad.iter().map(|(body, _)| body.clone()).collect();
    let response = d
        .http()
        .await
        .post_json(format!("[{}]", only_bad.join(",")))
        .await;
    let Some(Value::Array(answers)) = response.json.clone() else {
        panic!("a batch answer: {:?}", response.body);
    };
    assert_eq!(answers.len(), bad.len());
    answers.iter().for_each(assert_refused_id);
    assert_eq!(d.counts().await["users"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_that_are_not_an_object_are_invalid_params() {
    let d = Daemon::start().await;
    for params in [
        json!("u1"),
        json!(5),
        json!(true),
        json!([{ "user_id": "u1" }]),
    ] {
        d.call_err("users.get", params)
            .await
            .assert_invalid("params");
    }
    // `null` or no params read as `{}`.
    d.call("daemon.ping", Value::Null).await;
    let response = post(
        &d,
        r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":null}"#,
    )
    .await;
    assert_eq!(response["result"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_bad_escapes_and_numbers_out_of_range_are_invalid_params() {
    let d = Daemon::start().await;
    let cases: [(&str, &str); 6] = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"users.get","params":{"user_id":"a","user_id":"b"}}"#,
            "user_id",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"users.identify","params":{"user_id":"\ud800"}}"#,
            "user_id",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"audiences.listMembers","params":{"audience_key":"a","limit":1e400}}"#,
            "limit",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"audiences.listMembers","params":{"audience_key":"a","limit":-1}}"#,
            "limit",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"audiences.listMembers","params":{"audience_key":"a","limit":18446744073709551616}}"#,
            "limit",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"audiences.listMembers","params":{"audience_key":"a","limit":1.5}}"#,
            "limit",
        ),
    ];
    for (body, field) in cases {
        let response = post(&d, body).await;
        let e = RpcError::split(response).expect_err(body);
        e.assert_invalid(field);
    }
    assert_eq!(d.counts().await["users"], 0);
}

/// serde_json keeps the last of two equal keys; params refuse them at any depth, naming the
/// key, so a repeated `__persistence_strategy__` cannot turn a merge into a replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_inside_preferences_and_properties_are_refused() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "properties": { "plan": "pro" } }),
    )
    .await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "workflows": { "w1": false } } }),
    )
    .await;
    let before = d
        .call("users.getPreferences", json!({ "user_id": "u1" }))
        .await;
    let user_before = d.call("users.get", json!({ "user_id": "u1" })).await;
    let call = |method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#)
    };
    let cases = [
        (
            call(
                "users.setPreferences",
                r#"{"user_id":"u1","preferences":{"__persistence_strategy__":"merge","__persistence_strategy__":"replace","workflows":{"w2":true}}}"#,
            ),
            "preferences.__persistence_strategy__",
        ),
        (
            call(
                "users.setPreferences",
                r#"{"user_id":"u1","preferences":{"workflows":{"w1":true,"w1":false}}}"#,
            ),
            "preferences.workflows.w1",
        ),
        (
            call(
                "users.identify",
                r#"{"user_id":"u1","properties":{"plan":"free","plan":"pro"}}"#,
            ),
            "properties.plan",
        ),
        (
            call(
                "users.identify",
                r#"{"user_id":"u1","preferences":{"default":{"categories":{"c":true,"c":false}}}}"#,
            ),
            "preferences.default.categories.c",
        ),
        (
            call(
                "tenants.set",
                r#"{"tenant_id":"t1","properties":{"a":1,"\u0061":2}}"#,
            ),
            "properties.a",
        ),
        (
            call(
                "preferences.evaluate",
                r#"{"workflow":"w1","recipients":[{"id":"u1","properties":{"x":1,"x":2}}]}"#,
            ),
            "recipients[0].properties.x",
        ),
        (
            call(
                "users.bulkSetPreferences",
                r#"{"user_ids":["u1"],"preferences":{"workflows":{},"workflows":{}}}"#,
            ),
            "preferences.workflows",
        ),
    ];
    for (body, field) in cases {
        let response = post(&d, body.clone()).await;
        let e = RpcError::split(response).expect_err(&body);
        e.assert_invalid(field);
    }
    assert_eq!(
        d.call("users.getPreferences", json!({ "user_id": "u1" }))
            .await,
        before
    );
    assert_eq!(
        d.call("users.get", json!({ "user_id": "u1" })).await,
        user_before
    );
    assert_eq!(d.counts().await["tenants"], 0);
    assert_eq!(
        d.call("bulkOperations.list", json!({})).await["items"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_opaque_strings_of_1_to_256_bytes() {
    let d = Daemon::start().await;
    // Any character, as long as the id is 1..=256 bytes of UTF-8 (errors.rs: 0 and 257).
    for id in [
        "a\u{0}b".to_string(),
        "with space".to_string(),
        "ünï ✓ 🦖".to_string(),
        "../../etc/passwd".to_string(),
        "'; DROP TABLE recipients; --".to_string(),
        "x".repeat(256),
    ] {
        let user = d.call("users.identify", json!({ "user_id": id })).await;
        assert_eq!(user["id"], id);
        assert_eq!(
            d.call("users.get", json!({ "user_id": id })).await["id"],
            id
        );
    }
    assert_eq!(d.counts().await["users"], 6);
}

/// `depth` nested objects around `{}`.
fn nested_object(depth: usize) -> Value {
    (0..depth).fold(json!({}), |inner, _| json!({ "x": inner }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_arrays_and_deep_nesting_within_the_limits() {
    let d = Daemon::start().await;
    // Arrays that a limit bounds: refused whole.
    let users: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let e = d
        .call_err(
            "users.bulkSetPreferences",
            json!({ "user_ids": users, "preferences": { "channel_types": { "sms": false } } }),
        )
        .await;
    e.assert(-32004, "limit_exceeded");
    assert_eq!(e.fields(), ["user_ids"]);
    // Arrays only a size limit bounds (here `limits.max_properties_bytes`, 64 KiB): served.
    let list: Vec<u32> = (0..10_000).collect();
    let user = d
        .call(
            "users.identify",
            json!({ "user_id": "arrays", "properties": { "list": list } }),
        )
        .await;
    assert_eq!(
        user["properties"]["list"].as_array().map(Vec::len),
        Some(10_000)
    );
    let members: Vec<Value> = (0..3000)
        .map(|i| json!({ "user_id": format!("m{i}") }))
        .collect();
    assert_eq!(
        d.call(
            "audiences.addMembers",
            json!({ "audience_key": "big", "members": members })
        )
        .await,
        json!({ "count": 3000 })
    );
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({ "jsonrpc": "2.0", "id": i, "method": "daemon.ping" }))
        .collect();
    let answers = post(&d, Value::Array(batch).to_string()).await;
    assert_eq!(answers.as_array().map(Vec::len), Some(1000));
    // Nesting: within serde's recursion limit it is data; past it, invalid params naming
    // where (errors.rs: 10 000 deep is refused before any method runs).
    let user = d
        .call(
            "users.identify",
            json!({ "user_id": "deep", "properties": { "deep": nested_object(100) } }),
        )
        .await;
    assert!(user["properties"]["deep"]["x"]["x"].is_object());
    let e = d
        .call_err(
            "users.identify",
            json!({ "user_id": "deeper", "properties": { "deep": nested_object(200) } }),
        )
        .await;
    e.assert(-32602, "invalid_params");
    assert!(
        e.fields().iter().any(|f| f.starts_with("properties.deep")),
        "{e:?}"
    );
    let e = d
        .call_err(
            "users.setPreferences",
            json!({ "user_id": "deeper", "preferences": { "workflows": { "w": { "conditions": [
                { "variable": "data.n", "operator": "equal_to", "argument": nested_object(200) } ] } } } }),
        )
        .await;
    e.assert(-32602, "invalid_params");
    d.call_err("users.get", json!({ "user_id": "deeper" }))
        .await
        .assert(-32001, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_bounds_the_number_of_channels() {
    let d = Daemon::start().await;
    let channels: Vec<Value> = (0..10_000).map(|_| json!({ "type": "email" })).collect();
    let e = match d
        .try_call(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["u1"], "channels": channels }),
        )
        .await
    {
        Ok(result) => panic!(
            "served {:?} decisions; expected limit_exceeded",
            result["results"][0]["channels"].as_array().map(Vec::len)
        ),
        Err(e) => e,
    };
    e.assert(-32004, "limit_exceeded");
    assert_eq!(e.fields(), ["channels"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_conditions_name_the_field_and_unreadable_arguments_fail_the_condition() {
    let d = Daemon::start().await;
    let condition = |c: Value| json!({ "user_id": "c", "preferences": { "workflows": { "w": { "conditions": [c] } } } });
    let field = "preferences.workflows.w.conditions.0";
    for (c, at) in [
        (
            json!({ "variable": "plan", "operator": "equal_to", "argument": "pro" }),
            format!("{field}.variable"),
        ),
        (
            json!({ "variable": "nope.plan", "operator": "equal_to", "argument": "pro" }),
            format!("{field}.variable"),
        ),
        (
            json!({ "variable": "data.t", "operator": "is_timestamp_before", "argument": "yesterday-ish" }),
            format!("{field}.argument"),
        ),
        (
            json!({ "variable": "data.n", "operator": "is_between", "argument": 5 }),
            format!("{field}.argument"),
        ),
        (json!("data.n > 5"), field.to_string()),
        (
            json!({ "variable": "data.n", "operator": "equal_to", "argument": 1, "extra": true }),
            format!("{field}.extra"),
        ),
    ] {
        let e = d
            .call_err("users.setPreferences", condition(c.clone()))
            .await;
        assert!(
            e.code == -32602 && e.fields().contains(&at),
            "{c}: expected invalid_params naming {at}, got {e:?}"
        );
    }
    assert_eq!(d.counts().await["preference_sets"], 0);
    // A dynamic argument is only known at evaluation: unreadable, the condition is false,
    // and the reason says why.
    d.call(
        "users.setPreferences",
        condition(
            json!({ "variable": "data.n", "operator": "greater_than", "argument": "data.missing" }),
        ),
    )
    .await;
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["c"], "channels": [{ "type": "email" }], "data": { "n": 5 } }),
        )
        .await;
    let decision = &result["results"][0]["channels"][0];
    assert_eq!(decision["send"], false, "{decision}");
    assert_eq!(decision["reason"]["code"], "condition_failed", "{decision}");
    assert!(
        decision["reason"]["condition"]["error"].is_string(),
        "{decision}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_other_than_post_get_405_and_any_path_is_the_root() {
    let d = Daemon::start().await;
    for method in ["HEAD", "OPTIONS", "PATCH", "GET", "PUT", "DELETE", "TRACE"] {
        let request = format!(
            "{method} / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{PING}",
            PING.len()
        );
        let (status, body) = exchange(&d, request.as_bytes()).await;
        assert_eq!(status, 405, "{method}: {body}");
    }
    // The path is not looked at, except that `/v1/…` is the REST API's (rest.md §2.1):
    // JSON-RPC has one endpoint.
    for path in ["/nope", "/v2/users?x=1", "/v1x", "/%ff%00", "*"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{PING}",
            PING.len()
        );
        let (status, body) = exchange(&d, request.as_bytes()).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"jsonrpc":"2.0","id":1,"result":"pong"}"#),
            "{path}"
        );
    }
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_gets_4xx_and_the_daemon_goes_on() {
    let d = Daemon::start().await;
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big = format!("x-big: {}\r\n", "a".repeat(500_000));
    // Over the daemon's 256 KiB head limit but under hyper's buffer: 431 only with the
    // limit, which also makes the 500 KB case 431 however the bytes arrive.
    let over = format!("x-big: {}\r\n", "a".repeat(300_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("150 headers", request_with(PING, &many), 431),
        ("a 500 KB header", request_with(PING, &big), 431),
        ("a 300 KB header", request_with(PING, &over), 431),
        ("a garbage request line", b"HELLO\r\n\r\n".to_vec(), 400),
        (
            "a non-numeric content-length",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}".to_vec(),
            400,
        ),
    ];
    for (name, request, expected) in cases {
        let (status, body) = exchange(&d, &request).await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    // Framings that are fine: a 100 KB header, chunked (also with a content-length, which
    // chunked overrides, RFC 9112 §6.3), HTTP/1.0.
    let both = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{PING}\r\n0\r\n\r\n",
        PING.len()
    );
    let (status, body) = exchange(&d, both.as_bytes()).await;
    assert_eq!((status, body.contains("pong")), (200, true), "{body}");
    let (status, _) = exchange(
        &d,
        &request_with(PING, &format!("x-big: {}\r\n", "a".repeat(100_000))),
    )
    .await;
    assert_eq!(status, 200);
    let chunked = format!(
        "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{PING}\r\n0\r\n\r\n",
        PING.len()
    );
    let (status, body) = exchange(&d, chunked.as_bytes()).await;
    assert_eq!((status, body.contains("pong")), (200, true), "{body}");
    let http10 = format!(
        "POST / HTTP/1.0\r\nhost: x\r\ncontent-length: {}\r\n\r\n{PING}",
        PING.len()
    );
    let mut stream = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connecting");
    stream.write_all(http10.as_bytes()).await.expect("sending");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("HTTP/1.0 closes after the answer")
        .expect("reading");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("200 OK") && answer.contains("pong"),
        "{answer}"
    );
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_over_http_says_it_needs_a_websocket() {
    let d = Daemon::start().await;
    let e = d
        .call_err("bulkOperations.subscribe", json!({ "id": "x" }))
        .await;
    assert_ne!(e.code, -32603, "not an internal error: {e:?}");
    assert!(e.message.to_lowercase().contains("websocket"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_over_http_is_not_an_internal_error() {
    let d = Daemon::start().await;
    let e = d
        .call_err("bulkOperations.unsubscribe", json!({ "id": "x" }))
        .await;
    assert_ne!(e.code, -32603, "not an internal error: {e:?}");
    assert!(e.message.to_lowercase().contains("websocket"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_in_an_http_batch_is_not_an_internal_error() {
    let d = Daemon::start().await;
    let body = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "bulkOperations.unsubscribe", "params": { "id": "x" } },
        { "jsonrpc": "2.0", "id": 2, "method": "daemon.ping" },
    ]);
    let answers = post(&d, body.to_string()).await;
    let answers = answers.as_array().expect("a batch answer");
    let by_id = |id: i64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer {id}: {answers:?}"))
    };
    assert_eq!(by_id(2)["result"], "pong");
    let error = &by_id(1)["error"];
    assert_eq!(error["code"], -32600, "{error}");
    assert_eq!(error["data"]["type"], "invalid_request", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("WebSocket")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_is_a_client_error() {
    let d = Daemon::start().await;
    let request = b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let (status, body) = exchange(&d, request).await;
    assert_eq!(status, 400, "{body}");
    let e = RpcError::split(serde_json::from_str(&body).expect("a JSON body")).expect_err(&body);
    e.assert(-32700, "parse_error");
    d.assert_alive().await;
}

/// Over WebSocket too, a request whose `id` cannot be read is refused and runs nothing,
/// alone or in a batch (prefsd reads each message before jsonrpsee does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_requests_with_unreadable_ids_are_refused_alone_and_in_batches() {
    let d = Daemon::start().await;
    let mut ws = d.raw_ws().await;
    let bad = requests_with_unreadable_ids("ws-bad");
    for (body, _) in &bad {
        ws.send_text(body).await;
        assert_refused_id(&ws.recv_json().await);
    }
    let batch = format!(
        r#"[{{"jsonrpc":"2.0","id":"first","method":"daemon.ping"}},{}]"#,
        bad.iter()
            .map(|(body, _)| body.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    ws.send_text(&batch).await;
    let Value::Array(answers) = ws.recv_json().await else {
        panic!("a batch answer");
    };
    assert_eq!(answers.len(), 1 + bad.len(), "{answers:?}");
    assert_eq!(answers[0]["result"], "pong");
    answers[1..].iter().for_each(assert_refused_id);
    // The connection goes on serving.
    ws.assert_serving().await;
    assert_eq!(d.counts().await["users"], 0);
}

/// A WebSocket message over `limits.max_request_bytes` is answered like an oversize HTTP
/// body, with rpc.md's `limit_exceeded`, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_websocket_message_is_limit_exceeded() {
    let d = Daemon::start_with(&[("prefsd.toml", crate::support::SMALL_LIMITS_TOML)]).await;
    let mut ws = d.raw_ws().await;
    let properties = json!({ "blob": "x".repeat(70_000) });
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "users.identify",
                       "params": { "user_id": "big", "properties": properties } });
    ws.send_text(&body.to_string()).await;
    let answer = ws.recv_json().await;
    let e = RpcError::split(answer.clone()).expect_err("too large");
    e.assert(-32004, "limit_exceeded");
    assert_eq!(e.fields(), ["body"], "{answer}");
    ws.assert_serving().await;
    assert_eq!(d.counts().await["users"], 0);
}

/// RFC 6455 §5.1: a server closes the connection on a client frame that is not masked.
/// The message in it does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_websocket_frame_closes_the_connection() {
    let d = Daemon::start().await;
    let mut ws = d.raw_ws().await;
    ws.assert_serving().await;
    let identify =
        r#"{"jsonrpc":"2.0","id":2,"method":"users.identify","params":{"user_id":"unmasked"}}"#;
    ws.send_frame(0x1, identify.as_bytes(), false).await;
    // At most a close frame, then the end of the connection: no answer.
    loop {
        match ws.recv().await {
            None => break,
            Some((0x8, _)) => continue,
            Some(frame) => panic!("an answer to an unmasked frame: {frame:?}"),
        }
    }
    d.call_err("users.get", json!({ "user_id": "unmasked" }))
        .await
        .assert(-32001, "not_found");
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_chunked_body_is_limit_exceeded_like_an_oversize_content_length() {
    let d = Daemon::start_with(&[("prefsd.toml", crate::support::SMALL_LIMITS_TOML)]).await;
    // 70 000 bytes in 1000-byte chunks, past limits.max_request_bytes (65536), with no
    // content-length to refuse it by.
    let big = json!({ "jsonrpc": "2.0", "id": 1, "method": "users.identify",
                      "params": { "user_id": "big", "properties": { "blob": "x".repeat(70_000) } } })
    .to_string();
    let mut request = b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for chunk in big.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = exchange(&d, &request).await;
    assert_eq!(status, 413, "{body}");
    let e = RpcError::split(serde_json::from_str(&body).expect("a JSON body")).expect_err(&body);
    e.assert(-32004, "limit_exceeded");
    assert!(e.message.contains("65536"), "{e:?}");
    d.call_err("users.get", json!({ "user_id": "big" }))
        .await
        .assert(-32001, "not_found");
    d.assert_alive().await;
}

/// Past 1024 live subscriptions on one WebSocket, jsonrpsee refuses with its own -32006
/// (the code of `workflow_not_found`); clients see rpc.md's `limit_exceeded` instead.
/// Subscriptions stay live here because the client does not read: each one waits to send
/// its first message, holding its place, once the socket and jsonrpsee's buffer are full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_past_the_limit_are_limit_exceeded() {
    const CALLS: usize = 4000;
    let d = Daemon::start().await;
    let op = d
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["u1"], "preferences": { "workflows": { "x": true } } }),
        )
        .await;
    let id = op["id"].as_str().expect("a job id").to_string();
    crate::support::wait_for("the job to complete", || {
        let d = &d;
        let id = id.clone();
        async move {
            let job = d.call("bulkOperations.get", json!({ "id": id })).await;
            (job["status"] == "completed").then_some(())
        }
    })
    .await;
    let mut ws = d.raw_ws().await;
    for i in 0..CALLS {
        let call = json!({ "jsonrpc": "2.0", "id": i, "method": "bulkOperations.subscribe",
                           "params": { "id": id } });
        ws.send_text(&call.to_string()).await;
    }
    let mut answers = 0;
    let mut over_limit = 0;
    while answers < CALLS {
        let message = ws.recv_json().await;
        if message.get("id").is_none() {
            continue; // a subscription's notification
        }
        answers += 1;
        if let Err(e) = RpcError::split(message.clone()) {
            e.assert(-32004, "limit_exceeded");
            assert_eq!(e.fields(), ["subscriptions"], "{message}");
            over_limit += 1;
        }
    }
    assert!(over_limit > 0, "no call was over the limit");
    assert!(over_limit < CALLS - 1024, "{over_limit} refused");
}
