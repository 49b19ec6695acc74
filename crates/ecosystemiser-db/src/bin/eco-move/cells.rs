//! Values on their way from the source to the target, in the target column's type, and
//! the checksum both sides compute from them: a table moved is the same rows on both.

use std::hash::{DefaultHasher, Hash, Hasher};

use hive_db_core::postgres::Row;
use hive_db_core::postgres::types::{ToSql, Type};
use hive_db_core::rusqlite::types::ValueRef;

/// One table moved: its rows and checksum, the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Moved {
    pub(super) table: String,
    pub(super) rows: u64,
    pub(super) checksum: u64,
}

/// A value on its way, in the target column's type; hashed the same on both sides.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Text(String),
    Int8(i64),
    Int4(i32),
    Float8(f64),
    Bool(bool),
}

impl Hash for Cell {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Cell::Null => 0u8.hash(h),
            Cell::Text(s) => (1u8, s).hash(h),
            Cell::Int8(n) => (2u8, n).hash(h),
            Cell::Int4(n) => (2u8, i64::from(*n)).hash(h),
            Cell::Float8(x) => (3u8, x.to_bits()).hash(h),
            Cell::Bool(b) => (4u8, b).hash(h),
        }
    }
}

impl Cell {
    /// The source's value as the target column's type.
    pub(super) fn from_sqlite(v: ValueRef<'_>, ty: &Type) -> Result<Cell, String> {
        let cell = match (v, ty) {
            (ValueRef::Null, _) => Cell::Null,
            (ValueRef::Text(t), &Type::TEXT) => {
                Cell::Text(String::from_utf8(t.to_vec()).map_err(|e| e.to_string())?)
            }
            // A JSON number that ecosystemiser-db stored as a BLOB of its text, so that
            // SQLite's NUMERIC affinity would not turn it into a number.
            (ValueRef::Blob(t), &Type::TEXT) => {
                Cell::Text(String::from_utf8(t.to_vec()).map_err(|e| e.to_string())?)
            }
            (ValueRef::Integer(n), &Type::TEXT) => Cell::Text(n.to_string()),
            (ValueRef::Real(x), &Type::TEXT) => Cell::Text(x.to_string()),
            (ValueRef::Integer(n), &Type::INT8) => Cell::Int8(n),
            (ValueRef::Integer(n), &Type::INT4) => {
                Cell::Int4(i32::try_from(n).map_err(|e| e.to_string())?)
            }
            (ValueRef::Integer(n), &Type::FLOAT8) => Cell::Float8(n as f64),
            (ValueRef::Real(x), &Type::FLOAT8) => Cell::Float8(x),
            (ValueRef::Integer(n), &Type::BOOL) => Cell::Bool(n != 0),
            (other, ty) => {
                return Err(format!(
                    "a {:?} value does not fit a {ty} column",
                    other.data_type()
                ));
            }
        };
        Ok(cell)
    }

    /// The target's value read back.
    pub(super) fn from_pg(row: &Row, i: usize, ty: &Type) -> Result<Cell, String> {
        let e = |e: hive_db_core::postgres::Error| e.to_string();
        Ok(match *ty {
            Type::TEXT => row
                .try_get::<_, Option<String>>(i)
                .map_err(e)?
                .map(Cell::Text),
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(e)?.map(Cell::Int8),
            Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(e)?.map(Cell::Int4),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(e)?
                .map(Cell::Float8),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(e)?
                .map(Cell::Bool),
            ref other => return Err(format!("column type {other} is not supported")),
        }
        .unwrap_or(Cell::Null))
    }

    /// The value for `COPY`, typed as the column (a NULL too).
    pub(super) fn to_sql(&self, ty: &Type) -> Box<dyn ToSql + Sync> {
        match (self, ty) {
            (Cell::Text(s), _) => Box::new(s.clone()),
            (Cell::Int8(n), _) => Box::new(*n),
            (Cell::Int4(n), _) => Box::new(*n),
            (Cell::Float8(x), _) => Box::new(*x),
            (Cell::Bool(b), _) => Box::new(*b),
            (Cell::Null, &Type::INT8) => Box::new(None::<i64>),
            (Cell::Null, &Type::INT4) => Box::new(None::<i32>),
            (Cell::Null, &Type::FLOAT8) => Box::new(None::<f64>),
            (Cell::Null, &Type::BOOL) => Box::new(None::<bool>),
            (Cell::Null, _) => Box::new(None::<String>),
        }
    }
}

/// A table's checksum: the wrapping sum of its rows' hashes, so the order rows come back in
/// does not matter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sum {
    pub(super) rows: u64,
    pub(super) sum: u64,
}

impl Sum {
    pub(super) fn add(&mut self, row: &[Cell]) {
        let mut h = DefaultHasher::new();
        row.hash(&mut h);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(h.finish());
    }
}
