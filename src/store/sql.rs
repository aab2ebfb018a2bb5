//! One way for the store's modules to speak SQL, to SQLite or to PostgreSQL.
//!
//! The domain operations (`repo`, `log`, `jobs`, `pages`, `past`, `export`) are written
//! once, against [`Conn`]: SQL text in SQLite's dialect with numbered parameters (`?1`),
//! parameters as [`Param`]s and rows as owned [`Row`]s. For PostgreSQL the text is
//! rewritten once per connection (`?N` → `$N`) and prepared there; a parameter takes the
//! type PostgreSQL inferred for its place (so an integer binds to an `int4` or `int8`
//! column alike), and a row's columns are read by their type. The few statements whose
//! dialects differ (JSON aggregates, the sequence of the change log) are chosen with
//! [`Conn::pick`].
//!
//! Why not an ORM or a query builder: the statements are few, hand-tuned for SQLite's
//! planner (see `repo`), and both engines accept the same text for almost all of them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::ControlFlow;

use super::Error;

/// A parameter of a statement, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Param<'a> {
        Param::Text(v)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Param<'a> {
        Param::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Param<'a> {
        Param::Blob(v)
    }
}
impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<&i64> for Param<'_> {
    fn from(v: &i64) -> Self {
        Param::Int(*v)
    }
}
impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(v.into())
    }
}
impl From<usize> for Param<'_> {
    fn from(v: usize) -> Self {
        Param::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(v.into())
    }
}
impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}
impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Param<'a> {
        v.map_or(Param::Null, Into::into)
    }
}

/// The parameters of a statement: `params![a, b, c]`, each converted with `Param::from`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::store::sql::Param::from($value)),*][..]
    };
}
pub(crate) use params;

/// A column's value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A row of a result, owned; columns are taken out by index.
#[derive(Debug)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`, taken out of the row (a second take of it reads `Null`).
    pub fn get<T: FromValue>(&mut self, i: usize) -> Result<T, Error> {
        let value = self
            .0
            .get_mut(i)
            .map(|v| std::mem::replace(v, Value::Null))
            .ok_or_else(|| Error::Decode(format!("no column {i}")))?;
        T::from_value(value).map_err(|what| Error::Decode(format!("column {i}: {what}")))
    }
}

impl Row {
    /// The first `N` columns, each text.
    pub fn texts<const N: usize>(&mut self) -> Result<[String; N], Error> {
        let mut out: [String; N] = std::array::from_fn(|_| String::new());
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self.get(i)?;
        }
        Ok(out)
    }
}

