//! The values of the component library: a spec as stored and as a YAML file, a type, a
//! listing entry, a history entry; and the name rules that keep them usable as file names.

use std::path::{Path, PathBuf};

use hive_db_core::DbName;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

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

/// Refuses names that cannot be part of an export file name.
pub(super) fn check_name(what: &'static str, value: &str) -> Result<()> {
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

pub(super) fn check_spec(spec: &ComponentSpec) -> Result<()> {
    check_name("component type", &spec.component_type)?;
    check_name("component category", &spec.category)?;
    check_name("component spec name", &spec.name)?;
    check_name("component spec version", &spec.version)
}

/// A stored JSON value as a map of parameters; `None` for NULL.
pub(super) fn object(
    db: &DbName,
    what: &str,
    value: Option<Value>,
) -> Result<Option<Map<String, Value>>> {
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
