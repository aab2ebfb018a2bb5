//! `resolve` and `authorize` on every accepted and refused path, with tokens minted by
//! `auth::mint` and the test keys of `tests/keys/`.

use serde_json::{Value, json};

use super::mint::{SigningKey, sign, tenant_resource, user_claims, user_resource};
use super::*;
use crate::client::client_headers;
use jsonwebtoken::Algorithm;

const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa-public.pem");
const OTHER_RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/other-rsa-private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec-private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ec-public.pem");

const DAEMON: u32 = 1000;
const NOW_S: i64 = 1_800_000_000;

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(NOW_S).expect("a valid time")
}

fn rsa_policy() -> Policy {
    let verifier = Verifier::from_public_key_pem(RSA_PUBLIC).expect("the RSA test key");
    Policy::new(&Access::default(), &[], TokenPolicy::On(verifier))
}

fn rs256(claims: &Value) -> String {
    sign(claims, &SigningKey::Pem(RSA_PRIVATE.to_vec())).expect("signing")
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iat": NOW_S, "exp": NOW_S + 3600 })
}

fn with_token(token: &str) -> Credentials {
    Credentials {
        secret_key: Presented::Absent,
        user_token: Presented::Value(token.to_string()),
    }
}

fn with_key(key: &str) -> Credentials {
    Credentials {
        secret_key: Presented::Value(key.to_string()),
        user_token: Presented::Absent,
    }
}

/// The caller of an RS256 token with `claims`, from the daemon's own uid.
fn user_caller(claims: &Value) -> Result<Caller, Denied> {
    resolve(
        Some(DAEMON),
        &with_token(&rs256(claims)),
        &rsa_policy(),
        DAEMON,
        now(),
    )
}

#[track_caller]
fn unauthenticated(result: Result<Caller, Denied>, says: &str) {
    match result {
        Err(Denied::Unauthenticated(m)) => {
            assert!(m.starts_with("unauthenticated: "), "{m}");
            assert!(m.contains(says), "{m:?} does not say {says:?}");
        }
        other => panic!("expected unauthenticated ({says}), got {other:?}"),
    }
}

#[track_caller]
fn forbidden(result: Result<(), Denied>, says: &str) {
    match result {
        Err(Denied::Forbidden(m)) => {
            assert!(m.starts_with("forbidden: "), "{m}");
            assert!(m.contains(says), "{m:?} does not say {says:?}");
        }
        other => panic!("expected forbidden ({says}), got {other:?}"),
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token: `alg: none`, an empty signature.
fn alg_none(claims: &Value) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

fn params(p: Value) -> String {
    p.to_string()
}

fn user(sub: &str, grants: Grants) -> Caller {
    Caller::User(UserCaller {
        uid: DAEMON,
        sub: sub.into(),
        grants,
    })
}

fn call(caller: &Caller, method: &str, p: Value) -> Result<(), Denied> {
    authorize(caller, method, Some(&params(p)))
}

// --- helpers ---

#[test]
fn constant_time_eq_compares_whole_strings() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"secret2"));
    assert!(!constant_time_eq(b"secret", b""));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn key_lists_drop_blanks() {
    assert_eq!(parse_key_list(" a, b ,,c,"), vec!["a", "b", "c"]);
    assert!(parse_key_list("").is_empty());
}

#[test]
fn base64url_matches_known_values() {
    assert_eq!(base64url(b"f"), "Zg");
    assert_eq!(base64url(b"fo"), "Zm8");
    assert_eq!(base64url(b"foo"), "Zm9v");
    assert_eq!(base64url(b"\xfb\xff"), "-_8");
}

