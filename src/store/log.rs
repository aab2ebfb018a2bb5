//! The change log (history.md): appended inside every write transaction, read by
//! `changes.list`, the history methods and point-in-time answers.
//!
//! A [`Write`](super::Write) buffers the changes its operations make (`Log`) and the store
//! appends them just before the commit (`Log::flush`), all with one `at`, so a change is in
//! the log if and only if its transaction committed. A value that several changes of one
//! transaction share, and every value of a bulk job, is stored once per content
//! (`change_values`, counted by `refs`); any other is kept in its change's row
//! (`sql/0006_inline_change_values.sql`). The writer remembers the newest `at` and which
//! keys the log already holds ([`Memo`]), so a single write asks the database neither.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use crate::model::RecipientKey;
use crate::model::change::{ChangeKind, Origin, hex};
use crate::store::Error;
use crate::store::repo::collection;
use crate::store::sql::{Conn, Dialect, Param, Row, params};

/// Which of a recipient's changes `changes_by_recipient` holds: every one but a
/// `preferences.set` that names its set's previous change (`sql/0008_set_change_chains.sql`).
/// The index's own condition word for word: SQLite uses a partial index only for a query
/// whose `WHERE` holds the condition's terms, so every search of the index names it.
macro_rules! indexed {
    () => {
        "(kind <> 'preferences.set' OR prev_seq IS NULL)"
    };
}

/// What a walk of a recipient's changes reads of each ([`LogRead::recipient_events`]).
macro_rules! event_columns {
    () => {
        "SELECT seq, at, kind, preference_set, audience, prev_seq FROM changes "
    };
}

/// A recipient's changes that `changes_by_recipient` holds, ascending.
const INDEXED_EVENTS: &str = concat!(
    event_columns!(),
    "WHERE collection = ?1 AND recipient_id = ?2 AND ",
    indexed!(),
    " ORDER BY seq"
);

/// Whether the log holds a `recipient.set` of a recipient.
const LOGGED_RECIPIENT: &str = concat!(
    "SELECT 1 FROM changes WHERE collection = ?1 AND recipient_id = ?2 AND ",
    indexed!(),
    " AND kind = 'recipient.set' LIMIT 1"
);

/// Whether the log holds a change of a set whose row names none: its unset, or changes
/// from before the upgrade, all in the index (the chains start there).
const LOGGED_SET: &str = concat!(
    "SELECT 1 FROM changes WHERE collection = ?1 AND recipient_id = ?2 AND ",
    indexed!(),
    " AND kind IN ('preferences.set', 'preferences.unset') AND preference_set = ?3 LIMIT 1"
);

/// One change not yet appended.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub kind: ChangeKind,
    pub recipient: Option<RecipientKey>,
    pub preference_set: Option<String>,
    pub tenant: Option<String>,
    pub audience: Option<String>,
    /// The JSON text of the state after the change (`None`: removed, or no value).
    pub value: Option<String>,
    /// The JSON text of the state before it, for the keyed kinds (`None`: there was none).
    pub before: Option<String>,
    /// A preference set's change: the `seq` of the set's newest change before it, as the
    /// set's row names it (`preference_sets.last_seq`, `sql/0008_set_change_chains.sql`);
    /// `None` when the row names none (a new set, or one not written since the upgrade).
    pub prev: Option<i64>,
}

impl Pending {
    pub fn new(kind: ChangeKind) -> Pending {
        Pending {
            kind,
            recipient: None,
            preference_set: None,
            tenant: None,
            audience: None,
            value: None,
            before: None,
            prev: None,
        }
    }
}

/// The changes one write transaction has made so far, in order.
#[derive(Default)]
pub(super) struct Log {
    pending: RefCell<Vec<Pending>>,
}

impl Log {
    pub fn push(&self, change: Pending) {
        self.pending.borrow_mut().push(change);
    }

    /// Drops the pending changes of a recipient that is being erased.
    pub fn forget(&self, key: &RecipientKey) {
        self.pending
            .borrow_mut()
            .retain(|p| p.recipient.as_ref() != Some(key));
    }

    /// Appends the pending changes, all with one `at`: now, or the newest stored `at` if
    /// the clock has stepped back. A write without an origin that changed something is a
    /// bug in the caller, refused rather than logged without an actor.
    /// Answers what was appended, for [`Memo::committed`] once the transaction has
    /// committed (`None` when nothing was).
    /// With `skip` (benchmarks only: `store::Options::skip_change_log`) nothing is appended.
    pub fn flush(
        self,
        conn: Conn<'_>,
        origin: Option<&Origin>,
        skip: bool,
        memo: &Memo,
    ) -> Result<Option<Flushed>, Error> {
        let pending = self.pending.into_inner();
        if pending.is_empty() {
            return Ok(None);
        }
        let Some(origin) = origin else {
            return Err(Error::NoOrigin(pending[0].kind.as_str()));
        };
        if skip {
            return Ok(None);
        }
        // PostgreSQL's append reads the newest `at` itself (`append_batch`), sparing a
        // round trip: there the memo never knows it, as other daemons append too.
        let last = match memo.last_at {
            Some(at) => Some(at),
            None if conn.dialect() == Dialect::Sqlite => conn.value(
                "SELECT at FROM changes ORDER BY seq DESC LIMIT 1",
                params![],
            )?,
            None => None,
        };
        // Rounded as the store's other times are (`time::format_time`), so that a row
        // created in this transaction never has a `created_at` after its change's `at`.
        let now = jiff::Timestamp::now();
        let at = now
            .round(jiff::Unit::Millisecond)
            .unwrap_or(now)
            .as_millisecond()
            .max(last.unwrap_or(i64::MIN));
        // A key's state before a change is the previous change's value whenever the log
        // has one: `before` is stored only for a key's first logged change (its state from
        // before the log, or none), which spares storing it on every other.
        let mut pending = pending;
        let mut keys = HashSet::new();
        // The changes that are their key's first here and carry a `before`: whether the
        // log already holds their key decides whether that `before` is kept.
        let mut first_with_before = Vec::new();
        for (i, change) in pending.iter_mut().enumerate() {
            let Some(key) = state_key(change) else {
                continue;
            };
            let first = !keys.contains(&key);
            if change.before.is_some() {
                // A set whose row names its newest change has one in the log.
                if !first || memo.logged.contains(&key) || change.prev.is_some() {
                    change.before = None;
                } else {
                    first_with_before.push(i);
                }
            }
            keys.insert(key);
        }
        let already = match conn.dialect() {
            Dialect::Sqlite => {
                let mut already = Vec::with_capacity(first_with_before.len());
                for &i in &first_with_before {
                    already.push(has_logged_state(conn, &pending[i])?);
                }
                already
            }
            Dialect::Postgres => have_logged_states(conn, &pending, &first_with_before)?,
        };
        for (&i, already) in first_with_before.iter().zip(already) {
            if already {
                pending[i].before = None;
            }
        }
        let mut values = Values::default();
        for change in &pending {
            values.count(change.value.as_deref());
            values.count(change.before.as_deref());
        }
        // A bulk job's values go by content whatever the chunk holds, so that its one set
        // is stored once for the whole job, not once per chunk.
        let ids = values.store(conn, origin.bulk_operation().is_some())?;
        let actor = serde_json::to_string(&origin.actor)?;
        if conn.dialect() == Dialect::Postgres {
            let (seq, at) = append_batch(conn, &pending, at, &actor, origin, &ids)?;
            return Ok(Some(Flushed { seq, at, keys }));
        }
        // The writer numbers the changes itself (`sql/0007_changes_seq_by_hand.sql`), one
        // past the newest seq it learnt before the transaction's first statement: erasure
        // may have deleted the newest rows since, and their seqs must not come back.
        let Some(mut seq) = memo.last_seq else {
            return Err(Error::HeadUnknown);
        };
        // Each set's newest change appended so far by this flush: a set written twice here
        // read its row's `last_seq` before the first change was numbered.
        let mut newest: HashMap<(&RecipientKey, &str), i64> = HashMap::new();
        for change in &pending {
            seq += 1;
            let (collection, id) = match &change.recipient {
                Some(key) => (Some(collection(key)), Some(key.id.as_str())),
                None => (None, None),
            };
            let (value, value_text) = split(&ids, change.value.as_deref());
            let (before, before_text) = split(&ids, change.before.as_deref());
            // A set's change names the set's previous one (`sql/0008_set_change_chains.sql`),
            // and a `preferences.set` becomes its row's newest: the row's page is in this
            // commit already, where an entry of `changes_by_recipient` would add one.
            let mut prev = None;
            if let (Some(key), Some(set_id), true) = (
                &change.recipient,
                change.preference_set.as_deref(),
                is_set_kind(change.kind),
            ) {
                prev = newest.get(&(key, set_id)).copied().or(change.prev);
                newest.insert((key, set_id), seq);
                if matches!(change.kind, ChangeKind::PreferencesSet) {
                    conn.execute(
                        "UPDATE preference_sets SET last_seq = ?4
                          WHERE collection = ?1 AND recipient_id = ?2 AND set_id = ?3",
                        params![collection, id, set_id, seq],
                    )?;
                }
            }
            conn.execute(
                "INSERT INTO changes (seq, at, kind, collection, recipient_id, preference_set, tenant, audience,
                                      actor, method, bulk_operation, value, before, value_text, before_text,
                                      prev_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    seq,
                    at,
                    change.kind.as_str(),
                    collection,
                    id,
                    change.preference_set.as_deref(),
                    change.tenant.as_deref(),
                    change.audience.as_deref(),
                    &actor,
                    origin.method,
                    origin.bulk_operation(),
                    value,
                    before,
                    value_text,
                    before_text,
                    prev,
                ],
            )?;
        }
        Ok(Some(Flushed { seq, at, keys }))
    }
}

