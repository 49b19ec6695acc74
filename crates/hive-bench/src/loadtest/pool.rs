//! A database's pool figures for the report, read from the registry's snapshot. Every use of
//! the snapshot's fields is in this file, so a change of the snapshot changes only it.

use hive_db_core::DbSnapshot;

/// What the sampler tracks of one database between snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Peaks {
    /// Most connections open at once.
    pub(crate) live: u32,
    /// Most writers queued for the writer lane at once.
    pub(crate) writer_queue: u32,
    /// Largest `-wal` file, in bytes.
    pub(crate) wal_bytes: u64,
    /// Longest wait of a caller still waiting for a connection, in nanoseconds.
    pub(crate) maxwait_ns: u64,
    /// Largest lag of a PostgreSQL read replica, in milliseconds, once one is measured.
    pub(crate) replica_lag_ms: Option<u64>,
}

impl Peaks {
    /// Takes in one sample.
    pub(crate) fn observe(&mut self, s: &DbSnapshot) {
        self.live = self.live.max(s.live);
        self.writer_queue = self.writer_queue.max(s.writer_queue);
        self.wal_bytes = self.wal_bytes.max(s.sqlite.wal_bytes);
        self.maxwait_ns = self.maxwait_ns.max(s.maxwait_ns);
        self.replica_lag_ms = self.replica_lag_ms.max(replica_lag_ms(s));
    }
}

/// The largest lag of the database's read replicas, if it has any and one is measured.
fn replica_lag_ms(s: &DbSnapshot) -> Option<u64> {
    s.postgres
        .as_ref()
        .and_then(|pg| pg.replicas.iter().filter_map(|r| r.lag_ms).max())
}

/// `Some(connections open, max_size)` when a sample has more open than allowed.
pub(crate) fn over_max(s: &DbSnapshot) -> Option<(u32, u32)> {
    (s.live > s.max_size).then_some((s.live, s.max_size))
}

/// One database's pool figures over the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct PoolFigures {
    /// The database's name.
    pub(crate) name: String,
    /// Its pool's `max_size`.
    pub(crate) max_size: u32,
    /// Most connections open at once (sampled).
    pub(crate) live_peak: u32,
    /// Connections opened.
    pub(crate) connections_created: u64,
    /// Successful checkouts.
    pub(crate) acquires: u64,
    /// 99th percentile of the wait for a connection, in nanoseconds.
    pub(crate) acquire_wait_p99_ns: u64,
    /// Longest wait for a connection, in nanoseconds.
    pub(crate) acquire_wait_max_ns: u64,
    /// Peak age of the oldest caller waiting for a connection (pgbouncer's `maxwait`),
    /// sampled, in nanoseconds.
    pub(crate) maxwait_peak_ns: u64,
    /// Acquires that found no idle connection and waited.
    pub(crate) acquires_waited: u64,
    /// Checkouts and writer-lane waits that timed out.
    pub(crate) timeouts: u64,
    /// SQLITE_BUSY / SQLITE_LOCKED seen.
    pub(crate) busy: u64,
    /// Most writers queued at once (sampled).
    pub(crate) writer_queue_peak: u32,
    /// `write` calls committed.
    pub(crate) commits: u64,
    /// SQLite commits those took.
    pub(crate) write_transactions: u64,
    /// Group-commit batch size: `write` closures per SQLite commit.
    pub(crate) group_commit_batch: f64,
    /// Largest `-wal` file seen, in bytes (sampled).
    pub(crate) wal_peak_bytes: u64,
    /// Checkpoint passes run after commits.
    pub(crate) checkpoints: u64,
    /// PostgreSQL: `write` closures run again after a serialization failure or deadlock.
    pub(crate) write_retries: u64,
    /// PostgreSQL: the read replicas (none in the load test's own setups).
    pub(crate) replicas: usize,
    /// PostgreSQL: the largest replica lag seen, in milliseconds (sampled).
    pub(crate) replica_lag_peak_ms: Option<u64>,
    /// PostgreSQL: reads meant for a replica that went to the primary.
    pub(crate) replica_fallbacks: u64,
}

impl PoolFigures {
    /// Figures from the last snapshot before close and the sampled peaks.
    pub(crate) fn new(s: &DbSnapshot, peaks: &Peaks) -> Self {
        let t = &s.totals;
        Self {
            name: s.name.to_string(),
            max_size: s.max_size,
            live_peak: peaks.live.max(s.live),
            connections_created: t.connections_created,
            acquires: s.acquires(),
            acquire_wait_p99_ns: s.acquire_wait.p99_ns,
            acquire_wait_max_ns: s.acquire_wait.max_ns,
            maxwait_peak_ns: peaks.maxwait_ns.max(s.maxwait_ns),
            acquires_waited: t.acquires_waited,
            timeouts: t.acquire_timeouts + t.writer_timeouts,
            busy: t.busy_errors,
            writer_queue_peak: peaks.writer_queue.max(s.writer_queue),
            commits: t.commits,
            write_transactions: t.write_transactions,
            group_commit_batch: if t.write_transactions == 0 {
                0.0
            } else {
                t.commits as f64 / t.write_transactions as f64
            },
            wal_peak_bytes: peaks.wal_bytes.max(s.sqlite.wal_bytes),
            checkpoints: t.checkpoints,
            write_retries: t.write_retries,
            replicas: s.postgres.as_ref().map_or(0, |pg| pg.replicas.len()),
            replica_lag_peak_ms: peaks.replica_lag_ms.max(replica_lag_ms(s)),
            replica_fallbacks: s.postgres.as_ref().map_or(0, |pg| pg.replica_fallbacks),
        }
    }
}

#[cfg(test)]
mod tests {
    use hive_db_core::{DbConfig, DbName, Registry};

    use super::*;

    /// Bug caught: the sampler's `live <= max_size` test never flagging a pool over its size
    /// (a comparison the wrong way round, or of the wrong fields), so `live_within_max` can
    /// never fail; or peaks that do not follow the samples.
    #[test]
    fn a_pool_over_its_size_is_flagged() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let registry = Registry::new();
        let name = DbName::new("sampled")?;
        let config = DbConfig {
            create_if_missing: true,
            max_size: 3,
            min_idle: 1,
            ..DbConfig::default()
        };
        registry.register(&name, dir.path().join("sampled.db"), config)?;
        let snapshot = registry.db_stats(&name)?;
        assert_eq!(over_max(&snapshot), None);
        let mut value = serde_json::to_value(&snapshot)?;
        value["live"] = 4.into();
        value["writer_queue"] = 7.into();
        let over: DbSnapshot = serde_json::from_value(value)?;
        assert_eq!(over_max(&over), Some((4, 3)));
        let mut peaks = Peaks::default();
        peaks.observe(&over);
        peaks.observe(&snapshot);
        assert_eq!((peaks.live, peaks.writer_queue), (4, 7));
        registry.close_all(std::time::Duration::from_secs(1));
        Ok(())
    }
}
