//! The Knock-compatible REST API end to end (rest.md): routing and decoding on the raw path,
//! Knock's representations, status codes and error envelope, auth as Knock does it, the TCP
//! listener and CORS. (The real SDKs drive it in `sdk`.)

use http::{Method, StatusCode};
use serde_json::{Value, json};

use prefsd::auth::mint::{SigningKey, sign, user_claims};

use crate::support::{Daemon, HttpConn, HttpResponse};

const RSA_PRIVATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-private.pem");
const RSA_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-public.pem");

const ORIGIN: &str = "https://app.example.com";

/// `prefsd.toml` with a secret key, RS256 user tokens and one CORS origin.
fn rest_toml() -> String {
    format!(
        "durability = \"normal\"\n\n[access]\nsecret_keys = [\"sk_test\"]\n\n\
         [access.user_token]\npublic_key_file = \"{RSA_PUBLIC}\"\n\n\
         [rest.cors]\nallowed_origins = [\"{ORIGIN}\"]\n"
    )
}

async fn daemon() -> Daemon {
    Daemon::start_with_tcp(&[("prefsd.toml", &rest_toml())]).await
}

fn token(user: &str) -> String {
    let key = SigningKey::Pem(std::fs::read(RSA_PRIVATE).expect("reading a test key"));
    sign(
        &user_claims(user, &[], &[], 600, jiff::Timestamp::now()),
        &key,
    )
    .expect("signing")
}

async fn send(c: &mut HttpConn, method: Method, uri: &str, body: &str) -> HttpResponse {
    c.request(method, uri, body.to_string(), &[]).await
}

fn json(r: &HttpResponse) -> Value {
    r.json
        .clone()
        .unwrap_or_else(|| panic!("not JSON: {:?} {:?}", r.status, r.body))
}

/// Knock's error envelope with `status` and `code`.
fn assert_error(r: &HttpResponse, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    let body = json(r);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["type"].is_string(), "{body}");
}

