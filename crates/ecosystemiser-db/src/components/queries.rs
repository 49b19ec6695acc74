//! Reading specs, listings and version histories back, and turning a row into a spec.

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, Row, params};

use super::spec::object;
use super::sql::{not_found, type_id};
use super::{ComponentLibrary, ComponentSpec, ComponentType, SpecSummary, VersionEntry};
use crate::error::{Error, Result};
use crate::json;

/// The query for full specs `WHERE $tail`: one constant string per use, values bound.
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

impl ComponentLibrary {
    /// A spec of `component_type`: `name` or, when `None`, the type's default; `version`
    /// or, when `None`, the one added last.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownComponentType`]; [`Error::NotFound`]; the backend's errors.
    pub fn spec(
        &self,
        component_type: &str,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<ComponentSpec> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::spec(p, component_type, name, version);
        }
        self.db
            .read_with(|conn| spec_on(self.db.name(), conn, component_type, name, version))
    }

    /// [`ComponentLibrary::spec`] as a future: the same query, on a reader thread of the
    /// database, on any executor.
    ///
    /// # Errors
    ///
    /// As [`ComponentLibrary::spec`]; [`Error::WrongEngine`] on PostgreSQL.
    #[cfg(feature = "async")]
    #[track_caller]
    pub fn spec_async(
        &self,
        component_type: &str,
        name: Option<&str>,
        version: Option<&str>,
    ) -> impl Future<Output = Result<ComponentSpec>> + Send + 'static {
        let (component_type, name, version) = (
            component_type.to_owned(),
            name.map(str::to_owned),
            version.map(str::to_owned),
        );
        let future = self
            .db
            .read_async_with("ComponentLibrary::spec_async", move |conn| {
                spec_on(
                    &crate::backend::ECO_NAME,
                    conn,
                    &component_type,
                    name.as_deref(),
                    version.as_deref(),
                )
            });
        async move { future?.await }
    }

    /// Every component type with its spec count, by category and name.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn list_types(&self) -> Result<Vec<ComponentType>> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::list_types(p);
        }
        let db = self.db.name();
        self.db.read_with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT ct.name, ct.category, ct.description, count(cs.id)
                     FROM component_types ct
                     LEFT JOIN component_specs cs ON cs.component_type_id = ct.id
                     GROUP BY ct.id ORDER BY ct.category, ct.name",
                )
                .map_err(|e| Error::sqlite(db, "list component types", e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ComponentType {
                        name: r.get(0)?,
                        category: r.get(1)?,
                        description: r.get(2)?,
                        spec_count: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
                    })
                })
                .and_then(Iterator::collect)
                .map_err(|e| Error::sqlite(db, "list component types", e))?;
            Ok(rows)
        })
    }

    /// Every spec (of `component_type`, when given), by type, name and insertion order.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn list_specs(&self, component_type: Option<&str>) -> Result<Vec<SpecSummary>> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::list_specs(p, component_type);
        }
        let db = self.db.name();
        self.db.read_with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT ct.name, ct.category, cs.name, cs.version, cs.is_default
                     FROM component_specs cs JOIN component_types ct ON cs.component_type_id = ct.id
                     WHERE ?1 IS NULL OR ct.name = ?1
                     ORDER BY ct.name, cs.name, cs.id",
                )
                .map_err(|e| Error::sqlite(db, "list component specs", e))?;
            let rows = stmt
                .query_map([component_type], |r| {
                    Ok(SpecSummary {
                        component_type: r.get(0)?,
                        category: r.get(1)?,
                        name: r.get(2)?,
                        version: r.get(3)?,
                        is_default: r.get::<_, Option<bool>>(4)?.unwrap_or(false),
                    })
                })
                .and_then(Iterator::collect)
                .map_err(|e| Error::sqlite(db, "list component specs", e))?;
            Ok(rows)
        })
    }

    /// The version history of spec `name` of `component_type`, oldest first.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn version_history(&self, component_type: &str, name: &str) -> Result<Vec<VersionEntry>> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::version_history(p, component_type, name);
        }
        let db = self.db.name();
        self.db.read_with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT vh.version, vh.change_description, vh.changed_by, vh.changed_at
                     FROM version_history vh
                     JOIN component_specs cs ON vh.component_spec_id = cs.id
                     JOIN component_types ct ON cs.component_type_id = ct.id
                     WHERE ct.name = ?1 AND cs.name = ?2 ORDER BY vh.id",
                )
                .map_err(|e| Error::sqlite(db, "read version history", e))?;
            let rows = stmt
                .query_map([component_type, name], |r| {
                    Ok(VersionEntry {
                        version: r.get(0)?,
                        change_description: r.get(1)?,
                        changed_by: r.get(2)?,
                        changed_at: r.get(3)?,
                    })
                })
                .and_then(Iterator::collect)
                .map_err(|e| Error::sqlite(db, "read version history", e))?;
            Ok(rows)
        })
    }

    /// Every spec in full, by type, name and insertion order.
    ///
    /// # Errors
    ///
    /// The backend's errors; [`Error::Json`] for stored parameters that are not JSON objects.
    pub fn all_specs(&self) -> Result<Vec<ComponentSpec>> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::all_specs(p);
        }
        let db = self.db.name();
        let sql = select_specs!("1 ORDER BY ct.name, cs.name, cs.id");
        self.db.read_with(|conn| {
            let mut stmt = conn
                .prepare_cached(sql)
                .map_err(|e| Error::sqlite(db, "read component specs", e))?;
            let mut rows = stmt
                .query([])
                .map_err(|e| Error::sqlite(db, "read component specs", e))?;
            let mut specs = Vec::new();
            while let Some(row) = rows
                .next()
                .map_err(|e| Error::sqlite(db, "read component specs", e))?
            {
                specs.push(spec_of(db, row)?);
            }
            Ok(specs)
        })
    }
}

