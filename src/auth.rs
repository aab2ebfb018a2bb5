//! Who may call what (access.md): the caller of a request, resolved from the connection's
//! peer credentials and the request's headers, and the one decision whether it may make a
//! call.
//!
//! - [`resolve`] turns a peer uid ([`Peer`], `SO_PEERCRED`, read once per connection), the
//!   credentials of the request ([`Credentials`]: `Authorization: Bearer <secret key>`,
//!   `X-User-Token` / `X-Knock-User-Token`) and the [`Policy`] of the config in force into a
//!   [`Caller`]: a server caller with full access, or a user caller that acts as one user.
//! - [`authorize`] decides whether that caller may call a method with given params.
//!
//! Both are pure: the clock is a parameter, the key file is read by [`Policy::load`] (once
//! per config version, by the RPC middleware). The RPC middleware (`rpc::auth`) is the only
//! code that calls them, before any handler runs; handlers never see credentials. A refusal
//! is a [`Denied`], which becomes the `unauthenticated` (-32002) or `forbidden` (-32003) error
//! of rpc.md.
//!
//! Decisions where access.md leaves a gap:
//! - Secret keys come from `access.secret_keys` (hot-reloaded) and from the environment
//!   variable `PREFSD_SECRET_KEYS` (comma-separated, read once when the daemon starts); either
//!   list is accepted. Empty keys are ignored. When `require_credentials` is off, an
//!   `Authorization` header is ignored.
//! - When `require_credentials` is on, a request with a user token must carry a secret key
//!   too: the peer proves it is a server first, and the token then narrows what it may do.
//!   The one exception is a public key (`pk_…`, the browser client's Bearer), which is
//!   accepted with a user token in its place (rest.md §6), and is never a server caller.
//! - With grants (`explicit_grants`, or any `preferences/*` or `user/*` grant),
//!   `users.get` needs `user/read` and `users.identify` `user/write` on the caller's user;
//!   an identify's inline preference sets are checked as writes of those sets.
//! - User tokens are verified with the key of `access.user_token`: a PEM public key file
//!   (an RSA key means RS256, a P-256 EC key ES256) or an HS256 secret. The file is read at
//!   start-up and again after every config reload. `aud` and `iss` are not checked.
//! - Grants (Knock's shape): `grants` maps a resource URI to `{ "<grant>": [conditions] }`.
//!   A grant counts when its list holds an empty condition `{}` (conditional grants grant
//!   nothing). Resources ending in `/users/<sub>` grant on the caller's own user; resources
//!   ending in `/tenants/<id>` or `/$tenants/<id>` (Knock's `objects/$tenants/<id>`) grant in
//!   tenant `<id>` and scope the token to its tenants; other resources are ignored.
//! - A token with no `preferences/*` grant and without `explicit_grants: true` may read and
//!   write its own preferences (Knock's default for a user token). Otherwise it may do only
//!   what `preferences/read` and `preferences/write` grant, on its user or in the tenant of
//!   the call. `users.get` counts as a read.
//! - A tenant-scoped token may use only its tenants' set ids (as `tenant` or
//!   `preference_set`), and the `"default"` set only with a grant on its user for what the
//!   call does (without a read grant there, not even through the fallback of
//!   preferences.md §4.2, see [`NoDefaultSet`]), and may not call `users.listPreferences`
//!   (which lists the sets of every tenant).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::auth::token::Verifier;
use crate::config::Access;
use crate::model::DEFAULT_SET;
use crate::model::change::Actor;

pub mod mint;
#[cfg(test)]
mod tests;
pub mod token;

/// The most clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_S: i64 = 30;

/// The environment variable with extra secret keys, comma-separated.
pub const SECRET_KEYS_ENV: &str = "PREFSD_SECRET_KEYS";

/// The user-token header, and Knock's name for it.
pub const USER_TOKEN_HEADERS: [&str; 2] = ["x-user-token", "x-knock-user-token"];

