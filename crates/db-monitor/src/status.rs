//! A status as people read it and as the exit code gives it (the Nagios plugin convention).

use hive_db_core::{HealthStatus, ReplicaStatus};

/// Exit code for "could not run" (Nagios UNKNOWN): bad arguments or config file, an endpoint
/// that cannot be reached, no database to report on.
pub const COULD_NOT_RUN: u8 = 3;

/// The exit code of a status: 0 healthy, 1 degraded, 2 unhealthy.
pub(crate) fn exit_code(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    }
}

/// `healthy`, `degraded`, `unhealthy`.
pub(crate) fn word(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

/// A replica's status as the registry's health notes word it: `up`, `lagging`, `down`,
/// `not a standby`.
pub(crate) fn replica(status: ReplicaStatus) -> &'static str {
    status.words()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a word that differs from the status's JSON form, so the tables and the
    /// JSON name one status two ways.
    #[test]
    fn words_are_the_json_names() -> serde_json::Result<()> {
        use HealthStatus::{Degraded, Healthy, Unhealthy};
        for s in [Healthy, Degraded, Unhealthy] {
            assert_eq!(serde_json::to_value(s)?, word(s));
        }
        Ok(())
    }
}