#[test]
fn credentials_from_headers() {
    let mut h = http::HeaderMap::new();
    assert_eq!(Credentials::from_headers(&h), Credentials::default());
    h.insert(
        "authorization",
        "bearer  k1 ".parse().expect("a header value"),
    );
    h.insert("x-knock-user-token", "t1".parse().expect("a header value"));
    let c = Credentials::from_headers(&h);
    assert_eq!(c.secret_key, Presented::Value("k1".into()));
    assert_eq!(c.user_token, Presented::Value("t1".into()));
    // Debug shows neither.
    let shown = format!("{c:?}");
    assert!(!shown.contains("k1") && !shown.contains("t1"), "{shown}");

    // The same token under both names is one token; different ones are malformed.
    h.insert("x-user-token", "t1".parse().expect("a header value"));
    assert_eq!(
        Credentials::from_headers(&h).user_token,
        Presented::Value("t1".into())
    );
    h.insert("x-user-token", "t2".parse().expect("a header value"));
    assert!(matches!(
        Credentials::from_headers(&h).user_token,
        Presented::Malformed(_)
    ));

    let mut h = http::HeaderMap::new();
    h.insert(
        "authorization",
        "Basic dXNlcjpwYXNz".parse().expect("a header value"),
    );
    assert!(matches!(
        Credentials::from_headers(&h).secret_key,
        Presented::Malformed(_)
    ));
    h.insert("authorization", "Bearer ".parse().expect("a header value"));
    assert!(matches!(
        Credentials::from_headers(&h).secret_key,
        Presented::Malformed(_)
    ));
    h.insert("authorization", "Bearer a".parse().expect("a header value"));
    h.append("authorization", "Bearer b".parse().expect("a header value"));
    assert!(matches!(
        Credentials::from_headers(&h).secret_key,
        Presented::Malformed(_)
    ));
}

#[test]
fn client_headers_round_trip() {
    let h = client_headers(Some("k"), Some("t")).expect("headers");
    let c = Credentials::from_headers(&h);
    assert_eq!(c.secret_key, Presented::Value("k".into()));
    assert_eq!(c.user_token, Presented::Value("t".into()));
    assert!(client_headers(None, None).expect("headers").is_empty());
    assert!(client_headers(Some("bad\nkey"), None).is_err());
}

// --- resolve: peers and secret keys ---

#[test]
fn default_allows_the_daemons_uid_and_root_only() {
    let policy = Policy::new(&Access::default(), &[], TokenPolicy::Off);
    let none = Credentials::default();
    assert_eq!(
        resolve(Some(DAEMON), &none, &policy, DAEMON, now()),
        Ok(Caller::Server { uid: DAEMON })
    );
    assert_eq!(
        resolve(Some(0), &none, &policy, DAEMON, now()),
        Ok(Caller::Server { uid: 0 })
    );
    unauthenticated(
        resolve(Some(1001), &none, &policy, DAEMON, now()),
        "peer uid 1001",
    );
    unauthenticated(resolve(None, &none, &policy, DAEMON, now()), "SO_PEERCRED");
}

#[test]
fn allowed_uids_replace_the_default() {
    let access = Access {
        allowed_uids: vec![1001],
        ..Access::default()
    };
    let policy = Policy::new(&access, &[], TokenPolicy::Off);
    let none = Credentials::default();
    assert!(resolve(Some(1001), &none, &policy, DAEMON, now()).is_ok());
    unauthenticated(
        resolve(Some(DAEMON), &none, &policy, DAEMON, now()),
        "[1001]",
    );
    unauthenticated(
        resolve(Some(0), &none, &policy, DAEMON, now()),
        "peer uid 0",
    );
}

#[test]
fn secret_keys_when_required() {
    let access = Access {
        require_credentials: true,
        secret_keys: vec!["sk_config".into(), "".into()],
        ..Access::default()
    };
    let policy = Policy::new(&access, &["sk_env".to_string()], TokenPolicy::Off);
    let server = Ok(Caller::Server { uid: DAEMON });
    assert_eq!(
        resolve(Some(DAEMON), &with_key("sk_config"), &policy, DAEMON, now()),
        server
    );
    assert_eq!(
        resolve(Some(DAEMON), &with_key("sk_env"), &policy, DAEMON, now()),
        server
    );
    unauthenticated(
        resolve(
            Some(DAEMON),
            &Credentials::default(),
            &policy,
            DAEMON,
            now(),
        ),
        "Authorization: Bearer",
    );
    unauthenticated(
        resolve(Some(DAEMON), &with_key("sk_confi"), &policy, DAEMON, now()),
        "not one of",
    );
    unauthenticated(
        resolve(Some(DAEMON), &with_key(""), &policy, DAEMON, now()),
        "not one of",
    );
    let malformed = Credentials {
        secret_key: Presented::Malformed("the Authorization header is not `Bearer <secret key>`"),
        user_token: Presented::Absent,
    };
    unauthenticated(
        resolve(Some(DAEMON), &malformed, &policy, DAEMON, now()),
        "Bearer",
    );
    // A disallowed peer is refused whatever key it has.
    unauthenticated(
        resolve(Some(1001), &with_key("sk_config"), &policy, DAEMON, now()),
        "peer uid",
    );
}

