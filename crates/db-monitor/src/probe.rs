//! The short performance probe of `--probe`: timed reads of a file, or `/stats` round trips.

use std::time::{Duration, Instant};

use hive_db_core::rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::attach::Endpoint;

/// What a probe measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProbeResult {
    /// `reads` (a read transaction on the file) or `stats` (a `/stats` round trip).
    pub what: String,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// `ops / seconds`.
    pub per_second: f64,
    /// Latency of the operations, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Largest latency, in milliseconds.
    pub max_ms: f64,
}

/// Small read transactions on `conn` for `length`: each reads the schema's row count, so it
/// measures taking a read snapshot (locks, the WAL index), not an application's queries.
pub(crate) fn reads(conn: &Connection, length: Duration) -> ProbeResult {
    run("reads", length, || {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok()
    })
}

/// `/stats` round trips to `endpoint` for `length`.
pub(crate) fn stats(endpoint: &Endpoint, length: Duration) -> ProbeResult {
    run("stats", length, || endpoint.stats().is_ok())
}

fn run(what: &str, length: Duration, mut op: impl FnMut() -> bool) -> ProbeResult {
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    while start.elapsed() < length {
        let t = Instant::now();
        if op() {
            latencies.push(t.elapsed());
        } else {
            errors += 1;
            // A failing target must not turn the probe into a busy loop.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1e3
    };
    let ops = latencies.len() as u64;
    ProbeResult {
        what: what.to_owned(),
        seconds,
        ops,
        errors,
        per_second: if seconds > 0.0 {
            ops as f64 / seconds
        } else {
            0.0
        },
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}
