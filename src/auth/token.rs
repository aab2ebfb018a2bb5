//! User tokens (access.md): the [`Verifier`] of `[access.user_token]` and what a verified
//! token grants — its claims checked against the clock, and Knock's `grants` read into
//! [`Grants`].

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Denied, Grants, LEEWAY_S};
use crate::config::Access;

/// Verifies user tokens: one key, one algorithm.
pub struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("alg", &self.alg).finish()
    }
}

impl Verifier {
    /// The verifier of `[access.user_token]`: `None` when it is not configured, an error
    /// (naming the file) when the key cannot be read or used.
    pub fn load(access: &Access) -> Result<Option<Verifier>, String> {
        if let Some(path) = &access.user_token_public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "access.user_token.public_key_file {}: cannot read it: {e}",
                    path.display()
                )
            })?;
            return Verifier::from_public_key_pem(&pem)
                .map(Some)
                .map_err(|e| format!("access.user_token.public_key_file {}: {e}", path.display()));
        }
        access
            .user_token_hs256_secret
            .as_deref()
            .map(|s| Verifier::hs256(s.as_bytes()))
            .transpose()
    }

    /// RS256 for an RSA public key, ES256 for an EC (P-256) one.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Verifier, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Verifier {
                alg: Algorithm::RS256,
                key,
            });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Verifier {
                alg: Algorithm::ES256,
                key,
            });
        }
        Err("not a PEM RSA or EC public key".into())
    }

    /// An error for an empty secret.
    pub fn hs256(secret: &[u8]) -> Result<Verifier, String> {
        let key = DecodingKey::from_secret(secret)
            .map_err(|_| "access.user_token.hs256_secret is empty".to_string())?;
        Ok(Verifier {
            alg: Algorithm::HS256,
            key,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `token` at `now`: signature and algorithm (exactly the configured one),
    /// `sub` and `exp` present, `exp` and `nbf` within [`LEEWAY_S`], grants well-formed.
    pub fn verify(&self, token: &str, now: jiff::Timestamp) -> Result<(String, Grants), Denied> {
        let mut validation = Validation::new(self.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // The times are checked below against `now`, not the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|e| self.token_error(token, e.kind()))?;
        let claims = data.claims;
        let sub = match claims.sub {
            Some(Value::String(sub)) if !sub.is_empty() => sub,
            Some(Value::String(_)) => {
                return Err(Denied::unauthenticated(
                    "the user token's `sub` claim is empty",
                ));
            }
            _ => {
                return Err(Denied::unauthenticated(
                    "the user token's `sub` claim is not a string",
                ));
            }
        };
        let Some(exp) = seconds("exp", claims.exp.as_ref())? else {
            return Err(Denied::unauthenticated("the user token has no `exp` claim"));
        };
        let nbf = seconds("nbf", claims.nbf.as_ref())?;
        let now = now.as_second() as f64;
        if now > exp + LEEWAY_S as f64 {
            return Err(Denied::unauthenticated("the user token has expired"));
        }
        if nbf.is_some_and(|nbf| nbf > now + LEEWAY_S as f64) {
            return Err(Denied::unauthenticated(
                "the user token is not valid yet (nbf is in the future)",
            ));
        }
        let explicit = match &claims.explicit_grants {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Denied::unauthenticated(
                    "the user token's `explicit_grants` claim is not a boolean",
                ));
            }
        };
        let grants = parse_grants(&sub, claims.grants.as_ref(), explicit)?;
        Ok((sub, grants))
    }

    fn token_error(&self, token: &str, kind: &ErrorKind) -> Denied {
        let reason = match kind {
            ErrorKind::InvalidAlgorithm => match jsonwebtoken::decode_header(token) {
                Ok(h) => format!(
                    "the user token is signed with {:?}, but access.user_token accepts only {:?}",
                    h.alg, self.alg
                ),
                Err(_) => format!("access.user_token accepts only {:?} tokens", self.alg),
            },
            ErrorKind::InvalidSignature => {
                "the user token's signature does not verify with the configured key".into()
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                format!("the user token has no `{claim}` claim")
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                format!("the user token's `{claim}` claim is malformed")
            }
            ErrorKind::Json(_) => "the user token is malformed: its header or claims are not \
                 what a signed JWT holds (`alg: none` is refused)"
                .into(),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                "the user token is not a well-formed JWT".into()
            }
            _ => format!("the user token does not verify as {:?}", self.alg),
        };
        Denied::unauthenticated(reason)
    }
}

/// The claims prefsd reads, as JSON: jsonwebtoken checks that `sub` and `exp` are there,
/// [`Verifier::verify`] what they hold.
#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    grants: Option<Value>,
    explicit_grants: Option<Value>,
}

/// A NumericDate claim: seconds, integer or not.
fn seconds(claim: &str, value: Option<&Value>) -> Result<Option<f64>, Denied> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(Denied::unauthenticated(format!(
            "the user token's `{claim}` claim is not a number of seconds"
        ))),
    }
}

/// The grants of a token for user `sub` (see the module doc).
fn parse_grants(sub: &str, grants: Option<&Value>, explicit: bool) -> Result<Grants, Denied> {
    let mut out = Grants {
        restricted: explicit,
        ..Grants::default()
    };
    let map = match grants {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(Denied::unauthenticated(
                "the user token's `grants` claim is not an object",
            ));
        }
    };
    for (resource, granted) in map {
        let Value::Object(granted) = granted else {
            return Err(Denied::unauthenticated(format!(
                "the user token's grants for {resource:?} are not an object"
            )));
        };
        let own_user = match resource_of(resource, sub) {
            Resource::OwnUser => true,
            Resource::Tenant(id) => {
                out.tenants.entry(id.to_string()).or_default();
                false
            }
            Resource::Other => continue,
        };
        for (name, conditions) in granted {
            // `user/*` means something only on the user itself.
            let user_grant = own_user && name.starts_with("user/");
            if !name.starts_with("preferences/") && !user_grant {
                continue;
            }
            out.restricted = true;
            if !unconditional(conditions) {
                continue;
            }
            let perms = match resource_of(resource, sub) {
                Resource::Tenant(id) => out.tenants.entry(id.to_string()).or_default(),
                _ if user_grant => &mut out.account,
                _ => &mut out.user,
            };
            match name.as_str() {
                "preferences/read" | "user/read" => perms.read = true,
                "preferences/write" | "user/write" => perms.write = true,
                _ => {}
            }
        }
    }
    Ok(out)
}

enum Resource<'a> {
    OwnUser,
    Tenant(&'a str),
    Other,
}

/// `<any-prefix>/users/<sub>`, `<any-prefix>/tenants/<id>` or `<any-prefix>/$tenants/<id>`.
fn resource_of<'a>(resource: &'a str, sub: &str) -> Resource<'a> {
    let Some((prefix, id)) = resource.rsplit_once('/') else {
        return Resource::Other;
    };
    let kind = prefix.rsplit('/').next().unwrap_or(prefix);
    match kind {
        "users" if id == sub => Resource::OwnUser,
        "tenants" | "$tenants" if !id.is_empty() => Resource::Tenant(id),
        _ => Resource::Other,
    }
}

/// A grant's conditions: granted when the list holds an empty condition `{}`.
fn unconditional(conditions: &Value) -> bool {
    conditions.as_array().is_some_and(|list| {
        list.iter()
            .any(|c| c.as_object().is_some_and(Map::is_empty))
    })
}
