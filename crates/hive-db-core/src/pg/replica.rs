//! Read replicas: each one's pool and state, the primary's write positions over time, and the
//! lag they give: how long ago the primary had written no more than a replica has replayed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::manager::PgManager;
use super::server::Measured;
use crate::clock::{AtomicStamp, Stamp};
use crate::pool::Pool;
use crate::stats::{ReplicaSnapshot, ReplicaStatus};
use crate::sync::lock;

/// The primary's WAL write position, sampled over time: `(when, bytes written)`, oldest
/// first, positions never decreasing.
#[derive(Debug, Default)]
pub(super) struct WalHistory {
    samples: VecDeque<(Instant, u64)>,
}

impl WalHistory {
    /// Adds a sample and forgets those older than `keep` (at least two stay). While the
    /// position stays the same, only the first and the latest time it was seen are kept:
    /// the primary had written no more at the later time, and already that much at the
    /// earlier one. A position below the last (a new primary after a failover, whose history
    /// is its own) starts the history again.
    pub(super) fn push(&mut self, at: Instant, wal: u64, keep: Duration) {
        let len = self.samples.len();
        let repeated = len >= 2 && self.samples.get(len - 2).is_some_and(|s| s.1 == wal);
        match self.samples.back_mut() {
            Some(last) if last.1 == wal && repeated => last.0 = at,
            Some(last) if last.1 > wal => {
                self.samples.clear();
                self.samples.push_back((at, wal));
            }
            _ => self.samples.push_back((at, wal)),
        }
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) > keep)
        {
            self.samples.pop_front();
        }
    }

    /// Forgets every sample: the primary's positions before (another timeline's, after a
    /// failover) say nothing of the new primary's.
    pub(super) fn clear(&mut self) {
        self.samples.clear();
    }

    /// A replica's lag as of the last sample: how long before it the primary had written no
    /// more than the replica has `replayed` (zero when it has everything), with the
    /// sample's time. `None` with no sample yet, and for a replica behind every sample of a
    /// history that spans no more than `max_lag` (a new one: the monitor's start, or a new
    /// timeline's first samples): its lag is known only to be at least that span, which does
    /// not decide whether it is within the bound. (Taken as the oldest sample's age, a
    /// replica 10 s behind looked current right after the history started again.)
    pub(super) fn lag(&self, replayed: u64, max_lag: Duration) -> Option<(Instant, Duration)> {
        let (last, _) = *self.samples.back()?;
        let (first, first_wal) = *self.samples.front()?;
        if replayed < first_wal && last.saturating_duration_since(first) <= max_lag {
            return None;
        }
        let fresh = self.fresh_as_of(replayed)?;
        Some((last, last.saturating_duration_since(fresh)))
    }

    /// A moment at which the primary had written no more than `replayed`, as late as the
    /// samples prove: the replica has everything the primary had then. That is the last
    /// sample at or below `replayed`; the primary passed `replayed` somewhere between it
    /// and the next, but where is not known (WAL is not written at an even rate: a guess
    /// between the two, as this once made, put the replica fresher than it was, and reads
    /// there missed commits older than the bound). A replica behind the oldest sample gets
    /// the oldest sample's time (its lag is at least that). `None` with no sample yet.
    pub(super) fn fresh_as_of(&self, replayed: u64) -> Option<Instant> {
        let last = *self.samples.back()?;
        if replayed >= last.1 {
            return Some(last.0);
        }
        // Samples at or below `replayed` come first.
        let next = self.samples.partition_point(|(_, wal)| *wal <= replayed);
        match next.checked_sub(1).and_then(|i| self.samples.get(i)) {
            Some(prev) => Some(prev.0),
            None => self.samples.front().map(|(t, _)| *t),
        }
    }
}

/// The lag at `now` of a replica measured `measured` behind at `at`: that, plus the age of the
/// measure beyond `grace`.
fn lag_at(measured: Duration, at: Stamp, now: Stamp, grace: Duration) -> Duration {
    measured + Duration::from_nanos(now.nanos_since(at)).saturating_sub(grace)
}

/// What the monitor last saw of a replica.
const UNSEEN: u8 = 0;
const STANDBY: u8 = 1;
const DOWN: u8 = 2;
const NOT_A_REPLICA: u8 = 3;
/// A standby that does not follow the primary (no WAL receiver streaming its timeline).
const NOT_FOLLOWING: u8 = 4;

/// One read replica.
pub(super) struct Replica {
    pub(super) pool: Pool<PgManager>,
    /// What the monitor connects with.
    pub(super) config: postgres::Config,
    /// One of the states above.
    seen: AtomicU8,
    /// When its lag was last measured (the time of the primary's sample it was measured
    /// against), and the lag then, in nanoseconds.
    measured_at: AtomicStamp,
    lag_ns: AtomicU64,
    /// Reads served, in the name's counters (they carry on across re-register).
    reads: Arc<AtomicU64>,
    detail: Mutex<Detail>,
}

#[derive(Default)]
struct Detail {
    server: Option<Measured>,
    error: Option<String>,
}

