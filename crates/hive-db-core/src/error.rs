//! The one error type of hive-db-core (every variant about a database names it), the
//! classification of SQLite's result codes, and error chains as one line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::ffi;

use crate::name::{DbName, NameError};

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a database file could not be opened. A permanent cause: waiting does not fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum OpenCause {
    /// The file does not exist and `create_if_missing` is off.
    Missing,
    /// The path names a folder.
    IsDirectory,
    /// The path's last component is a symbolic link (refused, like `O_NOFOLLOW`).
    Symlink,
    /// The file exists but is not a SQLite database.
    NotADatabase,
    /// The operating system refused access.
    PermissionDenied,
    /// The file can only be opened read-only.
    ReadOnly,
    /// A part of the path is not a folder, or SQLite could not open the file.
    CannotOpen,
    /// The path names a FIFO, a socket or a device, not a regular file.
    NotAFile,
    /// The file at the path is no longer the one registered: it was deleted, renamed or
    /// replaced while the pool was open, or while `register` was opening it.
    FileChanged,
}

impl fmt::Display for OpenCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "the file does not exist and create_if_missing is off",
            Self::IsDirectory => "the path is a folder",
            Self::Symlink => "the path is a symbolic link",
            Self::NotADatabase => "the file is not a SQLite database",
            Self::PermissionDenied => "permission denied",
            Self::ReadOnly => "the file is read-only",
            Self::CannotOpen => "the file cannot be opened",
            Self::NotAFile => "the path is not a regular file (a FIFO, socket or device)",
            Self::FileChanged => {
                "the file at the path is no longer the one registered (deleted, renamed or replaced)"
            }
        })
    }
}

/// A call that could only wait for a closure its own thread is running (see
/// [`Error::Reentrant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Reentry {
    /// A `write` inside a `write` of the same database: the outer one holds its writer lane.
    Write,
    /// A connection, when the thread's `read` and `write` closures hold every connection of
    /// the pool.
    Connection,
}

impl fmt::Display for Reentry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Write => {
                "write called from inside a write closure of this database on the same \
                 thread, which holds its writer lane"
            }
            Self::Connection => {
                "a connection asked for from inside read or write closures of this database \
                 on the same thread, which hold all of its connections"
            }
        })
    }
}

/// Why a PostgreSQL server refused the registry ([`Error::Refused`]): causes that waiting
/// does not fix, so a checkout or a `register` fails at once instead of at its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Refusal {
    /// The server refused the login: a wrong password, an unknown role, or no `pg_hba.conf`
    /// line that lets it in (SQLSTATE 28P01, 28000).
    Authentication,
    /// No `pg_hba.conf` line lets this connection in without TLS (SQLSTATE 28000, "no
    /// encryption"): the server accepts this user only over TLS, or not from this host at
    /// all. The registry connects without TLS today: connect over a trusted network or
    /// through a TLS-terminating proxy, or add a line for it.
    TlsRequired,
    /// The database does not exist on the server (SQLSTATE 3D000).
    NoSuchDatabase,
    /// The role may not connect to this database: it lacks the `CONNECT` privilege on it
    /// (SQLSTATE 42501 at connect, "permission denied for database").
    NoConnectPrivilege,
    /// The server registered as the primary cannot take writes: a standby (in recovery), or
    /// a server with `default_transaction_read_only` on.
    NotWritable,
    /// The server registered as a read replica is not a standby.
    NotAReplica,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Authentication => "authentication failed",
            Self::TlsRequired => {
                "no pg_hba.conf line lets this connection in without TLS (the server may \
                 require TLS, which the registry does not speak yet)"
            }
            Self::NoSuchDatabase => "the database does not exist on the server",
            Self::NoConnectPrivilege => {
                "the role may not connect to this database (no CONNECT privilege on it)"
            }
            Self::NotWritable => {
                "registered as the primary, but the server cannot take writes (a standby, or \
                 default_transaction_read_only is on)"
            }
            Self::NotAReplica => "registered as a read replica, but the server is not a standby",
        })
    }
}

