//! The load test's report: built from what ran, printed for people or as one JSON object.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::loadtest::mix::{Mix, Op};
use crate::loadtest::pool::PoolFigures;
use crate::loadtest::run::{ErrorKind, Ran};
use crate::loadtest::store::Backend;
use crate::loadtest::verify::Check;
use crate::measure::percentile;

/// Operations per second of the original system's load test (8 workers x 50 transactions).
pub(crate) const ORIGINAL_OPS_PER_SEC: f64 = 264.0;

/// One operation's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OpFigures {
    pub(crate) name: &'static str,
    pub(crate) weight: u32,
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_ns: u64,
    pub(crate) p95_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) p999_ns: u64,
    pub(crate) max_ns: u64,
}

/// Per-operation figures of a run.
pub(crate) fn operations(ran: &Ran, mix: &Mix) -> Vec<OpFigures> {
    let secs = ran.elapsed.as_secs_f64().max(1e-9);
    Op::ALL
        .into_iter()
        .filter(|op| mix.weight(*op) > 0 || !ran.latencies[op.index()].is_empty())
        .map(|op| {
            let l = &ran.latencies[op.index()];
            OpFigures {
                name: op.name(),
                weight: mix.weight(op),
                count: l.len() as u64,
                errors: ran.failed[op.index()],
                ops_per_sec: l.len() as f64 / secs,
                p50_ns: percentile(l, 0.5),
                p95_ns: percentile(l, 0.95),
                p99_ns: percentile(l, 0.99),
                p999_ns: percentile(l, 0.999),
                max_ns: l.last().copied().unwrap_or(0),
            }
        })
        .collect()
}

/// The same workload through another path, for `--compare`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CompareRow {
    pub(crate) path: &'static str,
    /// `full` (the `ecosystemiser` operations through the data layer, which needs the
    /// registry or direct connections) or `sql` (the same mix, those operations in plain
    /// SQL: the same statements in the same transactions; every path runs this one).
    pub(crate) workload: &'static str,
    pub(crate) ops: u64,
    pub(crate) seconds: f64,
    pub(crate) ops_per_sec: f64,
    pub(crate) errors: u64,
    /// The registry's ops/s over this path's, on the same workload.
    pub(crate) registry_ratio: f64,
    /// True when this path's stored rows matched its acknowledged writes.
    pub(crate) content_verified: bool,
}

/// One round of `--compare`'s data-layer pairs: the registry on the same workload through
/// the data layer (`full`) and in plain SQL (`sql`), one run right after the other.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DataLayerRound {
    /// True when the `full` run came first (the order alternates from round to round).
    pub(crate) full_first: bool,
    pub(crate) full_ops_per_sec: f64,
    pub(crate) sql_ops_per_sec: f64,
    /// `full` over `sql`.
    pub(crate) ratio: f64,
    /// Both runs without an error, and each stored exactly what it acknowledged.
    pub(crate) verified: bool,
}

/// One round of `--compare`'s ceiling pairs: the registry on the mix in plain SQL and the
/// serial ceiling on the same mix (one worker, a raw connection per database), one run right
/// after the other.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CeilingRound {
    /// True when the registry's run came first (the order alternates from round to round).
    pub(crate) sql_first: bool,
    pub(crate) registry_ops_per_sec: f64,
    pub(crate) serial_ops_per_sec: f64,
    /// The registry's over the ceiling's.
    pub(crate) ratio: f64,
    /// Both runs without an error, and each stored exactly what it acknowledged.
    pub(crate) verified: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// The engine the databases were on.
    pub(crate) backend: Backend,
    pub(crate) verified: bool,
    #[serde(serialize_with = "by_name")]
    pub(crate) checks: Vec<Check>,
    pub(crate) workers: usize,
    /// Seconds the workers ran (measured).
    pub(crate) seconds: f64,
    /// Operations per worker when the run was bounded by count.
    pub(crate) ops_per_worker: Option<u64>,
    pub(crate) seed: u64,
    pub(crate) mix: BTreeMap<&'static str, u32>,
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) errors: u64,
    pub(crate) errors_by_kind: BTreeMap<String, ErrorKind>,
    pub(crate) original_ops_per_sec: f64,
    pub(crate) ratio_to_original: f64,
    pub(crate) operations: Vec<OpFigures>,
    pub(crate) databases: Vec<PoolFigures>,
    pub(crate) peak_rss_bytes: u64,
    pub(crate) open_files_before: usize,
    pub(crate) open_files_after: usize,
    pub(crate) samples: u64,
    pub(crate) metrics_endpoint: Option<String>,
    pub(crate) monitor_command: Option<String>,
    pub(crate) compare: Vec<CompareRow>,
    /// `--compare` on SQLite: the registry's ops/s over the serial ceiling's (one worker, a
    /// raw connection per database), both on the mix in plain SQL: the median of
    /// `ceiling_rounds`.
    pub(crate) ratio_vs_serial_raw: Option<f64>,
    /// `--compare` on SQLite: each round's pair, the first being the `sql` and `serial raw`
    /// rows of `compare`.
    pub(crate) ceiling_rounds: Vec<CeilingRound>,
    /// `--compare`: the registry's ops/s through the data layer over its ops/s on the same
    /// mix in plain SQL (what the data layer costs): the median of `data_layer_rounds`.
    pub(crate) data_layer_ratio: Option<f64>,
    /// `--compare`: each round's pair, the first being the `full` and `sql` rows of
    /// `compare`.
    pub(crate) data_layer_rounds: Vec<DataLayerRound>,
}

