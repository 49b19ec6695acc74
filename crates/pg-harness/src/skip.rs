//! Whether PostgreSQL tests can run here: the server's programs, and the skip rule.

use std::path::Path;
use std::sync::Once;

/// Where Debian's `postgresql-15` puts the server's programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether the server's programs are installed, by the skip rule every PostgreSQL test
/// follows: `Ok(true)` when they are; `Ok(false)` when they are not and the environment
/// variable `CI` is not `true`, after one line on stderr (once per process) saying the
/// PostgreSQL tests were skipped and how to run them.
///
/// # Errors
///
/// The programs are missing and `CI` is `true`: on CI a skipped test would hide a failure.
pub fn available() -> anyhow::Result<bool> {
    decide(
        installed().is_ok(),
        std::env::var("CI").is_ok_and(|v| v == "true"),
    )
}

/// Whether the server's programs are in [`BIN`].
///
/// # Errors
///
/// They are not: the error says how to install them.
pub(crate) fn installed() -> anyhow::Result<()> {
    anyhow::ensure!(
        ["initdb", "postgres", "pg_ctl", "pg_basebackup"]
            .iter()
            .all(|p| Path::new(BIN).join(p).exists()),
        "PostgreSQL 15's server programs are not in {BIN}: install them (Debian: \
         apt-get install postgresql-15)"
    );
    Ok(())
}

fn decide(installed: bool, ci: bool) -> anyhow::Result<bool> {
    static NOTE: Once = Once::new();
    match (installed, ci) {
        (true, _) => Ok(true),
        (false, true) => anyhow::bail!(
            "PostgreSQL tests may not be skipped under CI=true, and PostgreSQL 15's server \
             programs are not in {BIN}: install them (Debian: apt-get install postgresql-15)"
        ),
        (false, false) => {
            NOTE.call_once(|| {
                eprintln!(
                    "note: PostgreSQL tests skipped: no PostgreSQL 15 server programs in {BIN}; \
                     install Debian's postgresql-15 (apt-get install postgresql-15) to run them"
                );
            });
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decide;

    /// Bug caught: the skip rule inverted or ignoring CI: a missing server skipping on CI
    /// (hiding every PostgreSQL failure), failing a developer's run, or an installed
    /// server skipped.
    #[test]
    fn missing_programs_skip_except_on_ci() {
        assert!(decide(true, false).is_ok_and(|run| run));
        assert!(decide(true, true).is_ok_and(|run| run));
        assert!(decide(false, false).is_ok_and(|run| !run));
        assert!(decide(false, true).is_err());
    }
}
