//! The component library: component types, their specs (technical, economic, environmental
//! and metadata parameters as JSON), versions, one default spec per type, version history,
//! and YAML import / export. Its SQL is all in this folder: the changes, the queries, the
//! statements both share, and the import and export.

mod changes;
#[cfg(feature = "postgres")]
mod pg;
mod queries;
mod spec;
mod sql;
mod transfer;
mod yaml;

use crate::backend::EcoDb;

pub use spec::{ComponentSpec, ComponentType, SpecSummary, VersionEntry};

/// The component library of one [`EcoDb`]. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ComponentLibrary {
    db: EcoDb,
}

impl ComponentLibrary {
    /// The component library of `db`.
    pub fn new(db: &EcoDb) -> Self {
        Self { db: db.clone() }
    }
}
