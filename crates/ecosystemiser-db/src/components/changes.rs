//! Adding types and specs and changing a type's default, each in one transaction.

use hive_db_core::rusqlite::{OptionalExtension, params};

use super::spec::{check_name, check_spec};
use super::sql::{ensure_type, insert_spec, not_found, record_history, type_id};
use super::{ComponentLibrary, ComponentSpec};
use crate::error::{Error, Result};

impl ComponentLibrary {
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
        if let Some(d) = description {
            crate::text::check("component description", d)?;
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::add_type(p, name, category, description);
        }
        self.db
            .transaction_with(|conn| ensure_type(self.db.name(), conn, name, category, description))
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
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::add_spec(p, spec);
        }
        self.db
            .transaction_with(|conn| insert_spec(self.db.name(), conn, spec))
    }

    /// Makes `name` version `version` the default spec of `component_type`, in one
    /// transaction (the old default stops being one), and records it in the version history.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownComponentType`], [`Error::NotFound`], the backend's errors.
    pub fn set_default(&self, component_type: &str, name: &str, version: &str) -> Result<()> {
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return super::pg::set_default(p, component_type, name, version);
        }
        let db = self.db.name();
        self.db.transaction_with(|conn| {
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
}