/// A value as a change names it: by its id when it was stored by content, else its text,
/// kept in the change's row.
fn split<'t>(ids: &HashMap<&str, i64>, text: Option<&'t str>) -> (Option<i64>, Option<&'t str>) {
    match text {
        Some(t) => match ids.get(t) {
            Some(id) => (Some(*id), None),
            None => (None, Some(t)),
        },
        None => (None, None),
    }
}

/// What one flush appended, remembered once its transaction has committed.
pub(super) struct Flushed {
    /// The `seq` of the last change appended.
    pub seq: i64,
    at: i64,
    /// The state keys it appended a change of.
    keys: HashSet<String>,
}

/// Keys remembered as logged, at most: past it the set starts again (a forgotten key costs
/// one indexed query on its next change, nothing more): a few MB at most.
const MEMO_KEYS: usize = 65_536;

/// What the writer remembers of the log between its transactions, so that a write need
/// not ask the database: the newest `at` appended, and state keys known to have a change
/// in the log (whose next change then stores no `before`). On SQLite only the writer
/// appends (the file lock of `store::lock` keeps a second daemon out); in a fleet the
/// other daemons append too, so there the memo keeps the keys only (a key logged by
/// anyone stays logged, see below) and the newest `at` is asked each time. The memo learns
/// a flush only after its commit, so a rolled-back transaction teaches it nothing. Each
/// query it saves is a descent of `changes` on the writer thread, which every write
/// waits behind (on PostgreSQL, a bulk chunk's `EXISTS` over hundreds of keys).
///
/// A key stays logged: pruning keeps every key's newest change, and erasure, which deletes
/// all of a recipient's, leaves its id-only `recipient.delete`, which answers every
/// instant up to the recipient's next change (`store::past`), so that change's `before`
/// would never be read.
#[derive(Default)]
pub(super) struct Memo {
    last_at: Option<i64>,
    /// SQLite: the newest `seq` ever committed, which the writer numbers the next change
    /// after ([`Memo::learn_head`]). Unused on PostgreSQL, where an identity numbers them.
    last_seq: Option<i64>,
    logged: HashSet<String>,
}

impl Memo {
    /// SQLite: reads the newest `seq` ever committed, once, before a write transaction's
    /// first statement (erasure deletes a recipient's changes, the newest among them
    /// perhaps, before its own change is appended).
    pub fn learn_head(&mut self, conn: Conn<'_>) -> Result<(), Error> {
        if self.last_seq.is_none() {
            self.last_seq = Some(LogRead { conn }.head()?);
        }
        Ok(())
    }

    /// Where the log is: the newest `seq` and `at` the writer numbers after.
    pub fn position(&self) -> Position {
        Position {
            last_seq: self.last_seq,
            last_at: self.last_at,
        }
    }

    /// SQLite: numbers the next changes after a flush of the transaction still open (group
    /// commit, `store::writer`): the writes of one group number on from each other.
    pub fn staged(&mut self, flushed: &Flushed) {
        self.last_at = Some(self.last_at.unwrap_or(i64::MIN).max(flushed.at));
        self.last_seq = Some(self.last_seq.unwrap_or(0).max(flushed.seq));
    }

    /// Goes back to `position`: what was staged since did not commit.
    pub fn rewind(&mut self, position: Position) {
        self.last_seq = position.last_seq;
        self.last_at = position.last_at;
    }

    /// Whether the log is known to hold a change of `key`'s preference set `set_id`.
    pub fn has_logged_set(&self, key: &RecipientKey, set_id: &str) -> bool {
        self.logged.contains(&set_key(key, set_id))
    }

    /// Learns what a committed transaction appended. With `shared_log` (fleet mode: the
    /// other daemons append too) only the keys are learnt: a key stays logged whoever
    /// appended its change (see above), but the newest `at` may be another daemon's.
    pub fn committed(&mut self, flushed: Flushed, shared_log: bool) {
        if !shared_log {
            self.staged(&flushed);
        }
        if self.logged.len() + flushed.keys.len() > MEMO_KEYS {
            self.logged.clear();
        }
        self.logged.extend(flushed.keys);
    }
}

/// [`Memo::position`].
#[derive(Clone, Copy)]
pub(super) struct Position {
    last_seq: Option<i64>,
    last_at: Option<i64>,
}

