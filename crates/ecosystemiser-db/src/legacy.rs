//! The old API, kept working as thin deprecated shims over the new one (see
//! `docs/MIGRATION.md` for each call's successor).
//!
//! A call that names a path other than the process database's gets the fallback for that
//! file (a private registry, bounded and counted like the process fallback), one per file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use hive_db_core::rusqlite::Connection;
use once_cell::sync::Lazy;

use crate::backend::{self, ECO_NAME, EcoConnection, EcoDb, Settings, ecosystemiser_db};
use crate::error::{Error, Result};
use crate::path::same_file;

/// Databases opened by path through the old API, so that repeated calls share one bound,
/// each with the identity of the file it opened.
static BY_PATH: Lazy<Mutex<Vec<Opened>>> = Lazy::new(Mutex::default);

/// A database the old API opened for a path.
struct Opened {
    path: PathBuf,
    /// `(st_dev, st_ino)` of the file when it was opened.
    file: Option<(u64, u64)>,
    db: EcoDb,
}

/// The identity of the file at `path` now, if there is one.
fn file_at(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The database for an old call: the process database for `None` or its own file, else one
/// of its own for the file.
fn db_at(path: Option<&Path>) -> Result<EcoDb> {
    let Some(path) = path else {
        return ecosystemiser_db().cloned();
    };
    if let Some(db) = backend::process_db_if_open().filter(|db| same_file(db.path(), path)) {
        return Ok(db.clone());
    }
    // The process database's own file, not opened yet: open it as the process database, so
    // that one file does not get two sets of connections.
    if crate::path::ecosystemiser_db_path().is_ok_and(|p| same_file(&p, path)) {
        return ecosystemiser_db().cloned();
    }
    let mut opened = BY_PATH.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(i) = opened.iter().position(|o| same_file(&o.path, path)) {
        // The old API opened the file at the path on every call: once that file was
        // deleted or replaced, the database opened for the one before is dropped here (its
        // connections would go on in the old file), and the path's file opened as new.
        if opened[i].file.is_some() && opened[i].file == file_at(path) {
            return Ok(opened[i].db.clone());
        }
        opened.swap_remove(i);
    }
    let mut settings = Settings::new(path);
    settings.db = hive_db_core::DbConfig::from_env()?;
    // The installed registry's pool, when it is for this very file; direct otherwise (the
    // name `ecosystemiser` may be registered there for another file).
    let shared_here = hive_db_core::global::get()
        .and_then(|r| r.handle(&ECO_NAME).ok())
        .is_some_and(|h| same_file(h.path(), path));
    let db = if shared_here {
        EcoDb::from_process(&settings)?
    } else {
        EcoDb::direct(&settings)?
    };
    opened.push(Opened {
        path: db.path().to_path_buf(),
        file: file_at(db.path()),
        db: db.clone(),
    });
    Ok(db)
}

/// A connection to the EcoSystemiser database, or to the file at `db_path`.
///
/// ```compile_fail
/// #![deny(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::get_db_connection(None);
/// }
/// ```
/// ```no_run
/// #![allow(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::get_db_connection(None);
/// }
/// ```
///
/// # Errors
///
/// Those of [`crate::ecosystemiser_db`] or [`EcoDb::direct`], and of [`EcoDb::connection`].
#[deprecated(
    since = "0.1.0",
    note = "use `ecosystemiser_db()?.connection()`, or `EcoDb::direct(&Settings::new(path))?.connection()` for another file"
)]
pub fn get_db_connection(db_path: Option<&Path>) -> Result<EcoConnection> {
    db_at(db_path)?.connection()
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction on the database at `db_path` (for callers
/// of the old `ecosystemiser_transaction(path)`).
///
/// ```compile_fail
/// #![deny(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::ecosystemiser_transaction_at(std::path::Path::new("e.db"), |_| {
///         Ok::<_, ecosystemiser_db::Error>(())
///     });
/// }
/// ```
/// ```no_run
/// #![allow(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::ecosystemiser_transaction_at(std::path::Path::new("e.db"), |_| {
///         Ok::<_, ecosystemiser_db::Error>(())
///     });
/// }
/// ```
///
/// # Errors
///
/// Those of opening the database and of [`EcoDb::transaction`].
#[deprecated(
    since = "0.1.0",
    note = "use `ecosystemiser_transaction(f)` for the process database, or `EcoDb::transaction` on a database opened for the file"
)]
pub fn ecosystemiser_transaction_at<T: Send, E: From<Error> + From<hive_db_core::Error> + Send>(
    db_path: &Path,
    f: impl FnOnce(&Connection) -> Result<T, E> + Send,
) -> Result<T, E> {
    db_at(Some(db_path))?.transaction_with(f)
}

