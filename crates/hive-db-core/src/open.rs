//! Opening SQLite files: path checks, open flags, the one-time WAL bootstrap, and the
//! per-connection PRAGMAs every connection gets from one function. This is the only file that
//! opens a SQLite connection.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use once_cell::sync::Lazy;
use rusqlite::config::DbConfig as SqliteConfig;
use rusqlite::{Connection, OpenFlags};

use crate::config::DbConfig;
use crate::error::{Error, OpenCause, Result, classify, extended_code};
use crate::name::DbName;
use crate::sqlite_build::SqliteBuild;
use crate::wal::{JOURNAL_SIZE_LIMIT, wal_hook};

/// Flags for every connection: read-write, no `CREATE` (files are made by
/// [`prepare_database`] with safe permissions), no `URI` (a path is only ever a path), no
/// following a symbolic link, extended result codes.
fn open_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_EXRESCODE
}

/// Opens `path` with the registry's flags and nothing else: the one place a connection is
/// opened. Callers configure it with [`configure_connection`] next.
pub(crate) fn open_file(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, open_flags())
}

/// Applies the per-connection PRAGMAs of `config` to `conn`. Every connection the registry
/// pools, and every plain connection opened with [`open_connection`], goes through this one
/// function, so their settings cannot drift apart. (Public for pools of other crates that
/// must carry the same settings, such as the benchmark's r2d2 baseline.)
///
/// `busy_timeout` comes first, so that nothing after it can fail on a lock without waiting.
///
/// # Errors
///
/// The rusqlite error of the first PRAGMA that fails.
pub fn configure_connection(conn: &Connection, config: &DbConfig) -> rusqlite::Result<()> {
    // For a caller that did not validate: past the largest, rusqlite panics.
    conn.busy_timeout(config.busy_timeout.min(crate::config::MAX_BUSY_TIMEOUT))?;
    // No `writable_schema` edits of `sqlite_schema` and no other file-corrupting SQL.
    conn.set_db_config(SqliteConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.wal_hook(Some(wal_hook));
    // `write` keeps five statements of its own in the cache (BEGIN, COMMIT and three for
    // savepoints); leave callers room beyond rusqlite's default of 16.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // `cache_size` is negative: KiB, not pages (SQLite's documented convention).
    let cache = -i64::from(config.cache_size_kib);
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};\n\
         PRAGMA cache_size = {cache};\n\
         PRAGMA foreign_keys = {};\n\
         PRAGMA temp_store = MEMORY;\n\
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};",
        config.synchronous.as_sql(),
        if config.foreign_keys { "ON" } else { "OFF" },
    ))
}

/// How the process's SQLite was compiled, read once per process (from an in-memory
/// connection's `PRAGMA compile_options`); the first call warns once when it differs from the
/// build hive-db is tested with.
pub(crate) fn sqlite_build() -> &'static SqliteBuild {
    static BUILD: Lazy<SqliteBuild> = Lazy::new(|| {
        let read = || -> rusqlite::Result<SqliteBuild> {
            let conn = Connection::open_in_memory()?;
            let version: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
            let mut stmt = conn.prepare("PRAGMA compile_options")?;
            let options = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(SqliteBuild::from_compile_options(
                version,
                options.iter().map(String::as_str),
            ))
        };
        let build = read().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read SQLite's compile options");
            SqliteBuild::from_compile_options(rusqlite::version().to_owned(), [])
        });
        for deviation in build.deviations() {
            tracing::warn!(sqlite = %build.version, "{deviation}");
        }
        build
    });
    &BUILD
}

/// Prepared statements each connection keeps cached.
const STATEMENT_CACHE: usize = 64;