fn by_name<S: serde::Serializer>(checks: &[Check], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Outcome<'a> {
        passed: bool,
        detail: &'a str,
    }
    s.collect_map(checks.iter().map(|c| {
        (
            c.name,
            Outcome {
                passed: c.passed,
                detail: &c.detail,
            },
        )
    }))
}

const MIB: f64 = 1024.0 * 1024.0;

fn fmt_ns(ns: u64) -> String {
    match ns {
        n if n < 10_000 => format!("{n} ns"),
        n if n < 10_000_000 => format!("{:.1} us", n as f64 / 1e3),
        n => format!("{:.1} ms", n as f64 / 1e6),
    }
}

impl Report {
    /// The report for people, on standard output.
    pub(crate) fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:.0} ops/s on {} over {:.2} s ({} ops, {} workers, seed {}), {} errors: {:.1} x \
             the original's {ORIGINAL_OPS_PER_SEC:.0} ops/s",
            self.ops_per_sec,
            match self.backend {
                Backend::Sqlite => "SQLite",
                Backend::Postgres => "PostgreSQL",
            },
            self.seconds,
            self.ops,
            self.workers,
            self.seed,
            self.errors,
            self.ratio_to_original
        )?;
        let mix: Vec<String> = self.mix.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Stated as --mix takes it, so a run can be repeated.
        writeln!(out, "mix: {}", mix.join(","))?;
        writeln!(out)?;
        self.print_operations(out)?;
        writeln!(out)?;
        self.print_databases(out)?;
        writeln!(out)?;
        writeln!(
            out,
            "peak RSS {:.1} MiB; open files {} before, {} after; {} pool samples",
            self.peak_rss_bytes as f64 / MIB,
            self.open_files_before,
            self.open_files_after,
            self.samples
        )?;
        self.print_compare(out)?;
        writeln!(out)?;
        self.print_checks(out)
    }

    /// Per operation: its weight, count, rate, latencies and errors; then errors by kind.
    fn print_operations(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:<17} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "operation", "weight", "ops", "ops/s", "p50", "p95", "p99", "p99.9", "max", "errors"
        )?;
        for o in &self.operations {
            writeln!(
                out,
                "{:<17} {:>6} {:>9} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
                o.name,
                o.weight,
                o.count,
                o.ops_per_sec,
                fmt_ns(o.p50_ns),
                fmt_ns(o.p95_ns),
                fmt_ns(o.p99_ns),
                fmt_ns(o.p999_ns),
                fmt_ns(o.max_ns),
                o.errors
            )?;
        }
        for (kind, e) in &self.errors_by_kind {
            writeln!(out, "error {kind}: {} (first: {})", e.count, e.first)?;
        }
        Ok(())
    }

    /// Per database: its pool's and writer lane's figures.
    fn print_databases(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.backend == Backend::Postgres {
            return self.print_pg_databases(out);
        }
        writeln!(
            out,
            "{:<15} {:>4} {:>4} {:>9} {:>9} {:>8} {:>5} {:>5} {:>7} {:>8} {:>8}",
            "database",
            "max",
            "live",
            "acq p99",
            "maxwait",
            "timeouts",
            "busy",
            "wq",
            "batch",
            "WAL peak",
            "commits"
        )?;
        for d in &self.databases {
            writeln!(
                out,
                "{:<15} {:>4} {:>4} {:>9} {:>9} {:>8} {:>5} {:>5} {:>7.2} {:>7.1}M {:>8}",
                d.name,
                d.max_size,
                d.live_peak,
                fmt_ns(d.acquire_wait_p99_ns),
                fmt_ns(d.maxwait_peak_ns),
                d.timeouts,
                d.busy,
                d.writer_queue_peak,
                d.group_commit_batch,
                d.wal_peak_bytes as f64 / MIB,
                d.commits
            )?;
        }
        Ok(())
    }

    /// Per PostgreSQL database: its pool's figures, write retries and replicas (the server
    /// orders writers itself: no writer lane, no WAL file of the client's to watch).
    fn print_pg_databases(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{:<15} {:>4} {:>4} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>8} {:>9}",
            "database",
            "max",
            "live",
            "acq p99",
            "acq max",
            "maxwait",
            "timeouts",
            "retries",
            "commits",
            "replicas",
            "lag peak"
        )?;
        for d in &self.databases {
            writeln!(
                out,
                "{:<15} {:>4} {:>4} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>8} {:>9}",
                d.name,
                d.max_size,
                d.live_peak,
                fmt_ns(d.acquire_wait_p99_ns),
                fmt_ns(d.acquire_wait_max_ns),
                fmt_ns(d.maxwait_peak_ns),
                d.timeouts,
                d.write_retries,
                d.commits,
                d.replicas,
                d.replica_lag_peak_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))
            )?;
        }
        Ok(())
    }

    /// `--compare`'s rows, if any.
    fn print_compare(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if !self.compare.is_empty() {
            writeln!(out)?;
            writeln!(
                out,
                "{:<15} {:>8} {:>10} {:>9} {:>7} {:>16} {:>8}",
                "compare", "workload", "ops", "ops/s", "errors", "registry / path", "content"
            )?;
            for c in &self.compare {
                writeln!(
                    out,
                    "{:<15} {:>8} {:>10} {:>9.0} {:>7} {:>16.2} {:>8}",
                    c.path,
                    c.workload,
                    c.ops,
                    c.ops_per_sec,
                    c.errors,
                    c.registry_ratio,
                    if c.content_verified { "ok" } else { "WRONG" }
                )?;
            }
            if let Some(r) = self.ratio_vs_serial_raw {
                let rounds = rounds_text(
                    self.ceiling_rounds
                        .iter()
                        .map(|c| (c.ratio, c.sql_first, c.verified)),
                    ["registry first", "serial first"],
                );
                writeln!(
                    out,
                    "registry / serial raw ceiling: {r:.2}, the median of {rounds} (target 1.5)"
                )?;
            }
            if let Some(r) = self.data_layer_ratio {
                let rounds = rounds_text(
                    self.data_layer_rounds
                        .iter()
                        .map(|d| (d.ratio, d.full_first, d.verified)),
                    ["full first", "sql first"],
                );
                writeln!(
                    out,
                    "data layer: full / sql {r:.2}, the median of {rounds} (target 0.9)"
                )?;
            }
        }
        Ok(())
    }

    /// Each check, then the verdict.
    fn print_checks(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for c in &self.checks {
            writeln!(
                out,
                "{} {}: {}",
                if c.passed { "ok    " } else { "FAILED" },
                c.name,
                c.detail
            )?;
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        if failed == 0 {
            writeln!(out, "verified: all {} checks passed", self.checks.len())?;
        } else {
            writeln!(
                out,
                "NOT verified: {failed} of {} checks failed",
                self.checks.len()
            )?;
        }
        Ok(())
    }
}

/// Rounds of pairs as text: each ratio with its order (`orders[0]` when the first run of the
/// ratio came first), and `WRONG` when a run of the pair failed its checks.
fn rounds_text(rounds: impl Iterator<Item = (f64, bool, bool)>, orders: [&str; 2]) -> String {
    rounds
        .map(|(ratio, first, verified)| {
            let order = orders[usize::from(!first)];
            let wrong = if verified { "" } else { ", WRONG" };
            format!("{ratio:.2} ({order}{wrong})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
