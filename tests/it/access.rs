//! Access control end to end (access.md): the socket file, peer uids, secret keys and user
//! tokens. Each refusal gets the documented error and reads or writes nothing; each
//! accepted path works.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use prefsd::auth::mint::{SigningKey, sign, tenant_resource, user_claims, user_resource};
use serde_json::{Value, json};

use crate::support::{Daemon, RpcError, write_files};

const RSA_PRIVATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-private.pem");
const RSA_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-public.pem");
const OTHER_RSA_PRIVATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/keys/other-rsa-private.pem"
);

const UNAUTHENTICATED: i64 = -32002;
const FORBIDDEN: i64 = -32003;

/// `prefsd.toml` verifying user tokens with the RS256 test key.
fn rs256_toml() -> String {
    format!("durability = \"normal\"\n\n[access.user_token]\npublic_key_file = \"{RSA_PUBLIC}\"\n")
}

/// The uid the test (and so the daemon) runs as.
pub(crate) fn own_uid() -> u32 {
    // The owner of a fresh file is our effective uid (std's peer_cred is unstable).
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::os::unix::fs::MetadataExt::uid(&file.as_file().metadata().expect("metadata"))
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn pem(path: &str) -> SigningKey {
    SigningKey::Pem(std::fs::read(path).expect("reading a test key"))
}

/// An RS256 token for `user` with the test key, valid for an hour.
fn token(user: &str) -> String {
    sign(&user_claims(user, &[], &[], 3600, now()), &pem(RSA_PRIVATE)).expect("signing")
}

/// A token with `grants` on `user` (or on `tenants`, when any).
fn token_with(user: &str, grants: &[&str], tenants: &[&str]) -> String {
    let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
    let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    sign(
        &user_claims(user, &grants, &tenants, 3600, now()),
        &pem(RSA_PRIVATE),
    )
    .expect("signing")
}

/// Calls `method` over HTTP with extra headers.
async fn call_with(
    d: &Daemon,
    headers: &[(&str, &str)],
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    d.http().await.post(body.to_string(), &all).await.rpc()
}

async fn as_user(d: &Daemon, token: &str, method: &str, params: Value) -> Result<Value, RpcError> {
    call_with(d, &[("x-user-token", token)], method, params).await
}

/// Asserts a refusal with `code`, whose message does not echo `secret`.
#[track_caller]
fn refused(result: Result<Value, RpcError>, code: i64, secret: &str) -> RpcError {
    let e = match result {
        Ok(v) => panic!("expected error {code}, got the result {v}"),
        Err(e) => e,
    };
    let kind = if code == UNAUTHENTICATED {
        "unauthenticated"
    } else {
        "forbidden"
    };
    e.assert(code, kind);
    assert!(
        secret.is_empty() || !e.message.contains(secret),
        "the error echoes a credential: {e:?}"
    );
    e
}

/// Sets u1's and u2's default sets and acme sets, as the server.
async fn seed(d: &Daemon) {
    for user in ["u1", "u2"] {
        d.call(
            "users.setPreferences",
            json!({ "user_id": user, "preferences": { "workflows": { "w": false } } }),
        )
        .await;
        d.call(
            "users.setPreferences",
            json!({ "user_id": user, "preference_set": "acme", "preferences": { "channel_types": { "sms": true } } }),
        )
        .await;
    }
}

async fn raw_set(d: &Daemon, user: &str, set: &str) -> Value {
    d.call(
        "users.getPreferences",
        json!({ "user_id": user, "preference_set": set, "raw": true }),
    )
    .await
}

// --- the socket ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_file_has_the_configured_mode_and_no_temp_name_is_left() {
    let d = Daemon::start().await;
    let mode = std::fs::metadata(&d.socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let names: Vec<String> = std::fs::read_dir(d.dir.path())
        .expect("the temp dir")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        names.is_empty(),
        "a temporary socket name was left: {names:?}"
    );

    let d = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\nsocket_mode = \"0660\"\n",
    )])
    .await;
    let mode = std::fs::metadata(&d.socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "mode {mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_live_daemons_socket_exits_2_and_leaves_it_alone() {
    let d = Daemon::start().await;
    let config = d.config_dir.display().to_string();
    let socket = d.socket.display().to_string();
    let database = d.dir.path().join("second.db").display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prefsd"))
            .args([
                "--config",
                &config,
                "--socket",
                &socket,
                "serve",
                "--database",
                &database,
            ])
            .env("PREFSD_LOG", "warn")
            .output()
            .expect("running prefsd serve")
    })
    .await
    .expect("the blocking task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("already listening"), "stderr: {stderr}");
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_unreadable_user_token_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("config");
    let toml = "[access.user_token]\npublic_key_file = \"/nonexistent/prefsd-key.pem\"\n";
    write_files(&config, &[("prefsd.toml".to_string(), toml.to_string())]);
    let socket = dir.path().join("d.sock");
    let database = dir.path().join("d.db");
    let (config_arg, socket_arg, db_arg) = (
        config.display().to_string(),
        socket.display().to_string(),
        database.display().to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prefsd"))
            .args([
                "--config",
                &config_arg,
                "--socket",
                &socket_arg,
                "serve",
                "--database",
                &db_arg,
            ])
            .env("PREFSD_LOG", "warn")
            .output()
            .expect("running prefsd serve")
    })
    .await
    .expect("the blocking task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("public_key_file"), "stderr: {stderr}");
    assert!(!socket.exists(), "no socket is bound");
}

