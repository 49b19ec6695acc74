//! Per-interval figures from two snapshots of the same database: rates from the counters'
//! differences and percentiles from the difference of the cumulative histogram buckets.

use hive_db_core::{DbSnapshot, LatencySummary};
use serde::{Deserialize, Serialize};

/// What happened between two snapshots of one database: counts over `seconds`, and the
/// interval's percentiles. Rates are [`Rates::per_second`] of a count; the JSON carries the
/// rates and three of the counts (its fields: `seconds`, `acquires_per_s`, `waits_per_s`,
/// `timeouts_per_s`, `busy_per_s`, `tx_per_s`, `commits_per_s`, `timeouts`, `leaks`, `busy`,
/// `acquire_wait_p99_ms`, `hold_p99_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "RatesJson", from = "RatesJson")]
#[non_exhaustive]
pub struct Rates {
    /// Seconds between the two snapshots (the registry's clock).
    pub seconds: f64,
    /// Successful acquires.
    pub acquires: u64,
    /// Acquires that had to wait for a connection.
    pub waits: u64,
    /// Acquires that gave up at `connection_timeout`.
    pub timeouts: u64,
    /// SQLITE_BUSY / SQLITE_LOCKED errors.
    pub busy: u64,
    /// Write transactions committed.
    pub tx: u64,
    /// `write` calls committed (several share a transaction under group commit).
    pub commits: u64,
    /// Leaks reported.
    pub leaks: u64,
    /// 99th percentile of the interval's acquire waits in milliseconds, interpolated within
    /// its bucket as Prometheus's `histogram_quantile` does; `None` without acquires.
    pub acquire_wait_p99_ms: Option<f64>,
    /// 99th percentile of the interval's connection holds in milliseconds.
    pub hold_p99_ms: Option<f64>,
}

