//! How the SQLite linked into this process was compiled, judged against the build hive-db is
//! tested and measured with: carried in every snapshot, warned about at the first `register`
//! and noted in `health`.

/// How the SQLite linked into this process was compiled, in the three respects hive-db
/// relies on. All come from compile-time flags that a workspace sets for `libsqlite3-sys`
/// (`LIBSQLITE3_FLAGS`, see the README); an application that depends on hive-db-core from a
/// workspace of its own gets libsqlite3-sys's defaults unless it sets them too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SqliteBuild {
    /// SQLite's version, as `sqlite_version()` gives it.
    pub version: String,
    /// Extension loading compiled out (`SQLITE_OMIT_LOAD_EXTENSION`): no SQL or code in the
    /// process can load a shared library into SQLite.
    pub load_extension_omitted: bool,
    /// Each connection has its own page cache (`SQLITE_ENABLE_MEMORY_MANAGEMENT` not set):
    /// with it, every page access of every connection takes one process-wide mutex.
    pub page_cache_per_connection: bool,
    /// SQLite compiled with its memory statistics off by default
    /// (`SQLITE_DEFAULT_MEMSTATUS=0`): with them, every allocation of every connection takes
    /// one process-wide mutex to count itself. It says how SQLite was compiled, not whether
    /// the application turned them on at start (`sqlite3_config`, which SQLite's heap limits
    /// need). `false` in snapshots of older versions, whose builds all had them on.
    #[serde(default)]
    pub memory_statistics_off: bool,
}

impl SqliteBuild {
    /// Reads the build from SQLite's `version` and its `PRAGMA compile_options` list.
    pub(crate) fn from_compile_options<'a>(
        version: String,
        options: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let (mut omitted, mut managed, mut no_statistics) = (false, false, false);
        for option in options {
            omitted |= option == "OMIT_LOAD_EXTENSION";
            managed |= option == "ENABLE_MEMORY_MANAGEMENT";
            no_statistics |= option == "DEFAULT_MEMSTATUS=0";
        }
        Self {
            version,
            load_extension_omitted: omitted,
            page_cache_per_connection: !managed,
            memory_statistics_off: no_statistics,
        }
    }

    /// What differs from the build hive-db is tested and measured with, one line each
    /// (empty when nothing does).
    pub fn deviations(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.load_extension_omitted {
            out.push(
                "SQLite was built with extension loading (set LIBSQLITE3_FLAGS with \
                 -DSQLITE_OMIT_LOAD_EXTENSION to compile it out)",
            );
        }
        if !self.page_cache_per_connection {
            out.push(
                "SQLite was built with SQLITE_ENABLE_MEMORY_MANAGEMENT: one page cache mutex for \
                 every connection (set LIBSQLITE3_FLAGS with -USQLITE_ENABLE_MEMORY_MANAGEMENT)",
            );
        }
        if !self.memory_statistics_off {
            out.push(
                "SQLite was built with memory statistics on: one mutex for every allocation of \
                 every connection (set LIBSQLITE3_FLAGS with -DSQLITE_DEFAULT_MEMSTATUS=0; a \
                 heap limit then needs sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 1) first)",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteBuild;

    /// Bug caught: a build with extension loading, the process-wide page cache or memory
    /// statistics reported as the tested one (no warning, no health note), or a hardened
    /// build warned about.
    #[test]
    fn the_sqlite_build_is_judged_by_its_compile_options() {
        let hardened = SqliteBuild::from_compile_options(
            "3.50.0".to_owned(),
            [
                "COMPILER=gcc",
                "DEFAULT_MEMSTATUS=0",
                "OMIT_LOAD_EXTENSION",
                "THREADSAFE=1",
            ],
        );
        assert!(hardened.load_extension_omitted && hardened.page_cache_per_connection);
        assert!(hardened.memory_statistics_off);
        assert!(hardened.deviations().is_empty(), "{hardened:?}");

        let defaults = SqliteBuild::from_compile_options(
            "3.50.0".to_owned(),
            ["ENABLE_MEMORY_MANAGEMENT", "THREADSAFE=1"],
        );
        assert!(!defaults.load_extension_omitted && !defaults.page_cache_per_connection);
        assert!(!defaults.memory_statistics_off);
        let deviations = defaults.deviations();
        assert_eq!(deviations.len(), 3, "{deviations:?}");
        assert!(deviations.iter().all(|d| d.contains("LIBSQLITE3_FLAGS")));

        // A prefix is not the option.
        let near = SqliteBuild::from_compile_options(
            "3.50.0".to_owned(),
            [
                "OMIT_LOAD_EXTENSION_X",
                "ENABLE_MEMORY_MANAGEMENT_Y",
                "DEFAULT_MEMSTATUS=00",
            ],
        );
        assert!(!near.load_extension_omitted && near.page_cache_per_connection);
        assert!(!near.memory_statistics_off);
    }
}
