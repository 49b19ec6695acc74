//! What the registry measures of a PostgreSQL database's servers, as snapshots and health
//! show it: the primary's and each replica's facts, each replica's state and lag, and the one
//! wording of the problems that make such a database degraded.

use std::path::PathBuf;

/// What the registry last measured of a PostgreSQL database's servers (every
/// `PgConfig::monitor_interval`, on a connection of its own outside the pool).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PgFacts {
    /// The primary (the server writes go to), once measured; `None` while it cannot be
    /// reached.
    pub primary: Option<ServerFacts>,
    /// What the last attempt to measure the primary failed with, if it failed.
    pub primary_error: Option<String>,
    /// The read replicas, in the order registered.
    pub replicas: Vec<ReplicaSnapshot>,
    /// Reads meant for a replica that went to the primary because none was usable (down,
    /// lagging past the bound, or without a free connection in time).
    pub replica_fallbacks: u64,
}

/// A server whose client connections reach this share of `max_connections` is near full.
const NEAR_MAX_CONNECTIONS: f64 = 0.9;

impl PgFacts {
    /// What about the primary makes the database degraded, one line each: the registry
    /// cannot reach it or write to it, or it is near `max_connections`. Health reports these
    /// lines, word for word.
    pub fn primary_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(error) = &self.primary_error {
            notes.push(format!("primary: {error}"));
        }
        if let Some(server) = self.primary.as_ref().filter(|s| s.near_full()) {
            notes.push(format!(
                "primary: {} of max_connections {} in use",
                server.connections, server.max_connections
            ));
        }
        notes
    }

    /// Each replica not taking reads, one line each (`replica1 (target) lagging: why`), as
    /// health reports them.
    pub fn replica_notes(&self) -> Vec<String> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status != ReplicaStatus::Up)
            .map(|(i, r)| {
                format!(
                    "replica{} ({}) {}: {}",
                    i + 1,
                    r.target.display(),
                    r.status.words(),
                    r.error.as_deref().unwrap_or("skipped")
                )
            })
            .collect()
    }
}

impl ServerFacts {
    /// Whether 90% of its `max_connections` are in use.
    pub fn near_full(&self) -> bool {
        f64::from(self.connections) >= f64::from(self.max_connections) * NEAR_MAX_CONNECTIONS
    }
}

impl ReplicaStatus {
    /// The status in words: `up`, `lagging`, `down`, `not a standby`.
    pub fn words(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Lagging => "lagging",
            Self::Down => "down",
            Self::NotAReplica => "not a standby",
        }
    }
}

/// Facts one PostgreSQL server reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ServerFacts {
    /// `server_version`, as `15.10 (Debian 15.10-0+deb12u1)`.
    pub version: String,
    /// `pg_is_in_recovery()`: a standby (true) or a primary (false).
    pub in_recovery: bool,
    /// `default_transaction_read_only` is on: a primary that refuses writes.
    pub read_only: bool,
    /// Client connections to the server now, from any application (`pg_stat_activity`).
    pub connections: u32,
    /// Its `max_connections`.
    pub max_connections: u32,
    /// How long ago it was measured, in milliseconds, as of the snapshot.
    pub age_ms: u64,
}

/// Whether a read replica takes reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplicaStatus {
    /// Reachable, a standby, and within the lag bound: it takes reads.
    Up,
    /// Reachable, but further behind the primary than the lag bound, or its lag cannot be
    /// measured (the primary cannot be reached): skipped.
    Lagging,
    /// Cannot be reached, or broke a read's connection: skipped until it answers again.
    Down,
    /// Answers, but is not a standby (it was promoted, say): skipped.
    NotAReplica,
}

/// One read replica of a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ReplicaSnapshot {
    /// Where it is, as `postgres://user@host:port/db` (never a password).
    pub target: PathBuf,
    /// Whether it takes reads.
    pub status: ReplicaStatus,
    /// How far behind the primary it is, in milliseconds: the time since the moment whose
    /// writes it has all replayed, measured by comparing its replay position with the
    /// primary's write position sampled over time. `None` until measured.
    pub lag_ms: Option<u64>,
    /// Its server's facts, once measured.
    pub server: Option<ServerFacts>,
    /// Why it is down or skipped, if it is.
    pub error: Option<String>,
    /// Its pool's connections, open and idle.
    pub live: u32,
    /// Idle ones among them.
    pub idle: u32,
    /// Reads it served.
    pub reads: u64,
}