#[test]
fn keys_are_ignored_unless_required() {
    let policy = Policy::new(&Access::default(), &[], TokenPolicy::Off);
    assert!(resolve(Some(DAEMON), &with_key("anything"), &policy, DAEMON, now()).is_ok());
}

#[test]
fn a_user_token_needs_the_secret_key_too_when_required() {
    let access = Access {
        require_credentials: true,
        secret_keys: vec!["sk".into()],
        ..Access::default()
    };
    let verifier = Verifier::from_public_key_pem(RSA_PUBLIC).expect("the RSA test key");
    let policy = Policy::new(&access, &[], TokenPolicy::On(verifier));
    let token = rs256(&claims("u1"));
    unauthenticated(
        resolve(Some(DAEMON), &with_token(&token), &policy, DAEMON, now()),
        "Authorization: Bearer",
    );
    let both = Credentials {
        secret_key: Presented::Value("sk".into()),
        user_token: Presented::Value(token),
    };
    let caller = resolve(Some(DAEMON), &both, &policy, DAEMON, now()).expect("a user caller");
    assert!(matches!(caller, Caller::User(u) if u.sub == "u1"));
}

// --- resolve: user tokens ---

#[test]
fn a_valid_rs256_token_is_a_user_caller() {
    let caller = user_caller(&claims("u1")).expect("accepted");
    assert_eq!(
        caller,
        Caller::User(UserCaller {
            uid: DAEMON,
            sub: "u1".into(),
            grants: Grants::default(),
        })
    );
}

#[test]
fn an_es256_token_verifies_with_an_ec_key() {
    let verifier = Verifier::from_public_key_pem(EC_PUBLIC).expect("the EC test key");
    assert_eq!(verifier.algorithm(), Algorithm::ES256);
    let policy = Policy::new(&Access::default(), &[], TokenPolicy::On(verifier));
    let token = sign(&claims("u1"), &SigningKey::Pem(EC_PRIVATE.to_vec())).expect("signing");
    assert!(resolve(Some(DAEMON), &with_token(&token), &policy, DAEMON, now()).is_ok());
    // An RS256 token is not accepted by an ES256 daemon.
    unauthenticated(
        resolve(
            Some(DAEMON),
            &with_token(&rs256(&claims("u1"))),
            &policy,
            DAEMON,
            now(),
        ),
        "RS256",
    );
}

#[test]
fn hs256_tokens_verify_with_the_secret() {
    let verifier = Verifier::hs256(b"shh").expect("a secret");
    let policy = Policy::new(&Access::default(), &[], TokenPolicy::On(verifier));
    let good = sign(&claims("u1"), &SigningKey::Hs256(b"shh".to_vec())).expect("signing");
    let bad = sign(&claims("u1"), &SigningKey::Hs256(b"guess".to_vec())).expect("signing");
    assert!(resolve(Some(DAEMON), &with_token(&good), &policy, DAEMON, now()).is_ok());
    unauthenticated(
        resolve(Some(DAEMON), &with_token(&bad), &policy, DAEMON, now()),
        "signature",
    );
    // An RS256 token is refused by an HS256 daemon.
    unauthenticated(
        resolve(
            Some(DAEMON),
            &with_token(&rs256(&claims("u1"))),
            &policy,
            DAEMON,
            now(),
        ),
        "accepts only HS256",
    );
    assert!(Verifier::hs256(b"").is_err());
}