/// The methods a user caller may call (access.md), each on its own user only.
pub const USER_METHODS: [&str; 6] = [
    "users.identify",
    "users.get",
    "users.getPreferences",
    "users.listPreferences",
    "users.setPreferences",
    "users.unsetPreferences",
];

/// The peer of a connection: its uid from `SO_PEERCRED`, read once at accept; `None` when
/// the kernel did not tell (such a peer is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
}

/// Put by the RPC middleware into the extensions of every call of a tenant-scoped user
/// token. Such a call may not see the recipient's `default` set, and `authorize` keeps it
/// from naming the set; this marker keeps the handler from reading it through the §4.2
/// fallback (a tenant with no tenant default and no stored set falls back to
/// `env ⊕ recipient["default"]`). Handlers see this marker, never the credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoDefaultSet;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An allowed peer (with a valid secret key when one is required): full access.
    Server { uid: u32 },
    /// A verified user token: that user's own preferences and nothing more.
    User(UserCaller),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCaller {
    /// The peer the token came through.
    pub uid: u32,
    /// The token's `sub`: the only user this caller may act on.
    pub sub: String,
    pub grants: Grants,
}

impl Caller {
    /// Who the change log says made a change this caller asked for (history.md §1): the
    /// token's `sub`, the secret key's id (never the key), or the peer's uid.
    pub fn actor(&self, credentials: &Credentials) -> Actor {
        match (self, &credentials.secret_key) {
            (Caller::User(user), _) => Actor::UserToken {
                sub: user.sub.clone(),
            },
            (Caller::Server { .. }, Presented::Value(key)) => Actor::SecretKey {
                key_id: crate::model::change::key_id(key),
            },
            (Caller::Server { uid }, _) => Actor::Peer { uid: *uid },
        }
    }

    /// Whether the caller is a user token scoped to tenants without a grant to read
    /// preferences on its user: it never sees the recipient's `default` set (see
    /// [`NoDefaultSet`]).
    pub fn tenant_scoped(&self) -> bool {
        matches!(self, Caller::User(user)
            if !user.grants.tenants.is_empty() && !user.grants.user.allows(Op::Read))
    }
}

/// What a user token's grants allow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// `explicit_grants: true` or any `preferences/*` or `user/*` grant: only what is
    /// granted is allowed. Otherwise the token may read and write its own user and
    /// preferences.
    pub restricted: bool,
    /// `preferences/*` granted on the caller's own user resource.
    pub user: Perms,
    /// `user/read` and `user/write` granted on the caller's own user resource: what
    /// `users.get` and `users.identify` need when grants apply.
    pub account: Perms,
    /// Granted per tenant; a non-empty map scopes the token to these tenants.
    pub tenants: BTreeMap<String, Perms>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
}

impl Perms {
    fn allows(self, op: Op) -> bool {
        match op {
            Op::Read => self.read,
            Op::Write => self.write,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn grant(self) -> &'static str {
        match self {
            Op::Read => "preferences/read",
            Op::Write => "preferences/write",
        }
    }
}

/// Why a call is refused. The message is sent to the client and logged; it never contains
/// a token or a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Credentials required and missing, malformed, expired or forged (-32002).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this call (-32003).
    #[error("{0}")]
    Forbidden(String),
}

impl Denied {
    fn unauthenticated(reason: impl fmt::Display) -> Denied {
        Denied::Unauthenticated(format!("unauthenticated: {reason}"))
    }

    fn forbidden(reason: impl fmt::Display) -> Denied {
        Denied::Forbidden(format!("forbidden: {reason}"))
    }
}

impl From<Denied> for crate::Error {
    fn from(d: Denied) -> crate::Error {
        match d {
            Denied::Unauthenticated(m) => crate::Error::Unauthenticated(m),
            Denied::Forbidden(m) => crate::Error::Forbidden(m),
        }
    }
}

