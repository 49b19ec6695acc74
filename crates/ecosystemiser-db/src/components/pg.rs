//! The component library's SQL on PostgreSQL, statement for statement the counterpart of the
//! SQLite SQL beside it (`sql.rs`, `changes.rs`, `queries.rs`, `transfer.rs`): the same
//! checks, in the same order, with the same errors.

use hive_db_core::postgres::{Client, GenericClient, Row, Transaction};
use hive_db_core::{DbName, PgHandle};
use serde_json::{Map, Value};

use super::spec::object;
use super::sql::not_found;
use super::{ComponentSpec, ComponentType, SpecSummary, VersionEntry};
use crate::backend::read_primary;
use crate::error::{Error, Result};
use crate::json;

/// The query for full specs `WHERE $tail`.
macro_rules! select_specs {
    ($tail:literal) => {
        concat!(
            "SELECT ct.name, ct.category, cs.name, cs.version, cs.technical_params, \
             cs.economic_params, cs.environmental_params, cs.metadata, ct.description, \
             cs.is_default \
             FROM component_specs cs JOIN component_types ct ON cs.component_type_id = ct.id \
             WHERE ",
            $tail
        )
    };
}

/// SQLite's `CURRENT_TIMESTAMP` text, so both engines store the same form.
macro_rules! now_text {
    () => {
        "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    };
}

fn pg<'a>(
    db: &'a DbName,
    op: &'static str,
) -> impl Fn(hive_db_core::postgres::Error) -> Error + 'a {
    move |e| Error::pg(db, op, e)
}

/// Whether every key could have been stored. A lookup by one that could not (a NUL
/// character, which PostgreSQL text cannot hold and refuses in a query with 22021) finds
/// nothing, without asking: SQLite, which can hold one, finds nothing too, since writes
/// refuse such names.
fn storable(keys: &[Option<&str>]) -> bool {
    keys.iter().flatten().all(|k| crate::text::storable(k))
}

fn type_row(db: &DbName, c: &mut impl GenericClient, name: &str) -> Result<Option<(i64, String)>> {
    if !storable(&[Some(name)]) {
        return Ok(None);
    }
    c.query_opt(
        "SELECT id, category FROM component_types WHERE name = $1",
        &[&name],
    )
    .and_then(|row| row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose())
    .map_err(pg(db, "find component type"))
}

/// [`type_row`], its row locked to the end of the transaction: the checks made before a
/// spec is inserted (a default already there, the same name and version) hold until it
/// commits. Unlocked, two writers both passed them, and the second failed on the unique
/// index with a bare 23505 where SQLite, whose writers take turns, said `DefaultExists`.
fn type_row_locked(
    db: &DbName,
    c: &mut impl GenericClient,
    name: &str,
) -> Result<Option<(i64, String)>> {
    if !storable(&[Some(name)]) {
        return Ok(None);
    }
    c.query_opt(
        "SELECT id, category FROM component_types WHERE name = $1 FOR UPDATE",
        &[&name],
    )
    .and_then(|row| row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose())
    .map_err(pg(db, "find component type"))
}

fn type_id(db: &DbName, c: &mut impl GenericClient, name: &str) -> Result<i64> {
    type_row(db, c, name)?
        .map(|(id, _)| id)
        .ok_or_else(|| Error::UnknownComponentType {
            db: db.clone(),
            name: name.to_owned(),
        })
}

/// See the SQLite `ensure_type`.
pub(super) fn ensure_type(
    db: &DbName,
    tx: &mut Transaction<'_>,
    name: &str,
    category: &str,
    description: Option<&str>,
) -> Result<i64> {
    // Inserted unless there, in one statement: checked first, two writers adding the same
    // new type both found it missing, and the second failed on the unique name (23505)
    // where "does nothing if it exists" was promised. `ON CONFLICT` waits for the other's
    // commit; the row is then read again (a new snapshot for the statement).
    tx.execute(
        "INSERT INTO component_types (name, category, description) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
        &[&name, &category, &description],
    )
    .map_err(pg(db, "add component type"))?;
    match type_row(db, tx, name)? {
        Some((_, ref existing)) if existing != category => Err(Error::InvalidInput {
            what: "component category",
            value: category.to_owned(),
            reason: "the component type exists in another category",
        }),
        Some((id, _)) => Ok(id),
        None => Err(Error::UnknownComponentType {
            db: db.clone(),
            name: name.to_owned(),
        }),
    }
}