/// SQLite: the newest `seq` ever committed (`NULL` when none), erased and pruned changes
/// included: the newest row (erasure and pruning always leave the newest change in place),
/// what pruning has cut, and what `sqlite_sequence` kept from before
/// `sql/0007_changes_seq_by_hand.sql`, when AUTOINCREMENT numbered the changes. The
/// log's `head` ([`LogRead::head`]: what the writer numbers after, [`Memo::learn_head`])
/// and a backup's `seq` (`store::backup`).
pub(super) const NEWEST_EVER: &str =
    "SELECT nullif(max(coalesce((SELECT max(seq) FROM changes), 0),
                       coalesce((SELECT pruned_seq FROM change_log_state WHERE id = 1), 0),
                       coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)), 0)";

/// A recipient as the state keys write it.
fn recipient_text(key: &RecipientKey) -> String {
    format!("{}\u{0}{}", collection(key), key.id)
}

/// PostgreSQL: every change appended by one statement (one round trip however many),
/// in order (`WITH ORDINALITY … ORDER BY`, so the identity hands out `seq` in that
/// order); answers the last `seq` and the `at` they were given.
fn append_batch(
    conn: Conn<'_>,
    pending: &[Pending],
    at: i64,
    actor: &str,
    origin: &Origin,
    stored: &HashMap<&str, i64>,
) -> Result<(i64, i64), Error> {
    let bytes = |s: Option<&str>| s.map(|s| s.as_bytes().to_vec());
    let kinds: Vec<&str> = pending.iter().map(|c| c.kind.as_str()).collect();
    let collections: Vec<Option<Vec<u8>>> = pending
        .iter()
        .map(|c| bytes(c.recipient.as_ref().map(collection)))
        .collect();
    let ids: Vec<Option<Vec<u8>>> = pending
        .iter()
        .map(|c| bytes(c.recipient.as_ref().map(|k| k.id.as_str())))
        .collect();
    let sets: Vec<Option<Vec<u8>>> = pending
        .iter()
        .map(|c| bytes(c.preference_set.as_deref()))
        .collect();
    let tenants: Vec<Option<Vec<u8>>> =
        pending.iter().map(|c| bytes(c.tenant.as_deref())).collect();
    let audiences: Vec<Option<Vec<u8>>> = pending
        .iter()
        .map(|c| bytes(c.audience.as_deref()))
        .collect();
    let (values, value_texts): (Vec<Option<i64>>, Vec<Option<&str>>) = pending
        .iter()
        .map(|c| split(stored, c.value.as_deref()))
        .unzip();
    let (befores, before_texts): (Vec<Option<i64>>, Vec<Option<&str>>) = pending
        .iter()
        .map(|c| split(stored, c.before.as_deref()))
        .unzip();
    let bulk = origin.bulk_operation();
    // Only the last `seq` and the `at` come back, not one row per change. The `at` is
    // `$1`, or the newest one logged if the clock has stepped back: read here under the
    // write lock, in the same round trip.
    let rows = conn.pg_query(
        "WITH newest AS (
           SELECT greatest($1, coalesce((SELECT at FROM changes ORDER BY seq DESC LIMIT 1), $1)) AS at),
         appended AS (
           INSERT INTO changes (at, kind, collection, recipient_id, preference_set, tenant, audience,
                                actor, method, bulk_operation, value, before, value_text, before_text)
           SELECT newest.at, k, c, r, ps, t, a, $2, $3, $4, v, b, vt, bt
             FROM newest,
                  unnest($5::text[], $6::bytea[], $7::bytea[], $8::bytea[], $9::bytea[],
                         $10::bytea[], $11::bigint[], $12::bigint[], $13::text[], $14::text[])
                  WITH ORDINALITY AS u(k, c, r, ps, t, a, v, b, vt, bt, n)
            ORDER BY n
           RETURNING seq, at)
         SELECT max(seq), max(at) FROM appended",
        &[
            &at,
            &actor,
            &origin.method,
            &bulk,
            &kinds,
            &collections,
            &ids,
            &sets,
            &tenants,
            &audiences,
            &values,
            &befores,
            &value_texts,
            &before_texts,
        ],
    )?;
    match rows.into_iter().next() {
        Some(mut row) => Ok((row.get::<i64>(0)?, row.get::<i64>(1)?)),
        None => Ok((0, at)),
    }
}

/// PostgreSQL: [`has_logged_state`] for the changes at `which`, the preference sets' in
/// one statement (a bulk chunk's hundreds), the rest one by one.
fn have_logged_states(
    conn: Conn<'_>,
    pending: &[Pending],
    which: &[usize],
) -> Result<Vec<bool>, Error> {
    let is_set = |c: &Pending| is_set_kind(c.kind);
    let sets: Vec<&Pending> = which
        .iter()
        .map(|&i| &pending[i])
        .filter(|c| is_set(c))
        .collect();
    let mut found = std::collections::HashSet::new();
    if !sets.is_empty() {
        let field = |f: &dyn Fn(&Pending) -> Option<&str>| -> Vec<Vec<u8>> {
            sets.iter()
                .map(|c| f(c).unwrap_or("").as_bytes().to_vec())
                .collect()
        };
        let collections = field(&|c| c.recipient.as_ref().map(collection));
        let ids = field(&|c| c.recipient.as_ref().map(|k| k.id.as_str()));
        let set_ids = field(&|c| c.preference_set.as_deref());
        for mut row in conn.pg_query(
            "SELECT DISTINCT u.c, u.r, u.s
               FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) AS u(c, r, s)
              WHERE EXISTS (SELECT 1 FROM changes x
                             WHERE x.collection = u.c AND x.recipient_id = u.r
                               AND x.kind IN ('preferences.set', 'preferences.unset')
                               AND x.preference_set = u.s)",
            &[&collections, &ids, &set_ids],
        )? {
            found.insert((
                row.get::<Vec<u8>>(0)?,
                row.get::<Vec<u8>>(1)?,
                row.get::<Vec<u8>>(2)?,
            ));
        }
    }
    which
        .iter()
        .map(|&i| {
            let c = &pending[i];
            if is_set(c) {
                let key = |s: Option<&str>| s.unwrap_or("").as_bytes().to_vec();
                Ok(found.contains(&(
                    key(c.recipient.as_ref().map(collection)),
                    key(c.recipient.as_ref().map(|k| k.id.as_str())),
                    key(c.preference_set.as_deref()),
                )))
            } else {
                has_logged_state(conn, c)
            }
        })
        .collect()
}

/// The state a change is of, as text (`None`: a change of no one key's state, which has no
/// `before`).
fn state_key(change: &Pending) -> Option<String> {
    match change.kind {
        ChangeKind::PreferencesSet | ChangeKind::PreferencesUnset => Some(set_key(
            change.recipient.as_ref()?,
            change.preference_set.as_deref().unwrap_or(""),
        )),
        ChangeKind::RecipientSet => Some(format!(
            "r\u{0}{}",
            recipient_text(change.recipient.as_ref()?)
        )),
        ChangeKind::TenantSet | ChangeKind::TenantDelete => {
            Some(format!("t\u{0}{}", change.tenant.as_deref()?))
        }
        _ => None,
    }
}

