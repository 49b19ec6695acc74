//! The statements the changes, the queries and the import share: finding and adding types,
//! adding a spec with its checks, recording history.

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::ComponentSpec;
use crate::error::{Error, Result};
use crate::json;

pub(super) fn not_found(
    db: &DbName,
    component_type: &str,
    name: Option<&str>,
    version: Option<&str>,
) -> Error {
    Error::NotFound {
        db: db.clone(),
        what: "component spec",
        key: format!(
            "{component_type}/{} v{}",
            name.unwrap_or("(default)"),
            version.unwrap_or("(latest)")
        ),
    }
}

pub(super) fn type_id(db: &DbName, conn: &Connection, name: &str) -> Result<i64> {
    conn.prepare_cached("SELECT id FROM component_types WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(|e| Error::sqlite(db, "find component type", e))?
        .ok_or_else(|| Error::UnknownComponentType {
            db: db.clone(),
            name: name.to_owned(),
        })
}

pub(super) fn ensure_type(
    db: &DbName,
    conn: &Connection,
    name: &str,
    category: &str,
    description: Option<&str>,
) -> Result<i64> {
    let existing: Option<(i64, String)> = conn
        .prepare_cached("SELECT id, category FROM component_types WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| Error::sqlite(db, "find component type", e))?;
    match existing {
        Some((_, ref existing_category)) if existing_category != category => {
            Err(Error::InvalidInput {
                what: "component category",
                value: category.to_owned(),
                reason: "the component type exists in another category",
            })
        }
        Some((id, _)) => Ok(id),
        None => {
            conn.prepare_cached(
                "INSERT INTO component_types (name, category, description) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![name, category, description]))
            .map_err(|e| Error::sqlite(db, "add component type", e))?;
            Ok(conn.last_insert_rowid())
        }
    }
}

pub(super) fn insert_spec(db: &DbName, conn: &Connection, spec: &ComponentSpec) -> Result<i64> {
    let (type_id, category): (i64, String) = conn
        .prepare_cached("SELECT id, category FROM component_types WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([&spec.component_type], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| Error::sqlite(db, "find component type", e))?
        .ok_or_else(|| Error::UnknownComponentType {
            db: db.clone(),
            name: spec.component_type.clone(),
        })?;
    if category != spec.category {
        return Err(Error::InvalidInput {
            what: "component category",
            value: spec.category.clone(),
            reason: "differs from the component type's category",
        });
    }
    if spec.is_default {
        let existing: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT name, version FROM component_specs
                 WHERE component_type_id = ?1 AND is_default = 1",
            )
            .and_then(|mut s| {
                s.query_row([type_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| Error::sqlite(db, "find default component spec", e))?;
        if let Some((name, version)) = existing {
            return Err(Error::DefaultExists {
                db: db.clone(),
                component_type: spec.component_type.clone(),
                existing: format!("{name} v{version}"),
            });
        }
    }
    let exists: bool = conn
        .prepare_cached(
            "SELECT count(*) FROM component_specs
             WHERE component_type_id = ?1 AND name = ?2 AND version = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![type_id, spec.name, spec.version], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map_err(|e| Error::sqlite(db, "find component spec", e))?
        > 0;
    if exists {
        return Err(Error::SpecExists {
            db: db.clone(),
            component_type: spec.component_type.clone(),
            name: spec.name.clone(),
            version: spec.version.clone(),
        });
    }
    let obj = |what, m: &Map<String, Value>| json::encode(db, what, &Value::Object(m.clone()));
    let technical = obj("technical parameters", &spec.technical)?;
    let economic = spec
        .economic
        .as_ref()
        .map(|m| obj("economic parameters", m))
        .transpose()?;
    let environmental = spec
        .environmental
        .as_ref()
        .map(|m| obj("environmental parameters", m))
        .transpose()?;
    let metadata = spec
        .metadata
        .as_ref()
        .map(|m| obj("metadata", m))
        .transpose()?;
    conn.prepare_cached(
        "INSERT INTO component_specs
             (component_type_id, name, version, technical_params, economic_params,
              environmental_params, metadata, is_default)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            type_id,
            spec.name,
            spec.version,
            technical,
            economic,
            environmental,
            metadata,
            spec.is_default
        ])
    })
    .map_err(|e| Error::sqlite(db, "add component spec", e))?;
    let id = conn.last_insert_rowid();
    record_history(conn, id, &spec.version, "created")
        .map_err(|e| Error::sqlite(db, "record version history", e))?;
    Ok(id)
}

pub(super) fn record_history(
    conn: &Connection,
    spec_id: i64,
    version: &str,
    change: &str,
) -> hive_db_core::rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO version_history (component_spec_id, version, change_description)
         VALUES (?1, ?2, ?3)",
    )?
    .execute(params![spec_id, version, change])
}
