//! The Prometheus text exposition of a registry snapshot: a pure view, computed on request.
//!
//! Written by hand rather than through `prometheus-client`: the view keeps no metric objects
//! or counters of its own, histogram sums are printed as exact decimals of the snapshot's
//! nanoseconds (a `f64` would round them), and the output is the classic text format 0.0.4
//! that every scraper reads, not OpenMetrics.

use std::fmt::Write as _;

use crate::histogram::LatencySummary;
use crate::stats::{DbSnapshot, RegistrySnapshot};

/// The `Content-Type` of [`prometheus_text`]'s output (text exposition format 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The async calls' queues and cancellations (zeros without the cargo feature `async`).
fn async_families(family: &mut impl FnMut(&str, Kind, &str, &dyn Fn(&DbSnapshot) -> Value)) {
    family(
        "hive_db_async_read_queued",
        Kind::Gauge,
        "Async reads waiting for a reader thread.",
        &|d| Value::Int(d.async_read_queue.into()),
    );
    family(
        "hive_db_async_write_queued",
        Kind::Gauge,
        "Async writes whose work has not started yet.",
        &|d| Value::Int(d.async_write_queue.into()),
    );
    let counters: [CounterFamily; 3] = [
        (
            "hive_db_async_cancelled_before_start_total",
            "Async calls dropped before their work started; the work was skipped.",
            |d| d.totals.async_cancelled_before_start,
        ),
        (
            "hive_db_async_cancelled_after_start_total",
            "Async calls dropped while their work ran; it ran to its end.",
            |d| d.totals.async_cancelled_after_start,
        ),
        (
            "hive_db_async_queue_full_total",
            "Async calls refused because the database's queue was full.",
            |d| d.totals.async_queue_full,
        ),
    ];
    for (name, help, value) in counters {
        family(name, Kind::Counter, help, &|d| Value::Int(value(d)));
    }
}

