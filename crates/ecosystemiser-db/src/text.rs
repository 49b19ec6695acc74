//! Text the data layer stores: PostgreSQL text cannot hold a NUL character (22021), where
//! SQLite stores one, so text holding one is refused on both engines before either is
//! asked, and a key holding one finds nothing: the same call gives the same answer on both.

use crate::error::{Error, Result};

/// `Err(InvalidInput)` naming `what` when `value` holds a NUL character.
pub(crate) fn check(what: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::InvalidInput {
            what,
            // As it is: the message shows it with `{:?}`, which escapes the NUL once.
            value: value.to_owned(),
            reason: "holds a NUL character, which PostgreSQL text cannot store",
        });
    }
    Ok(())
}

/// [`check`] for each of `fields`, `(what, value)`; `None` passes.
pub(crate) fn check_all(fields: &[(&'static str, Option<&str>)]) -> Result<()> {
    fields
        .iter()
        .try_for_each(|(what, v)| v.map_or(Ok(()), |v| check(what, v)))
}

/// Whether `key` could be stored: a lookup by one that could not finds nothing, on either
/// engine, without asking (PostgreSQL would refuse the query itself).
pub(crate) fn storable(key: &str) -> bool {
    !key.contains('\0')
}
