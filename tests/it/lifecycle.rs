//! Start, stop and restart: data survives a restart, shutdown is graceful, and the socket
//! file is handled with care.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::support::{Daemon, TIMEOUT, wait_for};

/// Everything `a_restart_keeps_the_data` wrote, as read back.
async fn read_back(d: &Daemon) -> Value {
    json!({
        "u1": d.call("users.get", json!({ "user_id": "u1" })).await,
        "u1_sets": d.call("users.listPreferences", json!({ "user_id": "u1" })).await,
        "p1": d.call("objects.get", json!({ "collection": "projects", "object_id": "p1" })).await,
        "t1": d.call("tenants.get", json!({ "tenant_id": "t1" })).await,
        "beta": d.call("audiences.listMembers", json!({ "audience_key": "beta" })).await,
        "counts": d.counts().await,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_data() {
    let mut d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "properties": { "name": "Ada" },
                "preferences": { "default": { "channel_types": { "sms": true } },
                                 "acme": { "categories": { "marketing": true } } } }),
    )
    .await;
    d.call(
        "objects.set",
        json!({ "collection": "projects", "object_id": "p1", "properties": { "stage": "beta" } }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "t1", "name": "One",
                "settings": { "preference_set": { "workflows": { "digest": false } } } }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "u1" }] }),
    )
    .await;
    let before = read_back(&d).await;
    assert_eq!(
        before["counts"],
        json!({ "users": 1, "objects": 1, "tenants": 1, "preference_sets": 2 })
    );

    d.restart().await;
    assert_eq!(read_back(&d).await, before);
    // And the restarted daemon writes as before.
    d.call("users.identify", json!({ "user_id": "u2" })).await;
    d.restart().await;
    assert_eq!(d.counts().await["users"], 2);
}

/// Reads from `stream` until `buffer` holds `needle`.
async fn read_until(stream: &mut UnixStream, buffer: &mut Vec<u8>, needle: &[u8]) {
    tokio::time::timeout(TIMEOUT, async {
        while !buffer.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("reading the socket");
            assert!(
                n > 0,
                "the connection closed before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(buffer)
            );
            buffer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the expected bytes within the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_at_shutdown_gets_its_answer() {
    let mut d = Daemon::start().await;
    let body = json!({ "jsonrpc": "2.0", "id": 9, "method": "users.identify",
                       "params": { "user_id": "in-flight", "properties": { "late": true } } })
    .to_string();

    // `Expect: 100-continue` makes the daemon say when its handler has started reading the
    // body: from then on the call is in flight.
    let mut stream = UnixStream::connect(&d.socket).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, b"100 Continue\r\n\r\n").await;
    received.clear();

    // Shut down, and wait until the daemon no longer accepts connections.
    d.begin_shutdown();
    let socket = d.socket.clone();
    wait_for("the daemon to stop accepting", || {
        let socket = socket.clone();
        async move { UnixStream::connect(&socket).await.is_err().then_some(()) }
    })
    .await;

    // The call in flight completes, and then the connection closes.
    stream.write_all(body.as_bytes()).await.unwrap();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut received))
        .await
        .expect("the daemon closes the connection after answering")
        .expect("reading the answer");
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json_body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no body: {text}"));
    let answer: Value = serde_json::from_str(json_body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["result"]["properties"], json!({ "late": true }));

    // `run` returns, and the write it acknowledged is in the database.
    d.stop().await;
    d.restart().await;
    assert_eq!(
        d.call("users.get", json!({ "user_id": "in-flight" })).await["properties"],
        json!({ "late": true })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_with_idle_connections_open() {
    let mut d = Daemon::start().await;
    // An idle keep-alive HTTP connection and a WebSocket do not hold up the shutdown.
    let mut http = d.http().await;
    assert_eq!(
        http.post_json(r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#)
            .await
            .rpc()
            .unwrap(),
        "pong"
    );
    let ws = d.ws().await;
    assert_eq!(ws.call("daemon.ping", Value::Null).await.unwrap(), "pong");
    d.stop().await;
    assert!(
        ws.call("daemon.ping", Value::Null).await.is_err(),
        "the WebSocket is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_refuses_a_socket_a_live_daemon_listens_on() {
    let d = Daemon::start().await;
    let e = prefsd::server::bind(&d.socket, 0o600).expect_err("binding over a live daemon");
    let message = format!("{e:#}");
    assert!(message.contains("already listening"), "{message}");
    assert!(
        message.contains(&d.socket.display().to_string()),
        "{message}"
    );
    // The live daemon's socket is untouched.
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_replaces_a_stale_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());

    let listener = prefsd::server::bind(&path, 0o600).expect("a stale socket is replaced");
    let (client, accepted) = tokio::join!(UnixStream::connect(&path), listener.accept());
    client.expect("connecting to the new socket");
    accepted.expect("accepting on the new socket");
    // No temporary file is left next to it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["stale.sock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_does_not_delete_a_file_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "keep me").unwrap();
    let e = prefsd::server::bind(&path, 0o600).expect_err("a regular file is not replaced");
    assert!(
        format!("{e:#}").contains(&path.display().to_string()),
        "{e:#}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_file_has_mode_0600_or_the_configured_mode() {
    let d = Daemon::start().await;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let d = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\nsocket_mode = \"0660\"\n",
    )])
    .await;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "mode {mode:o}");
    d.assert_alive().await;
}