/// A Rust type a column converts to.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<i64, String> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for u32 {
    fn from_value(value: Value) -> Result<u32, String> {
        u32::try_from(i64::from_value(value)?).map_err(|e| e.to_string())
    }
}
impl FromValue for u64 {
    fn from_value(value: Value) -> Result<u64, String> {
        u64::try_from(i64::from_value(value)?).map_err(|e| e.to_string())
    }
}
impl FromValue for usize {
    fn from_value(value: Value) -> Result<usize, String> {
        usize::try_from(i64::from_value(value)?).map_err(|e| e.to_string())
    }
}
impl FromValue for bool {
    fn from_value(value: Value) -> Result<bool, String> {
        Ok(i64::from_value(value)? != 0)
    }
}
impl FromValue for f64 {
    fn from_value(value: Value) -> Result<f64, String> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl FromValue for String {
    fn from_value(value: Value) -> Result<String, String> {
        match value {
            Value::Text(s) => Ok(s),
            // Keys are `bytea` on PostgreSQL (they may hold NUL), always valid UTF-8.
            Value::Blob(b) => String::from_utf8(b).map_err(|e| e.to_string()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Vec<u8>, String> {
        match value {
            Value::Blob(b) => Ok(b),
            Value::Text(s) => Ok(s.into_bytes()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Option<T>, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Which engine a connection speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The connection of one transaction, for the store's modules. Cheap to copy.
#[derive(Clone, Copy)]
pub enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'c RefCell<super::postgres::PgConn>),
}

impl<'c> Conn<'c> {
    pub fn dialect(self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// `sqlite` on SQLite, `postgres` on PostgreSQL: for the statements whose dialects
    /// differ.
    pub fn pick<T>(self, sqlite: T, postgres: T) -> T {
        match self {
            Conn::Sqlite(_) => sqlite,
            Conn::Postgres(_) => postgres,
        }
    }

    /// Tells the other daemons of a fleet that job `id` was queued or moved on (a
    /// `NOTIFY`, sent with the commit); nothing on SQLite, where one daemon has the file.
    pub fn notify_job(self, id: &str) -> Result<(), Error> {
        if let Conn::Postgres(conn) = self {
            let mut conn = conn.borrow_mut();
            let channel = conn.keys.jobs_channel.clone();
            conn.notify(&channel, id);
        }
        Ok(())
    }

    /// PostgreSQL only: a statement with typed parameters (arrays for `unnest`, which
    /// [`Param`] does not carry), for the batched writes that save a round trip per row.
    /// The text is PostgreSQL's (`$1`); prepared once per connection like the rest.
    pub fn pg_query(
        self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        match self {
            Conn::Postgres(conn) => conn.borrow_mut().query_typed(sql, params),
            Conn::Sqlite(_) => Err(Error::Unsupported("a PostgreSQL statement on SQLite")),
        }
    }

    /// Runs a statement that returns no rows; answers how many rows it changed.
    pub fn execute(self, sql: &str, params: &[Param<'_>]) -> Result<usize, Error> {
        match self {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))?)
            }
            Conn::Postgres(conn) => conn.borrow_mut().execute(sql, params),
        }
    }

    /// Runs statements without parameters, separated by semicolons.
    pub fn batch(self, sql: &str) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Conn::Postgres(conn) => conn.borrow_mut().batch(sql),
        }
    }

    /// Calls `f` on each row in turn until it breaks. On SQLite the rows are read as
    /// `f` goes; on PostgreSQL they are fetched first (use keyset pages for big results).
    pub fn each(
        self,
        sql: &str,
        params: &[Param<'_>],
        mut f: impl FnMut(&mut Row) -> Result<ControlFlow<()>, Error>,
    ) -> Result<(), Error> {
        match self {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                while let Some(row) = rows.next()? {
                    let mut row = sqlite_row(row, columns)?;
                    if f(&mut row)?.is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Conn::Postgres(conn) => {
                let rows = conn.borrow_mut().query(sql, params)?;
                for mut row in rows {
                    if f(&mut row)?.is_break() {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Every row, each mapped by `f`.
    pub fn all<T>(
        self,
        sql: &str,
        params: &[Param<'_>],
        mut f: impl FnMut(&mut Row) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        self.each(sql, params, |row| {
            out.push(f(row)?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// The first row mapped by `f`, or `None` when there is none.
    pub fn opt<T>(
        self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&mut Row) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let mut f = Some(f);
        let mut out = None;
        self.each(sql, params, |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(ControlFlow::Break(()))
        })?;
        Ok(out)
    }

    /// The first row mapped by `f`; no row is an error (a statement that always answers
    /// one, such as an aggregate).
    pub fn one<T>(
        self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&mut Row) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.opt(sql, params, f)?
            .ok_or_else(|| Error::Decode("a statement answered no row".into()))
    }

    /// The first column of the first row, or `None` when there is no row.
    pub fn value<T: FromValue>(self, sql: &str, params: &[Param<'_>]) -> Result<Option<T>, Error> {
        self.opt(sql, params, |r| r.get(0))
    }
}

fn sqlite_row(row: &rusqlite::Row<'_>, columns: usize) -> Result<Row, Error> {
    use rusqlite::types::ValueRef;
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(
                String::from_utf8(t.to_vec()).map_err(|e| Error::Decode(e.to_string()))?,
            ),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row(values))
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(i),
            Param::Real(f) => ValueRef::Real(f),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Statements prepared on one PostgreSQL connection, by their SQLite text.
#[derive(Default)]
pub struct Prepared(HashMap<String, postgres::Statement>);

impl Prepared {
    pub fn get(
        &mut self,
        client: &mut postgres::Client,
        sql: &str,
    ) -> Result<postgres::Statement, Error> {
        if let Some(stmt) = self.0.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = client.prepare(&to_postgres(sql))?;
        self.0.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// SQLite's numbered parameters (`?1`) as PostgreSQL's (`$1`), outside string literals.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_string = !in_string;
                out.push(c);
            }
            '?' if !in_string && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Binds a [`Param`] to whatever type PostgreSQL inferred for its place.
impl postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot bind to {ty}").into()),
            },
            Param::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot bind to {ty}").into()),
            },
            Param::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.to_sql(ty, out),
            },
            Param::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL row's columns as [`Value`]s, by their types.
pub fn postgres_row(row: &postgres::Row) -> Result<Row, Error> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            // An aggregate of keys (`array_agg`), read as the JSON array of strings that
            // SQLite's `json_group_array` gives.
            Type::BYTEA_ARRAY => match row.try_get::<_, Option<Vec<Vec<u8>>>>(i)? {
                Some(items) => {
                    let items = items
                        .into_iter()
                        .map(String::from_utf8)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| Error::Decode(e.to_string()))?;
                    Some(Value::Text(serde_json::to_string(&items)?))
                }
                None => None,
            },
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref other => {
                return Err(Error::Decode(format!(
                    "column {} has a type the store does not read: {other}",
                    column.name()
                )));
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn numbered_parameters_are_rewritten_outside_literals() {
        assert_eq!(
            to_postgres("SELECT ?1, '?2', ?10 FROM t WHERE a = ? AND b = 'x''?3'"),
            "SELECT $1, '?2', $10 FROM t WHERE a = ? AND b = 'x''?3'"
        );
    }
}