/// See the SQLite `insert_spec`.
pub(super) fn insert_spec(
    db: &DbName,
    tx: &mut Transaction<'_>,
    spec: &ComponentSpec,
) -> Result<i64> {
    let (type_id, category) = type_row_locked(db, tx, &spec.component_type)?.ok_or_else(|| {
        Error::UnknownComponentType {
            db: db.clone(),
            name: spec.component_type.clone(),
        }
    })?;
    if category != spec.category {
        return Err(Error::InvalidInput {
            what: "component category",
            value: spec.category.clone(),
            reason: "differs from the component type's category",
        });
    }
    if spec.is_default {
        let existing = tx
            .query_opt(
                "SELECT name, version FROM component_specs
                 WHERE component_type_id = $1 AND is_default",
                &[&type_id],
            )
            .and_then(|row| {
                row.map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
                    .transpose()
            })
            .map_err(pg(db, "find default component spec"))?;
        if let Some((name, version)) = existing {
            return Err(Error::DefaultExists {
                db: db.clone(),
                component_type: spec.component_type.clone(),
                existing: format!("{name} v{version}"),
            });
        }
    }
    let exists: i64 = tx
        .query_one(
            "SELECT count(*) FROM component_specs
             WHERE component_type_id = $1 AND name = $2 AND version = $3",
            &[&type_id, &spec.name, &spec.version],
        )
        .and_then(|r| r.try_get(0))
        .map_err(pg(db, "find component spec"))?;
    if exists > 0 {
        return Err(Error::SpecExists {
            db: db.clone(),
            component_type: spec.component_type.clone(),
            name: spec.name.clone(),
            version: spec.version.clone(),
        });
    }
    let obj = |what, m: &Map<String, Value>| json::encode(db, what, &Value::Object(m.clone()));
    let technical = obj("technical parameters", &spec.technical)?;
    let optional =
        |what, m: &Option<Map<String, Value>>| m.as_ref().map(|m| obj(what, m)).transpose();
    let economic = optional("economic parameters", &spec.economic)?;
    let environmental = optional("environmental parameters", &spec.environmental)?;
    let metadata = optional("metadata", &spec.metadata)?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO component_specs
                 (component_type_id, name, version, technical_params, economic_params,
                  environmental_params, metadata, is_default)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &type_id,
                &spec.name,
                &spec.version,
                &technical,
                &economic,
                &environmental,
                &metadata,
                &spec.is_default,
            ],
        )
        .and_then(|r| r.try_get(0))
        .map_err(pg(db, "add component spec"))?;
    record_history(tx, id, &spec.version, "created").map_err(pg(db, "record version history"))?;
    Ok(id)
}

fn record_history(
    tx: &mut Transaction<'_>,
    spec_id: i64,
    version: &str,
    change: &str,
) -> Result<u64, hive_db_core::postgres::Error> {
    tx.execute(
        "INSERT INTO version_history (component_spec_id, version, change_description)
         VALUES ($1, $2, $3)",
        &[&spec_id, &version, &change],
    )
}

pub(super) fn add_type(
    p: &PgHandle,
    name: &str,
    category: &str,
    description: Option<&str>,
) -> Result<i64> {
    let db = p.name();
    p.write_with(|tx| ensure_type(db, tx, name, category, description))
}

pub(super) fn add_spec(p: &PgHandle, spec: &ComponentSpec) -> Result<i64> {
    let db = p.name();
    p.write_with(|tx| insert_spec(db, tx, spec))
}

pub(super) fn set_default(
    p: &PgHandle,
    component_type: &str,
    name: &str,
    version: &str,
) -> Result<()> {
    let db = p.name();
    p.write_with(|tx| {
        let type_id = type_id(db, tx, component_type)?;
        if !storable(&[Some(name), Some(version)]) {
            return Err(not_found(db, component_type, Some(name), Some(version)));
        }
        let spec_id: i64 = tx
            .query_opt(
                "SELECT id FROM component_specs
                 WHERE component_type_id = $1 AND name = $2 AND version = $3",
                &[&type_id, &name, &version],
            )
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(pg(db, "find component spec"))?
            .ok_or_else(|| not_found(db, component_type, Some(name), Some(version)))?;
        let set = pg(db, "set default component spec");
        tx.execute(
            concat!(
                "UPDATE component_specs SET is_default = false, updated_at = ",
                now_text!(),
                " WHERE component_type_id = $1 AND is_default AND id <> $2"
            ),
            &[&type_id, &spec_id],
        )
        .map_err(&set)?;
        tx.execute(
            concat!(
                "UPDATE component_specs SET is_default = true, updated_at = ",
                now_text!(),
                " WHERE id = $1"
            ),
            &[&spec_id],
        )
        .map_err(&set)?;
        record_history(tx, spec_id, version, "made the default").map_err(&set)?;
        Ok(())
    })
}