/// Whether `kind` is a change of a preference set.
fn is_set_kind(kind: ChangeKind) -> bool {
    matches!(
        kind,
        ChangeKind::PreferencesSet | ChangeKind::PreferencesUnset
    )
}

/// The state key of a recipient's preference set.
fn set_key(key: &RecipientKey, set_id: &str) -> String {
    format!("p\u{0}{}\u{0}{}", recipient_text(key), set_id)
}

/// Whether the log already holds a change of `change`'s state, whose value is then the
/// state before it.
fn has_logged_state(conn: Conn<'_>, change: &Pending) -> Result<bool, Error> {
    let (collection, id) = match &change.recipient {
        Some(k) => (collection(k), k.id.as_str()),
        None => ("", ""),
    };
    let found: Option<i64> = match change.kind {
        ChangeKind::PreferencesSet | ChangeKind::PreferencesUnset => conn.value(
            LOGGED_SET,
            params![collection, id, change.preference_set.as_deref()],
        )?,
        ChangeKind::RecipientSet => conn.value(LOGGED_RECIPIENT, params![collection, id])?,
        ChangeKind::TenantSet | ChangeKind::TenantDelete => conn.value(
            "SELECT 1 FROM changes WHERE tenant = ?1 AND kind IN ('tenant.set', 'tenant.delete')
             LIMIT 1",
            params![change.tenant.as_deref()],
        )?,
        _ => None,
    };
    Ok(found.is_some())
}

fn hash(text: &str) -> [u8; 32] {
    crate::model::change::sha256(text.as_bytes())
}

/// The longest value kept in its change's row. A longer one goes by content whatever else:
/// its own pages outweigh the hash index's one, and rows of `changes` stay a few hundred
/// bytes, so that the scans of the log (pruning, `changes.list`, the events of an `as_of`
/// read) read few pages.
const INLINE_MAX: usize = 1024;

/// The values of one flush, counted by content.
#[derive(Default)]
struct Values<'a> {
    counts: HashMap<&'a str, i64>,
}

impl<'a> Values<'a> {
    fn count(&mut self, text: Option<&'a str>) {
        if let Some(text) = text {
            *self.counts.entry(text).or_insert(0) += 1;
        }
    }

    /// Stores by content (or adds to the count of) each value that several changes share,
    /// is longer than [`INLINE_MAX`], or, when `all`, every value; answers their ids. The
    /// others are kept in their change's row (`sql/0006_inline_change_values.sql`).
    fn store(self, conn: Conn<'_>, all: bool) -> Result<HashMap<&'a str, i64>, Error> {
        let mut ids = HashMap::new();
        for (text, count) in self.counts {
            if count < 2 && !all && text.len() <= INLINE_MAX {
                continue;
            }
            let id: i64 = conn.one(
                "INSERT INTO change_values (hash, refs, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hash) DO UPDATE SET refs = change_values.refs + excluded.refs
                 RETURNING id",
                params![&hash(text)[..], count, text],
                |r| r.get(0),
            )?;
            ids.insert(text, id);
        }
        Ok(ids)
    }
}

/// Releases the values of changes about to be deleted: each loses one reference per
/// change that named it, and a value with none left is deleted.
fn release(conn: Conn<'_>, value_ids: &[i64]) -> Result<(), Error> {
    let mut counts: HashMap<i64, i64> = HashMap::new();
    for id in value_ids {
        *counts.entry(*id).or_default() += 1;
    }
    for (id, count) in counts {
        let left: Option<i64> = conn.value(
            "UPDATE change_values SET refs = refs - ?2 WHERE id = ?1 RETURNING refs",
            params![id, count],
        )?;
        if left.is_some_and(|n| n <= 0) {
            conn.execute("DELETE FROM change_values WHERE id = ?1", params![id])?;
        }
    }
    Ok(())
}

/// The `seq` of a recipient's changes that only its sets' chains reach, not
/// `changes_by_recipient` ([`LogRead::recipient_events`]; none on PostgreSQL). Read before
/// the recipient's rows are deleted: the sets' rows start their chains.
pub(super) fn chained_seqs(conn: Conn<'_>, key: &RecipientKey) -> Result<Vec<i64>, Error> {
    let (_, chained) = LogRead { conn }.walk(key, None)?;
    Ok(chained.into_iter().map(|e| e.seq).collect())
}

/// Erasure (history.md §4): deletes every change about a recipient, the index's entries
/// in one statement and the changes `chained` ([`chained_seqs`]) one by one, and the
/// values only those changes held.
pub(super) fn erase(conn: Conn<'_>, key: &RecipientKey, chained: &[i64]) -> Result<(), Error> {
    let mut ids = Vec::new();
    for (value, before) in conn.all(
        concat!(
            "DELETE FROM changes WHERE collection = ?1 AND recipient_id = ?2 AND ",
            indexed!(),
            " RETURNING value, before"
        ),
        params![collection(key), &key.id],
        |r| Ok((r.get::<Option<i64>>(0)?, r.get::<Option<i64>>(1)?)),
    )? {
        ids.extend(value);
        ids.extend(before);
    }
    for seq in chained {
        let deleted: Option<(Option<i64>, Option<i64>)> = conn.opt(
            "DELETE FROM changes WHERE seq = ?1 RETURNING value, before",
            params![seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some((value, before)) = deleted {
            ids.extend(value);
            ids.extend(before);
        }
    }
    release(conn, &ids)
}

/// A stored change, as the wire shows it (history.md §1).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub kind: ChangeKind,
    pub recipient: Option<RecipientKey>,
    pub preference_set: Option<String>,
    pub tenant: Option<String>,
    pub audience: Option<String>,
    pub actor: Value,
    pub method: String,
    pub bulk_operation: Option<String>,
    pub value: Option<Value>,
    pub before: Option<Value>,
}

impl Change {
    /// The wire shape of history.md §1 (without `before`, which only history entries show).
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "at": format_millis(self.at),
            "kind": self.kind.as_str(),
            "recipient": self.recipient.as_ref().map(recipient_json),
            "preference_set": self.preference_set,
            "tenant": self.tenant,
            "audience": self.audience,
            "actor": self.actor,
            "method": self.method,
            "bulk_operation": self.bulk_operation,
            "value": self.value,
        })
    }
}

fn recipient_json(key: &RecipientKey) -> Value {
    match &key.collection {
        Some(collection) => json!({ "id": key.id, "collection": collection }),
        None => json!({ "id": key.id }),
    }
}

/// Milliseconds since the epoch as the store's RFC 3339 text.
pub fn format_millis(at: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    super::time::format_time(t)
}

/// Which changes a list asks for.
#[derive(Clone, Debug, Default)]
pub struct ChangeFilter {
    pub kinds: Vec<ChangeKind>,
    pub recipient: Option<RecipientKey>,
}

