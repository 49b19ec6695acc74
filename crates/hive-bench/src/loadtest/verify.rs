//! The load test's checks: each one named, passed or failed, with what it found.

/// What comparing stored rows with acknowledged writes found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Acknowledged writes compared.
    pub(crate) checked: u64,
    missing: u64,
    unexpected: u64,
    examples_missing: Vec<String>,
    examples_unexpected: Vec<String>,
}

/// Examples kept per kind of finding.
const EXAMPLES: usize = 3;

impl Findings {
    /// An acknowledged write that is absent or has other content.
    pub(crate) fn missing(&mut self, what: String) {
        self.missing += 1;
        if self.examples_missing.len() < EXAMPLES {
            self.examples_missing.push(what);
        }
    }

    /// Something stored that no worker saw acknowledged.
    pub(crate) fn unexpected(&mut self, what: String) {
        self.unexpected += 1;
        if self.examples_unexpected.len() < EXAMPLES {
            self.examples_unexpected.push(what);
        }
    }

    /// The two checks these findings decide.
    pub(crate) fn checks(&self) -> [Check; 2] {
        [
            Check::new(
                ACKNOWLEDGED_WRITES_PRESENT,
                self.missing == 0,
                if self.missing == 0 {
                    format!(
                        "{} acknowledged writes present with their content",
                        self.checked
                    )
                } else {
                    format!(
                        "{} of {} acknowledged writes absent or changed, e.g. {}",
                        self.missing,
                        self.checked,
                        self.examples_missing.join("; ")
                    )
                },
            ),
            Check::new(
                NO_UNACKNOWLEDGED_WRITES,
                self.unexpected == 0,
                if self.unexpected == 0 {
                    "nothing stored that no worker saw acknowledged".to_owned()
                } else {
                    format!(
                        "{} stored writes nobody saw acknowledged, e.g. {}",
                        self.unexpected,
                        self.examples_unexpected.join("; ")
                    )
                },
            ),
        ]
    }
}

/// Every operation succeeded.
pub(crate) const NO_ERRORS: &str = "no_errors";
/// Every write a worker saw acknowledged is stored, with its content.
pub(crate) const ACKNOWLEDGED_WRITES_PRESENT: &str = "acknowledged_writes_present";
/// Nothing is stored that should not be: no write nobody saw acknowledged.
pub(crate) const NO_UNACKNOWLEDGED_WRITES: &str = "no_unacknowledged_writes";
/// `PRAGMA integrity_check` said `ok` on every database.
pub(crate) const INTEGRITY_CHECK: &str = "integrity_check";
/// No pool ever had more connections than its `max_size`, at any sample.
pub(crate) const LIVE_WITHIN_MAX: &str = "live_within_max";
/// No connection was still checked out when the databases closed.
pub(crate) const NO_CONNECTION_LEFT_OUT: &str = "no_connection_left_out";
/// The process had as many open files after closing as before opening.
pub(crate) const OPEN_FILES_RELEASED: &str = "open_files_released";

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Check {
    /// Its name (one of this module's constants).
    pub(crate) name: &'static str,
    /// True when it passed.
    pub(crate) passed: bool,
    /// What it found, in words.
    pub(crate) detail: String,
}

impl Check {
    pub(crate) fn new(name: &'static str, passed: bool, detail: String) -> Self {
        Self {
            name,
            passed,
            detail,
        }
    }
}

/// The names of the failed checks.
pub(crate) fn failed(checks: &[Check]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: findings that decide nothing (a missing write reported as passing).
    #[test]
    fn findings_fail_their_checks() {
        let mut f = Findings::default();
        assert!(f.checks().iter().all(|c| c.passed));
        f.missing("row 1".into());
        let [present, unacked] = f.checks();
        assert!(!present.passed && present.detail.contains("row 1"));
        assert!(unacked.passed);
        f.unexpected("row 9".into());
        assert!(!f.checks()[1].passed);
    }
}
