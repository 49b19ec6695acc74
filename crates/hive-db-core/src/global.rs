//! The process-wide registry, for code that cannot be handed one.

use once_cell::sync::OnceCell;

use crate::error::{Error, Result};
use crate::registry::Registry;

static GLOBAL: OnceCell<Registry> = OnceCell::new();

/// Installs `registry` as the process-wide registry. Applications use its presence to decide
/// between the shared pools and their own direct connections.
///
/// # Errors
///
/// [`Error::AlreadyInstalled`] if one is installed already (it stays installed).
pub fn install(registry: Registry) -> Result<()> {
    GLOBAL.set(registry).map_err(|_| Error::AlreadyInstalled)
}

/// The process-wide registry, if one is installed.
pub fn get() -> Option<&'static Registry> {
    GLOBAL.get()
}
