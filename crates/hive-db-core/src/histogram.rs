//! A lock-free log-linear histogram of durations, cheap enough to record every checkout.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::sync::lock;

/// Sub-buckets per power of two: values land within 1/8 (12.5%) of their true size.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` ns get a bucket each; above, 8 buckets per power of two up to 2^64.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// Shards a thread can own alone: while it lives, no other thread writes to its shard, so it
/// updates its counters with a plain load and store instead of a locked read-modify-write
/// (every checkout records into two histograms). Threads beyond these share one more shard,
/// updated with atomic adds.
const OWNED: usize = 8;
/// The shard of threads that own none.
const SHARED: usize = OWNED;
/// Copies of the buckets: one per owning thread, and the shared one.
const SHARDS: usize = OWNED + 1;
/// Counters per shard: the exact sum of the shard's durations first, then its buckets.
const STRIDE: usize = 1 + BUCKETS;

/// The exported bucket bounds are the powers of two from 2^`FIRST_BOUND` ns (128 ns) to
/// 2^`LAST_BOUND` ns (about 68.7 s). Each is an edge of the internal buckets, so the exported
/// cumulative counts are exact.
const FIRST_BOUND: u32 = 7;
const LAST_BOUND: u32 = 36;

/// Owned shards given back by threads that ended, and the next never handed out.
static FREE_SHARDS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// A thread's claim on a shard, given back when the thread ends.
struct ShardClaim(usize);

impl ShardClaim {
    fn claim() -> Self {
        let free = lock(&FREE_SHARDS).pop();
        Self(free.unwrap_or_else(|| {
            NEXT_SHARD
                .fetch_update(Relaxed, Relaxed, |n| (n < OWNED).then_some(n + 1))
                .unwrap_or(SHARED)
        }))
    }
}

impl Drop for ShardClaim {
    fn drop(&mut self) {
        if self.0 != SHARED {
            lock(&FREE_SHARDS).push(self.0);
        }
    }
}

thread_local! {
    static SHARD: ShardClaim = ShardClaim::claim();
}

/// This thread's shard: its own, or [`SHARED`] (also while the thread is ending and its
/// claim is gone).
#[inline]
fn shard() -> usize {
    SHARD.try_with(|c| c.0).unwrap_or(SHARED)
}

/// Adds `v` to `cell` of `shard`: a plain load and store on an owned shard, an atomic add on
/// the shared one.
#[inline]
fn add(cell: &AtomicU64, shard: usize, v: u64) {
    if shard == SHARED {
        cell.fetch_add(v, Relaxed);
    } else {
        cell.store(cell.load(Relaxed).wrapping_add(v), Relaxed);
    }
}

/// Counts of durations in nanoseconds, grouped in log-linear buckets, plus the exact sum and
/// maximum. Recording costs an add to a bucket of the thread's shard, a second one to the
/// shard's sum unless the duration is zero (an acquire that did not wait), and a load; counts
/// and percentiles are derived when read.
///
/// A shard's counters are allocated the first time a thread records into it (about 4 KiB
/// each): a database that only a few threads use pays for a few shards, not for nine.
pub(crate) struct Histogram {
    /// Per shard, once used: `STRIDE` counters, the shard's sum of nanoseconds, then its
    /// buckets.
    shards: [OnceLock<Box<[AtomicU64]>>; SHARDS],
    max_ns: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

#[inline]
fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    let sub = ((ns >> shift) as usize) & (SUB - 1);
    SUB + (shift as usize) * SUB + sub
}

