//! The domain operations on one transaction: [`Read`] for snapshots, [`Write`] for the
//! writer's transaction (which can also read what it is about to change).
//!
//! Users and objects share the `recipients` table; a user's collection is stored as `''`.
//! Stored preference sets were validated when written, so they are read back without
//! re-validating them.

use std::cell::RefCell;
use std::ops::Deref;

use serde_json::{Map, Value};

use crate::model::change::{ChangeKind, Origin};
use crate::model::{PreferenceSet, RecipientKey};
use crate::store::Error;
use crate::store::cache::Touched;
use crate::store::log::{self, Log, LogRead, Pending};
use crate::store::sql::{Conn, params};

/// A stored user or object.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipientRow {
    pub key: RecipientKey,
    pub properties: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// What evaluating one recipient reads ([`Read::evaluation_inputs`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvaluationInputs {
    /// The recipient's properties, an object; `Null` when the recipient is not stored
    /// (evaluation reads it as the recipient's properties either way).
    pub properties: Value,
    /// When the recipient was first stored and last changed (RFC 3339), for the
    /// `recipient.created_at` and `recipient.updated_at` variables; `None` when it is not
    /// stored.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub default_set: Option<PreferenceSet>,
    pub tenant_set: Option<PreferenceSet>,
    pub audiences: Vec<String>,
    /// The length of the JSON text all this was parsed from, for the cache's budget.
    pub text_bytes: usize,
}

/// A stored tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantRow {
    pub id: String,
    pub name: Option<String>,
    pub properties: Map<String, Value>,
    /// `settings.preference_set`: the stored tenant default.
    pub preference_set: Option<PreferenceSet>,
    /// `settings.branding`: an object stored as given (rest.md A12), or `None`.
    pub branding: Option<Map<String, Value>>,
    pub created_at: String,
    pub updated_at: String,
}

/// Row counts for `daemon.status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub users: i64,
    pub objects: i64,
    pub tenants: i64,
    pub preference_sets: i64,
}

/// One page of an audience's members, in key order.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPage {
    pub items: Vec<RecipientKey>,
    /// The cursor for the next page, when there is one.
    pub next: Option<String>,
}

/// Reads inside one transaction.
pub struct Read<'c> {
    conn: Conn<'c>,
}

/// Writes (and reads) inside the writer's transaction. Every write records the rows it
/// touched, which the store drops from its cache once the transaction commits, and the
/// changes it made, which the store appends to the change log just before the commit.
pub struct Write<'c> {
    read: Read<'c>,
    touched: RefCell<Vec<Touched>>,
    origin: Option<Origin>,
    log: Log,
    /// The writer's memory of the log (`log::Memo`): a bulk chunk does not read back the
    /// sets it replaces where the log is known to hold a change of them already.
    memo: &'c log::Memo,
}

impl<'c> Deref for Write<'c> {
    type Target = Read<'c>;
    fn deref(&self) -> &Read<'c> {
        &self.read
    }
}

/// A recipient's collection as stored: `''` for a user.
pub(super) fn collection(key: &RecipientKey) -> &str {
    key.collection.as_deref().unwrap_or("")
}

pub(super) fn key_from(collection: String, id: String) -> RecipientKey {
    RecipientKey {
        collection: (!collection.is_empty()).then_some(collection),
        id,
    }
}

pub(super) fn json_map(text: &str) -> Result<Map<String, Value>, Error> {
    Ok(serde_json::from_str(text)?)
}

pub(super) fn json_set(text: &str) -> Result<PreferenceSet, Error> {
    Ok(PreferenceSet::from_valid(serde_json::from_str(text)?))
}

fn to_text<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    Ok(serde_json::to_string(value)?)
}

impl<'c> Read<'c> {
    pub(super) fn new(conn: Conn<'c>) -> Read<'c> {
        Read { conn }
    }

    /// The change log, as of this transaction.
    pub fn log(&self) -> LogRead<'c> {
        LogRead { conn: self.conn }
    }