/// The columns every change read selects, in [`row_to_change`]'s order.
const CHANGE_COLUMNS: &str =
    "c.seq, c.at, c.kind, c.collection, c.recipient_id, c.preference_set, c.tenant,
     c.audience, c.actor, c.method, c.bulk_operation,
     coalesce(c.value_text, (SELECT value FROM change_values WHERE id = c.value)),
     coalesce(c.before_text, (SELECT value FROM change_values WHERE id = c.before))";

fn row_to_change(r: &mut Row) -> Result<RawChange, Error> {
    Ok(RawChange {
        seq: r.get(0)?,
        at: r.get(1)?,
        kind: r.get(2)?,
        collection: r.get(3)?,
        recipient_id: r.get(4)?,
        preference_set: r.get(5)?,
        tenant: r.get(6)?,
        audience: r.get(7)?,
        actor: r.get(8)?,
        method: r.get(9)?,
        bulk_operation: r.get(10)?,
        value: r.get(11)?,
        before: r.get(12)?,
    })
}

/// A row as read, parsed off the database thread's hot loop by [`RawChange::parse`].
struct RawChange {
    seq: i64,
    at: i64,
    kind: String,
    collection: Option<String>,
    recipient_id: Option<String>,
    preference_set: Option<String>,
    tenant: Option<String>,
    audience: Option<String>,
    actor: String,
    method: String,
    bulk_operation: Option<String>,
    value: Option<String>,
    before: Option<String>,
}

impl RawChange {
    fn parse(self) -> Result<Change, Error> {
        let kind = ChangeKind::parse(&self.kind).ok_or(Error::UnknownChangeKind(self.kind))?;
        let recipient = match (self.collection, self.recipient_id) {
            (Some(collection), Some(id)) => Some(RecipientKey {
                collection: (!collection.is_empty()).then_some(collection),
                id,
            }),
            _ => None,
        };
        let parse = |t: Option<String>| -> Result<Option<Value>, Error> {
            Ok(t.map(|t| serde_json::from_str(&t)).transpose()?)
        };
        Ok(Change {
            seq: self.seq,
            at: self.at,
            kind,
            recipient,
            preference_set: self.preference_set,
            tenant: self.tenant,
            audience: self.audience,
            actor: serde_json::from_str(&self.actor)?,
            method: self.method,
            bulk_operation: self.bulk_operation,
            value: parse(self.value)?,
            before: parse(self.before)?,
        })
    }
}

/// How far back the log reaches, after pruning (history.md §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// Changes with a smaller `seq` may have been pruned: an `after` below it is truncated.
    pub from_seq: i64,
    /// The earliest instant (ms) a point-in-time answer can give; `None`: from the start.
    pub from_at: Option<i64>,
}

/// The log's reading side, on a read or write transaction.
pub struct LogRead<'c> {
    pub(super) conn: Conn<'c>,
}

