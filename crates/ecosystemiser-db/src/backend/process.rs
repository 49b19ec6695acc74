//! The process's EcoSystemiser database, opened once on first use, and the functions that
//! use it.

use hive_db_core::rusqlite::{self, Connection};
use once_cell::sync::OnceCell;

use super::{EcoConnection, EcoDb, IntegrationStatus, Settings};
use crate::error::Result;

static PROCESS_DB: OnceCell<EcoDb> = OnceCell::new();

/// The process's EcoSystemiser database, opened on first use with [`Settings::from_env`] and
/// [`EcoDb::from_process`]: the installed registry's pool when one is installed by then,
/// else direct connections. The choice is made once per process; a failed first open is
/// not remembered, so a later call tries again.
///
/// # Errors
///
/// Those of [`Settings::from_env`] and [`EcoDb::from_process`].
pub fn ecosystemiser_db() -> Result<&'static EcoDb> {
    PROCESS_DB.get_or_try_init(|| EcoDb::from_process(&Settings::from_env()?))
}

/// The process database if it has been opened, without opening it.
pub(crate) fn process_db_if_open() -> Option<&'static EcoDb> {
    PROCESS_DB.get()
}

/// A connection of the process's database ([`ecosystemiser_db`], [`EcoDb::connection`]).
///
/// # Errors
///
/// Those of [`ecosystemiser_db`] and [`EcoDb::connection`].
#[track_caller]
pub fn ecosystemiser_connection() -> Result<EcoConnection> {
    ecosystemiser_db()?.connection()
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction of the process's database
/// ([`ecosystemiser_db`], [`EcoDb::transaction`]; for a closure of another error type,
/// `ecosystemiser_db()?.transaction_with(f)`).
///
/// # Errors
///
/// Those of [`ecosystemiser_db`] and of [`EcoDb::transaction`].
#[track_caller]
pub fn ecosystemiser_transaction<T: Send>(
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send,
) -> Result<T> {
    ecosystemiser_db()?.transaction(f)
}

/// [`EcoDb::integration_status`] of the process's database (the successor of
/// `validate_hive_integration`).
///
/// # Errors
///
/// Those of [`ecosystemiser_db`], when the database cannot be opened at all.
pub fn integration_status() -> Result<IntegrationStatus> {
    Ok(ecosystemiser_db()?.integration_status())
}