/// `snapshot` as Prometheus text exposition (format 0.0.4).
///
/// Every family has `# HELP` and `# TYPE`, a `hive_db_` prefix and base units (seconds,
/// bytes); every series has one `db` label whose value is the database's name, and nothing
/// else about the database: never its path, a checkout site or SQL. Counters are the
/// snapshot's running totals, so Prometheus computes rates; latencies are histograms with the
/// snapshot's cumulative buckets, a `+Inf` bucket equal to `_count`, and an exact `_sum`.
/// A closed database keeps its counters and reports `hive_db_up 0`.
///
/// # Examples
///
/// ```
/// let registry = hive_db_core::Registry::new();
/// let text = hive_db_core::prometheus_text(&registry.stats());
/// assert!(text.contains("# TYPE hive_db_up gauge"));
/// ```
pub fn prometheus_text(snapshot: &RegistrySnapshot) -> String {
    let dbs = &snapshot.databases;
    let mut out = String::with_capacity(1024 + dbs.len() * 6 * 1024);
    let mut family = |name: &str, kind: Kind, help: &str, value: &dyn Fn(&DbSnapshot) -> Value| {
        header(&mut out, name, kind, help);
        for db in dbs {
            sample(&mut out, name, db, None, value(db));
        }
    };

    family(
        "hive_db_up",
        Kind::Gauge,
        "1 while the database is registered and open, 0 once closed.",
        &|d| Value::Int(u64::from(d.open)),
    );
    family(
        "hive_db_connections_max",
        Kind::Gauge,
        "Most connections the pool may open (max_size).",
        &|d| Value::Int(d.max_size.into()),
    );
    family(
        "hive_db_connections_min_idle",
        Kind::Gauge,
        "Idle connections the pool keeps open (min_idle).",
        &|d| Value::Int(d.min_idle.into()),
    );
    family(
        "hive_db_connections_pending",
        Kind::Gauge,
        "Callers waiting for a connection.",
        &|d| Value::Int(d.waiting.into()),
    );
    family(
        "hive_db_maxwait_seconds",
        Kind::Gauge,
        "How long the oldest caller still waiting for a connection has waited.",
        &|d| Value::Seconds(d.maxwait_ns),
    );
    family(
        "hive_db_connections_held_past_leak_threshold",
        Kind::Gauge,
        "Connections checked out for longer than leak_threshold now (as of the last leak scan).",
        &|d| Value::Int(d.held_past_leak_threshold.into()),
    );
    family(
        "hive_db_writer_lane_queued",
        Kind::Gauge,
        "Writers queued for the writer lane, the one writing not included.",
        &|d| Value::Int(d.writer_queue.into()),
    );
    family(
        "hive_db_file_size_bytes",
        Kind::Gauge,
        "Size of the database file.",
        &|d| Value::Int(d.sqlite.file_bytes),
    );
    family(
        "hive_db_wal_size_bytes",
        Kind::Gauge,
        "Size of the write-ahead log file (0 when absent).",
        &|d| Value::Int(d.sqlite.wal_bytes),
    );

    let counters: [CounterFamily; 14] = [
        (
            "hive_db_acquires_total",
            "Successful connection acquires.",
            DbSnapshot::acquires,
        ),
        (
            "hive_db_acquires_waited_total",
            "Successful acquires that found no idle connection and had to wait.",
            |d| d.totals.acquires_waited,
        ),
        (
            "hive_db_acquire_timeouts_total",
            "Acquires that gave up at connection_timeout.",
            |d| d.totals.acquire_timeouts,
        ),
        (
            "hive_db_writer_lane_timeouts_total",
            "Writes that gave up waiting for the writer lane at connection_timeout.",
            |d| d.totals.writer_timeouts,
        ),
        (
            "hive_db_connections_created_total",
            "Connections opened.",
            |d| d.totals.connections_created,
        ),
        (
            "hive_db_connect_errors_total",
            "Failed attempts to open a connection.",
            |d| d.totals.connect_errors,
        ),
        (
            "hive_db_busy_errors_total",
            "SQLITE_BUSY and SQLITE_LOCKED errors seen.",
            |d| d.totals.busy_errors,
        ),
        (
            "hive_db_leaks_total",
            "Connections held longer than leak_threshold.",
            |d| d.totals.leaks,
        ),
        (
            "hive_db_commits_total",
            "Writes whose work committed.",
            |d| d.totals.commits,
        ),
        (
            "hive_db_rollbacks_total",
            "Writes whose work was rolled back.",
            |d| d.totals.rollbacks,
        ),
        (
            "hive_db_write_transactions_total",
            "SQLite write transactions committed; queued writers share one (group commit).",
            |d| d.totals.write_transactions,
        ),
        (
            "hive_db_checkpoints_total",
            "Passive WAL checkpoints run after commits.",
            |d| d.totals.checkpoints,
        ),
        (
            "hive_db_failed_transactions_total",
            "Write transactions whose COMMIT failed (disk full, I/O error): their work is lost.",
            |d| d.totals.failed_transactions,
        ),
        (
            "hive_db_write_retries_total",
            "PostgreSQL write transactions re-run after a serialization failure or deadlock.",
            |d| d.totals.write_retries,
        ),
    ];
    for (name, help, value) in counters {
        family(name, Kind::Counter, help, &|d| Value::Int(value(d)));
    }
    async_families(&mut family);

    // The engine as an info metric, so every other family keeps its one `db` label.
    header(
        &mut out,
        "hive_db_backend_info",
        Kind::Gauge,
        "Always 1; the backend label names the database's engine (sqlite or postgres).",
    );
    for db in dbs {
        let backend = Some(("backend", db.backend.as_str()));
        sample(&mut out, "hive_db_backend_info", db, backend, Value::Int(1));
    }

    header(
        &mut out,
        "hive_db_connections",
        Kind::Gauge,
        "Open connections by state: checked out (active) or idle in the pool.",
    );
    for db in dbs {
        let name = "hive_db_connections";
        sample(
            &mut out,
            name,
            db,
            Some(("state", "active")),
            Value::Int(db.active().into()),
        );
        sample(
            &mut out,
            name,
            db,
            Some(("state", "idle")),
            Value::Int(db.idle.into()),
        );
    }

    header(
        &mut out,
        "hive_db_connections_closed_total",
        Kind::Counter,
        "Connections closed, by reason.",
    );
    for db in dbs {
        let c = &db.totals.connections_closed;
        for (reason, n) in [
            ("broken", c.broken),
            ("validation_failed", c.validation_failed),
            ("max_lifetime", c.max_lifetime),
            ("idle_timeout", c.idle_timeout),
            ("pool_closed", c.pool_closed),
            ("session_changed", c.session_changed),
        ] {
            let name = "hive_db_connections_closed_total";
            sample(&mut out, name, db, Some(("reason", reason)), Value::Int(n));
        }
    }

    postgres_families(&mut out, dbs);

    let histograms: [HistogramFamily; 3] = [
        (
            "hive_db_acquire_wait_seconds",
            "Time from asking for a connection to having it, for every successful acquire.",
            |d| &d.acquire_wait,
        ),
        (
            "hive_db_connection_hold_seconds",
            "Time connections were held, from checkout to return (5 ms resolution).",
            |d| &d.hold_time,
        ),
        (
            "hive_db_writer_wait_seconds",
            "Time writes waited for the writer lane.",
            |d| &d.writer_wait,
        ),
    ];
    for (name, help, summary) in histograms {
        header(&mut out, name, Kind::Histogram, help);
        for db in dbs {
            histogram(&mut out, name, db, summary(db));
        }
    }

    header(
        &mut out,
        "hive_db_uptime_seconds",
        Kind::Gauge,
        "Time since the process started using hive-db-core; counters start at zero then.",
    );
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "hive_db_uptime_seconds {}",
        Value::Millis(snapshot.uptime_ms)
    );
    out
}