/// A credential header as the request carried it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Presented {
    #[default]
    Absent,
    Value(String),
    /// Present but unusable (repeated, not text, wrong scheme): why.
    Malformed(&'static str),
}

/// The credentials of one HTTP request (for a WebSocket: of its upgrade request, for every
/// call on it). `Debug` never shows the values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The key of `Authorization: Bearer <key>`.
    pub secret_key: Presented,
    /// `X-User-Token` or `X-Knock-User-Token`.
    pub user_token: Presented,
}

/// Never shows the value.
impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presented::Absent => f.write_str("Absent"),
            Presented::Value(_) => f.write_str("Value(<redacted>)"),
            Presented::Malformed(why) => f.debug_tuple("Malformed").field(why).finish(),
        }
    }
}

impl Credentials {
    /// Reads the credential headers. A header given twice (or the token under both names
    /// with different values) is malformed, never "the first one wins".
    pub fn from_headers(headers: &http::HeaderMap) -> Credentials {
        let secret_key = match one_header(headers, &[http::header::AUTHORIZATION.as_str()]) {
            Presented::Value(v) => match bearer(&v) {
                Some(key) => Presented::Value(key.to_string()),
                None => {
                    Presented::Malformed("the Authorization header is not `Bearer <secret key>`")
                }
            },
            other => other,
        };
        let user_token = match one_header(headers, &USER_TOKEN_HEADERS) {
            Presented::Value(v) if v.is_empty() => Presented::Malformed("the user token is empty"),
            other => other,
        };
        Credentials {
            secret_key,
            user_token,
        }
    }
}

/// The one value of the headers `names`: absent, one distinct text value, or malformed.
fn one_header(headers: &http::HeaderMap, names: &[&str]) -> Presented {
    let mut found: Option<String> = None;
    for name in names {
        for value in headers.get_all(*name) {
            let Ok(text) = value.to_str() else {
                return Presented::Malformed("a credential header is not plain text");
            };
            let text = text.trim();
            match &found {
                Some(seen) if seen != text => {
                    return Presented::Malformed("a credential header is given twice");
                }
                _ => found = Some(text.to_string()),
            }
        }
    }
    found.map_or(Presented::Absent, Presented::Value)
}

/// The credential of `Bearer <credential>` (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty()).then_some(rest)
}

/// Keys of `PREFSD_SECRET_KEYS` (comma-separated; blanks dropped). Read once at start-up.
pub fn env_secret_keys() -> Vec<String> {
    std::env::var(SECRET_KEYS_ENV)
        .map(|v| parse_key_list(&v))
        .unwrap_or_default()
}

/// Splits a comma-separated key list, trimming and dropping empty entries.
pub fn parse_key_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// `[access]` of the config in force, ready to check requests against.
#[derive(Debug)]
pub struct Policy {
    /// Empty: the daemon's own uid and root.
    pub allowed_uids: Vec<u32>,
    pub require_credentials: bool,
    secret_keys: Vec<Vec<u8>>,
    /// `access.public_keys`: public keys besides any `pk_…` Bearer.
    public_keys: Vec<String>,
    pub user_tokens: TokenPolicy,
}

/// Whether and how user tokens are verified.
#[derive(Debug)]
pub enum TokenPolicy {
    /// `[access.user_token]` is not configured: every user token is refused.
    Off,
    On(Verifier),
    /// Configured but the key could not be loaded (why): every user token is refused.
    Broken(String),
}

impl Policy {
    /// The policy of `access` plus the keys from the environment; reads the public key file
    /// of `access.user_token` if there is one (a failure refuses user tokens; [`Verifier::load`]
    /// reports it at start-up).
    pub fn load(access: &Access, env_keys: &[String]) -> Policy {
        let user_tokens = match Verifier::load(access) {
            Ok(None) => TokenPolicy::Off,
            Ok(Some(v)) => TokenPolicy::On(v),
            Err(reason) => TokenPolicy::Broken(reason),
        };
        Policy::new(access, env_keys, user_tokens)
    }