/// Opens one connection to a database file that [`prepare_database`] has prepared, with the
/// registry's flags and [`configure_connection`]'s PRAGMAs: for code that must look at a file
/// without registering it (ecosystemiser-db's check before anything is written, another
/// process in a test, the benchmark's connect-per-operation baseline).
///
/// Not for a file a registry of this process has open: the connection is opened by path,
/// unchecked against the file the registry has, so a file renamed over the path would be
/// read with the registered file's `-wal` (and, when this connection is the other file's
/// last, get that `-wal`'s commits copied into it as it closes). Use the registry's
/// connections for such a file.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for settings `register` refuses; [`Error::Open`] for permanent
/// causes (not a database, permission, read-only, missing), [`Error::Sqlite`] for anything
/// else; all name `db`.
pub fn open_connection(db: &DbName, path: &Path, config: &DbConfig) -> Result<Connection> {
    // Settings `register` refuses would panic here (a busy timeout past SQLite's limit).
    config.validate(db)?;
    let conn = open_file(path).map_err(|e| classify_open(db, path, "open", e))?;
    configure_connection(&conn, config).map_err(|e| classify_open(db, path, "configure", e))?;
    Ok(conn)
}

/// [`classify`], and for SQLite's "cannot open" the cause the operating system gives: when it
/// refuses this process the database file, its `-wal` or its `-shm` (or a folder on the way),
/// the error is [`OpenCause::PermissionDenied`], with the refusal as its source. SQLite itself
/// reports only that it could not open a file.
pub(crate) fn classify_open(
    db: &DbName,
    path: &Path,
    op: &'static str,
    e: rusqlite::Error,
) -> Error {
    let code = extended_code(&e);
    if code.is_some_and(|c| c & 0xff == rusqlite::ffi::SQLITE_CANTOPEN)
        && let Some(refusal) = refused_by_os(path)
    {
        return Error::Open {
            db: db.clone(),
            path: path.to_path_buf(),
            cause: OpenCause::PermissionDenied,
            code,
            source: Some(Box::new(refusal)),
        };
    }
    classify(db, path, op, e)
}

/// The operating system's refusal to let this process read and write the database at `path`,
/// its `-wal` or its `-shm` (companions that do not exist are skipped), if it refuses one. Asks
/// with `faccessat` and opens nothing: closing a descriptor of the file would drop the locks
/// this process's other connections hold on it. (Before Linux 5.8, which has no `faccessat2`,
/// the question fails and SQLite's own cause stands.)
fn refused_by_os(path: &Path) -> Option<io::Error> {
    use rustix::fs::{Access, AtFlags, CWD, accessat};
    ["", "-wal", "-shm"].into_iter().find_map(|suffix| {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let refusal = accessat(
            CWD,
            file.as_os_str(),
            Access::READ_OK | Access::WRITE_OK,
            AtFlags::EACCESS | AtFlags::SYMLINK_NOFOLLOW,
        )
        .err()
        .map(io::Error::from)
        .filter(|e| e.kind() == io::ErrorKind::PermissionDenied)?;
        Some(if suffix.is_empty() {
            refusal
        } else {
            // Name the companion: the error names only the database.
            io::Error::new(
                refusal.kind(),
                format!("{}: {refusal}", Path::new(&file).display()),
            )
        })
    })
}

/// A file's identity, the same through every path that reaches it (hard links, `..`, linked
/// folders, mounts): its device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file at `path`, not following a final symbolic link.
    pub(crate) fn of(path: &Path) -> io::Result<Self> {
        let meta = fs::symlink_metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// What [`prepare_database`] found out about a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreparedDatabase {
    /// The canonical path of the file (in WAL mode: anything else is an error).
    pub path: PathBuf,
    /// The file's identity, which the pool compares with the file at `path` later.
    pub(crate) file_id: FileId,
}