/// A reload that points the user-token key at a file that cannot be read is an invalid
/// edit: refused, reported, and the old config (whose key loads) stays in force. Through
/// the real `prefsd serve`, which installs that check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_an_unreadable_user_token_key_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("config");
    let toml = rs256_toml();
    write_files(
        &config,
        &crate::support::files_with(&[("prefsd.toml", &toml)]),
    );
    let daemon = crate::child::ChildDaemon::spawn(dir.path());
    let before = daemon.ok("config.status", json!({})).await;

    let broken = "durability = \"normal\"\n\n[access.user_token]\npublic_key_file = \"/nonexistent/prefsd-key.pem\"\n";
    std::fs::write(config.join("prefsd.toml"), broken).expect("writing prefsd.toml");
    let e = daemon
        .call("config.reload", json!({}))
        .await
        .expect_err("the reload is refused");
    e.assert(-32602, "invalid_params");
    assert!(e.message.contains("public_key_file"), "{e:?}");
    let after = daemon.ok("config.status", json!({})).await;
    assert_eq!(after["version"], before["version"], "{after}");
    assert!(
        after["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("public_key_file")),
        "{after}"
    );
}

// --- peer uids ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_uid_not_allowed_gets_unauthenticated_for_every_call() {
    let me = own_uid();
    let other = if me == 4242 { 4243 } else { 4242 };
    let toml = format!("durability = \"normal\"\n\n[access]\nallowed_uids = [{other}]\n");
    let mut d = Daemon::start_with(&[("prefsd.toml", &toml)]).await;

    let e = refused(
        d.try_call("daemon.ping", Value::Null).await,
        UNAUTHENTICATED,
        "",
    );
    assert!(e.message.contains(&format!("peer uid {me}")), "{e:?}");
    refused(
        d.try_call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {} }),
        )
        .await,
        UNAUTHENTICATED,
        "",
    );
    refused(
        d.try_call("users.identify", json!({ "user_id": "u1" }))
            .await,
        UNAUTHENTICATED,
        "",
    );
    // Each call of a batch.
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "daemon.ping" },
        { "jsonrpc": "2.0", "id": 2, "method": "users.identify", "params": { "user_id": "u2" } },
    ]);
    let response = d.http().await.post_json(batch.to_string()).await;
    let items = response.json.expect("a JSON body");
    let items = items.as_array().expect("a batch response");
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["error"]["code"], UNAUTHENTICATED, "{item}");
    }
    // The WebSocket upgrade is refused with the same error (a refused peer's connection
    // serves one request and cannot become a WebSocket, which would outlive that bound).
    let e = prefsd::client::Client::connect(&d.socket)
        .await
        .err()
        .expect("the upgrade is refused");
    assert!(format!("{e:#}").contains("403"), "{e:#}");
    let mut stream = tokio::net::UnixStream::connect(&d.socket)
        .await
        .expect("connecting");
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("sending the upgrade request");
    let mut answer = Vec::new();
    tokio::time::timeout(crate::support::TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the answer, then the connection closed")
        .expect("reading the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let e = RpcError::split(serde_json::from_str(body).expect("a JSON body")).expect_err(body);
    e.assert(UNAUTHENTICATED, "unauthenticated");
    assert!(e.message.contains(&format!("peer uid {me}")), "{e:?}");

    // Nothing was written: back on the default access, there is nobody.
    write_files(
        &d.config_dir,
        &[(
            "prefsd.toml".to_string(),
            "durability = \"normal\"\n".to_string(),
        )],
    );
    d.restart().await;
    assert_eq!(d.counts().await["users"], 0);
}

// --- secret keys ---

const KEYS_TOML: &str = r#"durability = "normal"

[access]
require_credentials = true
secret_keys = ["sk_test_one", "sk_test_two"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_credentials_needs_a_valid_secret_key() {
    let d = Daemon::start_with(&[("prefsd.toml", KEYS_TOML)]).await;
    let write = json!({ "user_id": "u1", "preferences": { "workflows": { "w": false } } });

    // Missing.
    refused(
        d.try_call("users.setPreferences", write.clone()).await,
        UNAUTHENTICATED,
        "",
    );
    // Wrong, and a near miss.
    for wrong in ["sk_test_on", "sk_test_one2", "nope"] {
        let bearer = format!("Bearer {wrong}");
        refused(
            call_with(
                &d,
                &[("authorization", &bearer)],
                "users.setPreferences",
                write.clone(),
            )
            .await,
            UNAUTHENTICATED,
            wrong,
        );
    }
    // Not a bearer key.
    refused(
        call_with(
            &d,
            &[("authorization", "Basic c2tfdGVzdF9vbmU=")],
            "daemon.ping",
            Value::Null,
        )
        .await,
        UNAUTHENTICATED,
        "c2tfdGVzdF9vbmU",
    );

    // Right (either key): nothing was written before.
    let good = [("authorization", "Bearer sk_test_two")];
    let status = call_with(&d, &good, "daemon.status", Value::Null)
        .await
        .expect("status");
    assert_eq!(status["counts"]["users"], 0);
    let set = call_with(
        &d,
        &[("authorization", "Bearer sk_test_one")],
        "users.setPreferences",
        write,
    )
    .await
    .expect("a server caller with a key");
    assert_eq!(set["workflows"], json!({ "w": false }));

    // The WebSocket: the key of the upgrade request applies to every call on it.
    let headers = prefsd::client::client_headers(Some("sk_test_one"), None).expect("headers");
    let ws = prefsd::client::Client::connect_with_headers(&d.socket, headers)
        .await
        .expect("connecting with a key");
    assert_eq!(
        ws.call("daemon.ping", Value::Null).await.expect("ping"),
        "pong"
    );
    let status = ws.call("daemon.status", Value::Null).await.expect("status");
    assert_eq!(status["counts"]["users"], 1);
    let bare = d.ws().await;
    let e = bare
        .call("daemon.ping", Value::Null)
        .await
        .expect_err("no key");
    assert!(format!("{e:#}").contains("unauthenticated"), "{e:#}");
}

// --- user tokens: unauthenticated ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misfit_tokens_are_unauthenticated() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let read = json!({ "user_id": "u1" });
    let before = raw_set(&d, "u1", "default").await;

    let now_s = now().as_second();
    let expired = sign(
        &json!({ "sub": "u1", "iat": now_s - 7200, "exp": now_s - 3600 }),
        &pem(RSA_PRIVATE),
    )
    .expect("signing");
    let other_key = sign(
        &user_claims("u1", &[], &[], 3600, now()),
        &pem(OTHER_RSA_PRIVATE),
    )
    .expect("signing");
    let public_key = std::fs::read(RSA_PUBLIC).expect("the public key");
    let hs256 = sign(
        &user_claims("u1", &[], &[], 3600, now()),
        &SigningKey::Hs256(public_key),
    )
    .expect("signing");
    let alg_none = {
        // `{"alg":"none","typ":"JWT"}` and `{"sub":"u1","exp":4102444800}`, unsigned.
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6NDEwMjQ0NDgwMH0.".to_string()
    };
    let no_exp = sign(&json!({ "sub": "u1" }), &pem(RSA_PRIVATE)).expect("signing");

    for (what, token) in [
        ("expired", expired),
        ("signed with another key", other_key),
        ("HS256 with the public key as secret", hs256),
        ("alg none", alg_none),
        ("no exp", no_exp),
        ("garbage", "garbage".to_string()),
    ] {
        for (method, params) in [
            ("users.getPreferences", read.clone()),
            (
                "users.setPreferences",
                json!({ "user_id": "u1", "preferences": {} }),
            ),
        ] {
            let e = refused(
                as_user(&d, &token, method, params).await,
                UNAUTHENTICATED,
                &token,
            );
            assert!(!e.message.is_empty(), "{what}");
        }
    }
    // Nothing was written.
    assert_eq!(raw_set(&d, "u1", "default").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_when_none_are_configured() {
    let d = Daemon::start().await;
    refused(
        as_user(&d, &token("u1"), "users.get", json!({ "user_id": "u1" })).await,
        UNAUTHENTICATED,
        "",
    );
}

// --- user tokens: forbidden ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_token_acts_on_its_own_user_only() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let u2_before = raw_set(&d, "u2", "default").await;
    let a = token("u1");
    for (method, params) in [
        ("users.getPreferences", json!({ "user_id": "u2" })),
        ("users.listPreferences", json!({ "user_id": "u2" })),
        ("users.get", json!({ "user_id": "u2" })),
        (
            "users.setPreferences",
            json!({ "user_id": "u2", "preferences": {} }),
        ),
        (
            "users.unsetPreferences",
            json!({ "user_id": "u2", "preference_set": "default" }),
        ),
    ] {
        let e = refused(as_user(&d, &a, method, params).await, FORBIDDEN, &a);
        assert!(e.message.contains("u1"), "{e:?}");
    }
    assert_eq!(raw_set(&d, "u2", "default").await, u2_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_token_may_not_call_server_methods() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    let a = token("u1");
    refused(
        as_user(
            &d,
            &a,
            "users.bulkSetPreferences",
            json!({ "user_ids": ["u1"], "preferences": { "workflows": { "w": false } } }),
        )
        .await,
        FORBIDDEN,
        &a,
    );
    refused(
        as_user(
            &d,
            &a,
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": [{ "id": "u1", "properties": { "x": 1 } }] }),
        )
        .await,
        FORBIDDEN,
        &a,
    );
    for method in [
        "users.delete",
        "users.list",
        "users.merge",
        "daemon.status",
        "config.reload",
    ] {
        refused(
            as_user(&d, &a, method, json!({ "user_id": "u1" })).await,
            FORBIDDEN,
            &a,
        );
    }
    // No job was queued and the inline recipient was not persisted.
    let jobs = d.call("bulkOperations.list", json!({})).await;
    assert_eq!(jobs["items"], json!([]));
    assert_eq!(d.counts().await["users"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_grant_cannot_write() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let before = raw_set(&d, "u1", "default").await;
    let reader = token_with("u1", &["preferences/read"], &[]);
    let read = as_user(
        &d,
        &reader,
        "users.getPreferences",
        json!({ "user_id": "u1", "raw": true }),
    )
    .await
    .expect("reading is granted");
    assert_eq!(read, before);
    let e = refused(
        as_user(
            &d,
            &reader,
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": { "workflows": { "w": true } } }),
        )
        .await,
        FORBIDDEN,
        &reader,
    );
    assert!(e.message.contains("preferences/write"), "{e:?}");
    refused(
        as_user(
            &d,
            &reader,
            "users.unsetPreferences",
            json!({ "user_id": "u1", "preference_set": "default" }),
        )
        .await,
        FORBIDDEN,
        &reader,
    );
    assert_eq!(raw_set(&d, "u1", "default").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_scoped_token_stays_in_its_tenant() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "globex", "preferences": { "workflows": { "g": false } } }),
    )
    .await;
    let globex_before = raw_set(&d, "u1", "globex").await;
    let default_before = raw_set(&d, "u1", "default").await;
    let scoped = token_with("u1", &[], &["acme"]);
    for (method, params) in [
        (
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "globex" }),
        ),
        (
            "users.getPreferences",
            json!({ "user_id": "u1", "preference_set": "globex" }),
        ),
        ("users.getPreferences", json!({ "user_id": "u1" })),
        (
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "globex", "preferences": {} }),
        ),
        (
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {} }),
        ),
        (
            "users.unsetPreferences",
            json!({ "user_id": "u1", "preference_set": "globex" }),
        ),
        ("users.listPreferences", json!({ "user_id": "u1" })),
    ] {
        refused(
            as_user(&d, &scoped, method, params).await,
            FORBIDDEN,
            &scoped,
        );
    }
    assert_eq!(raw_set(&d, "u1", "globex").await, globex_before);
    assert_eq!(raw_set(&d, "u1", "default").await, default_before);
}