/// The largest value that falls in bucket `b`.
fn bucket_upper(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let shift = ((b - SUB) / SUB) as u32;
    let sub = ((b - SUB) % SUB) as u64;
    let low = (SUB as u64 + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| OnceLock::new()),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let shard = shard();
        let Some(run) = self
            .shards
            .get(shard)
            .map(|cells| cells.get_or_init(|| (0..STRIDE).map(|_| AtomicU64::new(0)).collect()))
        else {
            return;
        };
        if let Some(cell) = run.get(1 + bucket_of(ns)) {
            add(cell, shard, 1);
        }
        if ns != 0
            && let Some(sum) = run.first()
        {
            add(sum, shard, ns);
        }
        if ns > self.max_ns.load(Relaxed) {
            self.max_ns.fetch_max(ns, Relaxed);
        }
    }

    /// How many durations were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.merged().0.iter().sum()
    }

    /// Bucket counts and the sum of nanoseconds, each summed over the shards.
    fn merged(&self) -> (Vec<u64>, u64) {
        let mut counts = vec![0u64; BUCKETS];
        let mut sum_ns = 0u64;
        for run in self.shards.iter().filter_map(OnceLock::get) {
            sum_ns = sum_ns.wrapping_add(run[0].load(Relaxed));
            for (total, b) in counts.iter_mut().zip(&run[1..]) {
                *total += b.load(Relaxed);
            }
        }
        (counts, sum_ns)
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let (counts, sum_ns) = self.merged();
        let count: u64 = counts.iter().sum();
        let max_ns = self.max_ns.load(Relaxed);
        let quantile = |q: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            // The rank of the q-quantile, 1-based, rounded up (nearest-rank method).
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_upper(b).min(max_ns);
                }
            }
            max_ns
        };
        let mut below = 0;
        let mut b = 0;
        let buckets = (FIRST_BOUND..=LAST_BOUND)
            .map(|k| {
                // Internal buckets end at 2^k - 1 for k >= SUB_BITS + 1: add up to there.
                let edge = (1u64 << k) - 1;
                while b < BUCKETS && bucket_upper(b) <= edge {
                    below += counts[b];
                    b += 1;
                }
                Bucket {
                    le: (1u64 << k) as f64 / 1e9,
                    count: below,
                }
            })
            .collect();
        LatencySummary {
            count,
            sum_ns,
            p50_ns: quantile(0.50),
            p99_ns: quantile(0.99),
            p999_ns: quantile(0.999),
            max_ns,
            buckets,
        }
    }
}

/// A duration histogram: its count, exact sum and maximum, percentiles, and cumulative bucket
/// counts in the shape of a Prometheus histogram. Two snapshots' buckets subtract to the
/// histogram of the interval between them.
///
/// Percentiles are internal bucket upper bounds (eight buckets per power of two): at most
/// 12.5% above the true value, and never above the exact maximum. They cover every duration
/// since the process started; for an interval's, subtract the buckets.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct LatencySummary {
    /// How many durations were recorded (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the durations, exact, in nanoseconds.
    pub sum_ns: u64,
    /// Median, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, in nanoseconds.
    pub p999_ns: u64,
    /// Largest, exact, in nanoseconds.
    pub max_ns: u64,
    /// Cumulative counts at fixed upper bounds, ascending: the powers of two from 128 ns to
    /// about 68.7 s. The `+Inf` bucket is [`count`](Self::count).
    pub buckets: Vec<Bucket>,
}

impl LatencySummary {
    /// The mean duration in nanoseconds (0 when nothing was recorded).
    pub fn mean_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.count).unwrap_or(0)
    }
}

