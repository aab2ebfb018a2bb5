//! The change log's methods (history.md §2): `changes.list`, the preference history of a
//! user or object, and what `changes.subscribe` reads page by page.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::api::recipients::{Kind, recipient_key};
use crate::api::{Context, Errors};
use crate::model::RecipientKey;
use crate::model::change::ChangeKind;
use crate::store::log::{Change, ChangeFilter, Retained, format_millis};

/// The default and largest page of `changes.list`.
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 1000;
/// The default and largest page of the preference history.
const HISTORY_DEFAULT: u32 = 50;
const HISTORY_MAX: u32 = 1000;

/// A recipient named inside params: `{ "id", "collection"? }`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientRef {
    pub id: String,
    pub collection: Option<String>,
}

impl RecipientRef {
    fn key(&self, field: &str, errors: &mut Errors) -> RecipientKey {
        errors.id(format_args!("{field}.id"), &self.id);
        match &self.collection {
            Some(c) => {
                errors.id(format_args!("{field}.collection"), c);
                RecipientKey::object(c.clone(), self.id.clone())
            }
            None => RecipientKey::user(self.id.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub after: Option<i64>,
    pub limit: Option<u32>,
    pub kinds: Option<Vec<String>>,
    pub recipient: Option<RecipientRef>,
}

/// A checked `changes.list` or `changes.subscribe` request.
pub struct Listing {
    pub after: Option<i64>,
    pub limit: u32,
    pub filter: ChangeFilter,
}

impl ListParams {
    pub fn check(self) -> Result<Listing, Error> {
        let mut errors = Errors::default();
        let limit = self.limit.unwrap_or(LIST_DEFAULT);
        if !(1..=LIST_MAX).contains(&limit) {
            errors.push("limit", format!("must be from 1 to {LIST_MAX}"));
        }
        if self.after.is_some_and(|a| a < 0) {
            errors.push("after", "must be a seq, 0 or more");
        }
        let mut kinds = Vec::new();
        for (i, kind) in self.kinds.iter().flatten().enumerate() {
            match ChangeKind::parse(kind) {
                Some(k) => kinds.push(k),
                None => errors.push(
                    format!("kinds.{i}"),
                    format!(
                        "is not a kind of change; expected one of {}",
                        ChangeKind::ALL.map(ChangeKind::as_str).join(", ")
                    ),
                ),
            }
        }
        if self.kinds.as_ref().is_some_and(Vec::is_empty) {
            errors.push("kinds", "must name at least one kind (or be left out)");
        }
        let recipient = self.recipient.map(|r| r.key("recipient", &mut errors));
        errors.finish()?;
        Ok(Listing {
            after: self.after,
            limit,
            filter: ChangeFilter { kinds, recipient },
        })
    }
}

/// `after` below the newest change pruning deleted is refused: a reader going on from it
/// would miss what was deleted.
pub fn check_after(after: i64, retained: Retained) -> Result<(), Error> {
    if after < retained.from_seq {
        return Err(truncated("after", retained));
    }
    Ok(())
}

/// The `history_truncated` error for `what`.
pub fn truncated(what: &str, retained: Retained) -> Error {
    Error::HistoryTruncated {
        what: what.to_string(),
        retained_from: retained.from_at.map(format_millis).unwrap_or_default(),
        retained_seq: retained.from_seq,
    }
}

/// `changes.list`.
pub async fn list(ctx: &Context, p: ListParams) -> Result<Value, Error> {
    let listing = p.check()?;
    let after = listing.after.unwrap_or(0);
    let limit = listing.limit;
    let (items, head) = ctx
        .db
        .read(move |r| {
            let log = r.log();
            check_after(after, log.retained()?)?;
            // One more than asked, to know whether there is a next page.
            let items = log.list(after, limit + 1, &listing.filter)?;
            Ok::<_, Error>((items, log.head()?))
        })
        .await?;
    Ok(page_json(items, limit, head))
}

/// Cuts a page read with one item more than `limit` to `limit`, and answers the `seq` to
/// go on from when there was more.
fn trim(items: &mut Vec<Change>, limit: u32) -> Option<i64> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    if more {
        items.last().map(|c| c.seq)
    } else {
        None
    }
}

fn page_json(mut items: Vec<Change>, limit: u32, head: i64) -> Value {
    let next = trim(&mut items, limit);
    json!({
        "items": items.iter().map(Change::to_json).collect::<Vec<_>>(),
        "next": next,
        "head": head,
    })
}

/// `users.getPreferenceHistory` / `objects.getPreferenceHistory` params.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub user_id: Option<String>,
    pub collection: Option<String>,
    pub object_id: Option<String>,
    pub preference_set: Option<String>,
    pub limit: Option<u32>,
    pub before: Option<i64>,
}

/// `users.getPreferenceHistory` / `objects.getPreferenceHistory`: a recipient's
/// `preferences.set`/`unset` changes, newest first, each with the set before and after it.
pub async fn preference_history(
    ctx: &Context,
    kind: Kind,
    p: HistoryParams,
) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let key = recipient_key(kind, &p.user_id, &p.collection, &p.object_id, &mut errors);
    if let Some(set) = &p.preference_set {
        errors.id("preference_set", set);
    }
    let limit = p.limit.unwrap_or(HISTORY_DEFAULT);
    if !(1..=HISTORY_MAX).contains(&limit) {
        errors.push("limit", format!("must be from 1 to {HISTORY_MAX}"));
    }
    if p.before.is_some_and(|b| b < 1) {
        errors.push("before", "must be a seq, 1 or more");
    }
    errors.finish()?;
    let before = p.before.unwrap_or(i64::MAX);
    let set = p.preference_set;
    let mut items = ctx
        .db
        .read(move |r| {
            Ok::<_, Error>(
                r.log()
                    .preference_history(&key, set.as_deref(), before, limit + 1)?,
            )
        })
        .await?;
    let next = trim(&mut items, limit);
    let entries: Vec<Value> = items
        .iter()
        .map(|c| {
            json!({
                "seq": c.seq,
                "at": format_millis(c.at),
                "kind": c.kind.as_str(),
                "preference_set": c.preference_set,
                "actor": c.actor,
                "method": c.method,
                "bulk_operation": c.bulk_operation,
                "before": c.before,
                "after": c.value,
            })
        })
        .collect();
    Ok(json!({ "items": entries, "next": next }))
}
