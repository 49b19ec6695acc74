//! Running a closure on N threads for a fixed time, and summarising what came out.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Measured {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
    pub(crate) ops_per_sec: f64,
    /// Per-operation latency percentiles in ns (batch means for `Timing::Batched`).
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub(crate) max_ns: u64,
    pub(crate) first_error: Option<String>,
}

impl Measured {
    /// Counts over `secs`, without latencies.
    pub(crate) fn from_counts(ops: u64, errors: u64, secs: f64) -> Self {
        Self {
            ops,
            errors,
            secs,
            ops_per_sec: ops as f64 / secs,
            ..Self::default()
        }
    }
}

/// How latency is taken.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timing {
    /// Only count operations (no clock reads inside the loop).
    None,
    /// Time every operation.
    Each,
    /// Time batches of this many operations; percentiles are of batch means.
    Batched(u32),
}

/// A small xorshift generator: fast, deterministic per thread.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A number in `1..=n`, as SQLite's integer type.
    pub(crate) fn below(&mut self, n: u64) -> i64 {
        i64::try_from(self.next() % n.max(1) + 1).unwrap_or(i64::MAX)
    }
}

/// Runs `op` on `threads` threads for `duration`. Each thread first builds its own state
/// with `setup(thread_index)`; the clock starts when all are ready.
pub(crate) fn run<S, E: std::fmt::Display>(
    threads: usize,
    duration: Duration,
    timing: Timing,
    setup: impl Fn(usize) -> anyhow::Result<S> + Sync,
    op: impl Fn(&mut S, &mut Rng) -> Result<(), E> + Sync,
) -> anyhow::Result<Measured> {
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let barrier = Barrier::new(threads + 1);
    let first_error = std::sync::Mutex::new(None::<String>);
    let (secs, mut latencies) = std::thread::scope(|scope| -> anyhow::Result<(f64, Vec<u64>)> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, ops, errors, barrier, setup, op, first_error) =
                    (&stop, &ops, &errors, &barrier, &setup, &op, &first_error);
                scope.spawn(move || -> anyhow::Result<Vec<u64>> {
                    let state = setup(t);
                    barrier.wait();
                    let mut state = state?;
                    let mut rng = Rng::new(t as u64 + 1);
                    let (lat, n, failed) =
                        measure_thread(&mut state, &mut rng, timing, stop, op, first_error);
                    ops.fetch_add(n, Relaxed);
                    errors.fetch_add(failed, Relaxed);
                    Ok(lat)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Relaxed);
        let mut all = Vec::new();
        for h in handles {
            let lat = h
                .join()
                .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
            all.extend(lat);
        }
        Ok((start.elapsed().as_secs_f64(), all))
    })?;
    latencies.sort_unstable();
    let pct = |q: f64| percentile(&latencies, q);
    Ok(Measured {
        p50_ns: pct(0.5),
        p99_ns: pct(0.99),
        p999_ns: pct(0.999),
        max_ns: latencies.last().copied().unwrap_or(0),
        first_error: first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
        ..Measured::from_counts(ops.load(Relaxed), errors.load(Relaxed), secs)
    })
}

/// One thread of [`run`]: runs `op` on `state` until `stop`, timed as `timing` says, and
/// keeps the first error's text in `first_error`. Returns the latencies, the operations run
/// and how many failed.
fn measure_thread<S, E: std::fmt::Display>(
    state: &mut S,
    rng: &mut Rng,
    timing: Timing,
    stop: &AtomicBool,
    op: impl Fn(&mut S, &mut Rng) -> Result<(), E>,
    first_error: &std::sync::Mutex<Option<String>>,
) -> (Vec<u64>, u64, u64) {
    let mut lat = Vec::new();
    let mut n = 0u64;
    let mut failed = 0u64;
    let record = |r: Result<(), E>, failed: &mut u64| {
        if let Err(e) = r {
            *failed += 1;
            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(e.to_string());
            }
        }
    };
    // At least one operation per thread: on a loaded machine a thread may first run after a
    // short window has already closed, and a path measured at 0 ops says nothing.
    loop {
        match timing {
            Timing::None => {
                record(op(state, rng), &mut failed);
                n += 1;
            }
            Timing::Each => {
                let start = Instant::now();
                record(op(state, rng), &mut failed);
                lat.push(start.elapsed().as_nanos() as u64);
                n += 1;
            }
            Timing::Batched(k) => {
                let start = Instant::now();
                for _ in 0..k {
                    record(op(state, rng), &mut failed);
                }
                lat.push(start.elapsed().as_nanos() as u64 / u64::from(k));
                n += u64::from(k);
            }
        }
        if stop.load(Relaxed) {
            break;
        }
    }
    (lat, n, failed)
}

/// The `q`-quantile of `sorted` by the nearest-rank method; 0 when empty.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The process's peak resident set size so far, in bytes (Linux `VmHWM`).
pub(crate) fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: the runner losing operations or errors between threads.
    #[test]
    fn counts_every_operation_and_error() -> anyhow::Result<()> {
        let m = run(
            3,
            Duration::from_millis(50),
            Timing::Each,
            |_| Ok(0u64),
            |n, _| {
                *n += 1;
                if *n % 2 == 0 { Err("even") } else { Ok(()) }
            },
        )?;
        assert!(m.ops > 0);
        // Each thread fails every other op: errors are half the ops, give or take one each.
        assert!(m.errors.abs_diff(m.ops / 2) <= 3, "{m:?}");
        assert_eq!(m.first_error.as_deref(), Some("even"));
        assert!(m.p50_ns <= m.max_ns);
        Ok(())
    }
}
