//! `DbName`: the validated name a database is registered under.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A database's name in the registry: 1 to 64 characters from `[A-Za-z0-9_-]`.
///
/// A name is only ever a key. It is never joined into a path or handed to SQLite, so a name
/// such as `../x`, `:memory:` or `file:x?vfs=..` is refused here rather than interpreted later.
/// Cloning is cheap (a reference count).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(Arc<str>);

impl DbName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when `name` is empty, longer than [`MAX_NAME_LEN`] bytes, or has a
    /// character outside `[A-Za-z0-9_-]`.
    pub fn new(name: &str) -> Result<Self> {
        let reason = if name.is_empty() {
            Some("a name cannot be empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("a name is at most 64 characters")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Some("a name may only use A-Z, a-z, 0-9, '_' and '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName {
                name: name.escape_debug().to_string(),
                reason,
            }),
            None => Ok(Self(Arc::from(name))),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for DbName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for DbName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DbName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for DbName {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl serde::Serialize for DbName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_names() -> Result<()> {
        for ok in ["ecosystemiser", "a", "A-b_9", &"x".repeat(MAX_NAME_LEN)] {
            assert_eq!(DbName::new(ok)?.as_str(), ok);
        }
        Ok(())
    }

    /// Bug caught: a name that could reach SQLite or the file system as a path or URI.
    #[test]
    fn refuses_paths_uris_and_special_names() {
        let bad = [
            "",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "..",
            ":memory:",
            "file:x.db?vfs=unix-none",
            "nul\0byte",
            "space name",
            "dot.name",
            "é",
        ];
        for name in bad {
            assert!(
                matches!(DbName::new(name), Err(Error::InvalidName { .. })),
                "{name:?} was accepted"
            );
        }
        assert!(matches!(
            DbName::new(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(Error::InvalidName { .. })
        ));
    }

    proptest! {
        /// Bug caught: the validator and the documented alphabet disagreeing on any input.
        #[test]
        fn accepts_exactly_the_documented_alphabet(s in "\\PC{0,70}") {
            let expected = !s.is_empty()
                && s.len() <= MAX_NAME_LEN
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            prop_assert_eq!(DbName::new(&s).is_ok(), expected);
        }
    }
}
