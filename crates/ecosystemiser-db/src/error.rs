//! The one error type of ecosystemiser-db; each variant names the database, file or record
//! it is about, and why.

use std::path::PathBuf;

use hive_db_core::DbName;
use hive_db_core::rusqlite;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ecosystemiser-db.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the shared database layer (registry, pool, connection, configuration).
    #[error(transparent)]
    Core(#[from] hive_db_core::Error),
    /// An environment variable is set but unusable.
    #[error("environment variable {var} is {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No per-user data folder can be worked out (neither `XDG_DATA_HOME` nor `HOME` is an
    /// absolute path).
    #[error(
        "no data folder for the EcoSystemiser database: set ECOSYSTEMISER_DB_PATH, \
         XDG_DATA_HOME or HOME"
    )]
    NoDataDir,
    /// The file at the configured path is not a SQLite database.
    #[error("database {db}: {path} is not a SQLite database")]
    NotADatabase {
        /// The database.
        db: DbName,
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// The database was written by a newer version of this code (or its version is negative,
    /// which no version writes); nothing was written to it. On PostgreSQL, `path` is the server's target (`postgres://user@host:port/db`) and
    /// `found` the version in its `ecosystemiser_schema_version` table.
    #[error(
        "database {db}: {path} has schema version {found}, {}; nothing was written to it",
        if *found < 0 {
            "which no version of this code records".to_owned()
        } else {
            format!("newer than the {known} this code knows")
        }
    )]
    SchemaTooNew {
        /// The database.
        db: DbName,
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// The newest version this code knows.
        known: usize,
    },
    /// A schema migration failed; its transaction was rolled back.
    #[error("database {db}: migrating {path} failed")]
    Migration {
        /// The database.
        db: DbName,
        /// The file.
        path: PathBuf,
        /// The migration error.
        #[source]
        source: Box<rusqlite_migration::Error>,
    },
    /// PostgreSQL reported an error during a repository operation or a migration step. The
    /// server's SQLSTATE is in `code` when it sent one.
    #[cfg(feature = "postgres")]
    #[error("database {db}: {op} failed (sqlstate {})", code.as_deref().unwrap_or("none"))]
    Postgres {
        /// The database.
        db: DbName,
        /// What was being done.
        op: &'static str,
        /// The SQLSTATE, as `23505`.
        code: Option<String>,
        /// The client's error.
        #[source]
        source: hive_db_core::postgres::Error,
    },
    /// A PostgreSQL migration step failed; its transaction was rolled back, so the database
    /// is at the version before it.
    #[error("database {db}: migrating {} to schema version {version} failed", target.display())]
    MigrationStep {
        /// The database.
        db: DbName,
        /// The server, as `postgres://user@host:port/db` (never a password).
        target: PathBuf,
        /// The version the step would have reached.
        version: usize,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A call that exists for one engine only, made on a database of the other: the
    /// fallback to direct connections and rusqlite connections are SQLite's.
    #[error("database {db}: {call} needs {needs}, and this database is on {actual}")]
    WrongEngine {
        /// The database.
        db: DbName,
        /// The call made.
        call: &'static str,
        /// The engine the call needs.
        needs: hive_db_core::Backend,
        /// The engine the database is on.
        actual: hive_db_core::Backend,
    },
    /// The connection pool of the legacy API was closed with `close_all`.
    #[error("database {db}: the legacy connection pool was closed")]
    PoolClosed {
        /// The database.
        db: DbName,
    },
    /// SQLite reported an error during a repository operation.
    #[error("database {db}: {op} failed")]
    Sqlite {
        /// The database.
        db: DbName,
        /// What was being done.
        op: &'static str,
        /// The error from SQLite.
        #[source]
        source: rusqlite::Error,
    },
    /// The component type is not in the library.
    #[error("database {db}: unknown component type {name:?}")]
    UnknownComponentType {
        /// The database.
        db: DbName,
        /// The type asked for.
        name: String,
    },
    /// The component type already has a default spec.
    #[error(
        "database {db}: component type {component_type:?} already has a default spec \
         ({existing:?}); use set_default to change it"
    )]
    DefaultExists {
        /// The database.
        db: DbName,
        /// The component type.
        component_type: String,
        /// `name vversion` of the current default.
        existing: String,
    },
    /// A spec with this type, name and version is in the library already.
    #[error("database {db}: component spec {component_type}/{name} v{version} exists already")]
    SpecExists {
        /// The database.
        db: DbName,
        /// The component type.
        component_type: String,
        /// The spec's name.
        name: String,
        /// The spec's version.
        version: String,
    },
    /// A record asked for does not exist.
    #[error("database {db}: no {what} {key:?}")]
    NotFound {
        /// The database.
        db: DbName,
        /// What kind of record.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// An argument the database layer refuses (an empty name, a path separator in a name, a
    /// bad subscription pattern).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What the argument is.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// JSON stored in or given to the database could not be encoded or decoded.
    #[error("database {db}: {what} is not valid JSON")]
    Json {
        /// The database.
        db: DbName,
        /// Which value.
        what: String,
        /// The error from serde_json.
        #[source]
        source: serde_json::Error,
    },
    /// A YAML component file could not be read as a component spec (malformed YAML, a field
    /// of the wrong type, a missing field, over the size, depth or alias limits).
    #[error("component file {path}: {reason}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What is wrong, from the YAML parser.
        reason: String,
    },
    /// Importing a component file failed; nothing of the import was written.
    #[error("component file {path}: import failed, nothing imported")]
    Import {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A file-system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a rusqlite error of a repository operation on `db`.
    pub(crate) fn sqlite(db: &DbName, op: &'static str, source: rusqlite::Error) -> Self {
        Self::Sqlite {
            db: db.clone(),
            op,
            source,
        }
    }

    /// Wraps a PostgreSQL error of a repository operation on `db`.
    #[cfg(feature = "postgres")]
    pub(crate) fn pg(db: &DbName, op: &'static str, source: hive_db_core::postgres::Error) -> Self {
        Self::Postgres {
            db: db.clone(),
            op,
            code: source.code().map(|c| c.code().to_owned()),
            source,
        }
    }

    /// True when the error is a unique constraint refusing a row (a duplicate id), on either
    /// engine: SQLite's `SQLITE_CONSTRAINT_UNIQUE` / `_PRIMARYKEY`, PostgreSQL's `23505`.
    pub fn is_unique_violation(&self) -> bool {
        // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE.
        if matches!(self.sqlite_code(), Some(1555 | 2067)) {
            return true;
        }
        #[cfg(feature = "postgres")]
        if let Self::Postgres { code: Some(c), .. }
        | Self::Core(hive_db_core::Error::Postgres { code: Some(c), .. }) = self
        {
            return c == "23505";
        }
        false
    }

    /// SQLite's extended result code, when the error came from SQLite.
    pub fn sqlite_code(&self) -> Option<i32> {
        match self {
            Self::Core(e) => e.sqlite_code(),
            Self::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => Some(e.extended_code),
            _ => None,
        }
    }
}