/// A counter family: name, help, and its value in a database's snapshot.
type CounterFamily = (&'static str, &'static str, fn(&DbSnapshot) -> u64);
/// A histogram family: name, help, and the database's summary it shows.
type HistogramFamily = (
    &'static str,
    &'static str,
    fn(&DbSnapshot) -> &LatencySummary,
);

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A sample's value, printed exactly.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    /// Nanoseconds, printed as seconds.
    Seconds(u64),
    /// Milliseconds, printed as seconds.
    Millis(u64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac, digits) = match *self {
            Self::Int(n) => return write!(f, "{n}"),
            Self::Seconds(ns) => (ns / 1_000_000_000, ns % 1_000_000_000, 9),
            Self::Millis(ms) => (ms / 1_000, ms % 1_000, 3),
        };
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:0digits$}");
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// The `server` label of the replica at `index` of `PgConfig::replicas`: `replica1`, ...
/// (a position, not an address: labels name no hosts or paths).
fn replica_label(index: usize) -> String {
    format!("replica{}", index + 1)
}

/// The families of PostgreSQL databases' servers, as their monitor last measured them; none
/// without a PostgreSQL database. The `server` label is `primary`, or `replica1`, `replica2`
/// ... in the order of `PgConfig::replicas`.
fn postgres_families(out: &mut String, dbs: &[DbSnapshot]) {
    let pg: Vec<(&DbSnapshot, &crate::stats::PgFacts)> = dbs
        .iter()
        .filter_map(|d| d.postgres.as_ref().map(|p| (d, p)))
        .collect();
    if pg.is_empty() {
        return;
    }
    type ServerValue = fn(&crate::stats::ServerFacts) -> u64;
    let servers: [(&str, &str, ServerValue); 3] = [
        (
            "hive_db_pg_server_connections",
            "Client connections to the server, from any application.",
            |s| s.connections.into(),
        ),
        (
            "hive_db_pg_server_max_connections",
            "The server's max_connections.",
            |s| s.max_connections.into(),
        ),
        (
            "hive_db_pg_server_in_recovery",
            "1 when the server is a standby (in recovery), 0 for a primary.",
            |s| u64::from(s.in_recovery),
        ),
    ];
    for (name, help, value) in servers {
        header(out, name, Kind::Gauge, help);
        for (db, facts) in &pg {
            if let Some(primary) = &facts.primary {
                sample(
                    out,
                    name,
                    db,
                    Some(("server", "primary")),
                    Value::Int(value(primary)),
                );
            }
            for (i, replica) in facts.replicas.iter().enumerate() {
                if let Some(server) = &replica.server {
                    let target = replica_label(i);
                    sample(
                        out,
                        name,
                        db,
                        Some(("server", &target)),
                        Value::Int(value(server)),
                    );
                }
            }
        }
    }
    header(
        out,
        "hive_db_pg_primary_reachable",
        Kind::Gauge,
        "1 when the monitor's last measure of the primary worked and found it writable.",
    );
    for (db, facts) in &pg {
        let up = facts.primary.is_some() && facts.primary_error.is_none();
        sample(
            out,
            "hive_db_pg_primary_reachable",
            db,
            None,
            Value::Int(up.into()),
        );
    }
    header(
        out,
        "hive_db_pg_replica_up",
        Kind::Gauge,
        "1 when the read replica takes reads: reachable, a standby, within the lag bound.",
    );
    for (db, facts) in &pg {
        for (i, replica) in facts.replicas.iter().enumerate() {
            let target = replica_label(i);
            let up = replica.status == crate::stats::ReplicaStatus::Up;
            sample(
                out,
                "hive_db_pg_replica_up",
                db,
                Some(("server", &target)),
                Value::Int(up.into()),
            );
        }
    }
    header(
        out,
        "hive_db_pg_replica_lag_seconds",
        Kind::Gauge,
        "How far the read replica is behind the primary, measured from their WAL positions.",
    );
    for (db, facts) in &pg {
        for (i, replica) in facts.replicas.iter().enumerate() {
            if let Some(lag) = replica.lag_ms {
                let target = replica_label(i);
                let name = "hive_db_pg_replica_lag_seconds";
                sample(out, name, db, Some(("server", &target)), Value::Millis(lag));
            }
        }
    }
    header(
        out,
        "hive_db_pg_replica_reads_total",
        Kind::Counter,
        "Reads the read replica served.",
    );
    for (db, facts) in &pg {
        for (i, replica) in facts.replicas.iter().enumerate() {
            let target = replica_label(i);
            let name = "hive_db_pg_replica_reads_total";
            sample(
                out,
                name,
                db,
                Some(("server", &target)),
                Value::Int(replica.reads),
            );
        }
    }
    header(
        out,
        "hive_db_pg_replica_fallbacks_total",
        Kind::Counter,
        "Reads meant for a replica that went to the primary: none was up, within the lag bound and free in time.",
    );
    for (db, facts) in &pg {
        let name = "hive_db_pg_replica_fallbacks_total";
        sample(out, name, db, None, Value::Int(facts.replica_fallbacks));
    }
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One line: `name{db="..",extra="..."} value`.
fn sample(
    out: &mut String,
    name: &str,
    db: &DbSnapshot,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    let _ = write!(out, "{name}{{db=\"{}\"", escape_label(db.name.as_str()));
    if let Some((label, v)) = extra {
        let _ = write!(out, ",{label}=\"{}\"", escape_label(v));
    }
    let _ = writeln!(out, "}} {value}");
}

fn histogram(out: &mut String, name: &str, db: &DbSnapshot, h: &LatencySummary) {
    let bucket = format!("{name}_bucket");
    for b in &h.buckets {
        // Rust prints an f64 in the shortest form that reads back as the same value.
        let le = format!("{}", b.le);
        sample(out, &bucket, db, Some(("le", &le)), Value::Int(b.count));
    }
    sample(out, &bucket, db, Some(("le", "+Inf")), Value::Int(h.count));
    sample(
        out,
        &format!("{name}_sum"),
        db,
        None,
        Value::Seconds(h.sum_ns),
    );
    sample(out, &format!("{name}_count"), db, None, Value::Int(h.count));
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
        .into()
}

/// Help text as the exposition format wants it: `\` and newlines escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: sums or durations rounded through `f64`, or fractions printed without
    /// their leading zeros (`1.5` ns as `0.5` s).
    #[test]
    fn seconds_are_printed_exactly() {
        let cases = [
            (Value::Seconds(0), "0"),
            (Value::Seconds(1), "0.000000001"),
            (Value::Seconds(1_500_000_000), "1.5"),
            (Value::Seconds(u64::MAX), "18446744073.709551615"),
            (Value::Seconds(120_000_000_000), "120"),
            (Value::Millis(1_001), "1.001"),
            (Value::Millis(250), "0.25"),
            (Value::Int(u64::MAX), "18446744073709551615"),
        ];
        for (v, want) in cases {
            assert_eq!(v.to_string(), want);
        }
    }

    /// Bug caught: a quote, backslash or newline in a label value breaking the line (names
    /// cannot hold them today; the escaping must not depend on that).
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        assert_eq!(escape_label("plain-name_1"), "plain-name_1");
        assert_eq!(escape_help("a\\b\nc"), r"a\\b\nc");
    }
}
