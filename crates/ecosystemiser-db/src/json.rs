//! JSON values in SQLite and PostgreSQL columns: encoded as text (on SQLite a JSON number
//! as a BLOB of its text, [`Lite`], which NUMERIC affinity leaves alone); read back from
//! text, a BLOB, or, on SQLite, from a number that a `JSON`-typed column of the original
//! schema (NUMERIC affinity) turned older text into.

use hive_db_core::DbName;
use hive_db_core::rusqlite::Row;
use hive_db_core::rusqlite::ToSql;
use hive_db_core::rusqlite::types::{ToSqlOutput, ValueRef};
use serde_json::Value;

use crate::error::{Error, Result};

/// The deepest nesting of arrays and objects stored: serde_json reads at most 128 levels,
/// and a value stored deeper could not be read back (its whole history with it).
pub(crate) const MAX_DEPTH: usize = 100;

/// How deeply `value` nests arrays and objects (a scalar is 0), counted without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// `value` as JSON text.
///
/// # Errors
///
/// [`Error::Json`] for a value nested deeper than [`MAX_DEPTH`] (accepted, it made every
/// read of it fail).
pub(crate) fn encode(db: &DbName, what: &str, value: &Value) -> Result<String> {
    let error = |source| Error::Json {
        db: db.clone(),
        what: what.to_owned(),
        source,
    };
    if depth(value) > MAX_DEPTH {
        return Err(error(serde::ser::Error::custom(format!(
            "nested deeper than {MAX_DEPTH} levels, more than can be read back"
        ))));
    }
    serde_json::to_string(value).map_err(error)
}

/// `Some(value)` as JSON text, `None` as NULL.
pub(crate) fn encode_opt(db: &DbName, what: &str, value: Option<&Value>) -> Result<Option<String>> {
    value.map(|v| encode(db, what, v)).transpose()
}

/// JSON text bound for a SQLite column typed `JSON` (NUMERIC affinity). A JSON number goes
/// in as a BLOB of its text, which affinity leaves alone: as TEXT, SQLite turned it into an
/// INTEGER or REAL, so `u64::MAX` read back as `1.8446744073709552e19`, `1.0` as `1` and
/// `-0.0` as `0` (PostgreSQL kept them). Anything else is not numeric text, and goes in as
/// TEXT. [`column()`] reads both.
pub(crate) struct Lite<'a>(pub(crate) Option<&'a str>);

impl Lite<'_> {
    /// Whether `text` is a JSON number: the only JSON values that start with `-` or a digit.
    fn numeric(text: &str) -> bool {
        text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
    }
}

impl ToSql for Lite<'_> {
    fn to_sql(&self) -> hive_db_core::rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            None => ValueRef::Null,
            Some(t) if Self::numeric(t) => ValueRef::Blob(t.as_bytes()),
            Some(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// The JSON in column `idx` of `row`; `None` for NULL.
pub(crate) fn column(db: &DbName, what: &str, row: &Row<'_>, idx: usize) -> Result<Option<Value>> {
    let bad = |source| Error::Json {
        db: db.clone(),
        what: what.to_owned(),
        source,
    };
    match row
        .get_ref(idx)
        .map_err(|e| Error::sqlite(db, "read a JSON column", e))?
    {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(Value::from(i))),
        ValueRef::Real(f) => Ok(Some(Value::from(f))),
        ValueRef::Text(t) | ValueRef::Blob(t) => serde_json::from_slice(t).map(Some).map_err(bad),
    }
}

/// The JSON in a text column read from PostgreSQL; `None` for NULL.
#[cfg(feature = "postgres")]
pub(crate) fn parse(db: &DbName, what: &str, text: Option<&str>) -> Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(t).map_err(|source| Error::Json {
            db: db.clone(),
            what: what.to_owned(),
            source,
        })
    })
    .transpose()
}
