//! `DbName`: the validated name a database is registered under.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A database's name in the registry: 1 to 64 characters from `[A-Za-z0-9_-]`.
///
/// A name is only ever a key. It is never joined into a path or handed to SQLite, so a name
/// such as `../x`, `:memory:` or `file:x?vfs=..` is refused here rather than interpreted later.
/// Cloning is cheap (a reference count). The name's hash is computed once, here, so looking a
/// name up in the registry on every checkout does not hash the string again.
#[derive(Clone)]
pub struct DbName {
    name: Arc<str>,
    hash: u64,
}

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
            None => Ok(Self {
                name: Arc::from(name),
                hash: fnv1a(name.as_bytes()),
            }),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// FNV-1a, 64 bit: plenty for at most 64 bytes of `[A-Za-z0-9_-]`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl PartialEq for DbName {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for DbName {}

impl Hash for DbName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for DbName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DbName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

/// A `Hasher` for maps keyed by [`DbName`]: the key writes its precomputed hash, which is used
/// as it is.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `DbName` keys use this hasher, and they call `write_u64`.
        self.0 = fnv1a(bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type NameMap<V> =
    std::collections::HashMap<DbName, V, std::hash::BuildHasherDefault<NameHasher>>;

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl AsRef<str> for DbName {
    fn as_ref(&self) -> &str {
        &self.name
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
        s.serialize_str(&self.name)
    }
}

/// A name read from elsewhere (a snapshot another process wrote) is validated like any other.
impl<'de> serde::Deserialize<'de> for DbName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&name).map_err(serde::de::Error::custom)
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

    /// Bug caught: equal names hashing differently (lookups that miss), or distinct names
    /// comparing equal.
    #[test]
    fn equality_and_hash_follow_the_string() -> Result<()> {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<NameHasher>::default();
        let (a, b, c) = (
            DbName::new("alpha")?,
            DbName::new("alpha")?,
            DbName::new("alphb")?,
        );
        assert_eq!(a, b);
        assert_eq!(build.hash_one(&a), build.hash_one(&b));
        assert_ne!(a, c);
        let mut map = NameMap::default();
        map.insert(a.clone(), 1);
        map.insert(c.clone(), 2);
        assert_eq!(map.get(&b), Some(&1));
        assert_eq!(map.get(&c), Some(&2));
        Ok(())
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