#[tokio::test]
async fn users_round_trip_in_knocks_shapes() {
    let d = daemon().await;
    let mut c = d.http().await;
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/users/u1",
        r#"{"name":"Jane","plan":"pro","id":"ignored","channel_data":{"x":1},"created_at":"2026-01-01T00:00:00Z"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/json; charset=utf-8",
        "the SDKs need the JSON media type"
    );
    assert!(r.headers.contains_key("x-request-id"));
    let user = json(&r);
    assert_eq!(user["__typename"], "User");
    assert_eq!(user["id"], "u1");
    assert_eq!(user["name"], "Jane");
    assert_eq!(user["plan"], "pro");
    assert_eq!(user["created_at"], "2026-01-01T00:00:00Z", "A9");
    assert!(user.get("channel_data").is_none(), "A12: never echoed");
    assert!(
        user["updated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let got = send(&mut c, Method::GET, "/v1/users/u1", "").await;
    assert_eq!(json(&got), user);

    // Absent: 404 with the envelope; deleting it twice: 204 both times (A5).
    assert_error(
        &send(&mut c, Method::GET, "/v1/users/nobody", "").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for _ in 0..2 {
        let r = c
            .request(
                Method::DELETE,
                "/v1/users/u1",
                "",
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(r.body.is_empty());
    }
    assert_eq!(
        send(&mut c, Method::GET, "/v1/users/u1", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn path_segments_are_decoded_one_by_one() {
    let d = daemon().await;
    let mut c = d.http().await;
    // `%2F` stays inside its segment, `%20` is a space, `+` a literal plus.
    let r = send(&mut c, Method::PUT, "/v1/users/a%2Fb%20c+d", "{}").await;
    assert_eq!(json(&r)["id"], "a/b c+d");
    let rpc = d.call("users.get", json!({ "user_id": "a/b c+d" })).await;
    assert_eq!(rpc["id"], "a/b c+d");
    let r = send(&mut c, Method::GET, "/v1/users/a%2Fb%20c%2Bd", "").await;
    assert_eq!(json(&r)["id"], "a/b c+d");
    // Objects: a collection and an id, each decoded.
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/objects/%24tenants/x%2Fy",
        r#"{"name":"X","collection":"ignored"}"#,
    )
    .await;
    let object = json(&r);
    assert_eq!(object["__typename"], "Object");
    assert_eq!(object["collection"], "$tenants");
    assert_eq!(object["id"], "x/y");
    assert_eq!(object["properties"], json!({ "name": "X" }));
    // Not UTF-8 once decoded: 422.
    assert_error(
        &send(&mut c, Method::GET, "/v1/users/%FF", "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
}

#[tokio::test]
async fn preference_sets_read_and_write_as_knock_does() {
    let d = daemon().await;
    let mut c = d.http().await;
    // An unknown user reads as defaults, and lists no sets.
    let r = send(&mut c, Method::GET, "/v1/users/u2/preferences/default", "").await;
    let set = json(&r);
    assert_eq!(set["__typename"], "PreferenceSet");
    assert_eq!(set["channel_types"]["sms"], false);
    assert_eq!(
        json(&send(&mut c, Method::GET, "/v1/users/u2/preferences", "").await),
        json!([])
    );
    // A PUT answers the effective set (A2), with the lock markers a UI PUTs back (A3).
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/users/u2/preferences/default",
        r#"{"id":"x","__typename":"PreferenceSet","channel_types":{"email":false,"__strategy__":"replace"}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let effective = json(&r);
    assert_eq!(effective["id"], "default");
    assert_eq!(effective["channel_types"]["email"], false);
    assert_eq!(
        effective["channel_types"]["sms"], false,
        "the default shows"
    );
    assert_eq!(effective["commercial_subscribed"], true);
    let stored = json(&send(&mut c, Method::GET, "/v1/users/u2/preferences", "").await);
    assert_eq!(stored[0]["channel_types"], json!({ "email": false }));
    // `tenant` on a read is the read of that tenant's set (A1).
    let r = send(
        &mut c,
        Method::GET,
        "/v1/users/u2/preferences/default?tenant=acme",
        "",
    )
    .await;
    let acme = json(&r);
    assert_eq!(acme["id"], "acme");
    assert_eq!(acme["categories"]["marketing"], false);
    assert_error(
        &send(
            &mut c,
            Method::GET,
            "/v1/users/u2/preferences/other?tenant=acme",
            "",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    // A bad field is named by its path in the body.
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/users/u2/preferences/default",
        r#"{"channel_types":{"fax":true}}"#,
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_params");
    assert_eq!(json(&r)["errors"][0]["field"], "channel_types.fax");
    // Merge on request.
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/users/u2/preferences/default",
        r#"{"__persistence_strategy__":"merge","channel_types":{"sms":true}}"#,
    )
    .await;
    assert_eq!(
        json(&r)["channel_types"]["email"],
        false,
        "merged, not replaced"
    );
    assert_eq!(
        send(
            &mut c,
            Method::DELETE,
            "/v1/users/u2/preferences/default",
            ""
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        json(&send(&mut c, Method::GET, "/v1/users/u2/preferences", "").await),
        json!([])
    );
}

#[tokio::test]
async fn bodies_and_routes_fail_as_knock_says() {
    let d = daemon().await;
    let mut c = d.http().await;
    assert_error(
        &send(&mut c, Method::PUT, "/v1/users/u3", "{not json").await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        &send(&mut c, Method::PUT, "/v1/users/u3", "[1]").await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        &send(
            &mut c,
            Method::PUT,
            "/v1/users/u3",
            r#"{"created_at":"yesterday"}"#,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/users/u3/preferences/default",
        r#"{"__persistence_strategy__":"merge","__persistence_strategy__":"replace"}"#,
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_params");
    assert!(
        r.json.as_ref().is_some_and(|b| b["message"]
            .as_str()
            .is_some_and(|m| m.contains("__persistence_strategy__"))),
        "{:?}",
        r.body
    );
    let r = send(&mut c, Method::POST, "/v1/users/u3", "{}").await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.headers.contains_key("allow"));
    // Out of scope, and unknown: Knock's 404 body, never 5xx.
    for path in [
        "/v1/users/u3/channel_data/abc",
        "/v1/users/u3/preference_center/config",
        "/v1/audiences/a/members",
        "/v1/nothing",
    ] {
        let r = send(&mut c, Method::GET, path, "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            json(&r),
            json!({ "errors": { "detail": "404 Not Found" } }),
            "{path}"
        );
    }
    // JSON-RPC stays on `POST /`.
    assert_eq!(d.call("daemon.ping", Value::Null).await, json!("pong"));
}

#[tokio::test]
async fn tenants_and_bulk_operations() {
    let d = daemon().await;
    let mut c = d.http().await;
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/tenants/t1",
        r#"{"name":"T One","region":"eu","settings":{"preference_set":{"channel_types":{"sms":true}}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let tenant = json(&r);
    assert_eq!(tenant["__typename"], "Tenant");
    assert_eq!(tenant["name"], "T One");
    assert_eq!(tenant["region"], "eu", "A11: flattened");
    assert_eq!(tenant["settings"]["preference_set"]["id"], "default");
    assert_eq!(
        tenant["settings"]["preference_set"]["channel_types"],
        json!({ "sms": true })
    );
    let full = json(
        &send(
            &mut c,
            Method::GET,
            "/v1/tenants/t1?resolve_full_preference_settings=true",
            "",
        )
        .await,
    );
    assert_eq!(
        full["settings"]["preference_set"]["channel_types"]["email"],
        true
    );
    // A template-only tenant is 404 here (A6); a tenant body's `preferences` is 422 (A12).
    assert_eq!(
        send(&mut c, Method::GET, "/v1/tenants/acme", "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_error(
        &send(
            &mut c,
            Method::PUT,
            "/v1/tenants/t1",
            r#"{"preferences":{}}"#,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    assert_error(
        &send(
            &mut c,
            Method::GET,
            "/v1/tenants/t1?resolve_full_preference_settings=yes",
            "",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    for _ in 0..2 {
        assert_eq!(
            send(&mut c, Method::DELETE, "/v1/tenants/t1", "")
                .await
                .status,
            StatusCode::NO_CONTENT
        );
    }

    // A bulk set retried with the same Idempotency-Key is the same operation; another
    // payload under that key is 409 and must not be retried.
    let body = r#"{"user_ids":["b1","b2"],"preferences":{"channel_types":{"email":false}}}"#;
    let key = [("idempotency-key", "stainless-node-retry-1")];
    let first = c
        .request(Method::POST, "/v1/users/bulk/preferences", body, &key)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let operation = json(&first);
    assert_eq!(operation["__typename"], "BulkOperation");
    assert_eq!(operation["estimated_total_rows"], 2);
    let again = c
        .request(Method::POST, "/v1/users/bulk/preferences", body, &key)
        .await;
    assert_eq!(json(&again)["id"], operation["id"]);
    let other = c
        .request(
            Method::POST,
            "/v1/users/bulk/preferences",
            r#"{"user_ids":["b3"],"preferences":{}}"#,
            &key,
        )
        .await;
    assert_error(&other, StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(other.headers["x-should-retry"], "false");
    let merge = send(
        &mut c,
        Method::POST,
        "/v1/users/bulk/preferences",
        r#"{"user_ids":["b1"],"preferences":{"__persistence_strategy__":"merge"}}"#,
    )
    .await;
    assert_error(&merge, StatusCode::UNPROCESSABLE_ENTITY, "invalid_params");
    let path = format!(
        "/v1/bulk_operations/{}",
        operation["id"].as_str().expect("an id")
    );
    let got = json(&send(&mut c, Method::GET, &path, "").await);
    assert_eq!(got["id"], operation["id"]);
    assert_eq!(got["progress_path"], path);
    for unknown in ["/v1/bulk_operations/nope", "/v1/bulk_operations/%00"] {
        assert_error(
            &send(&mut c, Method::GET, unknown, "").await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
}

#[tokio::test]
async fn auth_is_knocks_on_both_listeners() {
    let d = daemon().await;
    let sk = [("authorization", "Bearer sk_test")];
    // TCP: a server call needs the secret key, whatever require_credentials says.
    let mut t = d.tcp().await;
    assert_error(
        &t.request(Method::GET, "/v1/users/u4/preferences", "", &[])
            .await,
        StatusCode::UNAUTHORIZED,
        "api_key_missing",
    );
    assert_error(
        &t.request(
            Method::GET,
            "/v1/users/u4/preferences",
            "",
            &[("authorization", "Bearer sk_wrong")],
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "api_key_missing",
    );
    let r = t.request(Method::PUT, "/v1/users/u4", "{}", &sk).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // JSON-RPC is never served on TCP.
    let r = t
        .request(
            Method::POST,
            "/",
            r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#,
            &sk,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A public key is never a server caller, on either listener.
    let pk = [("authorization", "Bearer pk_test")];
    assert_error(
        &t.request(Method::GET, "/v1/users/u4", "", &pk).await,
        StatusCode::UNAUTHORIZED,
        "missing_user_token",
    );
    let mut s = d.http().await;
    assert_error(
        &s.request(Method::GET, "/v1/users/u4", "", &pk).await,
        StatusCode::UNAUTHORIZED,
        "missing_user_token",
    );
    // A user token: its own user's routes, nothing else.
    let token = token("u4");
    let browser = [
        ("authorization", "Bearer pk_test"),
        ("x-knock-user-token", token.as_str()),
        ("content-type", "application/json"),
    ];
    let r = t
        .request(
            Method::GET,
            "/v1/users/u4/preferences/default",
            "",
            &browser,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = t
        .request(
            Method::PUT,
            "/v1/users/u4/preferences/default",
            r#"{"channel_types":{"sms":true}}"#,
            &browser,
        )
        .await;
    assert_eq!(json(&r)["channel_types"]["sms"], true, "{:?}", r.body);
    assert_error(
        &t.request(
            Method::GET,
            "/v1/users/u5/preferences/default",
            "",
            &browser,
        )
        .await,
        StatusCode::FORBIDDEN,
        "authorization",
    );
    assert_error(
        &t.request(Method::GET, "/v1/tenants/acme", "", &browser)
            .await,
        StatusCode::FORBIDDEN,
        "incorrect_token_type",
    );
    assert_error(
        &t.request(Method::DELETE, "/v1/users/u4", "", &browser)
            .await,
        StatusCode::FORBIDDEN,
        "incorrect_token_type",
    );
    let forged = [
        ("authorization", "Bearer pk_test"),
        ("x-knock-user-token", "not.a.token"),
    ];
    assert_error(
        &t.request(Method::GET, "/v1/users/u4/preferences/default", "", &forged)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_user_token",
    );
}

#[tokio::test]
async fn cors_is_exactly_as_rest_md_says() {
    let d = daemon().await;
    let mut t = d.tcp().await;
    let allowed = [("origin", ORIGIN)];
    let refused = [("origin", "https://evil.example.com")];
    // A preflight needs no credentials.
    let pre = t
        .request(
            Method::OPTIONS,
            "/v1/users/u6/preferences/default",
            "",
            &[
                ("origin", ORIGIN),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization, x-knock-user-token, content-type",
                ),
            ],
        )
        .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT);
    assert_eq!(pre.headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(pre.headers["vary"], "Origin");
    assert_eq!(
        pre.headers["access-control-allow-methods"],
        "GET, PUT, POST, DELETE"
    );
    assert_eq!(
        pre.headers["access-control-allow-headers"],
        "accept, authorization, content-type, x-knock-user-token, x-knock-client, x-knock-branch"
    );
    assert_eq!(pre.headers["access-control-max-age"], "600");
    assert!(!pre.headers.contains_key("access-control-allow-credentials"));
    let pre = t
        .request(Method::OPTIONS, "/v1/users/u6", "", &refused)
        .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT);
    assert!(!pre.headers.contains_key("access-control-allow-origin"));
    assert!(!pre.headers.contains_key("access-control-allow-methods"));
    // Actual requests: a 401 (no key) and a 404 (no route) carry the headers too, for an
    // allowed origin only.
    for path in ["/v1/users/u6", "/v1/nothing"] {
        let r = t.request(Method::GET, path, "", &allowed).await;
        assert!(r.status.is_client_error(), "{path}");
        assert_eq!(r.headers["access-control-allow-origin"], ORIGIN, "{path}");
        assert_eq!(r.headers["vary"], "Origin");
        assert_eq!(r.headers["access-control-expose-headers"], "Retry-After");
        let r = t.request(Method::GET, path, "", &refused).await;
        assert!(
            !r.headers.contains_key("access-control-allow-origin"),
            "{path}"
        );
        assert!(!r.headers.contains_key("access-control-expose-headers"));
    }
    // And on the socket, where a proxy may forward browsers.
    let mut s = d.http().await;
    let r = s
        .request(Method::GET, "/v1/users/u6/preferences", "", &allowed)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["access-control-allow-origin"], ORIGIN);
}

#[tokio::test]
async fn lists_page_as_knock_does() {
    let d = daemon().await;
    let mut c = d.http().await;
    for id in ["l1", "l2", "l3"] {
        send(
            &mut c,
            Method::PUT,
            &format!("/v1/users/{id}"),
            r#"{"name":"L"}"#,
        )
        .await;
    }
    send(
        &mut c,
        Method::PUT,
        "/v1/users/l1/preferences/default",
        r#"{"channel_types":{"sms":true}}"#,
    )
    .await;
    // Repeated `include[]` (brackets encoded, as the SDKs send them), unknown values ignored.
    let r = send(
        &mut c,
        Method::GET,
        "/v1/users?page_size=2&include%5B%5D=preferences&include%5B%5D=other",
        "",
    )
    .await;
    let page = json(&r);
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(entries[0]["id"], "l1");
    assert_eq!(entries[0]["__typename"], "User");
    assert_eq!(entries[0]["name"], "L");
    assert_eq!(
        entries[0]["preferences"]["default"]["channel_types"],
        json!({ "sms": true }),
        "A10"
    );
    assert_eq!(page["page_info"]["__typename"], "PageInfo");
    assert_eq!(page["page_info"]["page_size"], 2);
    assert_eq!(page["page_info"]["before"], Value::Null);
    let after = page["page_info"]["after"].as_str().expect("a next page");
    let r = send(
        &mut c,
        Method::GET,
        &format!("/v1/users?page_size=2&after={after}"),
        "",
    )
    .await;
    let last = json(&r);
    assert_eq!(last["entries"][0]["id"], "l3");
    assert!(last["entries"][0].get("preferences").is_none());
    assert_eq!(last["page_info"]["after"], Value::Null);
    // page_size: above 50 clamped (A17), below 1 or not a number 422.
    let r = send(&mut c, Method::GET, "/v1/users?page_size=500", "").await;
    assert_eq!(json(&r)["page_info"]["page_size"], 50);
    for bad in ["0", "-1", "ten"] {
        let r = send(
            &mut c,
            Method::GET,
            &format!("/v1/users?page_size={bad}"),
            "",
        )
        .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_params");
        assert_eq!(json(&r)["errors"][0]["field"], "page_size", "{bad}");
    }
    let desc = json(&send(&mut c, Method::GET, "/v1/users?order=desc", "").await);
    assert_eq!(desc["entries"][0]["id"], "l3");
    // Objects and tenants.
    send(&mut c, Method::PUT, "/v1/objects/docs/d1", "{}").await;
    let objects = json(&send(&mut c, Method::GET, "/v1/objects/docs", "").await);
    assert_eq!(objects["entries"][0]["__typename"], "Object");
    assert_eq!(objects["entries"][0]["collection"], "docs");
    send(&mut c, Method::PUT, "/v1/tenants/ta", r#"{"name":"A"}"#).await;
    send(&mut c, Method::PUT, "/v1/tenants/tb", r#"{"name":"B"}"#).await;
    let tenants = json(&send(&mut c, Method::GET, "/v1/tenants?name=B", "").await);
    assert_eq!(tenants["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(tenants["entries"][0]["id"], "tb");
    assert_eq!(tenants["entries"][0]["__typename"], "Tenant");
}

#[tokio::test]
async fn bulk_routes_queue_jobs_with_knocks_bodies() {
    let d = daemon().await;
    let mut c = d.http().await;
    let post = |path: &'static str, body: &'static str| (path, body);
    let cases = [
        (
            post(
                "/v1/users/bulk/identify",
                r#"{"users":[{"id":"k1","name":"K","channel_data":{}}]}"#,
            ),
            "users.identify",
        ),
        (
            post("/v1/users/bulk/delete", r#"{"user_ids":["k9"]}"#),
            "users.delete",
        ),
        (
            post(
                "/v1/objects/docs/bulk/set",
                r#"{"objects":[{"id":"o1","title":"T"}]}"#,
            ),
            "objects.docs.set",
        ),
        (
            post("/v1/objects/docs/bulk/delete", r#"{"object_ids":["o9"]}"#),
            "objects.docs.delete",
        ),
        (
            post(
                "/v1/tenants/bulk/set",
                r#"{"tenants":["tk1",{"id":"tk2","name":"Two","tier":"gold"}]}"#,
            ),
            "tenants.set",
        ),
    ];
    let mut ids = Vec::new();
    for ((path, body), name) in cases {
        let r = send(&mut c, Method::POST, path, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
        let operation = json(&r);
        assert_eq!(operation["name"], name, "{path}");
        assert_eq!(operation["status"], "queued", "{path}");
        ids.push(operation["id"].as_str().expect("an id").to_string());
    }
    // #34: ids in the query, an empty body with `Content-Length: 0`, and the retry of the
    // same Idempotency-Key answered with the same operation.
    let headers = [("content-length", "0"), ("idempotency-key", "k-34")];
    let path = "/v1/tenants/bulk/delete?tenant_ids%5B%5D=tk1&tenant_ids%5B%5D=tk9";
    let first = json(&c.request(Method::POST, path, "", &headers).await);
    assert_eq!(first["name"], "tenants.delete", "{first}");
    assert_eq!(first["estimated_total_rows"], 2);
    let again = json(&c.request(Method::POST, path, "", &headers).await);
    assert_eq!(again["id"], first["id"]);
    let other = c
        .request(
            Method::POST,
            "/v1/tenants/bulk/delete?tenant_ids%5B%5D=tk2",
            "",
            &headers,
        )
        .await;
    assert_error(&other, StatusCode::CONFLICT, "idempotency_key_reused");
    assert_eq!(other.headers["x-should-retry"], "false");
    assert_error(
        &send(&mut c, Method::POST, "/v1/tenants/bulk/delete", "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    // The jobs run: the identified user and tenant exist with Knock's flattened properties.
    ids.push(first["id"].as_str().expect("an id").to_string());
    for id in ids {
        crate::support::wait_for("a bulk job to complete", || {
            let d = &d;
            let id = id.clone();
            async move {
                let op = d.call("bulkOperations.get", json!({ "id": id })).await;
                (op["status"] == "completed").then_some(())
            }
        })
        .await;
    }
    let user = json(&send(&mut c, Method::GET, "/v1/users/k1", "").await);
    assert_eq!(user["name"], "K");
    let tenant = json(&send(&mut c, Method::GET, "/v1/tenants/tk2", "").await);
    assert_eq!(tenant["tier"], "gold");
    assert_eq!(
        send(&mut c, Method::GET, "/v1/tenants/tk1", "")
            .await
            .status,
        StatusCode::NOT_FOUND,
        "deleted by #34"
    );
}

#[tokio::test]
async fn merge_and_the_legacy_granular_writes() {
    let d = daemon().await;
    let mut c = d.http().await;
    send(&mut c, Method::PUT, "/v1/users/m1", r#"{"name":"Target"}"#).await;
    send(
        &mut c,
        Method::PUT,
        "/v1/users/m2",
        r#"{"name":"Source","plan":"pro"}"#,
    )
    .await;
    let r = send(
        &mut c,
        Method::POST,
        "/v1/users/m1/merge",
        r#"{"from_user_id":"m2"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let user = json(&r);
    assert_eq!(user["__typename"], "User");
    assert_eq!(user["name"], "Target", "the target wins");
    assert_eq!(user["plan"], "pro");
    // Retried after it committed: the source is gone (§9).
    assert_error(
        &send(
            &mut c,
            Method::POST,
            "/v1/users/m1/merge",
            r#"{"from_user_id":"m2"}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &send(&mut c, Method::POST, "/v1/users/m1/merge", "{}").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );

    // #10-15 (A7): a whole section, or one key, answered as the effective set (A2), with a
    // user token as the browser client sends them.
    let token = token("g1");
    let browser = [
        ("authorization", "Bearer pk_test"),
        ("x-knock-user-token", token.as_str()),
    ];
    let mut t = d.tcp().await;
    let put = async |t: &mut HttpConn, path: &str, body: &str| {
        t.request(Method::PUT, path, body.to_string(), &browser)
            .await
    };
    let r = put(
        &mut t,
        "/v1/users/g1/preferences/default/channel_types",
        r#"{"email":false}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(json(&r)["channel_types"]["email"], false);
    assert_eq!(json(&r)["channel_types"]["sms"], false, "the effective set");
    let r = put(
        &mut t,
        "/v1/users/g1/preferences/default/channel_types/sms",
        r#"{"subscribed":true}"#,
    )
    .await;
    assert_eq!(json(&r)["channel_types"]["sms"], true);
    assert_eq!(
        json(&r)["channel_types"]["email"],
        false,
        "the other keys stay"
    );
    let r = put(
        &mut t,
        "/v1/users/g1/preferences/default/workflows/digest",
        r#"{"subscribed":false}"#,
    )
    .await;
    assert_eq!(json(&r)["workflows"]["digest"], false);
    let r = put(
        &mut t,
        "/v1/users/g1/preferences/default/categories/marketing",
        r#"{"channel_types":{"email":false}}"#,
    )
    .await;
    assert_eq!(
        json(&r)["categories"]["marketing"],
        json!({ "channel_types": { "email": false } })
    );
    let r = put(
        &mut t,
        "/v1/users/g1/preferences/default/categories",
        r#"{"collaboration":true}"#,
    )
    .await;
    assert_eq!(json(&r)["categories"], json!({ "collaboration": true }));
    assert_error(
        &put(
            &mut t,
            "/v1/users/g1/preferences/default/channel_types/fax",
            r#"{"subscribed":true}"#,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    assert_error(
        &put(
            &mut t,
            "/v1/users/g2/preferences/default/channel_types",
            r#"{"email":true}"#,
        )
        .await,
        StatusCode::FORBIDDEN,
        "authorization",
    );
    // Knock's granular object-preference PUTs are out of scope.
    let r = send(
        &mut c,
        Method::PUT,
        "/v1/objects/docs/d1/preferences/default/channel_types",
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// `prefsd serve` on a config directory holding `toml`: its exit code and stderr.
async fn serve_exit(toml: &str, env_keys: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("config");
    crate::support::write_files(&config, &[("prefsd.toml".to_string(), toml.to_string())]);
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--socket".into(),
        dir.path().join("d.sock").display().to_string(),
        "serve".into(),
        "--database".into(),
        dir.path().join("d.db").display().to_string(),
    ];
    let env_keys = env_keys.map(str::to_string);
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prefsd"));
        command.args(&args).env("PREFSD_LOG", "warn");
        match env_keys {
            Some(keys) => command.env("PREFSD_SECRET_KEYS", keys),
            None => command.env_remove("PREFSD_SECRET_KEYS"),
        };
        command.output().expect("running prefsd serve")
    })
    .await
    .expect("the blocking task");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_listener_refuses_to_start_unsafely() {
    // No secret key anywhere: exit 2, saying what is missing.
    let (code, stderr) = serve_exit("[rest]\nlisten = \"127.0.0.1:0\"\n", None).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("rest.listen") && stderr.contains("secret key"),
        "{stderr}"
    );
    // Off loopback without allow_non_loopback: exit 2, even with a key.
    let toml = "[access]\nsecret_keys = [\"sk\"]\n[rest]\nlisten = \"0.0.0.0:0\"\n";
    let (code, stderr) = serve_exit(toml, None).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("allow_non_loopback"), "{stderr}");
    // Not an address.
    let (code, stderr) = serve_exit("[rest]\nlisten = \"localhost\"\n", Some("sk")).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("IP:port"), "{stderr}");
}

#[tokio::test]
async fn a_reload_may_not_leave_the_tcp_listener_without_a_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let with_key = "[access]\nsecret_keys = [\"sk\"]\n[rest]\nlisten = \"127.0.0.1:7400\"\n";
    crate::support::write_files(dir.path(), &[("prefsd.toml".into(), with_key.into())]);
    let check = prefsd::config::Check(Box::new(|c: &prefsd::config::Config| {
        prefsd::server::check_rest_secret_key(c, &[])
    }));
    let config = prefsd::config::ConfigHandle::load(
        dir.path().to_path_buf(),
        prefsd::config::Overrides::default(),
        Some(check),
    )
    .expect("a valid config");
    std::fs::write(
        dir.path().join("prefsd.toml"),
        "[rest]\nlisten = \"127.0.0.1:7400\"\n",
    )
    .expect("editing the config");
    assert!(
        config.reload_async().await.is_err(),
        "the reload is refused"
    );
    assert_eq!(
        config.current().settings.access.secret_keys,
        ["sk"],
        "the old config stays"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let d = Daemon::start_with(&[("prefsd.toml", crate::support::SMALL_LIMITS_TOML)]).await;
    let mut c = d.http().await;
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(70_000));
    let r = c.request(Method::PUT, "/v1/users/big", big, &[]).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    assert_eq!(
        send(&mut c, Method::GET, "/v1/users/big", "").await.status,
        StatusCode::NOT_FOUND,
        "nothing written"
    );
}

#[tokio::test]
async fn the_tcp_listener_answers_health_probes_and_nothing_of_json_rpc() {
    let d = daemon().await;
    let mut t = d.tcp().await;
    let health = t.request(Method::GET, "/healthz", "", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json, Some(json!({ "status": "ok" })));
    let ready = t.request(Method::GET, "/readyz", "", &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json, Some(json!({ "status": "ready" })));
    // Metrics and JSON-RPC stay on the socket.
    let metrics = t.request(Method::GET, "/metrics", "", &[]).await;
    assert_eq!(metrics.status, StatusCode::NOT_FOUND);
    let rpc = t
        .request(
            Method::POST,
            "/",
            r#"{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}"#,
            &[("authorization", "Bearer sk_test")],
        )
        .await;
    assert_ne!(rpc.status, StatusCode::OK);
}