/// Issue 22.6: a tenant with no tenant default and no stored set falls back to
/// `env ⊕ recipient["default"]` (§4.2), which a tenant-scoped token may not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_scoped_token_never_reads_the_default_set_through_the_fallback() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let scoped = token_with("u1", &[], &["newco"]);
    let params = json!({ "user_id": "u1", "tenant": "newco" });
    let got = as_user(&d, &scoped, "users.getPreferences", params.clone())
        .await
        .expect("reading in newco");
    // u1's default set opts out of workflow w; the environment default is empty.
    assert!(
        got["workflows"]["w"].is_null(),
        "the default set leaked: {got}"
    );
    // A server caller still gets the fallback, before and after (no shared cached answer).
    let server = d.call("users.getPreferences", params.clone()).await;
    assert_eq!(server["workflows"]["w"], false, "{server}");
    let again = as_user(&d, &scoped, "users.getPreferences", params)
        .await
        .expect("reading in newco");
    assert!(
        again["workflows"]["w"].is_null(),
        "the default set leaked: {again}"
    );
}

// --- accepted paths ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_caller_has_full_access_with_tokens_configured() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let job = d
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": ["u1", "u2"], "preferences": { "workflows": { "w": true } } }),
        )
        .await;
    assert_eq!(job["status"], "queued");
    let decided = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["u1"] }),
        )
        .await;
    assert_eq!(decided["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(d.counts().await["users"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_token_reads_and_writes_its_own_preferences() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let t = token("u1");
    let set = as_user(
        &d,
        &t,
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "workflows": { "mine": false } } }),
    )
    .await
    .expect("writing its own set");
    assert_eq!(set["workflows"], json!({ "mine": false }));
    let got = as_user(
        &d,
        &t,
        "users.getPreferences",
        json!({ "user_id": "u1", "raw": true }),
    )
    .await
    .expect("reading its own set");
    assert_eq!(got["workflows"], json!({ "mine": false }));
    let list = as_user(&d, &t, "users.listPreferences", json!({ "user_id": "u1" }))
        .await
        .expect("listing its own sets");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let user = as_user(&d, &t, "users.get", json!({ "user_id": "u1" }))
        .await
        .expect("reading its own user");
    assert_eq!(user["id"], "u1");
    // Knock's header name works too, and so does a tenant's set.
    let acme = call_with(
        &d,
        &[("x-knock-user-token", &t)],
        "users.getPreferences",
        json!({ "user_id": "u1", "tenant": "acme" }),
    )
    .await
    .expect("reading its acme set");
    assert_eq!(acme["channel_types"]["sms"], true);
    let deleted = as_user(
        &d,
        &t,
        "users.unsetPreferences",
        json!({ "user_id": "u1", "preference_set": "acme" }),
    )
    .await
    .expect("unsetting its own set");
    assert_eq!(deleted, json!({ "deleted": true }));
    // The token came through an allowed peer, but never gained server rights.
    refused(
        as_user(&d, &t, "daemon.ping", Value::Null).await,
        FORBIDDEN,
        &t,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_scoped_token_reads_and_writes_in_its_tenant() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let t = token_with("u1", &["preferences/read", "preferences/write"], &["acme"]);
    let set = as_user(
        &d,
        &t,
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme", "preferences": { "channel_types": { "sms": false } } }),
    )
    .await
    .expect("writing in acme");
    assert_eq!(set["channel_types"], json!({ "sms": false }));
    let got = as_user(
        &d,
        &t,
        "users.getPreferences",
        json!({ "user_id": "u1", "tenant": "acme" }),
    )
    .await
    .expect("reading in acme");
    assert_eq!(got["channel_types"]["sms"], false);
    // A read-only grant in the tenant reads but does not write.
    let reader = token_with("u1", &["preferences/read"], &["acme"]);
    as_user(
        &d,
        &reader,
        "users.getPreferences",
        json!({ "user_id": "u1", "preference_set": "acme" }),
    )
    .await
    .expect("reading in acme");
    refused(
        as_user(
            &d,
            &reader,
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "acme", "preferences": {} }),
        )
        .await,
        FORBIDDEN,
        &reader,
    );
    // A grant written by hand, Knock-style, with explicit_grants.
    let explicit = sign(
        &json!({
            "sub": "u1", "exp": now().as_second() + 600, "explicit_grants": true,
            "grants": {
                user_resource("u1"): { "preferences/read": [{}] },
                tenant_resource("acme"): { "preferences/write": [{}] },
            }
        }),
        &pem(RSA_PRIVATE),
    )
    .expect("signing");
    as_user(
        &d,
        &explicit,
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme", "preferences": {} }),
    )
    .await
    .expect("write granted in acme");
    refused(
        as_user(
            &d,
            &explicit,
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "globex" }),
        )
        .await,
        FORBIDDEN,
        &explicit,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_of_a_batch_is_authorized_on_its_own() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let t = token("u1");
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "users.getPreferences", "params": { "user_id": "u1" } },
        { "jsonrpc": "2.0", "id": 2, "method": "users.getPreferences", "params": { "user_id": "u2" } },
        { "jsonrpc": "2.0", "id": 3, "method": "users.bulkSetPreferences", "params": { "user_ids": ["u1"], "preferences": {} } },
        { "jsonrpc": "2.0", "method": "users.setPreferences", "params": { "user_id": "u2", "preferences": {} } },
    ]);
    let response = d
        .http()
        .await
        .post(
            batch.to_string(),
            &[("content-type", "application/json"), ("x-user-token", &t)],
        )
        .await;
    let items = response.json.expect("a JSON body");
    let items = items.as_array().expect("a batch response");
    assert_eq!(items.len(), 3, "{items:?}");
    let by_id = |id: i64| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("no answer for id {id}: {items:?}"))
    };
    assert_eq!(by_id(1)["result"]["workflows"], json!({ "w": false }));
    assert_eq!(by_id(2)["error"]["code"], FORBIDDEN);
    assert_eq!(by_id(2)["error"]["data"]["type"], "forbidden");
    assert_eq!(by_id(3)["error"]["code"], FORBIDDEN);
    assert_eq!(
        raw_set(&d, "u2", "default").await["workflows"],
        json!({ "w": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_with_a_user_token_acts_as_that_user() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let headers = prefsd::client::client_headers(None, Some(&token("u1"))).expect("headers");
    let ws = prefsd::client::Client::connect_with_headers(&d.socket, headers)
        .await
        .expect("connecting with a token");
    let mine = ws
        .call("users.getPreferences", json!({ "user_id": "u1" }))
        .await
        .expect("its own set");
    assert_eq!(mine["workflows"], json!({ "w": false }));
    let e = ws
        .call("users.getPreferences", json!({ "user_id": "u2" }))
        .await
        .expect_err("another user's set");
    assert!(format!("{e:#}").contains("forbidden"), "{e:#}");
    let e = ws
        .call("daemon.status", Value::Null)
        .await
        .expect_err("a server method");
    assert!(format!("{e:#}").contains("forbidden"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_when_configured() {
    let toml =
        "durability = \"normal\"\n\n[access.user_token]\nhs256_secret = \"test-hs256-secret\"\n";
    let d = Daemon::start_with(&[("prefsd.toml", toml)]).await;
    let claims = user_claims("u1", &[], &[], 600, now());
    let good = sign(&claims, &SigningKey::Hs256(b"test-hs256-secret".to_vec())).expect("signing");
    let wrong = sign(&claims, &SigningKey::Hs256(b"another-secret".to_vec())).expect("signing");
    as_user(
        &d,
        &good,
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {} }),
    )
    .await
    .expect("an HS256 token with the secret");
    refused(
        as_user(&d, &wrong, "users.get", json!({ "user_id": "u1" })).await,
        UNAUTHENTICATED,
        &wrong,
    );
    // RS256 is not what this daemon accepts.
    refused(
        as_user(&d, &token("u1"), "users.get", json!({ "user_id": "u1" })).await,
        UNAUTHENTICATED,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_mints_a_token_the_daemon_accepts() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let output = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_prefsd"))
            .args([
                "token",
                "--user",
                "u1",
                "--key",
                RSA_PRIVATE,
                "--ttl",
                "10m",
                "--grant",
                "preferences/read",
            ])
            .output()
            .expect("running prefsd token")
    })
    .await
    .expect("the blocking task");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let minted = String::from_utf8(output.stdout).expect("utf-8");
    let minted = minted.trim();
    as_user(
        &d,
        minted,
        "users.getPreferences",
        json!({ "user_id": "u1" }),
    )
    .await
    .expect("a minted read token reads");
    refused(
        as_user(
            &d,
            minted,
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {} }),
        )
        .await,
        FORBIDDEN,
        minted,
    );
    // Neither --key nor --secret: a usage error.
    let output = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_prefsd"))
            .args([
                "--config",
                "/nonexistent-prefsd-config",
                "token",
                "--user",
                "u1",
            ])
            .output()
            .expect("running prefsd token")
    })
    .await
    .expect("the blocking task");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