    /// The policy of `access`, with the user-token verifier already made.
    pub fn new(access: &Access, env_keys: &[String], user_tokens: TokenPolicy) -> Policy {
        let secret_keys = access
            .secret_keys
            .iter()
            .chain(env_keys)
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
            .collect();
        Policy {
            allowed_uids: access.allowed_uids.clone(),
            require_credentials: access.require_credentials,
            secret_keys,
            public_keys: access.public_keys.clone(),
            user_tokens,
        }
    }

    /// Whether `uid` may connect at all.
    pub fn allows_uid(&self, uid: u32, daemon_uid: u32) -> bool {
        if self.allowed_uids.is_empty() {
            uid == daemon_uid || uid == 0
        } else {
            self.allowed_uids.contains(&uid)
        }
    }

    /// Whether a Bearer is a public key: Knock's `pk_` prefix, or one of
    /// `access.public_keys`. The browser client sends one with a user token.
    pub fn is_public_key(&self, key: &str) -> bool {
        key.starts_with("pk_") || self.public_keys.iter().any(|k| k == key)
    }

    pub fn has_secret_keys(&self) -> bool {
        !self.secret_keys.is_empty()
    }

    /// Whether `key` is one of the secret keys, in time independent of which key (if any)
    /// it matches and of where it first differs.
    fn is_secret_key(&self, key: &str) -> bool {
        let mut found = false;
        for k in &self.secret_keys {
            found |= constant_time_eq(k, key.as_bytes());
        }
        found
    }
}

/// Compares two byte strings in time that does not depend on their contents (subtle's
/// `ct_eq`, a maintained constant-time primitive rather than a hand-written loop that the
/// optimiser may shortcut). Strings of different lengths are unequal at once: a key's
/// length is not a secret worth hiding.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

/// The caller of a request from peer `peer_uid` with `credentials`, under `policy`; the
/// daemon runs as `daemon_uid`. Pure: `now` is the clock.
pub fn resolve(
    peer_uid: Option<u32>,
    credentials: &Credentials,
    policy: &Policy,
    daemon_uid: u32,
    now: jiff::Timestamp,
) -> Result<Caller, Denied> {
    let Some(uid) = peer_uid else {
        return Err(Denied::unauthenticated(
            "the peer's credentials (SO_PEERCRED) are unavailable",
        ));
    };
    if !policy.allows_uid(uid, daemon_uid) {
        let allowed = if policy.allowed_uids.is_empty() {
            "the daemon's own uid and root (access.allowed_uids is empty)".to_string()
        } else {
            format!("access.allowed_uids {:?}", policy.allowed_uids)
        };
        return Err(Denied::unauthenticated(format!(
            "peer uid {uid} may not use this socket; allowed: {allowed}"
        )));
    }
    // A public key never makes a server caller (access.md), from any peer: a reverse proxy
    // in front of the socket would otherwise turn every browser request into one. With a
    // user token it is the browser client's Bearer and stands in for the secret key: the
    // token says who calls.
    let public_key = match &credentials.secret_key {
        Presented::Value(key) if policy.is_public_key(key) => Some(key),
        _ => None,
    };
    if let Some(key) = public_key {
        if credentials.user_token == Presented::Absent {
            return Err(Denied::unauthenticated(
                "a public key (pk_…) never makes a server caller: send a user token with it \
                 (X-Knock-User-Token), or a secret key",
            ));
        }
        if !policy.public_keys.is_empty() && !policy.public_keys.contains(key) {
            return Err(Denied::unauthenticated(
                "the public key sent with the user token is not one of access.public_keys",
            ));
        }
    } else if policy.require_credentials {
        require_secret_key(
            credentials,
            policy,
            "this daemon requires `Authorization: Bearer <secret key>` (access.require_credentials \
             is on; the prefsd CLI sends $PREFSD_SECRET_KEY)",
        )?;
    }
    user_or_server(uid, credentials, policy, now)
}

