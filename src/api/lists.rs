//! `users.list`, `objects.list`, `tenants.list`: keyset pages in insertion order (rest.md
//! §4.2 "Lists"; the order and cursors are `store`'s).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Error;
use crate::api::recipients::recipient_json;
use crate::api::tenants::tenant_json;
use crate::api::{Context, Errors};
use crate::store::{Cursor, Page, PageQuery};

/// The largest page; a larger `limit` is clamped to it (rest.md A17).
pub const MAX_PAGE: i64 = 50;

/// The page the paging params (`limit`, `after`, `before`) ask for; `method` names the
/// list in the error about a foreign cursor.
fn page_query(
    limit: Option<i64>,
    after: &Option<String>,
    before: &Option<String>,
    method: &str,
    descending: bool,
    errors: &mut Errors,
) -> PageQuery {
    let limit = match limit {
        None => MAX_PAGE,
        Some(n) if n < 1 => {
            errors.push("limit", "must be at least 1");
            1
        }
        Some(n) => n.min(MAX_PAGE),
    };
    let mut cursor = |field: &str, text: &Option<String>| {
        let text = text.as_deref()?;
        let cursor = Cursor::decode(text);
        if cursor.is_none() {
            errors.push(field, format!("is not a cursor returned by {method}"));
        }
        cursor
    };
    PageQuery {
        // At most 50, at least 1.
        limit: u32::try_from(limit).unwrap_or(1),
        after: cursor("after", after),
        before: cursor("before", before),
        descending,
    }
}

fn page_json<T>(page: &Page<T>, item: impl FnMut(&T) -> Value) -> Value {
    json!({
        "items": page.items.iter().map(item).collect::<Vec<_>>(),
        "next": page.next,
        "prev": page.prev,
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientsParams {
    /// Objects only: the collection to list.
    pub collection: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub order: Option<String>,
    pub include_preferences: Option<bool>,
}

/// `users.list` (`collection` absent) and `objects.list`.
pub async fn recipients(
    ctx: &Context,
    kind: crate::api::recipients::Kind,
    p: RecipientsParams,
) -> Result<Value, Error> {
    use crate::api::recipients::Kind;
    let mut errors = Errors::default();
    let (collection, method) = match (kind, &p.collection) {
        (Kind::User, None) => (None, "users.list"),
        (Kind::User, Some(_)) => {
            errors.push("collection", "is not a param of users methods");
            (None, "users.list")
        }
        (Kind::Object, Some(c)) => {
            errors.id("collection", c);
            (Some(c.clone()), "objects.list")
        }
        (Kind::Object, None) => {
            errors.push("collection", "is required");
            (None, "objects.list")
        }
    };
    let descending = match p.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            errors.push("order", "must be \"asc\" or \"desc\"");
            false
        }
    };
    let query = page_query(
        p.limit,
        &p.after,
        &p.before,
        method,
        descending,
        &mut errors,
    );
    errors.finish()?;
    let with_sets = p.include_preferences.unwrap_or(false);
    let (page, sets) = ctx
        .db
        .read(move |r| {
            let page = r.recipients_page(collection.as_deref(), &query)?;
            let mut sets = Vec::new();
            if with_sets {
                for row in &page.items {
                    sets.push(r.sets(&row.key)?);
                }
            }
            Ok::<_, Error>((page, sets))
        })
        .await?;
    let mut sets = sets.into_iter();
    Ok(page_json(&page, |row| {
        let mut out = recipient_json(row);
        if with_sets {
            let stored: Map<String, Value> = sets
                .next()
                .unwrap_or_default()
                .iter()
                .map(|(id, set)| (id.clone(), set.to_response(id)))
                .collect();
            out["preferences"] = Value::Object(stored);
        }
        out
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantsParams {
    pub limit: Option<i64>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub name: Option<String>,
    pub tenant_id: Option<String>,
}

/// `tenants.list`: stored tenants only, never config templates.
pub async fn tenants(ctx: &Context, p: TenantsParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    let query = page_query(
        p.limit,
        &p.after,
        &p.before,
        "tenants.list",
        false,
        &mut errors,
    );
    errors.finish()?;
    let page = ctx
        .db
        .read(move |r| {
            Ok::<_, Error>(r.tenants_page(p.name.as_deref(), p.tenant_id.as_deref(), &query)?)
        })
        .await?;
    Ok(page_json(&page, |row| {
        tenant_json(
            row,
            row.preference_set.as_ref().map(|s| s.to_response(&row.id)),
        )
    }))
}