// --- the amendments of rest.md §11 to access.md ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_token_may_identify_its_own_user() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    let a = token("u1");
    let user = as_user(
        &d,
        &a,
        "users.identify",
        json!({ "user_id": "u1", "properties": { "name": "Jane" },
                "preferences": { "default": { "channel_types": { "sms": true } } } }),
    )
    .await
    .expect("its own user");
    assert_eq!(user["properties"], json!({ "name": "Jane" }));
    assert_eq!(
        raw_set(&d, "u1", "default").await["channel_types"],
        json!({ "sms": true })
    );
    refused(
        as_user(&d, &a, "users.identify", json!({ "user_id": "u2" })).await,
        FORBIDDEN,
        &a,
    );
    assert_eq!(d.counts().await["users"], 1, "no u2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_grants_the_user_record_needs_user_read_and_user_write() {
    let d = Daemon::start_with(&[("prefsd.toml", &rs256_toml())]).await;
    seed(&d).await;
    let prefs_only = token_with("u1", &["preferences/read", "preferences/write"], &[]);
    let e = refused(
        as_user(&d, &prefs_only, "users.get", json!({ "user_id": "u1" })).await,
        FORBIDDEN,
        &prefs_only,
    );
    assert!(e.message.contains("user/read"), "{e:?}");
    let e = refused(
        as_user(
            &d,
            &prefs_only,
            "users.identify",
            json!({ "user_id": "u1", "properties": { "x": 1 } }),
        )
        .await,
        FORBIDDEN,
        &prefs_only,
    );
    assert!(e.message.contains("user/write"), "{e:?}");
    // user/write without preferences/write: the record, not the sets it carries.
    let record = token_with("u1", &["user/read", "user/write"], &[]);
    as_user(&d, &record, "users.get", json!({ "user_id": "u1" }))
        .await
        .expect("user/read");
    as_user(
        &d,
        &record,
        "users.identify",
        json!({ "user_id": "u1", "properties": { "x": 1 } }),
    )
    .await
    .expect("user/write");
    let e = refused(
        as_user(
            &d,
            &record,
            "users.identify",
            json!({ "user_id": "u1", "preferences": { "default": { "workflows": { "w": true } } } }),
        )
        .await,
        FORBIDDEN,
        &record,
    );
    assert!(e.message.contains("preferences/write"), "{e:?}");
    assert_eq!(
        raw_set(&d, "u1", "default").await["workflows"],
        json!({ "w": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_never_makes_a_server_caller() {
    let toml = format!(
        "{}\n[access]\nrequire_credentials = true\nsecret_keys = [\"sk_test_one\"]\n",
        rs256_toml()
    );
    let d = Daemon::start_with(&[("prefsd.toml", &toml)]).await;
    let e = refused(
        call_with(
            &d,
            &[("authorization", "Bearer pk_test_abc")],
            "users.get",
            json!({ "user_id": "u1" }),
        )
        .await,
        UNAUTHENTICATED,
        "pk_test_abc",
    );
    assert!(e.message.contains("public key"), "{e:?}");
    // With a user token it is the browser client's Bearer: that user, and no secret key needed.
    let a = token("u1");
    call_with(
        &d,
        &[
            ("authorization", "Bearer pk_test_abc"),
            ("x-knock-user-token", &a),
        ],
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "workflows": { "w": false } } }),
    )
    .await
    .expect("a user caller");
    refused(
        call_with(
            &d,
            &[
                ("authorization", "Bearer pk_test_abc"),
                ("x-knock-user-token", &a),
            ],
            "users.setPreferences",
            json!({ "user_id": "u2", "preferences": {} }),
        )
        .await,
        FORBIDDEN,
        &a,
    );
}