    /// The transaction's connection, for the store's other modules.
    pub(super) fn conn(&self) -> Conn<'c> {
        self.conn
    }

    pub fn recipient(&self, key: &RecipientKey) -> Result<Option<RecipientRow>, Error> {
        let row = self.conn.opt(
            "SELECT properties, created_at, updated_at FROM recipients WHERE collection = ?1 AND id = ?2",
            params![collection(key), &key.id],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<String>(2)?)),
        )?;
        row.map(|(properties, created_at, updated_at)| {
            Ok(RecipientRow {
                key: key.clone(),
                properties: json_map(&properties)?,
                created_at,
                updated_at,
            })
        })
        .transpose()
    }

    /// What evaluating a recipient reads, in one statement rather than four (the statement
    /// overhead was a tenth of a 1000-recipient evaluation): its row (properties and
    /// timestamps) if it exists, its `default` set, its set `tenant_set` when given, and its
    /// audiences. The row comes from a left join on one constant row, so that a recipient
    /// that is not stored still gives one result row, and its three columns cost one
    /// primary-key search rather than one each.
    pub fn evaluation_inputs(
        &self,
        key: &RecipientKey,
        tenant_set: Option<&str>,
    ) -> Result<EvaluationInputs, Error> {
        // The same statement on both backends but for the aggregate of the audiences,
        // which must answer a JSON array of keys.
        macro_rules! inputs_sql {
            ($audiences:literal) => {
                concat!(
                    "SELECT
                       r.properties, r.created_at, r.updated_at,
                       (SELECT preferences FROM preference_sets
                          WHERE collection = ?1 AND recipient_id = ?2 AND set_id = 'default'),
                       (SELECT preferences FROM preference_sets
                          WHERE collection = ?1 AND recipient_id = ?2 AND set_id = ?3),
                       (SELECT ",
                    $audiences,
                    " FROM audience_members
                          WHERE collection = ?1 AND recipient_id = ?2)
                     FROM (SELECT 1) AS one LEFT JOIN recipients r ON r.collection = ?1 AND r.id = ?2"
                )
            };
        }
        let sql = self.conn.pick(
            inputs_sql!("json_group_array(audience_key)"),
            // `bytea[]`, which `store::sql` reads as a JSON array of strings.
            inputs_sql!("coalesce(array_agg(audience_key), '{}')"),
        );
        let (properties, created_at, updated_at, default_set, tenant_set, audiences) = self
            .conn
            .one(sql, params![collection(key), &key.id, tenant_set], |r| {
                Ok((
                    r.get::<Option<String>>(0)?,
                    r.get::<Option<String>>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<Option<String>>(3)?,
                    r.get::<Option<String>>(4)?,
                    r.get::<String>(5)?,
                ))
            })?;
        let text_bytes = [
            &properties,
            &created_at,
            &updated_at,
            &default_set,
            &tenant_set,
        ]
        .iter()
        .map(|t| t.as_ref().map_or(0, String::len))
        .sum::<usize>()
            + audiences.len();
        Ok(EvaluationInputs {
            text_bytes,
            properties: match properties {
                Some(text) => Value::Object(json_map(&text)?),
                None => Value::Null,
            },
            created_at,
            updated_at,
            default_set: default_set.as_deref().map(json_set).transpose()?,
            tenant_set: tenant_set.as_deref().map(json_set).transpose()?,
            audiences: serde_json::from_str(&audiences)?,
        })
    }

    pub fn set(&self, key: &RecipientKey, set_id: &str) -> Result<Option<PreferenceSet>, Error> {
        let text: Option<String> = self.conn.value(
            "SELECT preferences FROM preference_sets WHERE collection = ?1 AND recipient_id = ?2 AND set_id = ?3",
            params![collection(key), &key.id, set_id],
        )?;
        text.as_deref().map(json_set).transpose()
    }

    /// Every stored set of a recipient, `default` first, then by set id.
    pub fn sets(&self, key: &RecipientKey) -> Result<Vec<(String, PreferenceSet)>, Error> {
        self.conn.all(
            "SELECT set_id, preferences FROM preference_sets WHERE collection = ?1 AND recipient_id = ?2
             ORDER BY set_id <> 'default', set_id",
            params![collection(key), &key.id],
            |r| Ok((r.get::<String>(0)?, json_set(&r.get::<String>(1)?)?)),
        )
    }

    pub fn tenant(&self, id: &str) -> Result<Option<TenantRow>, Error> {
        let row = self.conn.opt(
            "SELECT name, properties, preference_set, created_at, updated_at, branding FROM tenants WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<Option<String>>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<String>(3)?,
                    r.get::<String>(4)?,
                    r.get::<Option<String>>(5)?,
                ))
            },
        )?;
        row.map(
            |(name, properties, set, created_at, updated_at, branding)| {
                Ok(TenantRow {
                    id: id.to_string(),
                    name,
                    properties: json_map(&properties)?,
                    preference_set: set.as_deref().map(json_set).transpose()?,
                    branding: branding.as_deref().map(json_map).transpose()?,
                    created_at,
                    updated_at,
                })
            },
        )
        .transpose()
    }

    /// The keys of the audiences a recipient is a member of.
    pub fn audiences_of(&self, key: &RecipientKey) -> Result<Vec<String>, Error> {
        self.conn.all(
            "SELECT audience_key FROM audience_members WHERE collection = ?1 AND recipient_id = ?2",
            params![collection(key), &key.id],
            |r| r.get::<String>(0),
        )
    }

    /// Members of an audience in key order, `limit` at a time, after the cursor `after`.
    pub fn members(
        &self,
        audience: &str,
        limit: u32,
        after: Option<&RecipientKey>,
    ) -> Result<MemberPage, Error> {
        let (after_collection, after_id) =
            after.map_or(("", ""), |k| (collection(k), k.id.as_str()));
        let mut items = self.conn.all(
            "SELECT collection, recipient_id FROM audience_members
             WHERE audience_key = ?1 AND (?2 = 0 OR (collection, recipient_id) > (?3, ?4))
             ORDER BY collection, recipient_id LIMIT ?5",
            params![
                audience,
                after.is_some(),
                after_collection,
                after_id,
                i64::from(limit) + 1
            ],
            |r| Ok(key_from(r.get(0)?, r.get(1)?)),
        )?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(MemberPage { items, next })
    }

    pub fn count_members(&self, audience: &str) -> Result<i64, Error> {
        self.conn.one(
            "SELECT count(*) FROM audience_members WHERE audience_key = ?1",
            params![audience],
            |r| r.get(0),
        )
    }

    pub fn counts(&self) -> Result<Counts, Error> {
        // Kept by the triggers of sql/0003_counts.sql: four rows, not four scans.
        self.conn.one(
            "SELECT (SELECT n FROM row_counts WHERE name = 'users'),
                    (SELECT n FROM row_counts WHERE name = 'objects'),
                    (SELECT n FROM row_counts WHERE name = 'tenants'),
                    (SELECT n FROM row_counts WHERE name = 'preference_sets')",
            params![],
            |r| {
                Ok(Counts {
                    users: r.get(0)?,
                    objects: r.get(1)?,
                    tenants: r.get(2)?,
                    preference_sets: r.get(3)?,
                })
            },
        )
    }
}