/// Everything that can go wrong in hive-db-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database name outside `[A-Za-z0-9_-]{1,64}`.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A configuration value a database cannot run with.
    #[error("database {db}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The database being registered.
        db: DbName,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable that does not parse.
    #[error("environment variable {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The name is registered already, for another file.
    #[error("database {db}: already registered for {existing}, not {requested}")]
    NameConflict {
        /// The database.
        db: DbName,
        /// The file it is registered for.
        existing: PathBuf,
        /// The file asked for.
        requested: PathBuf,
    },
    /// The file is registered already, under another name.
    #[error("database {db}: {path} is registered already as {registered_as}")]
    PathInUse {
        /// The database being registered.
        db: DbName,
        /// The file.
        path: PathBuf,
        /// The name it is registered under.
        registered_as: DbName,
    },
    /// No database of that name is registered.
    #[error("database {db} is not registered")]
    UnknownDatabase {
        /// The database.
        db: DbName,
    },
    /// The database was closed; it takes no new checkouts until registered again.
    #[error("database {db} is closed")]
    Closed {
        /// The database.
        db: DbName,
    },
    /// The database file cannot be opened, for a cause that waiting does not fix.
    #[error("database {db}: cannot open {path}: {cause}")]
    Open {
        /// The database.
        db: DbName,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: OpenCause,
        /// SQLite's extended result code, when SQLite gave one.
        code: Option<i32>,
        /// The underlying error, when there is one to keep.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// No connection became free within the timeout.
    #[error(
        "database {db}: no connection within {waited:?} (total {total}, active {active}, \
         idle {idle}, waiting {waiting}){}",
        last_error.as_deref().map(|e| format!("; last connect error: {e}")).unwrap_or_default()
    )]
    Timeout {
        /// The database.
        db: DbName,
        /// How long the caller waited.
        waited: Duration,
        /// Connections open.
        total: u32,
        /// Connections checked out.
        active: u32,
        /// Connections idle in the pool.
        idle: u32,
        /// Callers waiting for a connection, this one included.
        waiting: u32,
        /// The last error seen while opening a connection, if any.
        last_error: Option<String>,
    },
    /// The writer lane did not come round within the timeout.
    #[error("database {db}: writer lane not free within {waited:?} ({queued} writers queued)")]
    WriterLaneTimeout {
        /// The database.
        db: DbName,
        /// How long the caller waited.
        waited: Duration,
        /// Writers queued when the wait ended.
        queued: usize,
    },
    /// A call made from inside a `read` or `write` closure of the same database, on the same
    /// thread, that could only wait for that closure to end: a `write` inside a `write`
    /// (its writer lane), or a connection when the closures hold every connection of the pool.
    #[error("database {db}: {call}; it could only wait for itself")]
    Reentrant {
        /// The database.
        db: DbName,
        /// Which call, and what the thread's closures hold that it would wait for.
        call: Reentry,
    },
    /// SQLite reported an error.
    #[error("database {db}: {op} failed (sqlite code {})", code.map_or_else(|| "none".to_owned(), |c| c.to_string()))]
    Sqlite {
        /// The database.
        db: DbName,
        /// What was being done.
        op: &'static str,
        /// SQLite's extended result code.
        code: Option<i32>,
        /// The error from rusqlite.
        #[source]
        source: rusqlite::Error,
    },
    /// The write transaction this `write` shared with other writers did not commit, so none
    /// of their work did. The writer whose statement or closure broke it has the error that
    /// did; the others get this.
    #[error("database {db}: the shared write transaction failed at {op}{}: {reason}",
        code.map(|c| format!(" (sqlite code {c})")).unwrap_or_default())]
    BatchFailed {
        /// The database.
        db: DbName,
        /// What failed: `"commit"`, or the end of the transaction under another writer.
        op: &'static str,
        /// SQLite's extended result code, when SQLite reported the failure.
        code: Option<i32>,
        /// What happened, as SQLite or the registry said it.
        reason: String,
    },
    /// SQLite would not switch the database to WAL.
    #[error("database {db}: journal mode is {actual:?}, WAL was asked for")]
    JournalMode {
        /// The database.
        db: DbName,
        /// The mode SQLite reported.
        actual: String,
    },
    /// Opening a connection panicked; the pool slot was freed.
    #[error("database {db}: opening a connection panicked: {message}")]
    ConnectPanicked {
        /// The database.
        db: DbName,
        /// The panic's message.
        message: String,
    },
    /// A file-system operation failed.
    #[error("database {db}: {op} {path}")]
    Io {
        /// The database.
        db: DbName,
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: std::io::Error,
    },
    /// The database runs on another engine than the call is for: a SQLite call on a
    /// PostgreSQL database, or the other way round.
    #[error("database {db} is a {actual} database; {call} is for {expected} databases")]
    WrongBackend {
        /// The database.
        db: DbName,
        /// The call made.
        call: &'static str,
        /// The engine the call is for.
        expected: crate::backend::Backend,
        /// The engine the database runs on.
        actual: crate::backend::Backend,
    },
    /// A PostgreSQL connection string (URL or `key=value` pairs) that does not parse. The
    /// reason never quotes the string (it may hold a password).
    #[error("database {db}: invalid PostgreSQL connection string: {reason}")]
    InvalidUrl {
        /// The database being registered.
        db: DbName,
        /// What is wrong.
        reason: String,
    },
    /// A PostgreSQL error: connecting, or a statement of a `read` or `write`. The server's
    /// SQLSTATE is in `code` when it sent one.
    #[cfg(feature = "postgres")]
    #[error("database {db}: {op} failed (sqlstate {})", code.as_deref().unwrap_or("none"))]
    Postgres {
        /// The database.
        db: DbName,
        /// What was being done.
        op: &'static str,
        /// The SQLSTATE, as `40001`.
        code: Option<String>,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// A PostgreSQL `write` whose transaction the server failed for a serialization failure
    /// or a deadlock (SQLSTATE 40001, 40P01) on every one of its `attempts`.
    #[cfg(feature = "postgres")]
    #[error("database {db}: write gave up after {attempts} attempts (sqlstate {code})")]
    WriteConflict {
        /// The database.
        db: DbName,
        /// How many times the transaction ran.
        attempts: u32,
        /// The last attempt's SQLSTATE.
        code: String,
        /// The last attempt's error.
        #[source]
        source: postgres::Error,
    },
    /// A PostgreSQL server refused the registry for a reason that waiting does not fix.
    #[error("database {db}: the server at {} refused: {cause}{}", target.display(), code.as_deref().map(|c| format!(" (sqlstate {c})")).unwrap_or_default())]
    Refused {
        /// The database.
        db: DbName,
        /// The server, as `postgres://user@host:port/db` (never a password).
        target: PathBuf,
        /// Why.
        cause: Refusal,
        /// The SQLSTATE, when the server sent one.
        code: Option<String>,
        /// The server's or the client's own words.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An async call found its database's queue full: that many calls wait already for a
    /// reader or writer thread of the database (cargo feature `async`).
    #[error("database {db}: the async {queue} queue is full ({capacity} calls waiting)")]
    QueueFull {
        /// The database.
        db: DbName,
        /// Which queue: `"read"` or `"write"`.
        queue: &'static str,
        /// How many calls it holds.
        capacity: usize,
    },
    /// A closure given to an async call panicked; its work was rolled back, and the
    /// database's threads carry on (cargo feature `async`). Also the answer of a call whose
    /// reply was lost to a panic in the caller's own code on the database's thread outside
    /// the closure (a value's drop, an error conversion, a waker); `message` then says so.
    #[error("database {db}: the {op} closure panicked: {message}")]
    Panicked {
        /// The database.
        db: DbName,
        /// `"read"` or `"write"`.
        op: &'static str,
        /// The panic's message, when it was a string.
        message: String,
    },
    /// `global::install` was called twice.
    #[error("a global registry is installed already")]
    AlreadyInstalled,
}

impl Error {
    /// The database the error is about, when it is about one.
    pub fn db(&self) -> Option<&DbName> {
        match self {
            Self::InvalidName { .. } | Self::InvalidEnv { .. } | Self::AlreadyInstalled => None,
            Self::InvalidConfig { db, .. }
            | Self::NameConflict { db, .. }
            | Self::PathInUse { db, .. }
            | Self::UnknownDatabase { db }
            | Self::Closed { db }
            | Self::Open { db, .. }
            | Self::Timeout { db, .. }
            | Self::WriterLaneTimeout { db, .. }
            | Self::Reentrant { db, .. }
            | Self::Sqlite { db, .. }
            | Self::BatchFailed { db, .. }
            | Self::JournalMode { db, .. }
            | Self::ConnectPanicked { db, .. }
            | Self::Io { db, .. }
            | Self::WrongBackend { db, .. }
            | Self::InvalidUrl { db, .. }
            | Self::Refused { db, .. }
            | Self::QueueFull { db, .. }
            | Self::Panicked { db, .. } => Some(db),
            #[cfg(feature = "postgres")]
            Self::Postgres { db, .. } | Self::WriteConflict { db, .. } => Some(db),
        }
    }

    /// SQLite's extended result code, when the error came from SQLite.
    pub fn sqlite_code(&self) -> Option<i32> {
        match self {
            Self::Sqlite { code, .. }
            | Self::Open { code, .. }
            | Self::BatchFailed { code, .. } => *code,
            _ => None,
        }
    }

    /// True when SQLite reported the database busy or locked.
    pub fn is_busy(&self) -> bool {
        self.sqlite_code().is_some_and(is_busy_code)
    }

    /// Wraps a rusqlite error with the database and the operation.
    pub(crate) fn sqlite(db: &DbName, op: &'static str, source: rusqlite::Error) -> Self {
        Self::Sqlite {
            db: db.clone(),
            op,
            code: extended_code(&source),
            source,
        }
    }
}

/// SQLite's extended result code carried by a rusqlite error, if any.
pub(crate) fn extended_code(err: &rusqlite::Error) -> Option<i32> {
    match err {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
        // A statement that does not prepare (no such column, a syntax error) comes as this.
        rusqlite::Error::SqlInputError { error, .. } => Some(error.extended_code),
        _ => None,
    }
}

/// Whether SQLite's `code` says the file is damaged or not a database.
pub(crate) fn is_corruption_code(code: i32) -> bool {
    let primary = code & 0xff;
    primary == ffi::SQLITE_CORRUPT || primary == ffi::SQLITE_NOTADB
}

pub(crate) fn is_busy_code(code: i32) -> bool {
    let primary = code & 0xff;
    primary == ffi::SQLITE_BUSY || primary == ffi::SQLITE_LOCKED
}

/// The permanent cause behind a SQLite error, if it is one that waiting does not fix.
pub(crate) fn permanent_cause(e: &rusqlite::Error) -> Option<OpenCause> {
    let code = extended_code(e)?;
    match code & 0xff {
        ffi::SQLITE_NOTADB | ffi::SQLITE_CORRUPT => Some(OpenCause::NotADatabase),
        ffi::SQLITE_CANTOPEN => Some(OpenCause::CannotOpen),
        ffi::SQLITE_READONLY => Some(OpenCause::ReadOnly),
        ffi::SQLITE_PERM | ffi::SQLITE_AUTH => Some(OpenCause::PermissionDenied),
        _ => None,
    }
}

/// Sorts a rusqlite error met while opening `path` into a permanent [`Error::Open`] or a
/// plain [`Error::Sqlite`].
pub(crate) fn classify(db: &DbName, path: &Path, op: &'static str, e: rusqlite::Error) -> Error {
    match permanent_cause(&e) {
        Some(cause) => Error::Open {
            db: db.clone(),
            path: path.to_path_buf(),
            cause,
            code: extended_code(&e),
            source: Some(Box::new(e)),
        },
        None => Error::sqlite(db, op, e),
    }
}

/// `err` and its sources on one line, joined with `: `, as anyhow's `{:#}` prints them: for
/// logs and reports that keep an error as text. The one such function in the workspace;
/// ecosystemiser-db uses it too.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a busy or locked database (in any extended form) not recognised, so
    /// `busy_errors` and health's "writes blocked" miss it; or another code taken for one.
    #[test]
    fn busy_and_locked_codes_are_recognised_in_every_form() {
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED, 261, 517, 262] {
            assert!(is_busy_code(code), "{code}");
        }
        for code in [ffi::SQLITE_ERROR, ffi::SQLITE_CORRUPT, ffi::SQLITE_READONLY] {
            assert!(!is_busy_code(code), "{code}");
        }
    }

    /// Bug caught: an invalid name printed twice through `{:#}`, or a chain that repeats a
    /// message.
    #[test]
    fn an_invalid_name_prints_once() {
        let err = Error::from(DbName::new("a/b").expect_err("refused"));
        let chain = error_chain(&err);
        assert_eq!(chain.matches("invalid database name").count(), 1, "{chain}");
        assert!(err.db().is_none());
    }
}