/// True when the process database's backend answers a probe query.
///
/// ```compile_fail
/// #![deny(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::validate_hive_integration();
/// }
/// ```
/// ```no_run
/// #![allow(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::validate_hive_integration();
/// }
/// ```
#[deprecated(
    since = "0.1.0",
    note = "use `integration_status()`, which says which backend is in use and why"
)]
pub fn validate_hive_integration() -> bool {
    match backend::integration_status() {
        Ok(status) => status.probe.is_ok(),
        Err(e) => {
            tracing::warn!(error = %hive_db_core::error_chain(&e), "EcoSystemiser database unavailable");
            false
        }
    }
}

/// The old connection pool, now a view of the process database's backend: connections come
/// from the shared registry's pool or the fallback's private one, whichever the process
/// uses. `pool_size` is kept for the signature; the backend's own bound applies
/// ([`Settings::direct_max_connections`] or the registry's `max_size`).
///
/// ```compile_fail
/// #![deny(deprecated)]
/// fn main() {
///     let pool = ecosystemiser_db::ConnectionPool::new(5);
///     let _ = pool.get_connection();
/// }
/// ```
/// ```no_run
/// #![allow(deprecated)]
/// fn main() {
///     let pool = ecosystemiser_db::ConnectionPool::new(5);
///     let _ = pool.get_connection();
/// }
/// ```
#[deprecated(
    since = "0.1.0",
    note = "use `ecosystemiser_db()?.connection()` (or `read` / `transaction`); connections go back on drop"
)]
#[derive(Debug)]
pub struct ConnectionPool {
    pool_size: usize,
    closed: AtomicBool,
}

#[expect(deprecated, reason = "the shim's own implementation")]
impl ConnectionPool {
    /// A pool handle; nothing is opened until the first [`ConnectionPool::get_connection`].
    #[deprecated(since = "0.1.0", note = "use `ecosystemiser_db()`")]
    pub fn new(pool_size: usize) -> Self {
        Self {
            pool_size,
            closed: AtomicBool::new(false),
        }
    }

    /// The size it was made with.
    #[deprecated(since = "0.1.0", note = "see `EcoDb::stats` for the backend's bound")]
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// A connection of the process database.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`ConnectionPool::close_all`]; those of
    /// [`EcoDb::connection`].
    #[deprecated(since = "0.1.0", note = "use `ecosystemiser_db()?.connection()`")]
    pub fn get_connection(&self) -> Result<EcoConnection> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::PoolClosed {
                db: ECO_NAME.clone(),
            });
        }
        ecosystemiser_db()?.connection()
    }

    /// Gives a connection back (the same as dropping it).
    #[deprecated(since = "0.1.0", note = "drop the connection")]
    pub fn return_connection(&self, conn: EcoConnection) {
        drop(conn);
    }

    /// Refuses further connections from this handle; connections already out go back when
    /// dropped. The process database itself stays open for its other users.
    #[deprecated(
        since = "0.1.0",
        note = "drop the connections; close the registry to close the pool"
    )]
    pub fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// The process-wide legacy pool (size 5, the old default).
///
/// ```compile_fail
/// #![deny(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::get_connection_pool().get_connection();
/// }
/// ```
/// ```no_run
/// #![allow(deprecated)]
/// fn main() {
///     let _ = ecosystemiser_db::get_connection_pool().get_connection();
/// }
/// ```
#[deprecated(since = "0.1.0", note = "use `ecosystemiser_db()`")]
#[expect(deprecated, reason = "the shim's own implementation")]
pub fn get_connection_pool() -> &'static ConnectionPool {
    static POOL: Lazy<ConnectionPool> = Lazy::new(|| ConnectionPool::new(5));
    &POOL
}