/// Checks `path`, creates the file when `config.create_if_missing` allows it (0600, in a
/// 0700 folder), and switches the database to WAL once on one connection, checking the mode
/// SQLite reports back. Call it before any other connection to the file is opened.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for settings `register` refuses; [`Error::Open`] when the path
/// is a folder, a symbolic link, a FIFO, socket or device,
/// missing (and may not be created), not a database, read-only (also when its folder is),
/// not permitted, or replaced while it was being opened ([`OpenCause::FileChanged`]);
/// [`Error::JournalMode`] when SQLite will not use WAL; [`Error::Io`] when the
/// file or folder cannot be created.
pub fn prepare_database(db: &DbName, path: &Path, config: &DbConfig) -> Result<PreparedDatabase> {
    config.validate(db)?;
    let open_err = |cause, source: Option<Box<dyn std::error::Error + Send + Sync>>| Error::Open {
        db: db.clone(),
        path: path.to_path_buf(),
        cause,
        code: None,
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(open_err(OpenCause::Symlink, None));
        }
        Ok(meta) if meta.is_dir() => return Err(open_err(OpenCause::IsDirectory, None)),
        // A FIFO, socket or device: SQLite would fail on it later, or (a device) accept it
        // and make `-wal` and `-shm` next to it.
        Ok(meta) if !meta.is_file() => return Err(open_err(OpenCause::NotAFile, None)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !config.create_if_missing {
                return Err(open_err(OpenCause::Missing, Some(Box::new(e))));
            }
            create_file(db, path)?;
        }
        Err(e) => return Err(io_open_error(db, path, e)),
    }
    let canonical = fs::canonicalize(path).map_err(|e| io_open_error(db, path, e))?;
    let file_id = FileId::of(&canonical).map_err(|e| io_open_error(db, path, e))?;

    let conn = open_file(&canonical).map_err(|e| classify_open(db, &canonical, "open", e))?;
    // Looked at again once the file is open and before anything reads it: a file renamed
    // over the path since the identity was taken is not prepared under the other's
    // identity (see `DbInfo::open_registered`).
    match FileId::of(&canonical) {
        Ok(id) if id == file_id => {}
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_open_error(db, path, e));
        }
        _ => {
            return Err(Error::Open {
                db: db.clone(),
                path: canonical,
                cause: OpenCause::FileChanged,
                code: None,
                source: None,
            });
        }
    }
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| classify_open(db, &canonical, "set busy_timeout", e))?;
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| classify_open(db, &canonical, "check read-only", e))?
    {
        return Err(Error::Open {
            db: db.clone(),
            path: canonical,
            cause: OpenCause::ReadOnly,
            code: None,
            source: None,
        });
    }
    let journal_mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| classify_open(db, &canonical, "set journal_mode", e))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(Error::JournalMode {
            db: db.clone(),
            actual: journal_mode,
        });
    }
    configure_connection(&conn, config)
        .map_err(|e| classify_open(db, &canonical, "configure", e))?;
    // Read the schema once, so a damaged file fails here and not on first use.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| classify_open(db, &canonical, "read schema", e))?;
    Ok(PreparedDatabase {
        path: canonical,
        file_id,
    })
}

/// Resolves `path` to the absolute form the registry compares names by, without creating
/// anything: the canonical folder joined with the file name. Through folders that do not
/// exist yet it resolves as the kernel will once they are made: `missing/../x.db` is `x.db`.
pub(crate) fn resolve_path(db: &DbName, path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| io_open_error(db, path, e))?;
    let absolute = through_missing_folders(&absolute);
    if let Ok(canonical) = fs::canonicalize(&absolute) {
        // Keep a symlink's own path: it is refused later, by name.
        if !fs::symlink_metadata(&absolute).is_ok_and(|m| m.file_type().is_symlink()) {
            return Ok(canonical);
        }
    }
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(file)) => Ok(fs::canonicalize(parent)
            .map(|p| p.join(file))
            .unwrap_or(absolute.clone())),
        _ => Ok(absolute),
    }
}

