//! Facts about the build that the architecture relies on.

use std::path::Path;

/// Bug caught: this crate gaining a rusqlite or r2d2 dependency of its own, so that it could
/// open SQLite around hive-db-core (with other settings), or a second SQLite linked in.
#[test]
fn sqlite_only_through_the_core_and_only_one_of_it() -> anyhow::Result<()> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(manifest_dir.join("Cargo.toml"))?;
    for line in manifest.lines().map(str::trim) {
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        assert!(
            !matches!(name, "rusqlite" | "r2d2" | "r2d2_sqlite" | "libsqlite3-sys"),
            "direct dependency in Cargo.toml: {line}"
        );
    }
    let lock_path = manifest_dir.join("../../Cargo.lock");
    let lock = std::fs::read_to_string(lock_path)?;
    for package in ["rusqlite", "libsqlite3-sys"] {
        let versions = lock
            .lines()
            .filter(|l| l.trim() == format!("name = \"{package}\""))
            .count();
        assert_eq!(
            versions, 1,
            "{package} appears {versions} times in Cargo.lock"
        );
    }
    Ok(())
}
