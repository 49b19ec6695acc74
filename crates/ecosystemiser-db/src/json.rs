//! JSON values in SQLite and PostgreSQL columns: encoded as text; read back from text, or,
//! on SQLite, from a number that a `JSON`-typed column of the original schema (NUMERIC
//! affinity) turned it into.

use hive_db_core::DbName;
use hive_db_core::rusqlite::Row;
use hive_db_core::rusqlite::types::ValueRef;
use serde_json::Value;

use crate::error::{Error, Result};

/// `value` as JSON text.
pub(crate) fn encode(db: &DbName, what: &str, value: &Value) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Json {
        db: db.clone(),
        what: what.to_owned(),
        source,
    })
}

/// `Some(value)` as JSON text, `None` as NULL.
pub(crate) fn encode_opt(db: &DbName, what: &str, value: Option<&Value>) -> Result<Option<String>> {
    value.map(|v| encode(db, what, v)).transpose()
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