#[test]
fn expiry_and_not_before_allow_30_seconds_of_skew() {
    let at = |exp: i64| json!({ "sub": "u1", "exp": exp });
    assert!(user_caller(&at(NOW_S - LEEWAY_S)).is_ok());
    unauthenticated(user_caller(&at(NOW_S - LEEWAY_S - 1)), "expired");
    unauthenticated(user_caller(&at(NOW_S - 3600)), "expired");
    let nbf = |nbf: i64| json!({ "sub": "u1", "exp": NOW_S + 60, "nbf": nbf });
    assert!(user_caller(&nbf(NOW_S + LEEWAY_S)).is_ok());
    unauthenticated(user_caller(&nbf(NOW_S + LEEWAY_S + 1)), "not valid yet");
}

#[test]
fn sub_and_exp_are_required() {
    unauthenticated(user_caller(&json!({ "exp": NOW_S + 60 })), "`sub`");
    unauthenticated(user_caller(&json!({ "sub": "u1" })), "`exp`");
    unauthenticated(
        user_caller(&json!({ "sub": "", "exp": NOW_S + 60 })),
        "empty",
    );
    unauthenticated(
        user_caller(&json!({ "sub": 7, "exp": NOW_S + 60 })),
        "`sub`",
    );
    unauthenticated(
        user_caller(&json!({ "sub": "u1", "exp": "later" })),
        "`exp`",
    );
}

#[test]
fn forged_tokens_are_refused() {
    let policy = rsa_policy();
    let check = |token: &str| resolve(Some(DAEMON), &with_token(token), &policy, DAEMON, now());
    // Signed with another key.
    let other = sign(&claims("u1"), &SigningKey::Pem(OTHER_RSA_PRIVATE.to_vec())).expect("signing");
    unauthenticated(check(&other), "signature");
    // alg: none.
    unauthenticated(check(&alg_none(&claims("u1"))), "malformed");
    // Algorithm confusion: HS256 with the RSA public key as the secret.
    let confused = sign(&claims("u1"), &SigningKey::Hs256(RSA_PUBLIC.to_vec())).expect("signing");
    unauthenticated(check(&confused), "signed with HS256");
    // A payload swapped under a valid signature.
    let good = rs256(&claims("u1"));
    let parts: Vec<&str> = good.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        base64url(claims("admin").to_string().as_bytes()),
        parts[2]
    );
    unauthenticated(check(&swapped), "signature");
    unauthenticated(check("not a jwt"), "well-formed");
}

#[test]
fn tokens_are_refused_without_a_usable_key() {
    let token = with_token(&rs256(&claims("u1")));
    let off = Policy::new(&Access::default(), &[], TokenPolicy::Off);
    unauthenticated(
        resolve(Some(DAEMON), &token, &off, DAEMON, now()),
        "not configured",
    );
    let broken = Policy::new(&Access::default(), &[], TokenPolicy::Broken("gone".into()));
    unauthenticated(
        resolve(Some(DAEMON), &token, &broken, DAEMON, now()),
        "failed to load",
    );
    let malformed = Credentials {
        secret_key: Presented::Absent,
        user_token: Presented::Malformed("a credential header is given twice"),
    };
    unauthenticated(
        resolve(Some(DAEMON), &malformed, &rsa_policy(), DAEMON, now()),
        "twice",
    );
    // A token from a disallowed peer: the peer is refused first.
    unauthenticated(
        resolve(Some(1001), &token, &rsa_policy(), DAEMON, now()),
        "peer uid",
    );
}

