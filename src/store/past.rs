//! Point-in-time reads (history.md §3): the stored state as it was at an instant, from the
//! state now and the change log.
//!
//! Each key (a recipient's properties, each of its sets, each audience membership, a tenant)
//! is answered alone: by the newest change of it at or before the instant (the state after
//! that change); else by the oldest change after the instant (the state before it); else,
//! when the log holds no change of it, by the state now. A `recipient.delete` is a change of
//! every key of its recipient, after which nothing is left and before which nothing is known
//! (the recipient's history was erased with it). The state now stands for the past only from
//! the row's creation on: a recipient or tenant created after the instant did not exist.
//!
//! Changes made before the change log existed are not in it; for a key whose first logged
//! change is later than the instant, that change's `before` is its state at the instant,
//! which is exact for every instant after the upgrade.
//!
//! Only the values an answer uses are read and parsed: the keys and times of a recipient's
//! changes first, then one value per key (on 1 M users with 10 M changes, reading and
//! parsing every change's value and actor was most of an `as_of` read).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::model::change::ChangeKind;
use crate::model::{DEFAULT_SET, PreferenceSet, RecipientKey};
use crate::store::log::{EventRow, format_millis};
use crate::store::{Error, EvaluationInputs, Read, RecipientRow, Snapshot, TenantRow, Wanted};

/// Reads of the state at `at` (ms since the epoch), inside one read transaction.
pub struct Past<'r, 'c> {
    read: &'r Read<'c>,
    at: i64,
}

/// What a key of a recipient is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Properties,
    Set(String),
    Member(String),
}

/// One change of one key (or of all keys: an erasure).
struct Event {
    seq: i64,
    at: i64,
    key: Option<Key>,
    kind: ChangeKind,
}

fn events(rows: Vec<EventRow>) -> Vec<Event> {
    rows.into_iter()
        .map(|c| {
            let key = match c.kind {
                ChangeKind::PreferencesSet | ChangeKind::PreferencesUnset => {
                    c.preference_set.map(Key::Set)
                }
                ChangeKind::RecipientSet => Some(Key::Properties),
                ChangeKind::AudienceAdd | ChangeKind::AudienceRemove => c.audience.map(Key::Member),
                // Erasure, and kinds that are no recipient's.
                _ => None,
            };
            Event {
                seq: c.seq,
                at: c.at,
                key,
                kind: c.kind,
            }
        })
        .collect()
}

/// Where the state of a key at an instant is found.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// It did not exist.
    Absent,
    /// As it is now (the log holds no change of it).
    Now,
    /// A membership that held.
    Present,
    /// The value a change stored: the state after it, or (`before`) before it.
    Change { seq: i64, before: bool },
}

/// Where the state of `key` at `at` is, given its events in ascending order: the newest
/// change at or before `at` (the state after it), else the oldest after (the state before
/// it), else the state now.
fn state_at(events: &[Event], key: &Key, at: i64) -> Source {
    let mine = |e: &&Event| e.key.is_none() || e.key.as_ref() == Some(key);
    let (e, before) = match events.iter().filter(mine).rev().find(|e| e.at <= at) {
        Some(e) => (e, false),
        None => match events.iter().filter(mine).find(|e| e.at > at) {
            Some(e) => (e, true),
            None => return Source::Now,
        },
    };
    match (&e.key, e.kind) {
        (None, _) => Source::Absent,
        // A membership is its presence: after an add, before a remove.
        (Some(_), ChangeKind::AudienceAdd) if !before => Source::Present,
        (Some(_), ChangeKind::AudienceRemove) if before => Source::Present,
        (Some(_), ChangeKind::AudienceAdd | ChangeKind::AudienceRemove) => Source::Absent,
        (Some(_), _) => Source::Change { seq: e.seq, before },
    }
}

/// Milliseconds since the epoch of a stored RFC 3339 time (`None` if unreadable).
fn millis(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_millisecond)
}

/// A recipient as it was.
#[derive(Clone, Debug, Default)]
pub struct RecipientAt {
    pub row: Option<RecipientRow>,
    /// Its stored sets, `default` first, then by set id.
    pub sets: Vec<(String, PreferenceSet)>,
    pub audiences: Vec<String>,
}

impl<'r, 'c> Past<'r, 'c> {
    pub(super) fn new(read: &'r Read<'c>, at: i64) -> Past<'r, 'c> {
        Past { read, at }
    }

