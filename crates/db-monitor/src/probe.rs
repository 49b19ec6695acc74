//! The short performance probe of `--probe`: timed reads of a file, or `/stats` round trips.

use std::time::{Duration, Instant};

use hive_db_core::rusqlite::Connection;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::attach::Endpoint;

/// What a probe measured. Its JSON also carries `per_second`, after `errors`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Latency of the operations, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Largest latency, in milliseconds.
    pub max_ms: f64,
}

impl ProbeResult {
    /// Operations that succeeded per second (0 for a probe of no time).
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }
}

impl Serialize for ProbeResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ProbeResult", 8)?;
        s.serialize_field("what", &self.what)?;
        s.serialize_field("seconds", &self.seconds)?;
        s.serialize_field("ops", &self.ops)?;
        s.serialize_field("errors", &self.errors)?;
        s.serialize_field("per_second", &self.per_second())?;
        s.serialize_field("p50_ms", &self.p50_ms)?;
        s.serialize_field("p99_ms", &self.p99_ms)?;
        s.serialize_field("max_ms", &self.max_ms)?;
        s.end()
    }
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
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: `per_second` missing from the JSON or out of its place now that it is
    /// computed, not stored, or computed from the errors or the wrong time.
    #[test]
    fn json_has_the_rate_after_the_errors() -> serde_json::Result<()> {
        let p = ProbeResult {
            what: "reads".to_owned(),
            seconds: 2.0,
            ops: 500,
            errors: 3,
            p50_ms: 0.1,
            p99_ms: 0.5,
            max_ms: 2.0,
        };
        let text = serde_json::to_string(&p)?;
        assert!(
            text.contains(r#""errors":3,"per_second":250.0,"p50_ms""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ProbeResult>(&text)?, p);
        Ok(())
    }
}