pub(super) fn spec(
    p: &PgHandle,
    component_type: &str,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<ComponentSpec> {
    let db = p.name();
    let sql = match (name, version) {
        (Some(_), Some(_)) => select_specs!(
            "ct.name = $1 AND cs.name = $2 AND cs.version = $3 ORDER BY cs.id DESC LIMIT 1"
        ),
        (Some(_), None) => select_specs!(
            "ct.name = $1 AND cs.name = $2 AND $3::text IS NULL ORDER BY cs.id DESC LIMIT 1"
        ),
        (None, Some(_)) => select_specs!(
            "ct.name = $1 AND cs.is_default AND $2::text IS NULL AND cs.version = $3 \
             ORDER BY cs.id DESC LIMIT 1"
        ),
        (None, None) => select_specs!(
            "ct.name = $1 AND cs.is_default AND $2::text IS NULL AND $3::text IS NULL \
             ORDER BY cs.id DESC LIMIT 1"
        ),
    };
    read_primary(p, |c| {
        if !storable(&[Some(component_type), name, version]) {
            type_id(db, c, component_type)?;
            return Err(not_found(db, component_type, name, version));
        }
        let row = c
            .query_opt(sql, &[&component_type, &name, &version])
            .map_err(pg(db, "find component spec"))?;
        match row {
            Some(row) => spec_of(db, &row),
            None => {
                type_id(db, c, component_type)?;
                Err(not_found(db, component_type, name, version))
            }
        }
    })
}

pub(super) fn list_types(p: &PgHandle) -> Result<Vec<ComponentType>> {
    let db = p.name();
    read_primary(p, |c| {
        c.query(
            "SELECT ct.name, ct.category, ct.description, count(cs.id)
             FROM component_types ct
             LEFT JOIN component_specs cs ON cs.component_type_id = ct.id
             GROUP BY ct.id ORDER BY ct.category COLLATE \"C\", ct.name COLLATE \"C\"",
            &[],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(ComponentType {
                        name: r.try_get(0)?,
                        category: r.try_get(1)?,
                        description: r.try_get(2)?,
                        spec_count: r.try_get::<_, i64>(3)?.try_into().unwrap_or(0),
                    })
                })
                .collect()
        })
        .map_err(pg(db, "list component types"))
    })
}

pub(super) fn list_specs(p: &PgHandle, component_type: Option<&str>) -> Result<Vec<SpecSummary>> {
    let db = p.name();
    if !storable(&[component_type]) {
        return Ok(Vec::new());
    }
    read_primary(p, |c| {
        c.query(
            "SELECT ct.name, ct.category, cs.name, cs.version, cs.is_default
             FROM component_specs cs JOIN component_types ct ON cs.component_type_id = ct.id
             WHERE $1::text IS NULL OR ct.name = $1
             ORDER BY ct.name COLLATE \"C\", cs.name COLLATE \"C\", cs.id",
            &[&component_type],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(SpecSummary {
                        component_type: r.try_get(0)?,
                        category: r.try_get(1)?,
                        name: r.try_get(2)?,
                        version: r.try_get(3)?,
                        is_default: r.try_get::<_, Option<bool>>(4)?.unwrap_or(false),
                    })
                })
                .collect()
        })
        .map_err(pg(db, "list component specs"))
    })
}

pub(super) fn version_history(
    p: &PgHandle,
    component_type: &str,
    name: &str,
) -> Result<Vec<VersionEntry>> {
    let db = p.name();
    if !storable(&[Some(component_type), Some(name)]) {
        return Ok(Vec::new());
    }
    read_primary(p, |c| {
        c.query(
            "SELECT vh.version, vh.change_description, vh.changed_by, vh.changed_at
             FROM version_history vh
             JOIN component_specs cs ON vh.component_spec_id = cs.id
             JOIN component_types ct ON cs.component_type_id = ct.id
             WHERE ct.name = $1 AND cs.name = $2 ORDER BY vh.id",
            &[&component_type, &name],
        )
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(VersionEntry {
                        version: r.try_get(0)?,
                        change_description: r.try_get(1)?,
                        changed_by: r.try_get(2)?,
                        changed_at: r.try_get(3)?,
                    })
                })
                .collect()
        })
        .map_err(pg(db, "read version history"))
    })
}

pub(super) fn all_specs(p: &PgHandle) -> Result<Vec<ComponentSpec>> {
    let db = p.name();
    read_primary(p, |c: &mut Client| {
        let rows = c
            .query(
                select_specs!("true ORDER BY ct.name COLLATE \"C\", cs.name COLLATE \"C\", cs.id"),
                &[],
            )
            .map_err(pg(db, "read component specs"))?;
        rows.iter().map(|r| spec_of(db, r)).collect()
    })
}

fn spec_of(db: &DbName, row: &Row) -> Result<ComponentSpec> {
    let read = pg(db, "read component spec");
    let text = |i| row.try_get::<_, String>(i).map_err(&read);
    let opt = |i| row.try_get::<_, Option<String>>(i).map_err(&read);
    let component_type = text(0)?;
    let name = text(2)?;
    let what = |part: &str| format!("{part} of {component_type}/{name}");
    let params = |part: &str, i| -> Result<Option<Map<String, Value>>> {
        object(db, &what(part), json::parse(db, part, opt(i)?.as_deref())?)
    };
    Ok(ComponentSpec {
        category: text(1)?,
        version: text(3)?,
        technical: params("technical parameters", 4)?.unwrap_or_default(),
        economic: params("economic parameters", 5)?,
        environmental: params("environmental parameters", 6)?,
        metadata: params("metadata", 7)?,
        description: opt(8)?,
        is_default: row
            .try_get::<_, Option<bool>>(9)
            .map_err(&read)?
            .unwrap_or(false),
        component_type,
        name,
    })
}
