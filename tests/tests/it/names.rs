//! Hostile database names: only `[A-Za-z0-9_-]{1,64}` passes `DbName::new`, checked against a
//! model of the rule written independently of the validator.

use std::path::{Component, Path};

use hive_db_core::{DbName, Error};
use proptest::prelude::*;

/// The documented alphabet, spelled out rather than computed with `is_ascii_alphanumeric`.
const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// The rule as documented on `DbName`: 1 to 64 characters, each from [`ALPHABET`].
fn model_accepts(s: &str) -> bool {
    let n = s.chars().count();
    (1..=64).contains(&n) && s.chars().all(|c| ALPHABET.contains(c))
}

/// Pieces that have meant something to a file system, SQLite or a terminal.
const HOSTILE: &[&str] = &[
    "..",
    "../",
    "/",
    "\\",
    "\0",
    ":memory:",
    "file:",
    "?mode=memory",
    "&vfs=unix-none",
    "%2e%2e%2f",
    "~",
    ".",
    " ",
    "\n",
    "\r",
    "\t",
    "\u{1b}[2J",
    "\u{202e}",
    "\u{200b}",
    "é",
    "\u{0430}", // Cyrillic a, looks like Latin a
    "\u{ff41}", // full-width a
    "\u{fffd}",
    "\u{10348}",
    "C:",
    "nul",
    "*",
    "'",
    "\"",
    ";",
];

fn hostile_name() -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    let valid_char = proptest::sample::select(alphabet);
    let piece = prop_oneof![
        4 => proptest::collection::vec(valid_char, 0..12).prop_map(|c| c.into_iter().collect::<String>()),
        3 => proptest::sample::select(HOSTILE).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        // Mostly-valid names, at and around the length limit.
        proptest::collection::vec(
            proptest::sample::select(ALPHABET.chars().collect::<Vec<_>>()),
            0..=70
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        // Valid pieces mixed with hostile ones.
        proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
        // Anything printable or not.
        any::<String>(),
        "\\PC{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Bug caught: a validator that lets through a separator, `..`, NUL, a URI or `:memory:`,
    /// counts bytes where it means characters (or the reverse) at the length limit, accepts a
    /// Unicode look-alike, or refuses a valid name; an accepted name that would leave its
    /// folder when an application joins it into a path; a refusal whose message carries raw
    /// control characters into logs.
    #[test]
    fn only_documented_names_pass(s in hostile_name()) {
        let result = DbName::new(&s);
        prop_assert_eq!(result.is_ok(), model_accepts(&s), "{:?} -> {:?}", s, result);
        match result {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert_eq!(name.to_string(), s.clone());
                let folder = Path::new("/srv/hive");
                let joined = folder.join(format!("{name}.db"));
                prop_assert_eq!(joined.parent(), Some(folder));
                prop_assert!(joined.components().all(|c| !matches!(c, Component::ParentDir)));
            }
            Err(err) => {
                // The error converts into the registry's `InvalidName`.
                let converted = Error::from(err.clone());
                let is_invalid_name = matches!(converted, Error::InvalidName { .. });
                prop_assert!(is_invalid_name, "{:?}", converted);
                let message = err.to_string();
                prop_assert!(!message.chars().any(char::is_control), "{:?}", message);
            }
        }
    }
}

/// Bug caught: the limit checked off by one.
#[test]
fn length_limit_is_exactly_64() {
    assert!(DbName::new(&"a".repeat(64)).is_ok());
    assert!(DbName::new(&"a".repeat(65)).is_err());
    assert!(DbName::new("").is_err());
    // 64 characters of two bytes each: refused (not in the alphabet), never a panic on a
    // char boundary.
    assert!(DbName::new(&"é".repeat(64)).is_err());
}