impl Replica {
    /// The replica of `pool`, counting its reads in `reads`.
    pub(super) fn new(
        pool: Pool<PgManager>,
        config: postgres::Config,
        reads: Arc<AtomicU64>,
    ) -> Self {
        Self {
            pool,
            config,
            seen: AtomicU8::new(UNSEEN),
            measured_at: AtomicStamp::default(),
            lag_ns: AtomicU64::new(0),
            reads,
            detail: Mutex::new(Detail::default()),
        }
    }

    /// Where it is, never with a password.
    pub(super) fn target(&self) -> &PathBuf {
        &self.pool.info().path
    }

    /// Its lag at `now`: the lag last measured, plus the time since that measure beyond
    /// `grace` (a measure is due every monitor interval; one that stopped coming, because
    /// the primary cannot be reached, proves ever less). `None` until measured.
    #[inline]
    pub(super) fn lag(&self, now: Stamp, grace: Duration) -> Option<Duration> {
        let at = self.measured_at.load(Relaxed)?;
        let measured = Duration::from_nanos(self.lag_ns.load(Relaxed));
        Some(lag_at(measured, at, now, grace))
    }

    /// Whether it takes a read now: a standby that answered, whose lag is within `max_lag`
    /// by the whole age of its last measure, with no grace: the replica had everything the
    /// primary had `lag` before the measure, so at `now` what it holds is at most that plus
    /// the time since old. With a grace (kept for the lag shown), a replica whose replay had
    /// stopped took reads up to two monitor intervals past the bound.
    #[inline]
    pub(super) fn eligible(&self, now: Stamp, max_lag: Duration) -> bool {
        self.seen.load(Relaxed) == STANDBY
            && self.lag(now, Duration::ZERO).is_some_and(|l| l <= max_lag)
    }

    pub(super) fn count_read(&self) {
        self.reads.fetch_add(1, Relaxed);
    }

