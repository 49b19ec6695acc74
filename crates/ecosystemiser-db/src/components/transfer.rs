//! YAML export and all-or-nothing YAML import of the whole library.

use std::path::{Path, PathBuf};

use super::ComponentLibrary;
use super::spec::check_spec;
use super::sql::{ensure_type, insert_spec};
use super::yaml;
use crate::error::{Error, Result};

impl ComponentLibrary {
    /// Writes every spec to `dir`, one YAML file each at
    /// [`ComponentSpec::file_name`](super::ComponentSpec::file_name); returns the files written.
    ///
    /// # Errors
    ///
    /// The backend's errors; [`Error::InvalidInput`] when two specs would share a file name
    /// or a stored name is not one a file may have (nothing is written then); [`Error::Io`] naming the file or folder that could not be
    /// written; [`Error::Yaml`] if a spec cannot be written as YAML.
    pub fn export_yaml(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let specs = self.all_specs()?;
        // `<type>_<name>` is ambiguous when names hold underscores (`a_b` + `c`, `a` + `b_c`):
        // refuse before writing anything rather than let one file overwrite another.
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        for spec in &specs {
            // Names are checked when written through this library, but a stored one may
            // have come another way (raw SQL, an adopted file): `../..` in a category wrote
            // outside `dir`.
            check_spec(spec)?;
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
        #[cfg(feature = "postgres")]
        if let Some(p) = self.db.pg() {
            return p.write_with(|tx| {
                for (path, spec) in &files {
                    let wrap = |e: Error| Error::Import {
                        path: path.clone(),
                        source: Box::new(e),
                    };
                    check_spec(spec).map_err(wrap)?;
                    super::pg::ensure_type(
                        db,
                        tx,
                        &spec.component_type,
                        &spec.category,
                        spec.description.as_deref(),
                    )
                    .map_err(wrap)?;
                    super::pg::insert_spec(db, tx, spec).map_err(wrap)?;
                }
                Ok(files.len())
            });
        }
        self.db.transaction_with(|conn| {
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
