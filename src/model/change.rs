//! The nouns of the change log (history.md): who made a change, and through what.
//!
//! Every write carries an [`Origin`]; the store appends it with each change the write makes,
//! in the same transaction. The actor never holds a secret: a secret key is named by a
//! prefix of its SHA-256.

use serde::{Deserialize, Serialize};

/// Who made a change (history.md §1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// An allowed socket peer that presented no credentials.
    Peer { uid: u32 },
    /// A caller that presented a secret key, named by `sha256:<first 12 hex digits>`.
    SecretKey { key_id: String },
    /// A verified user token, named by its `sub`.
    UserToken { sub: String },
    /// The changes a bulk job writes.
    BulkOperation { id: String },
    /// The daemon applying its config directory.
    Config,
}

/// The origin of one write: its actor and the method it came through (`users.identify`,
/// `users.bulkSetPreferences` for a job's chunks, `config.reload` for a config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    pub method: &'static str,
}

impl Origin {
    pub fn new(actor: Actor, method: &'static str) -> Origin {
        Origin { actor, method }
    }

    /// The bulk operation whose job made the change, when one did.
    pub fn bulk_operation(&self) -> Option<&str> {
        match &self.actor {
            Actor::BulkOperation { id } => Some(id),
            _ => None,
        }
    }
}

/// The kinds of change (history.md §1), as stored and as the wire names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    #[serde(rename = "preferences.set")]
    PreferencesSet,
    #[serde(rename = "preferences.unset")]
    PreferencesUnset,
    #[serde(rename = "recipient.set")]
    RecipientSet,
    #[serde(rename = "recipient.delete")]
    RecipientDelete,
    #[serde(rename = "tenant.set")]
    TenantSet,
    #[serde(rename = "tenant.delete")]
    TenantDelete,
    #[serde(rename = "audience.add")]
    AudienceAdd,
    #[serde(rename = "audience.remove")]
    AudienceRemove,
    #[serde(rename = "config.applied")]
    ConfigApplied,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 9] = [
        ChangeKind::PreferencesSet,
        ChangeKind::PreferencesUnset,
        ChangeKind::RecipientSet,
        ChangeKind::RecipientDelete,
        ChangeKind::TenantSet,
        ChangeKind::TenantDelete,
        ChangeKind::AudienceAdd,
        ChangeKind::AudienceRemove,
        ChangeKind::ConfigApplied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::PreferencesSet => "preferences.set",
            ChangeKind::PreferencesUnset => "preferences.unset",
            ChangeKind::RecipientSet => "recipient.set",
            ChangeKind::RecipientDelete => "recipient.delete",
            ChangeKind::TenantSet => "tenant.set",
            ChangeKind::TenantDelete => "tenant.delete",
            ChangeKind::AudienceAdd => "audience.add",
            ChangeKind::AudienceRemove => "audience.remove",
            ChangeKind::ConfigApplied => "config.applied",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// `sha256:<first 12 hex digits>` of a secret key: how the log names the key a change was
/// made with, without the key (history.md §1).
pub fn key_id(secret: &str) -> String {
    format!("sha256:{}", &hex(&sha256(secret.as_bytes()))[..12])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_id_is_a_prefix_of_the_keys_sha256() {
        // printf 'sk_test' | sha256sum
        assert_eq!(super::key_id("sk_test"), "sha256:12b2820cf163");
    }
}
