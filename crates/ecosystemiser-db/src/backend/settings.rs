//! How the EcoSystemiser database is opened: [`Settings`], from code or from the environment.

use std::path::PathBuf;
use std::time::Duration;

use hive_db_core::DbConfig;

use crate::error::{Error, Result};
use crate::path::db_path_from_lookup;

/// The variable that sets [`Settings::direct_max_connections`].
pub const DIRECT_MAX_VAR: &str = "ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS";

/// How the EcoSystemiser database is opened. Plain data: build it with [`Settings::new`] or
/// [`Settings::from_env`] and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The database file. [`Settings::from_env`] takes [`ecosystemiser_db_path`](crate::ecosystemiser_db_path). Its folder
    /// is created (0700) and the file (0600) when missing.
    pub path: PathBuf,
    /// Pool and connection settings, used for the shared registry's pool and for the
    /// fallback's private one alike (which takes its bound and wait from the two fields
    /// below). `create_if_missing` is always turned on. Default [`DbConfig::default`];
    /// [`Settings::from_env`] reads [`DbConfig::from_env`].
    pub db: DbConfig,
    /// The most connections the fallback keeps open at once (its private pool's
    /// `max_size`). Default `None`: `db.max_size` (10 by default), the size the registry's
    /// pool would have; `ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS` overrides it in
    /// [`Settings::from_env`].
    pub direct_max_connections: Option<u32>,
    /// The longest wait for a fallback connection when all are in use (its private pool's
    /// `connection_timeout`), before the core's `Timeout` error naming the database. Default
    /// `None`: `db.connection_timeout` (5 s by default).
    pub direct_acquire_timeout: Option<Duration>,
}

impl Settings {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            db: DbConfig::default(),
            direct_max_connections: None,
            direct_acquire_timeout: None,
        }
    }

    /// The path from [`ecosystemiser_db_path`](crate::ecosystemiser_db_path), the pool settings from
    /// [`DbConfig::from_env`], and `ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS` if set.
    ///
    /// # Errors
    ///
    /// Those of [`ecosystemiser_db_path`](crate::ecosystemiser_db_path) and [`DbConfig::from_env`]; [`Error::InvalidEnv`]
    /// when `ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS` is not a whole number of at least 1.
    pub fn from_env() -> Result<Self> {
        let mut s = Self::from_lookup(|var| std::env::var(var).ok())?;
        // Read again as an OS string: a path need not be UTF-8.
        s.path = crate::path::ecosystemiser_db_path()?;
        Ok(s)
    }

    /// Like [`Settings::from_env`], reading variables through `lookup` (for tests and for
    /// configuration that comes from elsewhere).
    ///
    /// # Errors
    ///
    /// As [`Settings::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut s = Self::new(db_path_from_lookup(|var| lookup(var).map(PathBuf::from))?);
        s.db = DbConfig::from_lookup(&lookup)?;
        if let Some(v) = lookup(DIRECT_MAX_VAR) {
            let n: u32 = v.trim().parse().map_err(|_| Error::InvalidEnv {
                var: DIRECT_MAX_VAR,
                reason: "not a whole number",
            })?;
            if n == 0 {
                return Err(Error::InvalidEnv {
                    var: DIRECT_MAX_VAR,
                    reason: "zero: at least one connection is needed",
                });
            }
            s.direct_max_connections = Some(n);
        }
        Ok(s)
    }

    pub(crate) fn db_config(&self) -> DbConfig {
        DbConfig {
            create_if_missing: true,
            ..self.db.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the settings variables read under the wrong names, a bad value replaced
    /// by a default instead of reported.
    #[test]
    fn settings_from_variables() -> Result<()> {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let s = Settings::from_lookup(vars(&[
            ("ECOSYSTEMISER_DB_PATH", "/srv/eco.db"),
            ("ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS", "3"),
            ("HIVE_DB_MAX_CONNECTIONS", "7"),
        ]))?;
        assert_eq!(s.path, PathBuf::from("/srv/eco.db"));
        assert_eq!((s.direct_max_connections, s.db.max_size), (Some(3), 7));
        let s = Settings::from_lookup(vars(&[("HOME", "/home/u")]))?;
        assert_eq!(s.direct_max_connections, None);
        for bad in ["0", "many"] {
            let r = Settings::from_lookup(move |k| match k {
                "HOME" => Some("/home/u".to_owned()),
                "ECOSYSTEMISER_DIRECT_MAX_CONNECTIONS" => Some(bad.to_owned()),
                _ => None,
            });
            assert!(
                matches!(
                    r,
                    Err(Error::InvalidEnv {
                        var: DIRECT_MAX_VAR,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        Ok(())
    }
}
