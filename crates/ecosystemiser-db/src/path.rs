//! Where the EcoSystemiser database lives: `ECOSYSTEMISER_DB_PATH`, else the per-user data
//! folder. Working the path out has no side effects; the folder is made at first open. The
//! one statement of the rule: db-monitor uses it to find the database it reports on.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The variable that names the database file.
pub const DB_PATH_VAR: &str = "ECOSYSTEMISER_DB_PATH";

/// The file name inside the data folder.
const FILE_NAME: &str = "ecosystemiser.db";

/// The EcoSystemiser database file: `ECOSYSTEMISER_DB_PATH` when it is set, else
/// `$XDG_DATA_HOME/ecosystemiser/ecosystemiser.db`, else
/// `$HOME/.local/share/ecosystemiser/ecosystemiser.db` (the XDG base directory rules).
///
/// Nothing is created or opened: the folder is made (0700) when the database is first opened.
///
/// # Errors
///
/// [`Error::InvalidEnv`] when `ECOSYSTEMISER_DB_PATH` is set but empty; [`Error::NoDataDir`]
/// when it is unset and neither `XDG_DATA_HOME` nor `HOME` is an absolute path.
pub fn ecosystemiser_db_path() -> Result<PathBuf> {
    db_path_from_lookup(|var| std::env::var_os(var).map(PathBuf::from))
}

/// Like [`ecosystemiser_db_path`], reading variables through `lookup` (for tests and for
/// configuration that comes from elsewhere).
///
/// # Errors
///
/// As [`ecosystemiser_db_path`].
pub fn db_path_from_lookup(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = lookup(DB_PATH_VAR) {
        if path.as_os_str().is_empty() {
            return Err(Error::InvalidEnv {
                var: DB_PATH_VAR,
                reason: "set but empty",
            });
        }
        return Ok(path);
    }
    // The XDG rules ignore relative values.
    let absolute = |p: PathBuf| Some(p).filter(|p| p.is_absolute());
    let data_home = lookup("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| {
            lookup("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local").join("share"))
        })
        .ok_or(Error::NoDataDir)?;
    Ok(data_home.join("ecosystemiser").join(FILE_NAME))
}

/// True when two spellings name the same file, as far as can be told without creating it.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.into()))
    };
    resolve(a) == resolve(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), PathBuf::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Bug caught: the variable ignored, an empty value taken as the working folder, the XDG
    /// order (variable, XDG_DATA_HOME, HOME) wrong, or a relative XDG_DATA_HOME or HOME used.
    /// db-monitor finds the database it reports on by default through this same function.
    #[test]
    fn variable_then_xdg_then_home() {
        let p = db_path_from_lookup(lookup(&[
            (DB_PATH_VAR, "/srv/eco.db"),
            ("XDG_DATA_HOME", "/x"),
        ]));
        assert_eq!(p.ok(), Some(PathBuf::from("/srv/eco.db")));
        let p = db_path_from_lookup(lookup(&[(DB_PATH_VAR, "/srv/e.db")]));
        assert_eq!(p.ok(), Some(PathBuf::from("/srv/e.db")));
        let p = db_path_from_lookup(lookup(&[(DB_PATH_VAR, ""), ("HOME", "/h")]));
        assert!(matches!(
            p,
            Err(Error::InvalidEnv {
                var: DB_PATH_VAR,
                ..
            })
        ));
        let p = db_path_from_lookup(lookup(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]));
        assert_eq!(
            p.ok(),
            Some(PathBuf::from("/x/ecosystemiser/ecosystemiser.db"))
        );
        let p = db_path_from_lookup(lookup(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")]));
        assert_eq!(
            p.ok(),
            Some(PathBuf::from(
                "/h/.local/share/ecosystemiser/ecosystemiser.db"
            ))
        );
        assert!(matches!(
            db_path_from_lookup(lookup(&[])),
            Err(Error::NoDataDir)
        ));
        assert!(matches!(
            db_path_from_lookup(lookup(&[("XDG_DATA_HOME", "rel"), ("HOME", "home")])),
            Err(Error::NoDataDir)
        ));
    }
}