/// `path` with its longest existing prefix made canonical and the rest resolved by name: a
/// `..` after a folder that does not exist cancels it, as it will once the folder is made.
fn through_missing_folders(path: &Path) -> PathBuf {
    let Some((base, rest)) = path.ancestors().skip(1).find_map(|a| {
        let rest = path.strip_prefix(a).ok()?;
        fs::canonicalize(a).ok().map(|base| (base, rest))
    }) else {
        return path.to_path_buf();
    };
    let mut resolved = base;
    for part in rest.components() {
        match part {
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            std::path::Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    resolved
}

fn create_file(db: &DbName, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| Error::Io {
                db: db.clone(),
                op: "create folder",
                path: parent.to_path_buf(),
                source,
            })?;
    }
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Another process made it between our look and our create: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Io {
            db: db.clone(),
            op: "create file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn io_open_error(db: &DbName, path: &Path, e: io::Error) -> Error {
    let cause = match e.kind() {
        io::ErrorKind::NotFound => OpenCause::Missing,
        io::ErrorKind::PermissionDenied => OpenCause::PermissionDenied,
        io::ErrorKind::IsADirectory => OpenCause::IsDirectory,
        _ => OpenCause::CannotOpen,
    };
    Error::Open {
        db: db.clone(),
        path: path.to_path_buf(),
        cause,
        code: None,
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pragma_i64(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        conn.pragma_query_value(None, name, |r| r.get(0))
    }

    /// Bug caught: the public `prepare_database` and `open_connection` panicked (in
    /// rusqlite's `busy_timeout`, "too big") on settings `register` refuses by name, and
    /// `configure_connection` with them too.
    #[test]
    fn settings_register_refuses_are_refused_here_too() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = DbName::new("huge")?;
        let path = dir.path().join("huge.db");
        let huge = DbConfig {
            create_if_missing: true,
            busy_timeout: std::time::Duration::from_secs(30 * 86_400),
            ..DbConfig::default()
        };
        assert!(matches!(
            prepare_database(&db, &path, &huge),
            Err(Error::InvalidConfig { .. })
        ));
        let ok = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        prepare_database(&db, &path, &ok)?;
        assert!(matches!(
            open_connection(&db, &path, &huge),
            Err(Error::InvalidConfig { .. })
        ));
        let conn = open_connection(&db, &path, &ok)?;
        configure_connection(&conn, &huge)?;
        assert_eq!(pragma_i64(&conn, "busy_timeout")?, i64::from(i32::MAX));
        Ok(())
    }

    /// Bug caught: fallback and pooled connections getting different settings,
    /// or cache_size written as pages instead of KiB.
    #[test]
    fn configure_applies_every_setting() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = DbName::new("cfg")?;
        let config = DbConfig {
            create_if_missing: true,
            cache_size_kib: 2048,
            busy_timeout: std::time::Duration::from_millis(1234),
            ..DbConfig::default()
        };
        let prepared = prepare_database(&db, &dir.path().join("a.db"), &config)?;
        let conn = open_connection(&db, &prepared.path, &config)?;
        assert_eq!(pragma_i64(&conn, "cache_size")?, -2048);
        assert_eq!(pragma_i64(&conn, "synchronous")?, 1); // NORMAL
        assert_eq!(pragma_i64(&conn, "foreign_keys")?, 1);
        assert_eq!(pragma_i64(&conn, "temp_store")?, 2); // MEMORY
        assert_eq!(pragma_i64(&conn, "busy_timeout")?, 1234);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        assert_eq!(mode, "wal");
        Ok(())
    }

    /// Bug caught: files created world-readable, or created when the config says not to.
    #[test]
    fn creates_files_private_and_only_when_asked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = DbName::new("perm")?;
        let path = dir.path().join("sub").join("p.db");
        let refused = prepare_database(&db, &path, &DbConfig::default());
        assert!(matches!(
            refused,
            Err(Error::Open {
                cause: OpenCause::Missing,
                ..
            })
        ));
        assert!(!path.exists());
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        prepare_database(&db, &path, &config)?;
        let file_mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        let dir_mode = fs::metadata(dir.path().join("sub"))?.permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(dir_mode, 0o700);
        Ok(())
    }

    /// Bug caught: following a symlink, or treating a text file or folder as a database.
    #[test]
    fn refuses_symlinks_folders_and_non_databases() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = DbName::new("bad")?;
        let config = DbConfig::default();
        let real = dir.path().join("real.db");
        prepare_database(
            &db,
            &real,
            &DbConfig {
                create_if_missing: true,
                ..DbConfig::default()
            },
        )?;
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link)?;
        let text = dir.path().join("notes.txt");
        fs::write(
            &text,
            "this is not a database, it is a longer text file than a header",
        )?;
        let cases = [
            (link, OpenCause::Symlink),
            (dir.path().to_path_buf(), OpenCause::IsDirectory),
            (text, OpenCause::NotADatabase),
        ];
        for (path, want) in cases {
            match prepare_database(&db, &path, &config) {
                Err(Error::Open {
                    cause, db: ref d, ..
                }) if cause == want && d == &db => {}
                other => panic!("{}: expected {want:?}, got {other:?}", path.display()),
            }
        }
        Ok(())
    }
}
