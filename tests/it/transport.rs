//! The transport of rpc.md: HTTP/1.1 POST as curl sends it, keep-alive, batches, and the
//! WebSocket on the same socket.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Daemon, RpcError};

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_style_posts_work_whatever_the_content_type() {
    let d = Daemon::start().await;
    let content_types: [&[(&str, &str)]; 5] = [
        &[("content-type", "application/json")],
        &[("content-type", "application/json; charset=utf-8")],
        // `curl -d` without -H sends this.
        &[("content-type", "application/x-www-form-urlencoded")],
        &[("content-type", "text/plain")],
        &[],
    ];
    for (i, headers) in content_types.into_iter().enumerate() {
        let mut conn = d.http().await;
        let response = conn.post(PING, headers).await;
        assert_eq!(response.status, StatusCode::OK, "{headers:?}: {response:?}");
        assert!(
            response.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{response:?}"
        );
        assert_eq!(
            response.json,
            Some(json!({ "jsonrpc": "2.0", "id": 1, "result": "pong" }))
        );
        // Writes go through too.
        let identify = json!({ "jsonrpc": "2.0", "id": "w", "method": "users.identify",
                               "params": { "user_id": format!("u{i}") } });
        let response = conn.post(identify.to_string(), headers).await;
        assert_eq!(response.rpc().unwrap()["id"], format!("u{i}"));
        assert_eq!(response.json.unwrap()["id"], "w");
    }
    assert_eq!(d.counts().await["users"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_many_requests() {
    let d = Daemon::start().await;
    let mut conn = d.http().await;
    for i in 0..20 {
        let (method, params) = match i % 3 {
            0 => ("daemon.ping", json!(null)),
            1 => ("users.identify", json!({ "user_id": format!("u{i}") })),
            _ => ("users.get", json!({ "user_id": format!("u{}", i - 1) })),
        };
        let mut request = json!({ "jsonrpc": "2.0", "id": i, "method": method });
        if !params.is_null() {
            request["params"] = params;
        }
        let response = conn.post_json(request.to_string()).await;
        assert_eq!(response.status, StatusCode::OK);
        assert!(
            response
                .headers
                .get("connection")
                .is_none_or(|v| v != "close"),
            "the daemon closes a keep-alive connection: {response:?}"
        );
        let json = response.json.clone().expect("a JSON body");
        assert_eq!(json["id"], i, "{json}");
        let result = response.rpc().unwrap_or_else(|e| panic!("{method}: {e:?}"));
        if method != "daemon.ping" {
            assert!(result["id"].as_str().unwrap().starts_with('u'), "{result}");
        }
    }
    // An error answer does not end the connection either.
    let response = conn.post_json("not json").await;
    assert_eq!(response.rpc().unwrap_err().code, -32700);
    let response = conn.post_json(PING).await;
    assert_eq!(response.rpc().unwrap(), json!("pong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_call_and_no_notification() {
    let d = Daemon::start().await;
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "daemon.ping" },
        { "jsonrpc": "2.0", "id": "two", "method": "users.get", "params": { "user_id": "ghost" } },
        { "jsonrpc": "2.0", "method": "users.identify", "params": { "user_id": "notified" } },
        { "jsonrpc": "2.0", "id": 3, "method": "no.such.method" },
        { "jsonrpc": "2.0", "id": 4, "method": "users.identify",
          "params": { "user_id": "batched", "properties": { "a": 1 } } },
        { "jsonrpc": "2.0", "id": 5, "method": "users.get", "params": { "user_id": 42 } },
    ]);
    let response = d.http().await.post_json(batch.to_string()).await;
    assert_eq!(response.status, StatusCode::OK);
    let items = response
        .json
        .clone()
        .and_then(|j| j.as_array().cloned())
        .unwrap_or_else(|| panic!("a batch is answered with an array: {response:?}"));
    // One answer per call with an id, none for the notification.
    let mut ids: Vec<String> = items.iter().map(|i| i["id"].to_string()).collect();
    ids.sort();
    assert_eq!(ids, ["\"two\"", "1", "3", "4", "5"]);
    let by_id = |id: Value| {
        let item = items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("no answer for id {id}"))
            .clone();
        RpcError::split(item)
    };
    assert_eq!(by_id(json!(1)).unwrap(), json!("pong"));
    by_id(json!("two")).unwrap_err().assert(-32001, "not_found");
    by_id(json!(3))
        .unwrap_err()
        .assert(-32601, "method_not_found");
    assert_eq!(by_id(json!(4)).unwrap()["properties"], json!({ "a": 1 }));
    by_id(json!(5)).unwrap_err().assert_invalid("user_id");
    d.call("users.get", json!({ "user_id": "batched" })).await;

    // An invalid entry is answered in place; an empty batch is an invalid request.
    let response = d.http().await.post_json(format!("[{PING}, 42]")).await;
    let items = response.json.unwrap();
    assert_eq!(items.as_array().map(Vec::len), Some(2), "{items}");
    assert_eq!(items[0]["result"], "pong");
    RpcError::split(items[1].clone())
        .unwrap_err()
        .assert(-32600, "invalid_request");
    let response = d.http().await.post_json("[]").await;
    let e = match response.json.clone() {
        Some(Value::Array(mut items)) if items.len() == 1 => items.remove(0),
        Some(one) => one,
        None => panic!("no JSON: {response:?}"),
    };
    RpcError::split(e)
        .unwrap_err()
        .assert(-32600, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_gets_no_answer() {
    let d = Daemon::start().await;
    let mut conn = d.http().await;
    let response = conn
        .post_json(r#"{"jsonrpc":"2.0","method":"daemon.ping"}"#)
        .await;
    assert!(
        response.status.is_success(),
        "a notification is accepted: {response:?}"
    );
    assert!(
        response.json.is_none() || response.json == Some(Value::Null),
        "a notification is not answered: {response:?}"
    );
    // The connection goes on.
    assert_eq!(conn.post_json(PING).await.rpc().unwrap(), "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_run_alone_and_in_a_batch() {
    let d = Daemon::start().await;
    let mut conn = d.http().await;
    let alone = conn
        .post_json(r#"{"jsonrpc":"2.0","method":"users.identify","params":{"user_id":"n1","properties":{"a":1}}}"#)
        .await;
    assert!(
        alone.json.is_none() || alone.json == Some(Value::Null),
        "{alone:?}"
    );
    let batch = conn
        .post_json(
            r#"[{"jsonrpc":"2.0","method":"users.identify","params":{"user_id":"n2"}},
                {"jsonrpc":"2.0","id":7,"method":"daemon.ping"}]"#,
        )
        .await;
    let answers = batch.json.expect("a batch answer");
    assert_eq!(
        answers.as_array().map(Vec::len),
        Some(1),
        "only the call is answered: {answers}"
    );
    assert_eq!(answers[0]["id"], 7);
    assert_eq!(
        d.call("users.get", json!({ "user_id": "n1" })).await["properties"],
        json!({ "a": 1 })
    );
    d.call("users.get", json!({ "user_id": "n2" })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_carry_the_same_types() {
    let d = Daemon::start().await;
    let client = d.ws().await;
    let err = client
        .call("no.such.method", json!({}))
        .await
        .expect_err("an unknown method");
    let Some(jsonrpsee::core::client::Error::Call(object)) =
        err.downcast_ref::<jsonrpsee::core::client::Error>()
    else {
        panic!("a JSON-RPC error: {err:#}");
    };
    assert_eq!(object.code(), -32601);
    let data: Value = serde_json::from_str(object.data().expect("data").get()).expect("JSON data");
    assert_eq!(data["type"], "method_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_client_makes_calls() {
    let d = Daemon::start().await;
    let client = d.ws().await;
    assert_eq!(
        client.call("daemon.ping", Value::Null).await.unwrap(),
        "pong"
    );
    let user = client
        .call(
            "users.identify",
            json!({ "user_id": "ws-user", "properties": { "via": "ws" } }),
        )
        .await
        .unwrap();
    assert_eq!(user["properties"], json!({ "via": "ws" }));
    // Calls on one WebSocket run concurrently and each gets its own answer.
    let calls = (0..10).map(|i| {
        client.call(
            "users.setPreferences",
            json!({ "user_id": format!("c{i}"), "preferences": { "workflows": { format!("w{i}"): false } } }),
        )
    });
    let results = crate::support::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(
            result.unwrap()["workflows"],
            json!({ format!("w{i}"): false })
        );
    }
    // Errors arrive as JSON-RPC errors with the rpc.md data.
    let e = client
        .call("users.get", json!({ "user_id": "ghost" }))
        .await
        .unwrap_err();
    let rpc = e
        .downcast_ref::<jsonrpsee::core::client::Error>()
        .and_then(|e| match e {
            jsonrpsee::core::client::Error::Call(object) => Some(object),
            _ => None,
        })
        .unwrap_or_else(|| panic!("not a call error: {e:#}"));
    assert_eq!(rpc.code(), -32001);
    let data: Value = serde_json::from_str(rpc.data().expect("data").get()).unwrap();
    assert_eq!(data["type"], "not_found");
    let e = client
        .call("users.get", json!({ "user_id": 5 }))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("user_id"), "{e:#}");
    // What the WebSocket wrote, HTTP reads.
    assert_eq!(d.counts().await["users"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_http_methods_get_a_clear_refusal() {
    let d = Daemon::start().await;
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let response = d.http().await.send(method.clone(), "", &[]).await;
        assert!(
            response.status.is_client_error(),
            "{method}: expected a 4xx, got {response:?}"
        );
        assert!(
            !response.body.is_empty(),
            "{method}: the refusal says why: {response:?}"
        );
    }
    // And the daemon goes on.
    d.assert_alive().await;
}
