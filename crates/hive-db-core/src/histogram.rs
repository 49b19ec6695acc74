//! A lock-free log-linear histogram of durations, cheap enough to record every checkout.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two: values land within 1/8 (12.5%) of their true size.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` ns get a bucket each; above, 8 buckets per power of two up to 2^64.
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// Copies of the buckets. Threads pick one by a thread-local index, so threads on different
/// cores rarely increment the same cache line (every checkout records into a histogram).
const SHARDS: usize = 4;

/// This thread's shard.
#[inline]
fn shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Counts of durations in nanoseconds, grouped in log-linear buckets, plus the exact maximum.
/// Recording costs one atomic add on the thread's shard (and a load); counts and means are
/// derived when read.
pub(crate) struct Histogram {
    /// `SHARDS` runs of `BUCKETS` counters.
    buckets: Box<[AtomicU64]>,
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

/// The middle of bucket `b`.
fn bucket_mid(b: usize) -> u64 {
    let low = if b == 0 { 0 } else { bucket_upper(b - 1) + 1 };
    low + (bucket_upper(b) - low) / 2
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS * SHARDS).map(|_| AtomicU64::new(0)).collect(),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[shard() * BUCKETS + bucket_of(ns)].fetch_add(1, Relaxed);
        if ns > self.max_ns.load(Relaxed) {
            self.max_ns.fetch_max(ns, Relaxed);
        }
    }

    /// How many durations were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Bucket counts, summed over the shards.
    fn merged(&self) -> Vec<u64> {
        let mut counts = vec![0u64; BUCKETS];
        for shard in self.buckets.chunks(BUCKETS) {
            for (total, b) in counts.iter_mut().zip(shard) {
                *total += b.load(Relaxed);
            }
        }
        counts
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts = self.merged();
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
        LatencySummary {
            count,
            mean_ns: counts
                .iter()
                .enumerate()
                .map(|(b, c)| u128::from(*c) * u128::from(bucket_mid(b)))
                .sum::<u128>()
                .checked_div(u128::from(count))
                .map_or(0, |m| u64::try_from(m).unwrap_or(u64::MAX)),
            p50_ns: quantile(0.50),
            p99_ns: quantile(0.99),
            p999_ns: quantile(0.999),
            max_ns,
        }
    }
}

/// Percentiles of a duration histogram, in nanoseconds. Percentiles are bucket upper bounds:
/// at most 12.5% above the true value, and never above the exact maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LatencySummary {
    /// How many durations were recorded.
    pub count: u64,
    /// Mean, in nanoseconds (from bucket midpoints: within 12.5%).
    pub mean_ns: u64,
    /// Median, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, in nanoseconds.
    pub p999_ns: u64,
    /// Largest, exact, in nanoseconds.
    pub max_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bug caught: a bucket index out of range for large values, or buckets out of order.
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