    /// The recipient, its sets and its memberships at the instant.
    pub fn recipient(&self, key: &RecipientKey) -> Result<RecipientAt, Error> {
        let log = self.read.log();
        let events = events(log.recipient_events(key, Some(self.at))?);
        let row = self
            .read
            .recipient(key)?
            .filter(|row| millis(&row.created_at).is_some_and(|c| c <= self.at));
        // Every key the log or the state now knows.
        let mut now: BTreeMap<Key, Value> = BTreeMap::new();
        if let Some(row) = &row {
            now.insert(Key::Properties, Value::Object(row.properties.clone()));
            for (id, set) in self.read.sets(key)? {
                now.insert(Key::Set(id), Value::Object(set.as_map().clone()));
            }
            for audience in self.read.audiences_of(key)? {
                now.insert(Key::Member(audience), Value::Bool(true));
            }
        }
        let mut keys: Vec<Key> = now.keys().cloned().collect();
        keys.extend(events.iter().filter_map(|e| e.key.clone()));
        keys.sort();
        keys.dedup();
        let mut out = RecipientAt::default();
        let mut properties = None;
        for key in keys {
            let value = match state_at(&events, &key, self.at) {
                Source::Absent => None,
                Source::Now => now.get(&key).cloned(),
                Source::Present => Some(Value::Bool(true)),
                Source::Change { seq, before } => log.value_of(seq, before)?,
            };
            let Some(value) = value else {
                continue;
            };
            match (key, value) {
                (Key::Properties, Value::Object(map)) => properties = Some(map),
                (Key::Set(id), Value::Object(map)) => {
                    out.sets.push((id, PreferenceSet::from_valid(map)))
                }
                (Key::Member(audience), _) => out.audiences.push(audience),
                _ => {}
            }
        }
        out.sets
            .sort_by(|(a, _), (b, _)| (a != DEFAULT_SET, a).cmp(&(b != DEFAULT_SET, b)));
        // A recipient exists at the instant if its properties did (every recipient has
        // them, `{}` at least); its sets and memberships cannot outlive it.
        let Some(properties) = properties else {
            return Ok(RecipientAt::default());
        };
        let updated = events
            .iter()
            .filter(|e| e.key == Some(Key::Properties) && e.at <= self.at)
            .map(|e| e.at)
            .next_back();
        let (created_at, updated_at) = match &row {
            Some(row) => {
                let updated_at = match updated {
                    Some(at) => format_millis(at),
                    None if millis(&row.updated_at).is_some_and(|u| u <= self.at) => {
                        row.updated_at.clone()
                    }
                    None => row.created_at.clone(),
                };
                (row.created_at.clone(), updated_at)
            }
            // Deleted since (and so erased): not reachable, as erasure answers nothing.
            None => {
                let first = events.first().map_or(self.at, |e| e.at);
                (
                    format_millis(first),
                    format_millis(updated.unwrap_or(first)),
                )
            }
        };
        out.row = Some(RecipientRow {
            key: key.clone(),
            properties,
            created_at,
            updated_at,
        });
        Ok(out)
    }

    /// What evaluating the recipient read at the instant ([`Read::evaluation_inputs`]).
    pub fn evaluation_inputs(
        &self,
        key: &RecipientKey,
        tenant_set: Option<&str>,
    ) -> Result<EvaluationInputs, Error> {
        let past = self.recipient(key)?;
        let set = |id: &str| {
            past.sets
                .iter()
                .find(|(s, _)| s == id)
                .map(|(_, set)| set.clone())
        };
        Ok(EvaluationInputs {
            default_set: set(DEFAULT_SET),
            tenant_set: tenant_set.and_then(set),
            audiences: past.audiences.clone(),
            properties: past
                .row
                .as_ref()
                .map_or(Value::Null, |r| Value::Object(r.properties.clone())),
            created_at: past.row.as_ref().map(|r| r.created_at.clone()),
            updated_at: past.row.as_ref().map(|r| r.updated_at.clone()),
            ..EvaluationInputs::default()
        })
    }

    /// The tenant at the instant.
    pub fn tenant(&self, id: &str) -> Result<Option<TenantRow>, Error> {
        let log = self.read.log();
        let events: Vec<Event> = log
            .tenant_events(id)?
            .into_iter()
            .map(|c| Event {
                seq: c.seq,
                at: c.at,
                key: Some(Key::Properties),
                kind: c.kind,
            })
            .collect();
        let now = self
            .read
            .tenant(id)?
            .filter(|row| millis(&row.created_at).is_some_and(|c| c <= self.at));
        let first_at = events.first().map(|c| c.at);
        let value = match state_at(&events, &Key::Properties, self.at) {
            // No change of it in the log: as it is now.
            Source::Now => return Ok(now),
            Source::Change { seq, before } => log.value_of(seq, before)?,
            Source::Absent | Source::Present => None,
        };
        Ok(value.map(|value| {
            let created_at = now.as_ref().map_or_else(
                || format_millis(first_at.unwrap_or(self.at)),
                |row| row.created_at.clone(),
            );
            tenant_from(id, &value, created_at)
        }))
    }
}

/// A tenant as the log keeps it (`{ name, properties, settings: { preference_set } }`).
fn tenant_from(id: &str, value: &Value, created_at: String) -> TenantRow {
    let properties = match value.get("properties") {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let preference_set = match value.pointer("/settings/preference_set") {
        Some(Value::Object(set)) => Some(PreferenceSet::from_valid(set.clone())),
        _ => None,
    };
    TenantRow {
        id: id.to_string(),
        name: value
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string),
        properties,
        preference_set,
        branding: match value.pointer("/settings/branding") {
            Some(Value::Object(map)) => Some(map.clone()),
            _ => None,
        },
        updated_at: created_at.clone(),
        created_at,
    }
}

impl Past<'_, '_> {
    /// The snapshot `wanted` describes, as it was ([`Read::snapshot`]).
    pub fn snapshot<K: AsRef<RecipientKey>>(
        &self,
        wanted: &Wanted<'_, K>,
    ) -> Result<Snapshot, Error> {
        Snapshot::read(
            wanted,
            |t| self.tenant(t),
            |k, s| self.evaluation_inputs(k, s),
        )
    }
}

impl<'c> Read<'c> {
    /// Reads of the state as it was at `at` (ms since the epoch).
    pub fn past(&self, at: i64) -> Past<'_, 'c> {
        Past::new(self, at)
    }
}