/// One cumulative bucket of a [`LatencySummary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Bucket {
    /// Upper bound, in seconds: the bucket counts durations below it (Prometheus `le`).
    pub le: f64,
    /// Durations recorded below `le`.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bug caught: a bucket index out of range for large values, or buckets out of order.
    /// Bug caught: every histogram allocating all nine shards up front (about 36 KiB each,
    /// three per database: over 100 KiB for a database nobody uses), or a shard allocated
    /// for nothing.
    #[test]
    fn shards_are_allocated_when_first_used() {
        let h = Histogram::default();
        let allocated = |h: &Histogram| h.shards.iter().filter(|s| s.get().is_some()).count();
        assert_eq!(allocated(&h), 0);
        assert_eq!(h.summary().count, 0);
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(5));
        assert_eq!(allocated(&h), 1);
        std::thread::scope(|s| {
            s.spawn(|| h.record(Duration::from_micros(7)));
        });
        assert!(allocated(&h) <= 2);
        assert_eq!(h.summary().count, 3);
        assert!(std::mem::size_of::<Histogram>() < 512);
    }

    #[test]
    fn buckets_cover_all_values_in_order() {
        let mut last = 0;
        for ns in (0..20_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b < BUCKETS, "{ns} -> {b}");
            assert!(b >= last || ns > 20_000, "bucket order broken at {ns}");
            assert!(bucket_upper(b) >= ns, "{ns} above its bucket's upper bound");
            last = b;
        }
    }

    /// Bug caught: shards summed wrongly, so durations recorded on other threads vanish.
    #[test]
    fn records_from_many_threads_all_count() {
        let h = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..9)
            .map(|t| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        h.record(Duration::from_nanos(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.summary();
        assert_eq!(s.count, 9000);
        assert_eq!(h.count(), 9000);
        assert_eq!(s.max_ns, 8999);
        assert_eq!(s.sum_ns, (0..9000u64).sum::<u64>());
    }

    /// Bug caught: owned shards not exclusive (two threads on one, losing updates, also once
    /// a shard is given back and claimed again), or the shared shard's adds not atomic. More
    /// threads than owned shards record at once, in waves.
    #[test]
    fn counts_stay_exact_with_more_threads_than_shards() {
        const PER_THREAD: u64 = 100_000;
        let h = std::sync::Arc::new(Histogram::default());
        for _wave in 0..2 {
            let start = std::sync::Arc::new(std::sync::Barrier::new(2 * OWNED));
            let threads: Vec<_> = (0..2 * OWNED)
                .map(|_| {
                    let (h, start) = (std::sync::Arc::clone(&h), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        for i in 1..=PER_THREAD {
                            h.record(Duration::from_nanos(i));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let s = h.summary();
        let threads = 2 * 2 * OWNED as u64;
        assert_eq!(s.count, threads * PER_THREAD);
        assert_eq!(s.sum_ns, threads * (1..=PER_THREAD).sum::<u64>());
    }

    /// Bug caught: cumulative buckets that count a duration at the wrong bound (one off at a
    /// power of two), that are not cumulative, or a sum that drops the durations of a shard.
    #[test]
    fn buckets_are_cumulative_and_exact_at_their_bounds() {
        let h = Histogram::default();
        let values = [0u64, 1, 127, 128, 129, 1023, 1024, 1_000_000, 1 << 40];
        for v in values {
            h.record(Duration::from_nanos(v));
        }
        let s = h.summary();
        assert_eq!(s.count, values.len() as u64);
        assert_eq!(s.sum_ns, values.iter().sum::<u64>());
        assert_eq!(s.buckets.len(), (LAST_BOUND - FIRST_BOUND + 1) as usize);
        for pair in s.buckets.windows(2) {
            assert!(pair[0].le < pair[1].le && pair[0].count <= pair[1].count);
        }
        for bucket in &s.buckets {
            let le_ns = (bucket.le * 1e9).round() as u64;
            let exact = values.iter().filter(|v| **v < le_ns).count() as u64;
            assert_eq!(bucket.count, exact, "bucket below {le_ns} ns");
        }
        // 2^40 ns is past the last bound: only in the +Inf bucket.
        assert_eq!(s.buckets.last().map(|b| b.count), Some(s.count - 1));
    }

    proptest! {
        /// Bug caught: percentiles more than one bucket (12.5%) away from the exact answer.
        #[test]
        fn percentiles_within_bucket_error(mut values in prop::collection::vec(1u64..10_000_000_000, 1..400)) {
            let h = Histogram::default();
            for v in &values {
                h.record(Duration::from_nanos(*v));
            }
            values.sort_unstable();
            let s = h.summary();
            prop_assert_eq!(s.count, values.len() as u64);
            prop_assert_eq!(s.max_ns, *values.last().unwrap());
            for (q, got) in [(0.5, s.p50_ns), (0.99, s.p99_ns), (0.999, s.p999_ns)] {
                let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
                let exact = values[rank - 1];
                prop_assert!(got >= exact, "q{} {} below exact {}", q, got, exact);
                prop_assert!(got as f64 <= exact as f64 * 1.125 + 1.0, "q{} {} too far above {}", q, got, exact);
            }
        }
    }
}