#[test]
fn verifier_load_reads_the_configured_key() {
    let dir = std::env::temp_dir().join(format!("prefsd-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let good = dir.join("public.pem");
    std::fs::write(&good, RSA_PUBLIC).expect("writing the key");
    let bad = dir.join("garbage.pem");
    std::fs::write(&bad, "not a key").expect("writing the file");
    let with = |path: &std::path::Path| Access {
        user_token_public_key_file: Some(path.to_path_buf()),
        ..Access::default()
    };
    let v = Verifier::load(&with(&good))
        .expect("loads")
        .expect("configured");
    assert_eq!(v.algorithm(), Algorithm::RS256);
    let e = Verifier::load(&with(&bad)).expect_err("not a key");
    assert!(e.contains("garbage.pem") && e.contains("not a PEM"), "{e}");
    let e = Verifier::load(&with(&dir.join("missing.pem"))).expect_err("missing");
    assert!(e.contains("cannot read"), "{e}");
    assert!(Verifier::load(&Access::default()).expect("ok").is_none());
    assert!(matches!(
        Policy::load(&with(&bad), &[]).user_tokens,
        TokenPolicy::Broken(_)
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

// --- grants ---

#[test]
fn grants_parse_knock_shapes() {
    let token = json!({
        "sub": "u1", "exp": NOW_S + 60,
        "grants": {
            user_resource("u1"): { "preferences/read": [{}] },
            user_resource("u2"): { "preferences/write": [{}] },
            tenant_resource("acme"): { "preferences/write": [{}], "slack/channels_read": [{}] },
            "https://example.com/tenants/globex": { "preferences/read": [{ "if": "x" }] },
            "https://api.knock.app/v1/objects/projects/p1": { "preferences/write": [{}] },
        }
    });
    let Ok(Caller::User(u)) = user_caller(&token) else {
        panic!("accepted")
    };
    assert!(u.grants.restricted);
    assert_eq!(
        u.grants.user,
        Perms {
            read: true,
            write: false
        }
    );
    assert_eq!(
        u.grants.tenants.get("acme"),
        Some(&Perms {
            read: false,
            write: true
        })
    );
    // A conditional grant grants nothing, but the resource still scopes the token.
    assert_eq!(u.grants.tenants.get("globex"), Some(&Perms::default()));
    assert_eq!(u.grants.tenants.len(), 2);
}

#[test]
fn malformed_grants_are_refused() {
    let with = |grants: Value, explicit: Value| json!({ "sub": "u1", "exp": NOW_S + 60, "grants": grants, "explicit_grants": explicit });
    unauthenticated(user_caller(&with(json!([1]), Value::Null)), "`grants`");
    unauthenticated(
        user_caller(&with(json!({ user_resource("u1"): true }), Value::Null)),
        "not an object",
    );
    unauthenticated(
        user_caller(&with(Value::Null, json!("yes"))),
        "explicit_grants",
    );
    let Ok(Caller::User(u)) = user_caller(&with(Value::Null, json!(true))) else {
        panic!("accepted")
    };
    assert!(u.grants.restricted);
}

// --- authorize ---

#[test]
fn server_callers_may_call_anything() {
    let server = Caller::Server { uid: 0 };
    for method in [
        "users.bulkSetPreferences",
        "preferences.evaluate",
        "config.reload",
        "x.y",
    ] {
        assert_eq!(authorize(&server, method, None), Ok(()));
    }
}

#[test]
fn a_user_may_use_its_own_users_methods() {
    let me = user("u1", Grants::default());
    for method in USER_METHODS {
        assert_eq!(
            call(&me, method, json!({ "user_id": "u1" })),
            Ok(()),
            "{method}"
        );
    }
    assert_eq!(
        call(
            &me,
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "acme" })
        ),
        Ok(())
    );
    assert_eq!(
        call(
            &me,
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "acme", "preferences": {} })
        ),
        Ok(())
    );
}

#[test]
fn a_user_may_not_act_on_another_user() {
    let me = user("u1", Grants::default());
    for method in USER_METHODS {
        forbidden(
            call(&me, method, json!({ "user_id": "u2" })),
            "may act only on user_id \"u1\"",
        );
    }
    forbidden(call(&me, "users.get", json!({})), "user_id");
    forbidden(call(&me, "users.get", json!({ "user_id": 1 })), "user_id");
    forbidden(authorize(&me, "users.get", None), "user_id");
    forbidden(
        authorize(&me, "users.get", Some("[\"u1\"]")),
        "params object",
    );
    forbidden(
        authorize(&me, "users.get", Some("{not json")),
        "params object",
    );
    forbidden(
        call(
            &me,
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": 5 }),
        ),
        "tenant must be a string",
    );
}

#[test]
fn a_user_may_not_call_anything_else() {
    let me = user("u1", Grants::default());
    for method in [
        "users.bulkSetPreferences",
        "preferences.evaluate",
        "users.delete",
        "users.list",
        "users.merge",
        "users.bulkIdentify",
        "objects.getPreferences",
        "tenants.get",
        "bulkOperations.subscribe",
        "daemon.status",
        "config.reload",
    ] {
        forbidden(
            call(&me, method, json!({ "user_id": "u1", "user_ids": ["u1"] })),
            "may not call",
        );
    }
}

fn restricted(user_perms: Perms, tenants: &[(&str, Perms)]) -> Grants {
    Grants {
        restricted: true,
        user: user_perms,
        account: NONE,
        tenants: tenants.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
    }
}

const READ: Perms = Perms {
    read: true,
    write: false,
};
const WRITE: Perms = Perms {
    read: false,
    write: true,
};
const NONE: Perms = Perms {
    read: false,
    write: false,
};

#[test]
fn a_read_only_grant_cannot_write() {
    let me = user("u1", restricted(READ, &[]));
    let own = json!({ "user_id": "u1" });
    assert_eq!(call(&me, "users.getPreferences", own.clone()), Ok(()));
    assert_eq!(call(&me, "users.listPreferences", own.clone()), Ok(()));
    // The user record is not a preference: it needs user/read (access.md).
    forbidden(call(&me, "users.get", own.clone()), "user/read");
    forbidden(
        call(&me, "users.setPreferences", own.clone()),
        "preferences/write",
    );
    forbidden(
        call(&me, "users.unsetPreferences", own),
        "preferences/write",
    );
}

#[test]
fn a_write_only_grant_cannot_read() {
    let me = user("u1", restricted(WRITE, &[]));
    let own = json!({ "user_id": "u1" });
    assert_eq!(call(&me, "users.setPreferences", own.clone()), Ok(()));
    forbidden(call(&me, "users.getPreferences", own), "preferences/read");
}

#[test]
fn explicit_grants_without_grants_allow_nothing() {
    let me = user("u1", restricted(NONE, &[]));
    for method in USER_METHODS {
        forbidden(
            call(&me, method, json!({ "user_id": "u1" })),
            "does not grant",
        );
    }
}

#[test]
fn a_tenant_scoped_token_stays_in_its_tenants() {
    // Scoped to acme, no preferences grants: read and write within acme.
    let me = user(
        "u1",
        Grants {
            restricted: false,
            user: NONE,
            account: NONE,
            tenants: [("acme".to_string(), NONE)].into(),
        },
    );
    let ok =
        |method: &str, p: Value| assert_eq!(call(&me, method, p.clone()), Ok(()), "{method} {p}");
    ok(
        "users.getPreferences",
        json!({ "user_id": "u1", "tenant": "acme" }),
    );
    ok(
        "users.getPreferences",
        json!({ "user_id": "u1", "preference_set": "acme" }),
    );
    ok(
        "users.getPreferences",
        json!({ "user_id": "u1", "preference_set": "default", "tenant": "acme" }),
    );
    ok(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme" }),
    );
    ok(
        "users.unsetPreferences",
        json!({ "user_id": "u1", "preference_set": "acme" }),
    );
    ok("users.get", json!({ "user_id": "u1" }));
    let scoped = "scoped to tenants [\"acme\"]";
    forbidden(
        call(
            &me,
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "globex" }),
        ),
        scoped,
    );
    forbidden(
        call(&me, "users.getPreferences", json!({ "user_id": "u1" })),
        "\"default\"",
    );
    forbidden(
        call(
            &me,
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "acme", "preference_set": "globex" }),
        ),
        "\"globex\"",
    );
    forbidden(
        call(&me, "users.setPreferences", json!({ "user_id": "u1" })),
        "\"default\"",
    );
    forbidden(
        call(
            &me,
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "globex" }),
        ),
        scoped,
    );
    forbidden(
        call(&me, "users.listPreferences", json!({ "user_id": "u1" })),
        "every tenant",
    );
}

