//! A finding: why a database is not healthy, of a kind that scripts can match on.

use hive_db_core::HealthStatus;
use serde::{Deserialize, Serialize};

/// What a finding is about. JSON spells it in snake case (`slow_acquire`); a new kind may be
/// added, an existing one keeps its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// Closed, missing, not a database, or its source cannot be read.
    Down,
    /// Its health check is not healthy, or it is missing from the endpoint's health report.
    Health,
    /// A connection is held past the leak threshold now, or one was reported in the interval.
    Leak,
    /// More live connections than the pool's maximum.
    OverMax,
    /// Acquire timeouts in the interval.
    Timeouts,
    /// An acquire wait longer than `--slow` (the oldest waiter's, or the interval's p99).
    SlowAcquire,
    /// SQLITE_BUSY errors in the interval: another process holds locks.
    Busy,
    /// `quick_check` found a problem.
    Corrupt,
    /// PostgreSQL: the registry's monitor cannot reach the primary, or it no longer takes
    /// writes.
    Primary,
    /// PostgreSQL: a read replica does not take reads (lagging, down, or not a standby).
    Replica,
}

/// Why a database is not healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// Degraded or unhealthy.
    pub status: HealthStatus,
    /// What it is about.
    pub kind: FindingKind,
    /// What was found, for people.
    pub message: String,
}

impl Finding {
    pub(crate) fn new(status: HealthStatus, kind: FindingKind, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a kind renamed or re-cased in the JSON (`slowAcquire`, `SlowAcquire`), which
    /// breaks every script matching on `findings[].kind`.
    #[test]
    fn kinds_keep_their_json_names() -> serde_json::Result<()> {
        use FindingKind::*;
        let names = |kind: FindingKind| match kind {
            // A match, not a list: a new kind does not compile until its name is pinned here.
            Down => "down",
            Health => "health",
            Leak => "leak",
            OverMax => "over_max",
            Timeouts => "timeouts",
            SlowAcquire => "slow_acquire",
            Busy => "busy",
            Corrupt => "corrupt",
            Primary => "primary",
            Replica => "replica",
        };
        for kind in [
            Down,
            Health,
            Leak,
            OverMax,
            Timeouts,
            SlowAcquire,
            Busy,
            Corrupt,
            Primary,
            Replica,
        ] {
            assert_eq!(serde_json::to_value(kind)?, names(kind));
            assert_eq!(
                serde_json::from_value::<FindingKind>(names(kind).into())?,
                kind
            );
        }
        Ok(())
    }
}
