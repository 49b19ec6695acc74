//! The component library: component types, their specs (technical, economic, environmental
//! and metadata parameters as JSON), versions, one default spec per type, version history,
//! and YAML import / export. Its SQL is all here.

use std::path::{Path, PathBuf};

use hive_db_core::DbName;
use hive_db_core::rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use crate::backend::EcoDb;
use crate::error::{Error, Result};
use crate::json;
use crate::yaml;

/// One component spec, as stored, as returned, and as a YAML file (`type`, `category`,
/// `name`, `version`, `technical`, optional `economic`, `environmental`, `metadata`,
/// `description`, `is_default`; unknown fields are refused).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// The component type's name (`battery`).
    #[serde(rename = "type")]
    pub component_type: String,
    /// The type's category (`energy`, `water`).
    pub category: String,
    /// The spec's name within its type.
    pub name: String,
    /// Its version. Default `1.0.0`.
    #[serde(default = "default_version")]
    pub version: String,
    /// Technical parameters.
    pub technical: Map<String, Value>,
    /// Economic parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub economic: Option<Map<String, Value>>,
    /// Environmental parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environmental: Option<Map<String, Value>>,
    /// Anything else about the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The type's description (used when an import creates the type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether this is its type's default spec.
    #[serde(default)]
    pub is_default: bool,
}

fn default_version() -> String {
    "1.0.0".to_owned()
}

impl ComponentSpec {
    /// A spec of `component_type` (in `category`) named `name`, version 1.0.0, with
    /// `technical` parameters and nothing else.
    pub fn new(
        component_type: impl Into<String>,
        category: impl Into<String>,
        name: impl Into<String>,
        technical: Map<String, Value>,
    ) -> Self {
        Self {
            component_type: component_type.into(),
            category: category.into(),
            name: name.into(),
            version: default_version(),
            technical,
            economic: None,
            environmental: None,
            metadata: None,
            description: None,
            is_default: false,
        }
    }

    /// The file an export writes it to, relative to the export folder:
    /// `<category>/<type>_<name>_v<version>.yaml`.
    pub fn file_name(&self) -> PathBuf {
        Path::new(&self.category).join(format!(
            "{}_{}_v{}.yaml",
            self.component_type, self.name, self.version
        ))
    }
}

/// A component type and how many specs it has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ComponentType {
    /// Its name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// Its description.
    pub description: Option<String>,
    /// Its specs, every version counted.
    pub spec_count: u64,
}

/// One spec in a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SpecSummary {
    /// The type's name.
    pub component_type: String,
    /// The type's category.
    pub category: String,
    /// The spec's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether it is the type's default.
    pub is_default: bool,
}

/// One entry of a spec's version history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct VersionEntry {
    /// The spec version the entry is about.
    pub version: String,
    /// What happened.
    pub change_description: Option<String>,
    /// Who did it, when known.
    pub changed_by: Option<String>,
    /// When (SQLite's `CURRENT_TIMESTAMP`, UTC).
    pub changed_at: Option<String>,
}

/// The component library of one [`EcoDb`]. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ComponentLibrary {
    db: EcoDb,
}

/// Refuses names that cannot be part of an export file name.
fn check_name(what: &'static str, value: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidInput {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("empty"));
    }
    if value.len() > 128 {
        return Err(invalid("longer than 128 bytes"));
    }
    if value == "." || value == ".." {
        return Err(invalid("a relative folder name"));
    }
    if value
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(invalid("contains a path separator or a control character"));
    }
    Ok(())
}

