//! Keyset pages of users, objects and tenants in insertion order (rest.md §4.2 "Lists").
//!
//! The order is `(created_at, id)`: `created_at` is set once, at insert, to the
//! millisecond, so rows inserted in the same millisecond (a bulk chunk) list by id. A
//! cursor is the key of a row, so a page never skips or repeats a row when others are
//! inserted or deleted meanwhile. Migration 3 indexes both tables on it.

use crate::store::repo::{json_map, json_set, key_from};
use crate::store::sql::{Param, Row};
use crate::store::{Error, Read, RecipientRow, TenantRow};

/// A position in a list: the key of one row. Opaque to clients: hex of a JSON array, so it
/// travels in a URL query unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: String,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let text = serde_json::json!([self.created_at, self.id]).to_string();
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// `None` for anything [`Cursor::encode`] did not write.
    pub fn decode(text: &str) -> Option<Cursor> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let (created_at, id): (String, String) = serde_json::from_slice(&bytes).ok()?;
        Some(Cursor { created_at, id })
    }
}

/// Which page: at most `limit` rows after `after` and before `before` (in the list's
/// order), the first ones unless only `before` is given, then the last ones.
#[derive(Clone, Debug)]
pub struct PageQuery {
    pub limit: u32,
    pub after: Option<Cursor>,
    pub before: Option<Cursor>,
    pub descending: bool,
}

/// One page, in the list's order, with the cursors of the pages beside it (`None` at
/// either end).
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
    pub prev: Option<String>,
}

/// The rows to page over: `FROM … WHERE …` with `?` params, and how to read a row whose
/// first columns are `created_at, id`.
struct Source<'a> {
    columns: &'a str,
    from_where: &'a str,
    params: Vec<Param<'a>>,
}

impl Read<'_> {
    /// Users (`collection` `None`) or the objects of one collection.
    pub fn recipients_page(
        &self,
        collection: Option<&str>,
        q: &PageQuery,
    ) -> Result<Page<RecipientRow>, Error> {
        let c = collection.unwrap_or("");
        let source = Source {
            columns: "created_at, id, properties, updated_at, collection",
            from_where: "FROM recipients WHERE collection = ?1",
            params: vec![Param::Text(c)],
        };
        self.page(&source, q, |r, key| {
            Ok(RecipientRow {
                created_at: key.created_at.clone(),
                key: key_from(r.get(4)?, key.id.clone()),
                properties: json_map(&r.get::<String>(2)?)?,
                updated_at: r.get(3)?,
            })
        })
    }

    /// Stored tenants, filtered by exact `name` and `id` when given.
    pub fn tenants_page(
        &self,
        name: Option<&str>,
        id: Option<&str>,
        q: &PageQuery,
    ) -> Result<Page<TenantRow>, Error> {
        let source = Source {
            columns: "created_at, id, name, properties, preference_set, updated_at, branding",
            from_where: self.conn().pick(
                "FROM tenants WHERE (?1 IS NULL OR name = ?1) AND (?2 IS NULL OR id = ?2)",
                "FROM tenants WHERE (CAST(?1 AS text) IS NULL OR name = ?1)
                   AND (CAST(?2 AS bytea) IS NULL OR id = ?2)",
            ),
            params: vec![name.into(), id.into()],
        };
        self.page(&source, q, |r, key| {
            Ok(TenantRow {
                created_at: key.created_at.clone(),
                id: key.id.clone(),
                name: r.get(2)?,
                properties: json_map(&r.get::<String>(3)?)?,
                preference_set: r
                    .get::<Option<String>>(4)?
                    .as_deref()
                    .map(json_set)
                    .transpose()?,
                updated_at: r.get(5)?,
                branding: r
                    .get::<Option<String>>(6)?
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()?,
            })
        })
    }

    fn page<T>(
        &self,
        source: &Source<'_>,
        q: &PageQuery,
        read: impl Fn(&mut Row, &Cursor) -> Result<T, Error>,
    ) -> Result<Page<T>, Error> {
        // `>` is "later in the list's order".
        let (later, earlier, order) = if q.descending {
            ("<", ">", "DESC")
        } else {
            (">", "<", "ASC")
        };
        // The filter's params are numbered ?1, ?2…; the cursors' follow them.
        let n = source.params.len();
        let mut sql = format!("SELECT {} {}", source.columns, source.from_where);
        let mut params = source.params.clone();
        for (bound, op) in [(&q.after, later), (&q.before, earlier)] {
            if let Some(c) = bound {
                sql += &format!(
                    " AND (created_at, id) {op} (?{}, ?{})",
                    params.len() + 1,
                    params.len() + 2
                );
                params.push(Param::Text(&c.created_at));
                params.push(Param::Text(&c.id));
            }
        }
        // With only `before`, the page is the last rows before it: read backwards from it.
        let backwards = q.before.is_some() && q.after.is_none();
        let order = match (backwards, order) {
            (false, o) => o,
            (true, "ASC") => "DESC",
            (true, _) => "ASC",
        };
        sql += &format!(" ORDER BY created_at {order}, id {order} LIMIT {}", q.limit);
        let mut items = Vec::new();
        let mut keys = Vec::new();
        self.conn().each(&sql, &params, |row| {
            let key = Cursor {
                created_at: row.get(0)?,
                id: row.get(1)?,
            };
            items.push(read(row, &key)?);
            keys.push(key);
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        if backwards {
            items.reverse();
            keys.reverse();
        }
        // Whether rows lie beyond the page on either side, whatever bounds the page had.
        let beyond = |key: &Cursor, op: &str| -> Result<bool, Error> {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 {} AND (created_at, id) {op} (?{}, ?{}))",
                source.from_where,
                n + 1,
                n + 2
            );
            let mut params = source.params.clone();
            params.push(Param::Text(&key.created_at));
            params.push(Param::Text(&key.id));
            self.conn().one(&sql, &params, |r| r.get::<bool>(0))
        };
        let next = match keys.last() {
            Some(last) if beyond(last, later)? => Some(last.encode()),
            _ => None,
        };
        let prev = match keys.first() {
            Some(first) if beyond(first, earlier)? => Some(first.encode()),
            _ => None,
        };
        Ok(Page { items, next, prev })
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn a_cursor_survives_its_round_trip_and_nothing_else_decodes() {
        let c = Cursor {
            created_at: "2026-01-01T00:00:00.000Z".into(),
            id: "a/b c+é".into(),
        };
        let text = c.encode();
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        assert_eq!(Cursor::decode(&text), Some(c));
        for bad in ["", "0", "zz", "5b5d", "7b7d", "5b2261225d"] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }
}