impl Rates {
    /// `count` per second over the interval (0 for an interval of no time).
    pub fn per_second(&self, count: u64) -> f64 {
        if self.seconds > 0.0 {
            count as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// [`Rates`] as the report's JSON has them.
#[derive(Serialize, Deserialize)]
struct RatesJson {
    seconds: f64,
    acquires_per_s: f64,
    waits_per_s: f64,
    timeouts_per_s: f64,
    busy_per_s: f64,
    tx_per_s: f64,
    commits_per_s: f64,
    timeouts: u64,
    leaks: u64,
    busy: u64,
    acquire_wait_p99_ms: Option<f64>,
    hold_p99_ms: Option<f64>,
}

impl From<Rates> for RatesJson {
    fn from(r: Rates) -> Self {
        Self {
            seconds: r.seconds,
            acquires_per_s: r.per_second(r.acquires),
            waits_per_s: r.per_second(r.waits),
            timeouts_per_s: r.per_second(r.timeouts),
            busy_per_s: r.per_second(r.busy),
            tx_per_s: r.per_second(r.tx),
            commits_per_s: r.per_second(r.commits),
            timeouts: r.timeouts,
            leaks: r.leaks,
            busy: r.busy,
            acquire_wait_p99_ms: r.acquire_wait_p99_ms,
            hold_p99_ms: r.hold_p99_ms,
        }
    }
}

impl From<RatesJson> for Rates {
    fn from(j: RatesJson) -> Self {
        let count = |per_s: f64| (per_s * j.seconds).round() as u64;
        Self {
            seconds: j.seconds,
            acquires: count(j.acquires_per_s),
            waits: count(j.waits_per_s),
            timeouts: j.timeouts,
            busy: j.busy,
            tx: count(j.tx_per_s),
            commits: count(j.commits_per_s),
            leaks: j.leaks,
            acquire_wait_p99_ms: j.acquire_wait_p99_ms,
            hold_p99_ms: j.hold_p99_ms,
        }
    }
}

/// The rates from `prev` to `cur`, `seconds` apart; `None` when a counter went backwards
/// (the process restarted) or no time passed.
pub(crate) fn between(prev: &DbSnapshot, cur: &DbSnapshot, seconds: f64) -> Option<Rates> {
    if seconds <= 0.0 {
        return None;
    }
    let (p, c) = (&prev.totals, &cur.totals);
    let d = |a: u64, b: u64| b.checked_sub(a);
    Some(Rates {
        seconds,
        acquires: d(prev.acquires(), cur.acquires())?,
        waits: d(p.acquires_waited, c.acquires_waited)?,
        timeouts: d(p.acquire_timeouts, c.acquire_timeouts)?,
        busy: d(p.busy_errors, c.busy_errors)?,
        tx: d(p.write_transactions, c.write_transactions)?,
        commits: d(p.commits, c.commits)?,
        leaks: d(p.leaks, c.leaks)?,
        acquire_wait_p99_ms: interval_quantile(&prev.acquire_wait, &cur.acquire_wait, 0.99)
            .map(|s| s * 1e3),
        hold_p99_ms: interval_quantile(&prev.hold_time, &cur.hold_time, 0.99).map(|s| s * 1e3),
    })
}

/// The `q`-quantile, in seconds, of the durations recorded between `prev` and `cur`, from the
/// difference of their cumulative buckets. Within a bucket it interpolates linearly; past the
/// last finite bound it answers that bound (both as Prometheus's `histogram_quantile`). Never
/// above `cur`'s exact maximum, which bounds every duration recorded: interpolated inside
/// the first bucket, acquires that never waited (0 ns each) read as a p99 wait of 126 ns, and
/// raised `--slow` findings for pools that never waited.
/// `None` when nothing was recorded in between or the buckets do not match.
pub(crate) fn interval_quantile(
    prev: &LatencySummary,
    cur: &LatencySummary,
    q: f64,
) -> Option<f64> {
    bucket_quantile(prev, cur, q).map(|s| s.min(cur.max_ns as f64 / 1e9))
}

fn bucket_quantile(prev: &LatencySummary, cur: &LatencySummary, q: f64) -> Option<f64> {
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
        // No bound from the maximum unless a test sets one.
        s.max_ns = u64::MAX;
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

    /// Bug caught: acquires that never waited (0 ns each, all in the first bucket) read as
    /// a p99 wait of 126 ns, interpolated inside the bucket, above the exact maximum of 0.
    #[test]
    fn quantile_never_above_the_maximum() {
        let prev = summary(&[0, 0], 0);
        let mut cur = summary(&[100, 100], 100);
        assert!(interval_quantile(&prev, &cur, 0.99).is_some_and(|q| q > 0.0));
        cur.max_ns = 0;
        assert_eq!(interval_quantile(&prev, &cur, 0.99), Some(0.0));
        cur.max_ns = 500_000;
        assert_eq!(interval_quantile(&prev, &cur, 0.99), Some(0.0005));
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

    /// Bug caught: a rate in the JSON under another name, divided by the wrong count or not
    /// per second, now that the rates are computed from counts; or the JSON not reading back.
    #[test]
    fn json_has_the_rates_per_second() -> serde_json::Result<()> {
        let r = Rates {
            seconds: 2.0,
            acquires: 10,
            waits: 4,
            timeouts: 2,
            busy: 6,
            tx: 8,
            commits: 12,
            leaks: 1,
            acquire_wait_p99_ms: Some(1.5),
            hold_p99_ms: None,
        };
        let v = serde_json::to_value(&r)?;
        let want = serde_json::json!({
            "seconds": 2.0, "acquires_per_s": 5.0, "waits_per_s": 2.0, "timeouts_per_s": 1.0,
            "busy_per_s": 3.0, "tx_per_s": 4.0, "commits_per_s": 6.0, "timeouts": 2,
            "leaks": 1, "busy": 6, "acquire_wait_p99_ms": 1.5, "hold_p99_ms": null,
        });
        assert_eq!(v, want);
        assert_eq!(serde_json::from_value::<Rates>(v)?, r);
        Ok(())
    }
}