/// The caller of a request on the REST TCP listener (rest.md §2.2, §6.1), which has no peer
/// uid: a server call always needs a secret key there, whatever `require_credentials` says;
/// a user-token call is what it is on the socket. `daemon_uid` stands in for the peer.
pub fn resolve_tcp(
    credentials: &Credentials,
    policy: &Policy,
    daemon_uid: u32,
    now: jiff::Timestamp,
) -> Result<Caller, Denied> {
    if credentials.user_token == Presented::Absent {
        require_secret_key(
            credentials,
            policy,
            "the REST TCP listener requires `Authorization: Bearer <secret key>` for server calls",
        )?;
    }
    user_or_server(daemon_uid, credentials, policy, now)
}

/// `Ok` if the request's Bearer is one of the secret keys; `missing` says what to send.
fn require_secret_key(
    credentials: &Credentials,
    policy: &Policy,
    missing: &str,
) -> Result<(), Denied> {
    match &credentials.secret_key {
        Presented::Absent => Err(Denied::unauthenticated(missing)),
        Presented::Malformed(why) => Err(Denied::unauthenticated(why)),
        Presented::Value(key) if policy.is_secret_key(key) => Ok(()),
        Presented::Value(_) => Err(Denied::unauthenticated(
            "the secret key is not one of access.secret_keys or PREFSD_SECRET_KEYS",
        )),
    }
}

/// A user caller if the request carries a user token (which must verify), else a server
/// caller; the peer `uid` has been allowed.
fn user_or_server(
    uid: u32,
    credentials: &Credentials,
    policy: &Policy,
    now: jiff::Timestamp,
) -> Result<Caller, Denied> {
    let token = match &credentials.user_token {
        Presented::Absent => return Ok(Caller::Server { uid }),
        Presented::Malformed(why) => return Err(Denied::unauthenticated(why)),
        Presented::Value(token) => token,
    };
    let verifier = match &policy.user_tokens {
        TokenPolicy::On(v) => v,
        TokenPolicy::Off => {
            return Err(Denied::unauthenticated(
                "this daemon accepts no user tokens ([access.user_token] is not configured)",
            ));
        }
        TokenPolicy::Broken(_) => {
            return Err(Denied::unauthenticated(
                "this daemon cannot verify user tokens now: its key failed to load (see its log)",
            ));
        }
    };
    let (sub, grants) = verifier.verify(token, now)?;
    Ok(Caller::User(UserCaller { uid, sub, grants }))
}