#[test]
fn tenant_grants_apply_in_their_tenant() {
    // Read everywhere it may go, write only in acme.
    let me = user("u1", restricted(READ, &[("acme", WRITE), ("globex", NONE)]));
    let set = |t: &str| json!({ "user_id": "u1", "preference_set": t });
    assert_eq!(call(&me, "users.setPreferences", set("acme")), Ok(()));
    assert_eq!(call(&me, "users.getPreferences", set("globex")), Ok(()));
    forbidden(
        call(&me, "users.setPreferences", set("globex")),
        "preferences/write",
    );
    // Write-only in acme and nothing on the user: no reads.
    let me = user("u1", restricted(NONE, &[("acme", WRITE)]));
    forbidden(
        call(&me, "users.getPreferences", set("acme")),
        "preferences/read",
    );
    forbidden(
        call(&me, "users.get", json!({ "user_id": "u1" })),
        "user/read",
    );
}

#[test]
fn end_to_end_a_knock_token_for_a_tenant() {
    let token = user_claims(
        "u1",
        &["preferences/read".into()],
        &["acme".into()],
        60,
        now(),
    );
    let caller = user_caller(&token).expect("accepted");
    let get = |t: &str| json!({ "user_id": "u1", "tenant": t });
    assert_eq!(call(&caller, "users.getPreferences", get("acme")), Ok(()));
    forbidden(
        call(&caller, "users.getPreferences", get("globex")),
        "scoped",
    );
    forbidden(
        call(
            &caller,
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "acme" }),
        ),
        "preferences/write",
    );
}