fn check_spec(spec: &ComponentSpec) -> Result<()> {
    check_name("component type", &spec.component_type)?;
    check_name("component category", &spec.category)?;
    check_name("component spec name", &spec.name)?;
    check_name("component spec version", &spec.version)
}

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
    /// The component library of `db`.
    pub fn new(db: &EcoDb) -> Self {
        Self { db: db.clone() }
    }

    /// Adds a component type, or does nothing if one of that name exists with the same
    /// category. Returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad name or a category other than the existing type's;
    /// the backend's errors.
    pub fn add_type(&self, name: &str, category: &str, description: Option<&str>) -> Result<i64> {
        check_name("component type", name)?;
        check_name("component category", category)?;
        self.db
            .transaction(|conn| ensure_type(self.db.name(), conn, name, category, description))
    }

    /// Adds `spec` to its type, in one transaction, and records it in the version history.
    /// Returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownComponentType`]; [`Error::DefaultExists`] when `spec.is_default` and
    /// the type has a default already (change it with [`ComponentLibrary::set_default`]);
    /// [`Error::SpecExists`]; [`Error::InvalidInput`] for bad names or a category other than
    /// the type's. Nothing is written then.
    pub fn add_spec(&self, spec: &ComponentSpec) -> Result<i64> {
        check_spec(spec)?;
        self.db
            .transaction(|conn| insert_spec(self.db.name(), conn, spec))
    }

    /// Makes `name` version `version` the default spec of `component_type`, in one
    /// transaction (the old default stops being one), and records it in the version history.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownComponentType`], [`Error::NotFound`], the backend's errors.
    pub fn set_default(&self, component_type: &str, name: &str, version: &str) -> Result<()> {
        let db = self.db.name();
        self.db.transaction(|conn| {
            let type_id = type_id(db, conn, component_type)?;
            let spec_id: i64 = conn
                .query_row(
                    "SELECT id FROM component_specs
                     WHERE component_type_id = ?1 AND name = ?2 AND version = ?3",
                    params![type_id, name, version],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| Error::sqlite(db, "find component spec", e))?
                .ok_or_else(|| not_found(db, component_type, Some(name), Some(version)))?;
            conn.execute(
                "UPDATE component_specs SET is_default = 0, updated_at = CURRENT_TIMESTAMP
                 WHERE component_type_id = ?1 AND is_default = 1 AND id <> ?2",
                params![type_id, spec_id],
            )
            .and_then(|_| {
                conn.execute(
                    "UPDATE component_specs SET is_default = 1, updated_at = CURRENT_TIMESTAMP
                     WHERE id = ?1",
                    [spec_id],
                )
            })
            .and_then(|_| record_history(conn, spec_id, version, "made the default"))
            .map_err(|e| Error::sqlite(db, "set default component spec", e))?;
            Ok(())
        })
    }

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
        let db = self.db.name();
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
        self.db.read(|conn| {
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
        })
    }

    /// Every component type with its spec count, by category and name.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn list_types(&self) -> Result<Vec<ComponentType>> {
        let db = self.db.name();
        self.db.read(|conn| {
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
        let db = self.db.name();
        self.db.read(|conn| {
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
        let db = self.db.name();
        self.db.read(|conn| {
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
        let db = self.db.name();
        let sql = select_specs!("1 ORDER BY ct.name, cs.name, cs.id");
        self.db.read(|conn| {
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

    /// Writes every spec to `dir`, one YAML file each at
    /// [`ComponentSpec::file_name`]; returns the files written.
    ///
    /// # Errors
    ///
    /// The backend's errors; [`Error::InvalidInput`] when two specs would share a file name
    /// (nothing is written then); [`Error::Io`] naming the file or folder that could not be
    /// written; [`Error::Yaml`] if a spec cannot be written as YAML.
    pub fn export_yaml(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let specs = self.all_specs()?;
        // `<type>_<name>` is ambiguous when names hold underscores (`a_b` + `c`, `a` + `b_c`):
        // refuse before writing anything rather than let one file overwrite another.
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        for spec in &specs {
            let file = spec.file_name();
            if !seen.insert(file.clone()) {
                return Err(Error::InvalidInput {
                    what: "export file",
                    value: file.display().to_string(),
                    reason: "two specs would be written to the same file",
                });
            }
        }
        let mut written = Vec::with_capacity(specs.len());
        for spec in &specs {
            let path = dir.join(spec.file_name());
            yaml::write_spec(&path, spec)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Imports every `*.yaml` / `*.yml` file under `dir` (folders included, sorted by path),
    /// creating component types as needed, all in one transaction: one bad file and nothing
    /// is imported. Returns how many specs were imported.
    ///
    /// # Errors
    ///
    /// [`Error::Yaml`] naming a file that is not a valid spec (malformed YAML, a field of the
    /// wrong type, over the limits); [`Error::Import`] naming the file whose spec could not
    /// be added (a second default, a duplicate, a bad name); [`Error::Io`].
    pub fn import_yaml(&self, dir: &Path) -> Result<usize> {
        let files = yaml::read_dir(dir)?;
        let db = self.db.name();
        self.db.transaction(|conn| {
            for (path, spec) in &files {
                let wrap = |e: Error| Error::Import {
                    path: path.clone(),
                    source: Box::new(e),
                };
                check_spec(spec).map_err(wrap)?;
                ensure_type(
                    db,
                    conn,
                    &spec.component_type,
                    &spec.category,
                    spec.description.as_deref(),
                )
                .map_err(wrap)?;
                insert_spec(db, conn, spec).map_err(wrap)?;
            }
            Ok(files.len())
        })
    }
}

fn not_found(
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

fn type_id(db: &DbName, conn: &Connection, name: &str) -> Result<i64> {
    conn.prepare_cached("SELECT id FROM component_types WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(|e| Error::sqlite(db, "find component type", e))?
        .ok_or_else(|| Error::UnknownComponentType {
            db: db.clone(),
            name: name.to_owned(),
        })
}

fn ensure_type(
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

fn insert_spec(db: &DbName, conn: &Connection, spec: &ComponentSpec) -> Result<i64> {
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

fn record_history(
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

fn object(db: &DbName, what: &str, value: Option<Value>) -> Result<Option<Map<String, Value>>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|source| Error::Json {
                db: db.clone(),
                what: what.to_owned(),
                source,
            }),
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