/// An audience cursor: the last key of a page, as a JSON array (opaque to clients).
pub fn encode_cursor(key: &RecipientKey) -> String {
    serde_json::json!([collection(key), key.id]).to_string()
}

pub fn decode_cursor(cursor: &str) -> Option<RecipientKey> {
    let (collection, id): (String, String) = serde_json::from_str(cursor).ok()?;
    Some(key_from(collection, id))
}

impl<'c> Write<'c> {
    pub(super) fn new(conn: Conn<'c>, origin: Option<Origin>, memo: &'c log::Memo) -> Write<'c> {
        Write {
            read: Read::new(conn),
            touched: RefCell::new(Vec::new()),
            origin,
            log: Log::default(),
            memo,
        }
    }

    /// Appends the changes made to the log, then answers what the writes touched, for the
    /// cache, and what was appended, for the writer's [`log::Memo`].
    pub(super) fn finish(
        self,
        skip_log: bool,
    ) -> Result<(Vec<Touched>, Option<log::Flushed>), Error> {
        let flushed = self
            .log
            .flush(self.read.conn, self.origin.as_ref(), skip_log, self.memo)?;
        Ok((self.touched.into_inner(), flushed))
    }

    /// Appends a `config.applied` change for a config with these files (stored once per
    /// content); answers the config's hash.
    pub fn config_applied(
        &self,
        version: u64,
        files: &[(String, String)],
    ) -> Result<String, Error> {
        log::config_applied(self.read.conn, &self.log, version, files)
    }

    fn change(&self, kind: ChangeKind, key: &RecipientKey) -> Pending {
        let mut change = Pending::new(kind);
        change.recipient = Some(key.clone());
        change
    }

    fn touch_recipient(&self, key: &RecipientKey) {
        self.touched
            .borrow_mut()
            .push(Touched::Recipient(key.clone()));
    }

    fn touch_tenant(&self, id: &str) {
        self.touched
            .borrow_mut()
            .push(Touched::Tenant(id.to_string()));
    }

    /// Creates the recipient with empty properties unless it exists.
    pub fn ensure_recipient(&self, key: &RecipientKey, now: &str) -> Result<(), Error> {
        self.touch_recipient(key);
        self.read.conn.execute(
            "INSERT INTO recipients (collection, id, properties, created_at, updated_at)
             VALUES (?1, ?2, '{}', ?3, ?3) ON CONFLICT DO NOTHING",
            params![collection(key), &key.id, now],
        )?;
        Ok(())
    }

    /// Creates or updates a recipient with exactly these properties.
    pub fn put_recipient(
        &self,
        key: &RecipientKey,
        properties: &Map<String, Value>,
        now: &str,
    ) -> Result<RecipientRow, Error> {
        self.touch_recipient(key);
        let before: Option<String> = self.read.conn.value(
            "SELECT properties FROM recipients WHERE collection = ?1 AND id = ?2",
            params![collection(key), &key.id],
        )?;
        let text = to_text(properties)?;
        let created_at: String = self.read.conn.one(
            "INSERT INTO recipients (collection, id, properties, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (collection, id) DO UPDATE SET properties = excluded.properties, updated_at = excluded.updated_at
             RETURNING created_at",
            params![collection(key), &key.id, &text, now],
            |r| r.get(0),
        )?;
        // A new recipient is a change even with no properties (it now exists); an existing
        // one only if its properties differ.
        if before.as_deref() != Some(text.as_str()) {
            let mut change = self.change(ChangeKind::RecipientSet, key);
            change.value = Some(text);
            change.before = before;
            self.log.push(change);
        }
        Ok(RecipientRow {
            key: key.clone(),
            properties: properties.clone(),
            created_at,
            updated_at: now.to_string(),
        })
    }

    /// Deletes a recipient with its sets and memberships, and erases its history: every
    /// change about it leaves the log, and one id-only `recipient.delete` is appended
    /// (history.md §4).
    pub fn delete_recipient(&self, key: &RecipientKey) -> Result<bool, Error> {
        self.touch_recipient(key);
        // Read before the sets' rows go with the recipient's: they start its sets' chains.
        let chained = log::chained_seqs(self.read.conn, key)?;
        let deleted = self.read.conn.execute(
            "DELETE FROM recipients WHERE collection = ?1 AND id = ?2",
            params![collection(key), &key.id],
        )? > 0;
        if deleted {
            log::erase(self.read.conn, key, &chained)?;
            self.log.forget(key);
            self.log.push(self.change(ChangeKind::RecipientDelete, key));
        }
        Ok(deleted)
    }

    /// Stores a recipient's set, creating the recipient if needed.
    pub fn put_set(
        &self,
        key: &RecipientKey,
        set_id: &str,
        set: &PreferenceSet,
        now: &str,
    ) -> Result<(), Error> {
        self.ensure_recipient(key, now)?;
        let text = to_text(set.as_map())?;
        let (before, prev) = self
            .read
            .conn
            .opt(
                "SELECT preferences, last_seq FROM preference_sets
                  WHERE collection = ?1 AND recipient_id = ?2 AND set_id = ?3",
                params![collection(key), &key.id, set_id],
                |r| Ok((Some(r.get::<String>(0)?), r.get::<Option<i64>>(1)?)),
            )?
            .unwrap_or_default();
        // Writing the set it already is changes nothing, and appends nothing.
        if before.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        self.read.conn.execute(
            "INSERT INTO preference_sets (collection, recipient_id, set_id, preferences, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (collection, recipient_id, set_id) DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at",
            params![collection(key), &key.id, set_id, &text, now],
        )?;
        let mut change = self.change(ChangeKind::PreferencesSet, key);
        change.preference_set = Some(set_id.to_string());
        change.value = Some(text);
        change.before = before;
        change.prev = prev;
        self.log.push(change);
        Ok(())
    }

    /// Stores one set for many recipients, as [`Write::put_set`] for each in turn would
    /// (a recipient given twice is written once). On PostgreSQL it is three statements
    /// over arrays instead of three per recipient: a bulk chunk then costs a few round
    /// trips, not hundreds.
    pub fn put_sets(
        &self,
        keys: &[RecipientKey],
        set_id: &str,
        set: &PreferenceSet,
        now: &str,
    ) -> Result<(), Error> {
        if self.read.conn.dialect() == crate::store::sql::Dialect::Sqlite {
            for key in keys {
                self.put_set(key, set_id, set, now)?;
            }
            return Ok(());
        }
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<&RecipientKey> = keys.iter().filter(|k| seen.insert(*k)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        for key in &keys {
            self.touch_recipient(key);
        }
        let collections: Vec<&[u8]> = keys.iter().map(|k| collection(k).as_bytes()).collect();
        let ids: Vec<&[u8]> = keys.iter().map(|k| k.id.as_bytes()).collect();
        // Only a set's first logged change keeps the set it replaced (`Log::flush`), so
        // the sets the log is known to hold a change of are not read back: a job's second
        // set for the same users reads none.
        let unknown: Vec<bool> = keys
            .iter()
            .map(|k| !self.memo.has_logged_set(k, set_id))
            .collect();
        let text = to_text(set.as_map())?;
        // One statement (one round trip, one snapshot): write the set where it differs,
        // create the recipients of the sets it inserted that do not exist yet, and answer
        // the keys written (`true`) and the sets they had (`false`, read by `old` from the
        // snapshot before the statement). Writing the set a recipient already has changes
        // nothing, and appends nothing. The new recipients' rows satisfy the sets' foreign
        // key: it is checked at the end of the statement. Only a set the upsert inserted
        // (`xmax = 0`: an updated row carries the lock its update took) can lack its
        // recipient, so a job over existing users probes `recipients` for none of them:
        // an `INSERT … ON CONFLICT DO NOTHING` of every key cost about a quarter of the
        // chunk. A recipient erased by another daemon of a fleet since the snapshot is
        // created again, as its set is, as if the job had come after the erasure. The two
        // answers are matched here: joined in SQL, the planner, which cannot count an
        // `unnest`, compared every pair.
        let mut written = std::collections::HashSet::new();
        let mut old = std::collections::HashMap::new();
        for mut row in self.read.conn.pg_query(
            "WITH u AS (SELECT c, i, n FROM unnest($1::bytea[], $2::bytea[], $6::bool[]) AS u(c, i, n)),
                  old AS (
                    SELECT p.collection, p.recipient_id, p.preferences
                      FROM preference_sets p JOIN u ON p.collection = u.c AND p.recipient_id = u.i
                     WHERE p.set_id = $3 AND u.n),
                  written AS (
                    INSERT INTO preference_sets (collection, recipient_id, set_id, preferences, updated_at)
                    SELECT c, i, $3, $4, $5 FROM u
                    ON CONFLICT (collection, recipient_id, set_id)
                    DO UPDATE SET preferences = excluded.preferences, updated_at = excluded.updated_at
                    WHERE preference_sets.preferences IS DISTINCT FROM excluded.preferences
                    RETURNING collection, recipient_id, xmax = 0 AS inserted),
                  created AS (
                    INSERT INTO recipients (collection, id, properties, created_at, updated_at)
                    SELECT collection, recipient_id, '{}', $5, $5 FROM written WHERE inserted
                    ON CONFLICT DO NOTHING)
             SELECT true, collection, recipient_id, NULL::text FROM written
             UNION ALL
             SELECT false, collection, recipient_id, preferences FROM old",
            &[&collections, &ids, &set_id.as_bytes(), &text, &now, &unknown],
        )? {
            let key = key_from(row.get(1)?, row.get(2)?);
            if row.get::<bool>(0)? {
                written.insert(key);
            } else {
                old.insert(key, row.get::<String>(3)?);
            }
        }
        // The changes in the order the keys were given.
        for key in keys.into_iter().filter(|k| written.contains(*k)) {
            let mut change = self.change(ChangeKind::PreferencesSet, key);
            change.preference_set = Some(set_id.to_string());
            change.value = Some(text.clone());
            change.before = old.remove(key);
            self.log.push(change);
        }
        Ok(())
    }

    pub fn delete_set(&self, key: &RecipientKey, set_id: &str) -> Result<bool, Error> {
        self.touch_recipient(key);
        let (before, prev) = self
            .read
            .conn
            .opt(
                "DELETE FROM preference_sets WHERE collection = ?1 AND recipient_id = ?2 AND set_id = ?3
                 RETURNING preferences, last_seq",
                params![collection(key), &key.id, set_id],
                |r| Ok((Some(r.get::<String>(0)?), r.get::<Option<i64>>(1)?)),
            )?
            .unwrap_or_default();
        let deleted = before.is_some();
        if deleted {
            let mut change = self.change(ChangeKind::PreferencesUnset, key);
            change.preference_set = Some(set_id.to_string());
            change.before = before;
            change.prev = prev;
            self.log.push(change);
        }
        Ok(deleted)
    }

    /// Creates or replaces a tenant row (keeping its `created_at`).
    pub fn put_tenant(&self, tenant: &TenantRow) -> Result<(), Error> {
        self.touch_tenant(&tenant.id);
        let before = self.tenant(&tenant.id)?.map(|t| tenant_value(&t));
        let value = tenant_value(tenant);
        if before.as_ref() != Some(&value) {
            let mut change = Pending::new(ChangeKind::TenantSet);
            change.tenant = Some(tenant.id.clone());
            change.value = Some(value.to_string());
            change.before = before.map(|b| b.to_string());
            self.log.push(change);
        }
        let set = tenant
            .preference_set
            .as_ref()
            .map(|s| to_text(s.as_map()))
            .transpose()?;
        let properties = to_text(&tenant.properties)?;
        let branding = tenant.branding.as_ref().map(to_text).transpose()?;
        self.read.conn.execute(
            "INSERT INTO tenants (id, name, properties, preference_set, created_at, updated_at, branding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, properties = excluded.properties,
                 preference_set = excluded.preference_set, updated_at = excluded.updated_at, branding = excluded.branding",
            params![
                &tenant.id,
                tenant.name.as_deref(),
                &properties,
                set.as_deref(),
                &tenant.created_at,
                &tenant.updated_at,
                branding.as_deref()
            ],
        )?;
        Ok(())
    }

    pub fn delete_tenant(&self, id: &str) -> Result<bool, Error> {
        self.touch_tenant(id);
        let before = self.tenant(id)?;
        let Some(before) = before else {
            return Ok(false);
        };
        self.read
            .conn
            .execute("DELETE FROM tenants WHERE id = ?1", params![id])?;
        let mut change = Pending::new(ChangeKind::TenantDelete);
        change.tenant = Some(id.to_string());
        change.before = Some(tenant_value(&before).to_string());
        self.log.push(change);
        Ok(true)
    }

    /// Adds members (creating recipients that do not exist); returns the audience's size.
    pub fn add_members(
        &self,
        audience: &str,
        members: &[RecipientKey],
        now: &str,
    ) -> Result<i64, Error> {
        for member in members {
            self.ensure_recipient(member, now)?;
            let added = self.read.conn.execute(
                "INSERT INTO audience_members (audience_key, collection, recipient_id, added_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![audience, collection(member), &member.id, now],
            )?;
            if added > 0 {
                let mut change = self.change(ChangeKind::AudienceAdd, member);
                change.audience = Some(audience.to_string());
                self.log.push(change);
            }
        }
        self.count_members(audience)
    }

    /// Removes members; returns the audience's size.
    pub fn remove_members(&self, audience: &str, members: &[RecipientKey]) -> Result<i64, Error> {
        for member in members {
            self.touch_recipient(member);
            let removed = self.read.conn.execute(
                "DELETE FROM audience_members WHERE audience_key = ?1 AND collection = ?2 AND recipient_id = ?3",
                params![audience, collection(member), &member.id],
            )?;
            if removed > 0 {
                let mut change = self.change(ChangeKind::AudienceRemove, member);
                change.audience = Some(audience.to_string());
                self.log.push(change);
            }
        }
        self.count_members(audience)
    }
}

/// A stored tenant as the log keeps it (history.md §1: `name`, `properties`, `settings`).
fn tenant_value(tenant: &TenantRow) -> Value {
    serde_json::json!({
        "name": tenant.name,
        "properties": tenant.properties,
        "settings": {
            "branding": tenant.branding,
            "preference_set": tenant.preference_set.as_ref().map(PreferenceSet::as_map),
        },
    })
}