/// Whether `caller` may call `method` with `params` (the raw JSON params, if any). Server
/// callers may call anything; user callers only their own users methods (see the module
/// doc). Params that cannot be checked are refused, never let through.
pub fn authorize(caller: &Caller, method: &str, params: Option<&str>) -> Result<(), Denied> {
    let user = match caller {
        Caller::Server { .. } => return Ok(()),
        Caller::User(user) => user,
    };
    let op = match method {
        "users.get" | "users.getPreferences" | "users.listPreferences" => Op::Read,
        "users.identify" | "users.setPreferences" | "users.unsetPreferences" => Op::Write,
        _ => {
            return Err(Denied::forbidden(format!(
                "a user token may not call {method}; it may call only {}",
                USER_METHODS.join(", ")
            )));
        }
    };
    let params = match params.map(serde_json::from_str::<Value>) {
        None | Some(Ok(Value::Null)) => Map::new(),
        Some(Ok(Value::Object(map))) => map,
        _ => {
            return Err(Denied::forbidden(
                "a user token's call must name its user_id in a params object",
            ));
        }
    };
    match params.get("user_id") {
        Some(Value::String(id)) if *id == user.sub => {}
        _ => {
            return Err(Denied::forbidden(format!(
                "a user token for {:?} may act only on user_id {:?}",
                user.sub, user.sub
            )));
        }
    }
    if let "users.get" | "users.identify" = method {
        // The user record: `user/read` or `user/write` when grants apply; the preference
        // sets an identify carries are checked as writes of those sets.
        if user.grants.restricted && !user.grants.account.allows(op) {
            let grant = if op == Op::Read {
                "user/read"
            } else {
                "user/write"
            };
            return Err(Denied::forbidden(format!(
                "the user token does not grant {grant} (for user {:?}), which {method} needs",
                user.sub
            )));
        }
        let sets = match params.get("preferences") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Object(sets)) => sets,
            Some(_) => {
                return Err(Denied::forbidden(
                    "preferences must be an object in a user token's call",
                ));
            }
        };
        for set_id in sets.keys() {
            check_set(user, method, op, &[set_id.as_str()], Some(set_id))?;
        }
        return Ok(());
    }
    let tenant = string_param(&params, "tenant")?;
    let set = string_param(&params, "preference_set")?;
    // The set the call reads or writes, as the handlers pick it (a tenant names its set).
    let set_id = match method {
        "users.getPreferences" => Some(tenant.or(set).unwrap_or(DEFAULT_SET)),
        "users.setPreferences" | "users.unsetPreferences" => {
            Some(set.or(tenant).unwrap_or(DEFAULT_SET))
        }
        _ => None,
    };
    if !user.grants.tenants.is_empty() && method == "users.listPreferences" {
        let scope: Vec<&str> = user.grants.tenants.keys().map(String::as_str).collect();
        return Err(Denied::forbidden(format!(
            "a token scoped to tenants {scope:?} may not list the sets of every tenant; \
             read them one by one with users.getPreferences"
        )));
    }
    let named: Vec<&str> = [tenant, set].into_iter().flatten().collect();
    check_set(user, method, op, &named, set_id)
}

/// Whether a user caller may make `op` on its preference set `set_id` (the one the call
/// uses, if any), naming the set ids `named`: within its tenants when it is scoped to
/// some (`"default"` counts only when used, and then needs a grant on the user), and
/// granted `op` when grants apply.
fn check_set(
    user: &UserCaller,
    method: &str,
    op: Op,
    named: &[&str],
    set_id: Option<&str>,
) -> Result<(), Denied> {
    if !user.grants.tenants.is_empty() {
        let scope: Vec<&str> = user.grants.tenants.keys().map(String::as_str).collect();
        let named = named.iter().copied().filter(|id| *id != DEFAULT_SET);
        for id in named.chain(set_id) {
            let on_user = id == DEFAULT_SET && user.grants.user.allows(op);
            if !on_user && !user.grants.tenants.contains_key(id) {
                return Err(Denied::forbidden(format!(
                    "this user token is scoped to tenants {scope:?}; preference set {id:?} is not one of them \
                     (the \"default\" set needs a grant on the user)"
                )));
            }
        }
    }
    if user.grants.restricted {
        let in_tenant = set_id
            .filter(|id| *id != DEFAULT_SET)
            .and_then(|id| user.grants.tenants.get(id));
        let allowed = user.grants.user.allows(op) || in_tenant.is_some_and(|p| p.allows(op));
        if !allowed {
            let where_ = match set_id.filter(|id| *id != DEFAULT_SET) {
                Some(id) => format!(" (for user {:?} or tenant {id:?})", user.sub),
                None => format!(" (for user {:?})", user.sub),
            };
            return Err(Denied::forbidden(format!(
                "the user token does not grant {}{where_}, which {method} needs",
                op.grant()
            )));
        }
    }
    Ok(())
}

/// A string param, `None` when absent or null; anything else cannot be checked.
fn string_param<'a>(params: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Denied> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Denied::forbidden(format!(
            "{name} must be a string in a user token's call"
        ))),
    }
}
