//! `DbName`: the validated name a database is registered under.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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

/// A refused database name. It converts into [`crate::Error::InvalidName`], so `?` works in
/// functions that return the crate's `Result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    name: String,
    reason: &'static str,
}

impl NameError {
    /// The refused name, escaped for display.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid database name \"{}\": {}",
            self.name, self.reason
        )
    }
}

impl std::error::Error for NameError {}

impl DbName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`NameError`] when `name` is empty, longer than [`MAX_NAME_LEN`] bytes, or has a
    /// character outside `[A-Za-z0-9_-]`.
    pub fn new(name: &str) -> Result<Self, NameError> {
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
            Some(reason) => Err(NameError {
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
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl TryFrom<&str> for DbName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
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

    type TestResult = Result<(), NameError>;

    /// Bug caught: a plain name refused, or handed back changed.
    #[test]
    fn accepts_plain_names() -> TestResult {
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
            let err = DbName::new(name).err();
            assert!(
                err.as_ref().is_some_and(|e| !e.reason().is_empty()),
                "{name:?} was accepted"
            );
        }
        assert!(DbName::new(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    /// Bug caught: equal names hashing differently (lookups that miss), or distinct names
    /// comparing equal.
    #[test]
    fn equality_and_hash_follow_the_string() -> TestResult {
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

    // The documented rule, written as regular expressions for proptest to generate from,
    // independently of the validator's code: 1 to 64 characters of `[A-Za-z0-9_-]`.

    proptest! {
        /// Bug caught: a character of the documented alphabet refused (say `-` or `_`), or
        /// a length up to 64 refused.
        #[test]
        fn accepts_every_documented_name(s in "[A-Za-z0-9_-]{1,64}") {
            prop_assert!(DbName::new(&s).is_ok(), "{:?} refused", s);
        }

        /// Bug caught: a character outside the alphabet let through (a dot, a slash, a
        /// colon, a non-ASCII letter), wherever it sits in the name.
        #[test]
        fn refuses_any_character_outside_the_alphabet(
            s in "[A-Za-z0-9_-]{0,30}[^A-Za-z0-9_-]\\PC{0,30}",
        ) {
            prop_assert!(DbName::new(&s).is_err(), "{:?} accepted", s);
        }

        /// Bug caught: the length limit off by one, or not applied.
        #[test]
        fn refuses_names_longer_than_64(s in "[A-Za-z0-9_-]{65,90}") {
            prop_assert!(DbName::new(&s).is_err(), "{} characters accepted", s.len());
        }
    }
}