// --- mint ---

#[test]
fn minted_claims_have_knocks_shape() {
    assert_eq!(
        user_claims("u1", &[], &[], 60, now()),
        json!({ "sub": "u1", "iat": NOW_S, "exp": NOW_S + 60 })
    );
    assert_eq!(
        user_claims("u1", &["preferences/read".into()], &[], 60, now())["grants"],
        json!({ "https://api.knock.app/v1/users/u1": { "preferences/read": [{}] } })
    );
    assert_eq!(
        user_claims("u1", &[], &["acme".into()], 60, now())["grants"],
        json!({ "https://api.knock.app/v1/objects/$tenants/acme": {} })
    );
}

#[test]
fn ttls() {
    assert_eq!(mint::parse_ttl("1h").expect("valid"), 3600);
    assert_eq!(mint::parse_ttl("30m").expect("valid"), 1800);
    assert_eq!(mint::parse_ttl("1h30m").expect("valid"), 5400);
    assert_eq!(mint::parse_ttl("90").expect("valid"), 90);
    assert!(mint::parse_ttl("0").is_err());
    assert!(mint::parse_ttl("-5m").is_err());
    assert!(mint::parse_ttl("soon").is_err());
}

#[test]
fn the_token_command_signs_with_a_key_or_a_secret() {
    let dir = std::env::temp_dir().join(format!("prefsd-mint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let key = dir.join("private.pem");
    std::fs::write(&key, RSA_PRIVATE).expect("writing the key");
    let mut args = mint::args("u1");
    args.key = Some(key);
    args.grants = vec!["preferences/read".into()];
    let token = mint::token_at(&args, now()).expect("a token");
    let Ok(Caller::User(u)) = resolve(
        Some(DAEMON),
        &with_token(&token),
        &rsa_policy(),
        DAEMON,
        now(),
    ) else {
        panic!("the minted token verifies")
    };
    assert_eq!((u.sub.as_str(), u.grants.user), ("u1", READ));

    let mut args = mint::args("u1");
    args.secret = Some("shh".into());
    let token = mint::token_at(&args, now()).expect("a token");
    let policy = Policy::new(
        &Access::default(),
        &[],
        TokenPolicy::On(Verifier::hs256(b"shh").expect("a secret")),
    );
    assert!(resolve(Some(DAEMON), &with_token(&token), &policy, DAEMON, now()).is_ok());

    // Neither --key nor --secret, and no config to take a secret from.
    let e = mint::token_at(&mint::args("u1"), now()).expect_err("no key");
    assert!(
        format!("{e:#}").contains("--key FILE or --secret S"),
        "{e:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// --- the amendments of rest.md §11 ---

#[test]
fn a_user_may_identify_itself_with_the_grants_it_needs() {
    let own = json!({ "user_id": "u1", "properties": { "name": "Jane" } });
    let with_sets = json!({ "user_id": "u1", "preferences": { "default": {} } });
    // No grants: its own user, properties and sets alike; never another user.
    let me = user("u1", Grants::default());
    assert_eq!(call(&me, "users.identify", own.clone()), Ok(()));
    assert_eq!(call(&me, "users.identify", with_sets.clone()), Ok(()));
    forbidden(
        call(&me, "users.identify", json!({ "user_id": "u2" })),
        "may act only on",
    );
    // Grants apply: user/write for the record, preferences/write for the sets.
    let mut grants = restricted(WRITE, &[]);
    forbidden(
        call(&user("u1", grants.clone()), "users.identify", own.clone()),
        "user/write",
    );
    grants.account = WRITE;
    let me = user("u1", grants.clone());
    assert_eq!(call(&me, "users.identify", own.clone()), Ok(()));
    assert_eq!(call(&me, "users.identify", with_sets.clone()), Ok(()));
    grants.user = READ;
    forbidden(
        call(&user("u1", grants), "users.identify", with_sets),
        "preferences/write",
    );
    // users.get needs user/read.
    let mut grants = restricted(READ, &[]);
    grants.account = READ;
    assert_eq!(
        call(&user("u1", grants), "users.get", json!({ "user_id": "u1" })),
        Ok(())
    );
}

#[test]
fn user_grants_parse_on_the_users_own_resource_only() {
    let token = json!({
        "sub": "u1", "exp": NOW_S + 60,
        "grants": {
            user_resource("u1"): { "user/read": [{}], "user/write": [{ "if": "x" }] },
            user_resource("u2"): { "user/write": [{}] },
            tenant_resource("acme"): { "user/write": [{}] },
        }
    });
    let Ok(Caller::User(u)) = user_caller(&token) else {
        panic!("accepted")
    };
    assert!(u.grants.restricted);
    assert_eq!(u.grants.account, READ);
    assert_eq!(u.grants.user, NONE);
    assert_eq!(u.grants.tenants.get("acme"), Some(&NONE));
}

#[test]
fn the_default_set_of_a_tenant_scoped_token_needs_a_grant_on_the_user() {
    let default = json!({ "user_id": "u1" });
    // Scoped to acme, reading on the user too: default may be read, not written.
    let me = user("u1", restricted(READ, &[("acme", WRITE)]));
    assert_eq!(call(&me, "users.getPreferences", default.clone()), Ok(()));
    assert!(
        !me.tenant_scoped(),
        "it may read default through the fallback too"
    );
    forbidden(
        call(&me, "users.setPreferences", default.clone()),
        "\"default\"",
    );
    // Without the grant on the user: no default at all.
    let me = user("u1", restricted(NONE, &[("acme", READ)]));
    forbidden(call(&me, "users.getPreferences", default), "\"default\"");
    assert!(me.tenant_scoped());
}

#[test]
fn tenant_grants_are_read_in_both_spellings() {
    for resource in [
        "https://api.knock.app/v1/tenants/acme",
        "https://api.knock.app/v1/objects/$tenants/acme",
    ] {
        let token = json!({ "sub": "u1", "exp": NOW_S + 60,
                            "grants": { resource: { "preferences/read": [{}] } } });
        let Ok(Caller::User(u)) = user_caller(&token) else {
            panic!("accepted")
        };
        assert_eq!(u.grants.tenants.get("acme"), Some(&READ), "{resource}");
    }
}

#[test]
fn a_public_key_never_makes_a_server_caller() {
    let policy = rsa_policy();
    for key in ["pk_test_123", "pk_"] {
        unauthenticated(
            resolve(Some(DAEMON), &with_key(key), &policy, DAEMON, now()),
            "never makes a server caller",
        );
    }
    // With a user token it is the browser's Bearer: a user caller.
    let mut credentials = with_token(&rs256(&claims("u1")));
    credentials.secret_key = Presented::Value("pk_test_123".into());
    assert!(matches!(
        resolve(Some(DAEMON), &credentials, &policy, DAEMON, now()),
        Ok(Caller::User(_))
    ));
}