impl LogRead<'_> {
    /// The changes `clauses` (after `FROM changes c`) select, with `params`.
    fn query(&self, clauses: &str, params: &[Param<'_>]) -> Result<Vec<Change>, Error> {
        let sql = format!("SELECT {CHANGE_COLUMNS} FROM changes c {clauses}");
        self.conn
            .all(&sql, params, row_to_change)?
            .into_iter()
            .map(RawChange::parse)
            .collect()
    }

    /// The newest `seq` ever committed (0 when none): erased changes count, so a reader
    /// never sees `head` go back.
    pub fn head(&self) -> Result<i64, Error> {
        // PostgreSQL's sequence would also show values of uncommitted changes; the newest
        // committed change is there to read instead (erasure and pruning always leave the
        // newest change in place, so it is the newest ever committed).
        let sql = self.conn.pick(
            NEWEST_EVER,
            "SELECT greatest((SELECT max(seq) FROM changes),
                             (SELECT pruned_seq FROM change_log_state WHERE id = 1))",
        );
        Ok(self
            .conn
            .value::<Option<i64>>(sql, params![])?
            .flatten()
            .unwrap_or(0))
    }

    pub fn retained(&self) -> Result<Retained, Error> {
        Ok(self
            .conn
            .opt(
                "SELECT pruned_seq, pruned_at FROM change_log_state WHERE id = 1",
                params![],
                |r| {
                    Ok(Retained {
                        from_seq: r.get(0)?,
                        from_at: r.get(1)?,
                    })
                },
            )?
            .unwrap_or_default())
    }

    /// Up to `limit` changes after `after`, in ascending `seq`, that pass `filter`.
    pub fn list(
        &self,
        after: i64,
        limit: u32,
        filter: &ChangeFilter,
    ) -> Result<Vec<Change>, Error> {
        let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        let kinds = serde_json::to_string(&kinds)?;
        let any_kind = filter.kinds.is_empty();
        match &filter.recipient {
            Some(key) => {
                let events = self.recipient_events(key, None)?;
                let seqs = events
                    .iter()
                    .filter(|e| e.seq > after && (any_kind || filter.kinds.contains(&e.kind)))
                    .take(limit as usize)
                    .map(|e| e.seq);
                self.changes(seqs)
            }
            None => self.query(
                self.conn.pick(
                    "WHERE c.seq > ?1 AND (?2 OR c.kind IN (SELECT value FROM json_each(?3)))
                     ORDER BY c.seq LIMIT ?4",
                    "WHERE c.seq > ?1 AND (?2 OR c.kind IN (SELECT json_array_elements_text(CAST(?3 AS json))))
                     ORDER BY c.seq LIMIT ?4",
                ),
                params![after, any_kind, &kinds, limit],
            ),
        }
    }

    /// A recipient's `preferences.set`/`unset` changes, newest first, before `before`,
    /// optionally of one set.
    pub fn preference_history(
        &self,
        key: &RecipientKey,
        set: Option<&str>,
        before: i64,
        limit: u32,
    ) -> Result<Vec<Change>, Error> {
        // `before` is stored only for a set's first logged change; every other's is the
        // value of the previous change of the same set, which the walk has read too.
        let mut newest: HashMap<Option<String>, i64> = HashMap::new();
        let mut picked = Vec::new();
        for event in self.recipient_events(key, None)? {
            if !is_set_kind(event.kind) {
                continue;
            }
            let previous = newest.insert(event.preference_set.clone(), event.seq);
            if event.seq < before && (set.is_none() || event.preference_set.as_deref() == set) {
                picked.push((event.seq, previous));
            }
        }
        let mut changes = Vec::new();
        for (seq, previous) in picked.into_iter().rev().take(limit as usize) {
            let Some(mut change) = self.changes([seq])?.pop() else {
                continue;
            };
            if change.before.is_none()
                && let Some(previous) = previous
            {
                change.before = self.value_of(previous, false)?;
            }
            changes.push(change);
        }
        Ok(changes)
    }

    /// The changes `seqs` name, in that order (one read of its row each).
    fn changes(&self, seqs: impl IntoIterator<Item = i64>) -> Result<Vec<Change>, Error> {
        let mut changes = Vec::new();
        for seq in seqs {
            changes.extend(self.query("WHERE c.seq = ?1", params![seq])?);
        }
        Ok(changes)
    }

    /// What point-in-time reads need of every change about a recipient, in ascending
    /// `seq`: not its value, which [`LogRead::value_of`] reads for the few changes the
    /// answer uses (a recipient with ten changes of one set needs one of their values).
    ///
    /// They are the entries of `changes_by_recipient` and the chains of its sets'
    /// changes (`sql/0008_set_change_chains.sql`), walked back from each set's row
    /// (`last_seq`) and from each indexed change's `prev_seq` (a set's unset, or its first
    /// change after the upgrade), one read by `seq` a step. A walk stops at a change the
    /// index holds (it is among the entries), at one pruning deleted (every older change
    /// of that set is gone too), and with `back_to` (ms) after the first change at or
    /// before it: a point-in-time answer needs a key's newest change at or before its
    /// instant, or, when there is none, its oldest. On PostgreSQL the chains are empty and
    /// the index holds every change (`sql/postgres/0004_set_change_chains.sql`).
    ///
    /// Measured on the 1M-user database with 10 M changes (`as_of` reads of the instant a
    /// run starts, server CPU per call): one step per statement, walking whole chains,
    /// 190-214 µs, against 145-183 µs for the index of every change before; one recursive
    /// statement doing the same walk, 344-368 µs.
    pub fn recipient_events(
        &self,
        key: &RecipientKey,
        back_to: Option<i64>,
    ) -> Result<Vec<EventRow>, Error> {
        let (mut events, chained) = self.walk(key, back_to)?;
        if !chained.is_empty() {
            events.extend(chained);
            events.sort_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
        }
        Ok(events)
    }

    /// [`LogRead::recipient_events`] in two parts: the index's entries, ascending, and
    /// the changes only the chains reach, in no order.
    fn walk(
        &self,
        key: &RecipientKey,
        back_to: Option<i64>,
    ) -> Result<(Vec<EventRow>, Vec<EventRow>), Error> {
        let mut indexed = Vec::new();
        let mut heads = Vec::new();
        for (event, prev) in self.conn.all(
            INDEXED_EVENTS,
            params![collection(key), &key.id],
            event_link,
        )? {
            heads.extend(prev);
            indexed.push(event);
        }
        heads.extend(self.conn.all(
            "SELECT last_seq FROM preference_sets
              WHERE collection = ?1 AND recipient_id = ?2 AND last_seq IS NOT NULL",
            params![collection(key), &key.id],
            |r| r.get::<i64>(0),
        )?);
        let mut chained = Vec::new();
        for head in heads {
            let mut seq = head;
            while let Some((event, prev)) = self.conn.opt(
                concat!(event_columns!(), "WHERE seq = ?1"),
                params![seq],
                event_link,
            )? {
                // A change the index holds is among the entries already.
                let Some(prev) = prev.filter(|_| matches!(event.kind, ChangeKind::PreferencesSet))
                else {
                    break;
                };
                let enough = back_to.is_some_and(|at| event.at <= at);
                chained.push(event);
                if enough {
                    break;
                }
                // A change names an older one, so every walk ends.
                if prev >= seq {
                    break;
                }
                seq = prev;
            }
        }
        Ok((indexed, chained))
    }

    /// [`LogRead::recipient_events`] for a tenant's changes.
    pub fn tenant_events(&self, id: &str) -> Result<Vec<EventRow>, Error> {
        let sql = concat!(
            event_columns!(),
            "WHERE tenant = ?1 AND kind IN ('tenant.set', 'tenant.delete') ORDER BY seq"
        );
        Ok(self
            .conn
            .all(sql, params![id], event_link)?
            .into_iter()
            .map(|(event, _)| event)
            .collect())
    }

    /// The value of change `seq` (`before`: the state before it, as stored), parsed;
    /// `None` when it has none.
    pub fn value_of(&self, seq: i64, before: bool) -> Result<Option<Value>, Error> {
        let sql = if before {
            "SELECT coalesce(c.before_text, (SELECT value FROM change_values WHERE id = c.before))
             FROM changes c WHERE c.seq = ?1"
        } else {
            "SELECT coalesce(c.value_text, (SELECT value FROM change_values WHERE id = c.value))
             FROM changes c WHERE c.seq = ?1"
        };
        let text: Option<Option<String>> = self.conn.value(sql, params![seq])?;
        Ok(text
            .flatten()
            .map(|t| serde_json::from_str(&t))
            .transpose()?)
    }

    /// The hash of the config in force at `at` (ms): the newest config applied at or
    /// before it, else the oldest one stored (the log does not reach further back).
    pub fn config_at(&self, at: i64) -> Result<Option<String>, Error> {
        // Newest first through `changes_by_kind`, stopping at the first old enough; then,
        // if none is, the oldest.
        let found: Option<Option<String>> = match self.conn.value(
            "SELECT coalesce(c.value_text, (SELECT value FROM change_values WHERE id = c.value))
             FROM changes c
             WHERE c.kind = 'config.applied' AND c.recipient_id IS NULL AND c.at <= ?1
             ORDER BY c.seq DESC LIMIT 1",
            params![at],
        )? {
            Some(found) => Some(found),
            None => self.conn.value(
                "SELECT coalesce(c.value_text, (SELECT value FROM change_values WHERE id = c.value))
                 FROM changes c
                 WHERE c.kind = 'config.applied' AND c.recipient_id IS NULL
                 ORDER BY c.seq LIMIT 1",
                params![],
            )?,
        };
        let Some(Some(text)) = found else {
            return Ok(None);
        };
        let value: Value = serde_json::from_str(&text)?;
        Ok(value["hash"].as_str().map(str::to_string))
    }

    /// The files of the config with this hash (a JSON array of `[path, content]`).
    pub fn config_files(&self, hash: &str) -> Result<Option<String>, Error> {
        self.conn
            .value("SELECT files FROM configs WHERE hash = ?1", params![hash])
    }
}