fn spec_of(db: &DbName, row: &Row<'_>) -> Result<ComponentSpec> {
    let text = |i| {
        row.get::<_, String>(i)
            .map_err(|e| Error::sqlite(db, "read component spec", e))
    };
    let component_type = text(0)?;
    let name = text(2)?;
    let what = |part: &str| format!("{part} of {component_type}/{name}");
    Ok(ComponentSpec {
        category: text(1)?,
        version: text(3)?,
        technical: object(
            db,
            &what("technical parameters"),
            json::column(db, "technical parameters", row, 4)?,
        )?
        .unwrap_or_default(),
        economic: object(
            db,
            &what("economic parameters"),
            json::column(db, "economic parameters", row, 5)?,
        )?,
        environmental: object(
            db,
            &what("environmental parameters"),
            json::column(db, "environmental parameters", row, 6)?,
        )?,
        metadata: object(db, &what("metadata"), json::column(db, "metadata", row, 7)?)?,
        description: row
            .get(8)
            .map_err(|e| Error::sqlite(db, "read component spec", e))?,
        is_default: row
            .get::<_, Option<bool>>(9)
            .map_err(|e| Error::sqlite(db, "read component spec", e))?
            .unwrap_or(false),
        component_type,
        name,
    })
}

/// The spec of [`ComponentLibrary::spec`] on `conn`: the sync and async calls' one query.
fn spec_on(
    db: &DbName,
    conn: &Connection,
    component_type: &str,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<ComponentSpec> {
    // Every variant binds all three parameters; "latest" is the highest id (insertion order).
    let sql = match (name, version) {
        (Some(_), Some(_)) => select_specs!(
            "ct.name = ?1 AND cs.name = ?2 AND cs.version = ?3 ORDER BY cs.id DESC LIMIT 1"
        ),
        (Some(_), None) => select_specs!(
            "ct.name = ?1 AND cs.name = ?2 AND ?3 IS NULL ORDER BY cs.id DESC LIMIT 1"
        ),
        (None, Some(_)) => select_specs!(
            "ct.name = ?1 AND cs.is_default = 1 AND ?2 IS NULL AND cs.version = ?3 \
             ORDER BY cs.id DESC LIMIT 1"
        ),
        (None, None) => select_specs!(
            "ct.name = ?1 AND cs.is_default = 1 AND ?2 IS NULL AND ?3 IS NULL \
             ORDER BY cs.id DESC LIMIT 1"
        ),
    };
    let found = {
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(|e| Error::sqlite(db, "find component spec", e))?;
        let mut rows = stmt
            .query(params![component_type, name, version])
            .map_err(|e| Error::sqlite(db, "find component spec", e))?;
        match rows
            .next()
            .map_err(|e| Error::sqlite(db, "find component spec", e))?
        {
            Some(row) => Some(spec_of(db, row)?),
            None => None,
        }
    };
    match found {
        Some(spec) => Ok(spec),
        None => {
            type_id(db, conn, component_type)?;
            Err(not_found(db, component_type, name, version))
        }
    }
}
