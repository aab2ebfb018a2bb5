//! `audiences.*`: named lists of recipients, read by the `is_audience_member` operators.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;
use crate::api::{Context, Errors};
use crate::model::RecipientKey;
use crate::model::change::Origin;
use crate::store::time::now;
use crate::store::{MemberPage, decode_cursor};

/// A member in a request or a listing: `{ "user_id" }` or `{ "collection", "object_id" }`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub user_id: Option<String>,
    pub collection: Option<String>,
    pub object_id: Option<String>,
}

fn member_json(key: &RecipientKey) -> Value {
    match &key.collection {
        None => json!({ "user_id": key.id }),
        Some(c) => json!({ "collection": c, "object_id": key.id }),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersParams {
    pub audience_key: String,
    pub members: Vec<Member>,
}

fn parse_members(p: &MembersParams, errors: &mut Errors) -> Vec<RecipientKey> {
    errors.id("audience_key", &p.audience_key);
    p.members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let field = |f: &str| format!("members.{i}.{f}");
            match (&m.user_id, &m.collection, &m.object_id) {
                (Some(user), None, None) => {
                    errors.id(field("user_id"), user);
                    Some(RecipientKey::user(user))
                }
                (None, Some(c), Some(id)) => {
                    errors.id(field("collection"), c);
                    errors.id(field("object_id"), id);
                    Some(RecipientKey::object(c, id))
                }
                _ => {
                    errors.push(
                        format!("members.{i}"),
                        "must be { user_id } or { collection, object_id }",
                    );
                    None
                }
            }
        })
        .collect()
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Count {
    pub count: i64,
}

/// `audiences.addMembers`: members that do not exist yet are created.
pub async fn add_members(ctx: &Context, origin: Origin, p: MembersParams) -> Result<Count, Error> {
    let mut errors = Errors::default();
    let members = parse_members(&p, &mut errors);
    errors.finish()?;
    let count = ctx
        .db
        .write_as(origin, move |w| {
            Ok::<_, Error>(w.add_members(&p.audience_key, &members, &now())?)
        })
        .await?;
    Ok(Count { count })
}

/// `audiences.removeMembers`.
pub async fn remove_members(
    ctx: &Context,
    origin: Origin,
    p: MembersParams,
) -> Result<Count, Error> {
    let mut errors = Errors::default();
    let members = parse_members(&p, &mut errors);
    errors.finish()?;
    let count = ctx
        .db
        .write_as(origin, move |w| {
            Ok::<_, Error>(w.remove_members(&p.audience_key, &members)?)
        })
        .await?;
    Ok(Count { count })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub audience_key: String,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// The largest page `audiences.listMembers` returns.
const MAX_PAGE: u32 = 1000;

/// `audiences.listMembers`: `{ items, next }`, in key order.
pub async fn list_members(ctx: &Context, p: ListParams) -> Result<Value, Error> {
    let mut errors = Errors::default();
    errors.id("audience_key", &p.audience_key);
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        errors.push("limit", format!("must be from 1 to {MAX_PAGE}"));
    }
    let after = match p.after.as_deref() {
        None => None,
        Some(cursor) => match decode_cursor(cursor) {
            Some(key) => Some(key),
            None => {
                errors.push("after", "is not a cursor returned by audiences.listMembers");
                None
            }
        },
    };
    errors.finish()?;
    let page: MemberPage = ctx
        .db
        .read(move |r| Ok::<_, Error>(r.members(&p.audience_key, limit, after.as_ref())?))
        .await?;
    Ok(json!({
        "items": page.items.iter().map(member_json).collect::<Vec<_>>(),
        "next": page.next,
    }))
}