/// A row of [`event_columns`]: the event, and the change's `prev_seq`.
fn event_link(r: &mut Row) -> Result<(EventRow, Option<i64>), Error> {
    let (seq, at, kind, preference_set, audience, prev) = (
        r.get(0)?,
        r.get(1)?,
        r.get::<String>(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    );
    let kind = ChangeKind::parse(&kind).ok_or(Error::UnknownChangeKind(kind))?;
    Ok((
        EventRow {
            seq,
            at,
            kind,
            preference_set,
            audience,
        },
        prev,
    ))
}

/// What point-in-time reads need of a change: [`LogRead::recipient_events`].
#[derive(Clone, Debug)]
pub struct EventRow {
    pub seq: i64,
    pub at: i64,
    pub kind: ChangeKind,
    pub preference_set: Option<String>,
    pub audience: Option<String>,
}

/// Stores a config's files once per content and appends its `config.applied` change.
pub(super) fn config_applied(
    conn: Conn<'_>,
    log: &Log,
    version: u64,
    files: &[(String, String)],
) -> Result<String, Error> {
    let text = serde_json::to_string(files)?;
    let hash = format!("sha256:{}", hex(&hash(&text)));
    conn.execute(
        "INSERT INTO configs (hash, files) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![&hash, &text],
    )?;
    let mut change = Pending::new(ChangeKind::ConfigApplied);
    change.value = Some(json!({ "version": version, "hash": hash }).to_string());
    log.push(change);
    Ok(hash)
}

/// Changes deleted per pruning transaction, so that pruning a long log never holds the
/// writer for long.
const PRUNE_BATCH: usize = 5000;

/// The key a change is the state of: pruning keeps the newest change of each key older
/// than the horizon.
fn key_of(c: &PruneRow) -> String {
    let r = format!(
        "{}\u{0}{}",
        c.collection.as_deref().unwrap_or(""),
        c.recipient_id.as_deref().unwrap_or("")
    );
    match c.kind.as_str() {
        "preferences.set" | "preferences.unset" => {
            format!(
                "p\u{0}{r}\u{0}{}",
                c.preference_set.as_deref().unwrap_or("")
            )
        }
        "recipient.set" => format!("r\u{0}{r}"),
        "recipient.delete" => format!("d\u{0}{r}"),
        "audience.add" | "audience.remove" => {
            format!("a\u{0}{r}\u{0}{}", c.audience.as_deref().unwrap_or(""))
        }
        "tenant.set" | "tenant.delete" => format!("t\u{0}{}", c.tenant.as_deref().unwrap_or("")),
        other => other.to_string(),
    }
}

struct PruneRow {
    seq: i64,
    kind: String,
    collection: Option<String>,
    recipient_id: Option<String>,
    preference_set: Option<String>,
    tenant: Option<String>,
    audience: Option<String>,
}

/// What one pruning step found: the changes to delete, and where to go on from.
pub struct PrunePlan {
    seqs: Vec<i64>,
    /// The smallest seq scanned: the next step scans below it.
    pub below: i64,
    pub done: bool,
}

/// Pruning (history.md §4), a step at a time: scanning down from `below` among changes
/// older than `horizon` (ms), every change that is not the newest of its key older than the
/// horizon is deleted. `seen` carries the keys met so far across steps.
pub(super) fn prune_step(
    conn: Conn<'_>,
    horizon: i64,
    below: i64,
    seen: &mut HashSet<String>,
) -> Result<(usize, PrunePlan), Error> {
    let rows = conn.all(
        "SELECT seq, kind, collection, recipient_id, preference_set, tenant, audience
         FROM changes WHERE at < ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
        params![horizon, below, PRUNE_BATCH * 4],
        |r| {
            Ok(PruneRow {
                seq: r.get(0)?,
                kind: r.get(1)?,
                collection: r.get(2)?,
                recipient_id: r.get(3)?,
                preference_set: r.get(4)?,
                tenant: r.get(5)?,
                audience: r.get(6)?,
            })
        },
    )?;
    let mut plan = PrunePlan {
        seqs: Vec::new(),
        below,
        done: true,
    };
    for row in rows {
        plan.done = false;
        plan.below = row.seq;
        if !seen.insert(key_of(&row)) {
            plan.seqs.push(row.seq);
            if plan.seqs.len() >= PRUNE_BATCH {
                break;
            }
        }
    }
    let deleted = plan.seqs.len();
    if deleted > 0 {
        let mut ids = Vec::new();
        for seq in &plan.seqs {
            let (value, before): (Option<i64>, Option<i64>) = conn.one(
                "DELETE FROM changes WHERE seq = ?1 RETURNING value, before",
                params![seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            ids.extend(value);
            ids.extend(before);
        }
        release(conn, &ids)?;
        let max = plan.seqs.iter().copied().max().unwrap_or(0);
        conn.execute(
            conn.pick(
                "INSERT INTO change_log_state (id, pruned_seq, pruned_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET pruned_seq = max(pruned_seq, excluded.pruned_seq),
                                                pruned_at = max(pruned_at, excluded.pruned_at)",
                "INSERT INTO change_log_state (id, pruned_seq, pruned_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE
                 SET pruned_seq = greatest(change_log_state.pruned_seq, excluded.pruned_seq),
                     pruned_at = greatest(change_log_state.pruned_at, excluded.pruned_at)",
            ),
            params![max, horizon],
        )?;
    }
    Ok((deleted, plan))
}

impl super::Db {
    /// Prunes the change log to `horizon` (ms since the epoch), in steps of its own
    /// transaction each; answers how many changes were deleted.
    pub async fn prune_history(&self, horizon: i64) -> Result<usize, Error> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
        let mut below = i64::MAX;
        let mut total = 0;
        loop {
            let seen = std::sync::Arc::clone(&seen);
            let (deleted, plan) = self
                .write(move |w| {
                    let mut seen = seen.lock().map_err(|_| Error::Closed)?;
                    prune_step(w.conn(), horizon, below, &mut seen)
                })
                .await?;
            total += deleted;
            if plan.done {
                return Ok(total);
            }
            below = plan.below;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::{Map, Value, json};

    use crate::model::change::{Actor, Origin};
    use crate::model::{PreferenceSet, RecipientKey, SetKind};
    use crate::store::sql::params;
    use crate::store::{Db, Durability, Error, Write};

    fn origin() -> Origin {
        Origin::new(Actor::Config, "test")
    }

    fn set(n: u32) -> PreferenceSet {
        PreferenceSet::parse(
            &json!({ "workflows": { format!("w{n}"): n.is_multiple_of(2) } }),
            SetKind::Recipient,
            "preferences",
        )
        .expect("a valid set")
    }

    fn write(db: &Db, f: impl FnOnce(&Write<'_>) -> Result<(), Error> + Send + 'static) {
        db.write_blocking(origin(), f).expect("write");
    }

    /// What the table holds about a recipient, read without `changes_by_recipient`:
    /// `(seq, kind, set, value)` ascending.
    type Truth = Vec<(i64, String, Option<String>, Option<Value>)>;

    fn truth(db: &Db, key: &RecipientKey) -> Truth {
        let key = key.clone();
        db.write_blocking(origin(), move |w| {
            w.conn().all(
                "SELECT c.seq, c.kind, c.preference_set,
                        coalesce(c.value_text, (SELECT value FROM change_values WHERE id = c.value))
                   FROM changes c NOT INDEXED
                  WHERE c.collection = ?1 AND c.recipient_id = ?2 ORDER BY c.seq",
                params![super::collection(&key), &key.id],
                |r| {
                    let value: Option<String> = r.get(3)?;
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        value.map(|v| serde_json::from_str(&v)).transpose()?,
                    ))
                },
            )
        })
        .expect("truth")
    }

    /// Asserts that the log's reads of `key` see exactly what the table holds: every
    /// change by seq, and in the preference history each set's change with the value
    /// before it (the previous change's of the same set); and that the file is whole.
    fn check(db: &Db, key: &RecipientKey) {
        let rows = truth(db, key);
        let k = key.clone();
        let (seqs, history, integrity) = db
            .write_blocking(origin(), move |w| {
                // Walked back only to an instant, each set's chain keeps every change
                // after it and its newest change at or before it: what an answer at that
                // instant reads.
                let log = w.log();
                let all = log.recipient_events(&k, None)?;
                let mut instants: Vec<i64> = all.iter().map(|e| e.at).collect();
                instants.push(0);
                for at in instants {
                    let part = log.recipient_events(&k, Some(at))?;
                    let after = |events: &[super::EventRow]| -> Vec<i64> {
                        events.iter().filter(|e| e.at > at).map(|e| e.seq).collect()
                    };
                    assert_eq!(after(&part), after(&all), "{}: after {at}", k.id);
                    for e in &all {
                        let newest = |events: &[super::EventRow]| {
                            events
                                .iter()
                                .filter(|x| x.preference_set == e.preference_set && x.at <= at)
                                .map(|x| x.seq)
                                .next_back()
                        };
                        assert_eq!(newest(&part), newest(&all), "{}: at {at}", k.id);
                    }
                }
                let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
                let history = w.log().preference_history(&k, None, i64::MAX, 1000)?;
                let integrity: Option<String> =
                    w.conn().value("PRAGMA integrity_check", params![])?;
                Ok::<_, Error>((seqs, history, integrity))
            })
            .expect("reads");
        assert_eq!(integrity.as_deref(), Some("ok"));
        assert_eq!(
            seqs,
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "{}: every change, in order",
            key.id
        );
        let mut last: HashMap<Option<String>, Option<Value>> = HashMap::new();
        let mut expected = Vec::new();
        for (seq, kind, set, value) in &rows {
            if kind.starts_with("preferences.") {
                let before = last.insert(set.clone(), value.clone()).flatten();
                expected.push((*seq, set.clone(), value.clone(), before));
            }
        }
        expected.reverse();
        let got: Vec<_> = history
            .into_iter()
            .map(|c| (c.seq, c.preference_set, c.value, c.before))
            .collect();
        assert_eq!(got, expected, "{}: the preference history", key.id);
    }

    /// A recipient's changes are read as the entries of `changes_by_recipient` and the
    /// chains of its sets' changes (`sql/0008_set_change_chains.sql`). Whatever the mix
    /// (several sets, a set written twice in one transaction, unset and written again,
    /// other kinds, chains that start before the upgrade), pruning and erasure, the reads
    /// see every change the table holds, each set's history has the right `before`, and
    /// the index stays consistent with its condition.
    #[test]
    fn a_recipients_changes_are_its_indexed_ones_and_its_sets_chains() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("prefsd.db"), Durability::Normal).expect("open");
        let ana = RecipientKey::user("ana");
        let bo = RecipientKey::user("bo");
        let round = |db: &Db, from: u32| {
            let (a, b) = (ana.clone(), bo.clone());
            write(db, move |w| {
                w.put_set(&a, "default", &set(from), "now")?;
                w.put_set(&a, "acme", &set(from), "now")?;
                w.put_set(&b, "default", &set(from), "now")?;
                let mut properties = Map::new();
                properties.insert("round".into(), json!(from));
                w.put_recipient(&a, &properties, "now")?;
                w.add_members("vip", std::slice::from_ref(&a), "now")?;
                Ok(())
            });
            for n in from + 1..from + 3 {
                let (a, b) = (ana.clone(), bo.clone());
                write(db, move |w| {
                    w.put_set(&a, "default", &set(n), "now")?;
                    w.put_set(&b, "default", &set(n), "now")
                });
            }
            let a = ana.clone();
            write(db, move |w| {
                // One set twice in one transaction, and unset then written again.
                w.put_set(&a, "default", &set(from + 3), "now")?;
                w.put_set(&a, "default", &set(from + 4), "now")?;
                w.delete_set(&a, "acme")?;
                w.put_set(&a, "acme", &set(from + 5), "now")?;
                w.remove_members("vip", std::slice::from_ref(&a))?;
                Ok(())
            });
            let a = ana.clone();
            write(db, move |w| {
                w.delete_set(&a, "acme")?;
                w.put_set(&a, "acme", &set(from + 6), "now")?;
                w.put_set(&a, "acme", &set(from + 7), "now")
            });
        };
        round(&db, 0);
        check(&db, &ana);
        check(&db, &bo);
        let chained: Option<i64> = db
            .write_blocking(origin(), |w| {
                w.conn().value(
                    "SELECT count(*) FROM changes WHERE prev_seq IS NOT NULL",
                    params![],
                )
            })
            .expect("count");
        assert!(chained.unwrap_or(0) >= 8, "the sets' changes are chained");

        // A database upgraded from version 7: every change so far in the index, no row
        // naming its newest. The chains start again from there.
        write(&db, |w| {
            w.conn().batch(
                "UPDATE changes SET prev_seq = NULL; UPDATE preference_sets SET last_seq = NULL;",
            )
        });
        check(&db, &ana);
        round(&db, 10);
        check(&db, &ana);
        check(&db, &bo);

        // Pruning to now keeps the newest change of each key, cutting the chains.
        write(&db, |w| {
            let horizon = jiff::Timestamp::now().as_millisecond() + 1000;
            let mut seen = HashSet::new();
            let mut below = i64::MAX;
            loop {
                let (_, plan) = super::prune_step(w.conn(), horizon, below, &mut seen)?;
                if plan.done {
                    return Ok(());
                }
                below = plan.below;
            }
        });
        check(&db, &ana);
        check(&db, &bo);
        let kept = truth(&db, &bo);
        assert_eq!(kept.len(), 1, "bo's newest change alone: {kept:?}");

        round(&db, 20);
        let a = ana.clone();
        write(&db, move |w| w.delete_recipient(&a).map(|_| ()));
        let left = truth(&db, &ana);
        assert_eq!(
            left.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["recipient.delete"],
            "erasure leaves one id-only change"
        );
        check(&db, &ana);
        check(&db, &bo);
        db.close();
    }

    /// Every read of a recipient's changes searches `changes_by_recipient` (whose
    /// condition it must name) or follows `seq`; none scans the log, which holds
    /// millions of rows.
    #[test]
    fn no_read_of_a_recipients_changes_scans_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("prefsd.db"), Durability::Normal).expect("open");
        let statements = [
            (super::INDEXED_EVENTS, 2),
            (super::LOGGED_RECIPIENT, 2),
            (super::LOGGED_SET, 3),
        ];
        for (sql, bound) in statements {
            let plan: Vec<String> = db
                .write_blocking(origin(), move |w| {
                    w.conn().all(
                        &format!("EXPLAIN QUERY PLAN {sql}"),
                        &params!["", "ana", "default"][..bound],
                        |r| r.get(3),
                    )
                })
                .expect("plan");
            assert!(
                plan.iter()
                    .any(|l| l.contains("USING INDEX changes_by_recipient")),
                "{plan:?}"
            );
            assert!(
                !plan.iter().any(|l| l.starts_with("SCAN changes")),
                "{plan:?}"
            );
        }
        db.close();
    }
}