    /// The monitor measured it: a standby (with its lag, when the primary's positions tell
    /// it: `(as of, lag)`) or a server that is not one.
    pub(super) fn measured(&self, m: Measured, lag: Option<(Instant, Duration)>) {
        if m.in_recovery {
            if let Some((at, lag)) = lag {
                self.lag_ns
                    .store(u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX), Relaxed);
                self.measured_at.store(Some(Stamp::of(at)), Relaxed);
            }
            self.seen.store(STANDBY, Relaxed);
            let mut detail = lock(&self.detail);
            detail.server = Some(m);
            detail.error = None;
        } else {
            self.seen.store(NOT_A_REPLICA, Relaxed);
            let mut detail = lock(&self.detail);
            detail.server = Some(m);
            detail.error = Some("the server is not a standby (promoted?)".to_owned());
        }
    }

    /// The monitor measured a standby that does not follow the primary (`why`): it takes no
    /// read until it does, whatever its position; shown lagging, with why.
    pub(super) fn not_following(&self, m: Measured, why: String) {
        if self.seen.swap(NOT_FOLLOWING, Relaxed) != NOT_FOLLOWING {
            tracing::warn!(db = %self.pool.info().name, replica = %self.target().display(), reason = %why, "read replica does not follow the primary; reads go elsewhere");
        }
        let mut detail = lock(&self.detail);
        detail.server = Some(m);
        detail.error = Some(format!("not following the primary: {why}"));
    }

    /// It cannot be reached, or broke a read's connection: skipped until the monitor
    /// reaches it again, and its connections are checked before their next use.
    pub(super) fn down(&self, why: String) {
        if self.seen.swap(DOWN, Relaxed) != DOWN {
            tracing::warn!(db = %self.pool.info().name, replica = %self.target().display(), error = %why, "read replica down; reads go elsewhere");
        }
        self.pool.shared().suspect_all();
        lock(&self.detail).error = Some(why);
    }

    /// Its state now, judged against `max_lag`.
    pub(super) fn snapshot(&self, max_lag: Duration, grace: Duration) -> ReplicaSnapshot {
        let lag = self.lag(Stamp::of(Instant::now()), grace);
        let seen = self.seen.load(Relaxed);
        let status = match seen {
            STANDBY if lag.is_some_and(|l| l <= max_lag) => ReplicaStatus::Up,
            STANDBY | NOT_FOLLOWING => ReplicaStatus::Lagging,
            NOT_A_REPLICA => ReplicaStatus::NotAReplica,
            _ => ReplicaStatus::Down,
        };
        let detail = lock(&self.detail);
        let error = match (status, &detail.error) {
            (_, Some(e)) => Some(e.clone()),
            (ReplicaStatus::Lagging, None) => Some(match lag {
                Some(l) => format!("lagging {l:.1?} behind the primary (bound {max_lag:?})"),
                None => "its lag is not measured yet".to_owned(),
            }),
            (ReplicaStatus::Down, None) => Some("not reached yet".to_owned()),
            _ => None,
        };
        let gauges = self.pool.gauges().unwrap_or_default();
        ReplicaSnapshot {
            target: self.target().clone(),
            status,
            lag_ms: lag.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            server: detail.server.as_ref().map(Measured::facts),
            error,
            live: gauges.live,
            idle: gauges.idle,
            reads: self.reads.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(60);

    /// Bug caught: a replica at or past the primary's last position given a lag, one between
    /// two samples given a moment later than the earlier sample (a guess in between made it
    /// fresher than it was proven to be), or one behind every sample taken for fresh.
    #[test]
    fn the_lag_is_read_from_the_primarys_positions() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = WalHistory::default();
        assert_eq!(h.fresh_as_of(0), None);
        h.push(t0, 1000, KEEP);
        h.push(t0 + s(1), 2000, KEEP);
        // Idle from 1 s to 2 s: the middle sample is not kept.
        h.push(t0 + Duration::from_millis(1500), 2000, KEEP);
        h.push(t0 + s(2), 2000, KEEP);
        h.push(t0 + s(3), 4000, KEEP);
        assert_eq!(h.samples.len(), 4);

        assert_eq!(h.fresh_as_of(4000), Some(t0 + s(3)));
        assert_eq!(h.fresh_as_of(9000), Some(t0 + s(3)));
        assert_eq!(h.fresh_as_of(2000), Some(t0 + s(2)));
        // Between 2000 (last seen at 2 s) and 4000 (at 3 s): 2 s, not a guess between.
        assert_eq!(h.fresh_as_of(3000), Some(t0 + s(2)));
        // Between 1000 (at 0 s) and 2000 (first seen at 1 s): 0 s, not at 1 or 2 s.
        assert_eq!(h.fresh_as_of(1500), Some(t0));
        // Behind everything known: at least as old as the oldest sample.
        assert_eq!(h.fresh_as_of(10), Some(t0));
        assert_eq!(h.lag(10, s(1)), Some((t0 + s(3), s(3))));
    }

    /// Bug caught: a replica behind every sample of a history that had just started again
    /// (a new timeline after a switchover, or the monitor's start) given the oldest sample's
    /// time, so lag 0: one 10 s behind the old primary took reads for the whole bound after
    /// the switchover.
    #[test]
    fn a_replica_behind_a_new_history_is_not_placed() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let bound = Duration::from_millis(500);
        let mut h = WalHistory::default();
        for i in 0..=10 {
            h.push(t0 + s(i), 1000 + 1000 * i, KEEP);
        }
        assert_eq!(h.lag(1500, bound), Some((t0 + s(10), s(10))));
        h.clear();
        h.push(t0 + s(11), 11_500, KEEP);
        assert_eq!(h.lag(1500, bound), None);
        h.push(t0 + s(11) + Duration::from_millis(100), 11_600, KEEP);
        assert_eq!(h.lag(1500, bound), None);
        // Caught up with the new history: placed.
        assert_eq!(
            h.lag(11_600, bound),
            Some((t0 + s(11) + Duration::from_millis(100), Duration::ZERO))
        );
        // Behind a history longer than the bound: at least that old, which is enough.
        h.push(t0 + s(12), 12_000, KEEP);
        assert_eq!(h.lag(1500, bound), Some((t0 + s(12), s(1))));
    }

    /// Bug caught: a caught-up replica shown lagging by the time since the last measure (an
    /// idle, current replica alarming, or never eligible under a bound shorter than the
    /// monitor's interval); or a replica whose measures stopped (primary unreachable) kept
    /// at its old lag for ever.
    #[test]
    fn a_caught_up_replica_has_no_lag_and_a_stale_measure_grows() {
        let t0 = Instant::now();
        let mut h = WalHistory::default();
        h.push(t0, 1000, KEEP);
        h.push(t0 + Duration::from_secs(1), 3000, KEEP);
        assert_eq!(
            h.lag(3000, Duration::ZERO),
            Some((t0 + Duration::from_secs(1), Duration::ZERO))
        );
        assert_eq!(
            h.lag(2000, Duration::ZERO),
            Some((t0 + Duration::from_secs(1), Duration::from_secs(1)))
        );

        let grace = Duration::from_millis(100);
        let at = Stamp::of(Instant::now());
        let lag = |measured: Duration, age: Duration| lag_at(measured, at, at.after(age), grace);
        assert_eq!(
            lag(Duration::ZERO, Duration::from_millis(80)),
            Duration::ZERO
        );
        assert_eq!(
            lag(Duration::from_millis(10), Duration::from_millis(600)),
            Duration::from_millis(510)
        );
    }

    /// Bug caught: samples kept for ever (memory grows with uptime), or a new primary's
    /// lower positions mixed with the old one's, so lag is judged against the wrong server.
    #[test]
    fn old_samples_go_and_a_new_primary_starts_again() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(5);
        let mut h = WalHistory::default();
        for i in 0..100u64 {
            h.push(t0 + Duration::from_secs(i), i * 10, keep);
        }
        assert!(h.samples.len() <= 7, "{}", h.samples.len());
        h.push(t0 + Duration::from_secs(101), 5, keep);
        assert_eq!(h.samples.len(), 1);
        assert_eq!(h.fresh_as_of(5), Some(t0 + Duration::from_secs(101)));
    }
}
