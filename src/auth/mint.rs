//! `prefsd token`: mints a user token for development and tests, as Knock's `signUserToken`
//! does: `sub`, `iat`, `exp` and Knock-shaped `grants`, signed RS256/ES256 with a PEM private
//! key or HS256 with a secret.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// The resource URI of a user in grants (Knock's).
pub fn user_resource(user: &str) -> String {
    format!("https://api.knock.app/v1/users/{user}")
}

/// The resource URI of a tenant in grants (Knock's).
pub fn tenant_resource(tenant: &str) -> String {
    format!("https://api.knock.app/v1/objects/$tenants/{tenant}")
}

/// The arguments of `prefsd token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user the token acts as (its `sub`).
    #[arg(long)]
    pub user: String,
    /// A PEM private key file: an RSA key signs RS256, an EC (P-256) key ES256.
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub key: Option<PathBuf>,
    /// An HS256 secret. Default: `access.user_token.hs256_secret` of the config directory.
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// How long the token is valid: 1h, 30m, 90s, 1h30m, or a number of seconds.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// A grant on the user (repeatable), e.g. preferences/read or preferences/write. With
    /// grants, the token may do only what they grant.
    #[arg(long = "grant", value_name = "GRANT")]
    pub grants: Vec<String>,
    /// Scope the token to a tenant (repeatable): it may then use only these tenants' sets,
    /// and the grants apply in these tenants.
    #[arg(long = "tenant", value_name = "TENANT")]
    pub tenants: Vec<String>,
}

/// Runs `prefsd token`: prints the token; exit 2 on any error.
pub fn run(args: &TokenArgs, config_dir: &Path) -> anyhow::Result<ExitCode> {
    println!("{}", token(args, config_dir, jiff::Timestamp::now())?);
    Ok(ExitCode::SUCCESS)
}

fn token(args: &TokenArgs, config_dir: &Path, now: jiff::Timestamp) -> anyhow::Result<String> {
    let key = match (&args.key, &args.secret) {
        (Some(path), _) => SigningKey::Pem(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, Some(secret)) => SigningKey::Hs256(secret.as_bytes().to_vec()),
        (None, None) => {
            let config = crate::config::load_dir(config_dir).map_err(|errors| {
                anyhow::anyhow!(
                    "give --key FILE or --secret S (the config in {} is invalid: {})",
                    config_dir.display(),
                    errors.first().map(ToString::to_string).unwrap_or_default()
                )
            })?;
            match config.settings.access.user_token_hs256_secret {
                Some(secret) => SigningKey::Hs256(secret.into_bytes()),
                None => anyhow::bail!(
                    "give --key FILE or --secret S (the config in {} has no access.user_token.hs256_secret)",
                    config_dir.display()
                ),
            }
        }
    };
    if args.user.is_empty() {
        anyhow::bail!("--user must not be empty");
    }
    let ttl_s = parse_ttl(&args.ttl)?;
    let claims = user_claims(&args.user, &args.grants, &args.tenants, ttl_s, now);
    sign(&claims, &key)
}

/// A key to sign user tokens with.
pub enum SigningKey {
    /// A PEM private key: RSA (RS256) or EC P-256 (ES256).
    Pem(Vec<u8>),
    Hs256(Vec<u8>),
}

/// The claims of a user token for `user`, valid for `ttl_s` seconds from `now`. `grants` go
/// on the user, or on each of `tenants` when there are any.
pub fn user_claims(
    user: &str,
    grants: &[String],
    tenants: &[String],
    ttl_s: i64,
    now: jiff::Timestamp,
) -> Value {
    let now = now.as_second();
    let mut claims = json!({ "sub": user, "iat": now, "exp": now + ttl_s });
    let granted: Map<String, Value> = grants.iter().map(|g| (g.clone(), json!([{}]))).collect();
    let mut resources = Map::new();
    if tenants.is_empty() {
        if !granted.is_empty() {
            resources.insert(user_resource(user), Value::Object(granted));
        }
    } else {
        for tenant in tenants {
            resources.insert(tenant_resource(tenant), Value::Object(granted.clone()));
        }
    }
    if !resources.is_empty() {
        claims["grants"] = Value::Object(resources);
    }
    claims
}

/// Signs `claims`: RS256 or ES256 for a PEM private key (by its type), HS256 for a secret.
pub fn sign(claims: &Value, key: &SigningKey) -> anyhow::Result<String> {
    let (alg, key) = match key {
        SigningKey::Hs256(secret) => (
            Algorithm::HS256,
            EncodingKey::from_secret(secret).context("the HS256 secret")?,
        ),
        SigningKey::Pem(pem) => {
            if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = EncodingKey::from_ec_pem(pem) {
                (Algorithm::ES256, k)
            } else {
                anyhow::bail!("the key is not a PEM RSA or EC (PKCS#8) private key");
            }
        }
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).context("signing the token")
}

/// `--ttl` in seconds: the command line's duration syntax (`crate::duration`).
pub fn parse_ttl(text: &str) -> anyhow::Result<i64> {
    let ttl = crate::duration::parse_duration(text).map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
    i64::try_from(ttl.as_secs()).map_err(|_| anyhow::anyhow!("--ttl {text:?} is too long"))
}

/// `prefsd token --user USER` with every other argument at its default.
#[cfg(test)]
pub(crate) fn args(user: &str) -> TokenArgs {
    TokenArgs {
        user: user.into(),
        key: None,
        secret: None,
        ttl: "1h".into(),
        grants: Vec::new(),
        tenants: Vec::new(),
    }
}

/// [`run`] at `now` without printing, with no config directory to fall back on.
#[cfg(test)]
pub(crate) fn token_at(args: &TokenArgs, now: jiff::Timestamp) -> anyhow::Result<String> {
    token(args, Path::new("/nonexistent-prefsd-config"), now)
}
