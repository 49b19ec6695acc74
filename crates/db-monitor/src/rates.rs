//! Per-interval figures from two snapshots of the same database: rates from the counters'
//! differences and percentiles from the difference of the cumulative histogram buckets.

use hive_db_core::{DbSnapshot, LatencySummary};
use serde::{Deserialize, Serialize};

/// What happened between two snapshots, per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rates {
    /// Seconds between the two snapshots (the registry's clock).
    pub seconds: f64,
    /// Successful acquires.
    pub acquires_per_s: f64,
    /// Acquires that had to wait for a connection.
    pub waits_per_s: f64,
    /// Acquires that gave up at `connection_timeout`.
    pub timeouts_per_s: f64,
    /// SQLITE_BUSY / SQLITE_LOCKED errors.
    pub busy_per_s: f64,
    /// Write transactions committed.
    pub tx_per_s: f64,
    /// `write` calls committed (several share a transaction under group commit).
    pub commits_per_s: f64,
    /// Acquire timeouts in the interval (a count, for the leak check).
    pub timeouts: u64,
    /// Leaks reported in the interval.
    pub leaks: u64,
    /// SQLITE_BUSY errors in the interval.
    pub busy: u64,
    /// 99th percentile of the interval's acquire waits in milliseconds, interpolated within
    /// its bucket as Prometheus's `histogram_quantile` does; `None` without acquires.
    pub acquire_wait_p99_ms: Option<f64>,
    /// 99th percentile of the interval's connection holds in milliseconds.
    pub hold_p99_ms: Option<f64>,
}

/// The rates from `prev` to `cur`, `seconds` apart; `None` when a counter went backwards
/// (the process restarted) or no time passed.
pub(crate) fn between(prev: &DbSnapshot, cur: &DbSnapshot, seconds: f64) -> Option<Rates> {
    if seconds <= 0.0 {
        return None;
    }
    let (p, c) = (&prev.totals, &cur.totals);
    let d = |a: u64, b: u64| b.checked_sub(a);
    let acquires = d(prev.acquires(), cur.acquires())?;
    let waits = d(p.acquires_waited, c.acquires_waited)?;
    let timeouts = d(p.acquire_timeouts, c.acquire_timeouts)?;
    let busy = d(p.busy_errors, c.busy_errors)?;
    let tx = d(p.write_transactions, c.write_transactions)?;
    let commits = d(p.commits, c.commits)?;
    let leaks = d(p.leaks, c.leaks)?;
    let per_s = |n: u64| n as f64 / seconds;
    Some(Rates {
        seconds,
        acquires_per_s: per_s(acquires),
        waits_per_s: per_s(waits),
        timeouts_per_s: per_s(timeouts),
        busy_per_s: per_s(busy),
        tx_per_s: per_s(tx),
        commits_per_s: per_s(commits),
        timeouts,
        leaks,
        busy,
        acquire_wait_p99_ms: interval_quantile(&prev.acquire_wait, &cur.acquire_wait, 0.99)
            .map(|s| s * 1e3),
        hold_p99_ms: interval_quantile(&prev.hold_time, &cur.hold_time, 0.99).map(|s| s * 1e3),
    })
}

/// The `q`-quantile, in seconds, of the durations recorded between `prev` and `cur`, from the
/// difference of their cumulative buckets. Within a bucket it interpolates linearly; past the
/// last finite bound it answers that bound (both as Prometheus's `histogram_quantile`).
/// `None` when nothing was recorded in between or the buckets do not match.
pub(crate) fn interval_quantile(
    prev: &LatencySummary,
    cur: &LatencySummary,
    q: f64,
) -> Option<f64> {
    let total = cur.count.checked_sub(prev.count)?;
    if total == 0 {
        return None;
    }
    // Tolerate a first snapshot without buckets (nothing recorded yet).
    let prev_at = |i: usize| prev.buckets.get(i).map_or(0, |b| b.count);
    if !prev.buckets.is_empty() && prev.buckets.len() != cur.buckets.len() {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, b) in cur.buckets.iter().enumerate() {
        let cum = b.count.checked_sub(prev_at(i))?;
        if cum as f64 >= rank {
            let inside = cum.saturating_sub(below);
            if inside == 0 {
                return Some(b.le);
            }
            let frac = (rank - below as f64) / inside as f64;
            return Some(lower + (b.le - lower) * frac.clamp(0.0, 1.0));
        }
        below = cum;
        lower = b.le;
    }
    // In the +Inf bucket.
    cur.buckets.last().map(|b| b.le)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_db_core::Bucket;

    fn summary(counts: &[u64], total: u64) -> LatencySummary {
        let mut s = LatencySummary::default();
        s.count = total;
        s.buckets = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut b = Bucket::default();
                b.le = (1u64 << i) as f64 / 1000.0;
                b.count = *c;
                b
            })
            .collect();
        s
    }

    /// Bug caught: the interval's percentile taken from the lifetime buckets (old slow
    /// acquires hiding a fast interval, or the other way round), or not interpolated.
    #[test]
    fn quantile_of_the_difference() {
        // Bounds 1ms, 2ms, 4ms, 8ms. Before: 100 slow acquires (4-8 ms).
        let prev = summary(&[0, 0, 0, 100], 100);
        // After: 100 more, all below 1 ms.
        let cur = summary(&[100, 100, 100, 200], 200);
        let p99 = interval_quantile(&prev, &cur, 0.99).unwrap();
        assert!((p99 - 0.00099).abs() < 1e-9, "{p99}");
        // Nothing new: no percentile.
        assert_eq!(interval_quantile(&cur, &cur, 0.99), None);
        // Past the last bound: the last bound.
        let later = summary(&[100, 100, 100, 200], 300);
        assert_eq!(interval_quantile(&cur, &later, 0.5), Some(0.008));
        // Counters that went backwards (a restart): none.
        assert_eq!(interval_quantile(&later, &cur, 0.5), None);
    }
}
