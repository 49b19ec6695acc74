//! The measuring harness: every path of a scenario run in rotating rounds, each summarised
//! by its median round and printed as it is measured, and ratios paired round by round.

use std::time::Duration;

use anyhow::Context;
use hive_db_core::rusqlite::Connection;

use super::fixtures::point_read;
use super::flags::BenchArgs;
use crate::measure::{Measured, Rng, Timing, peak_rss_bytes, run};

/// One measured cell.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) path: &'static str,
    pub(crate) threads: usize,
    #[serde(flatten)]
    pub(crate) measured: Measured,
    pub(crate) peak_rss_bytes: u64,
}

/// (scenario, path, threads).
type CellKey = (&'static str, &'static str, usize);

pub(super) struct Bench {
    pub(super) args: BenchArgs,
    pub(super) rows: Vec<Row>,
    /// Throughput of every round, by (scenario, path, threads), in round order.
    rounds: Vec<(CellKey, Vec<f64>)>,
    /// Size of the WAL files after `write_contention`: (registry, r2d2).
    pub(super) write_wal_bytes: Option<(u64, u64)>,
    /// `write_contention`: the registry's writes per committed transaction (group commit's
    /// batch size), over all its rounds.
    pub(super) writers_per_batch: Option<f64>,
    /// The `many_dbs` steps.
    pub(super) many_dbs: Vec<crate::many_dbs::Step>,
    /// The `async` scenario's cells.
    pub(super) asynch: Vec<crate::asynch::Cell>,
}

impl Bench {
    pub(super) fn new(args: BenchArgs) -> Self {
        Self {
            args,
            rows: Vec::new(),
            rounds: Vec::new(),
            write_wal_bytes: None,
            writers_per_batch: None,
            many_dbs: Vec::new(),
            asynch: Vec::new(),
        }
    }

    pub(super) fn wants(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }

    fn push(
        &mut self,
        scenario: &'static str,
        path: &'static str,
        threads: usize,
        measured: Measured,
    ) {
        if !self.args.json {
            print_row(scenario, path, threads, &measured);
        }
        self.rows.push(Row {
            scenario,
            path,
            threads,
            measured,
            peak_rss_bytes: peak_rss_bytes(),
        });
    }

    /// The median over rounds of `a`'s throughput divided by `b`'s in the same round: both
    /// ran within moments of each other, so a disturbed stretch of time hits both.
    pub(super) fn paired_ratio(
        &self,
        scenario: &str,
        a: &str,
        b: &str,
        threads: usize,
    ) -> Option<f64> {
        let get = |path: &str| {
            self.rounds
                .iter()
                .find(|((s, p, t), _)| *s == scenario && *p == path && *t == threads)
                .map(|(_, v)| v)
        };
        let (a, b) = (get(a)?, get(b)?);
        let mut ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(_, b)| **b > 0.0)
            .map(|(a, b)| a / b)
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        Some(ratios[ratios.len() / 2])
    }

    pub(super) fn find(&self, scenario: &str, path: &str, threads: usize) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.path == path && r.threads == threads)
            .map(|r| &r.measured)
    }
}

pub(super) type Candidate<'a> = (
    &'static str,
    Box<dyn Fn(Duration) -> anyhow::Result<Measured> + 'a>,
);

/// The untimed pass each path gets before its measured rounds.
const WARM_UP: Duration = Duration::from_millis(50);

/// How a scenario's rounds are summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Summary {
    /// The round with the median throughput.
    Throughput,
    /// The round with the median p50 latency.
    Latency,
    /// The median-throughput round, with the worst `max` and the sum of errors of all rounds.
    Tail,
}

/// Runs every path of a scenario `rounds` times, in a rotating order so that no path always
/// runs first or right after another, and summarises each path by its median round. Drift on
/// a shared machine hits every path alike, and one disturbed round moves no median.
pub(super) fn compare(
    bench: &mut Bench,
    scenario: &'static str,
    threads: usize,
    summary: Summary,
    mut paths: Vec<Candidate<'_>>,
) -> anyhow::Result<()> {
    let plan = match summary {
        Summary::Tail => bench.args.write_rounds(),
        Summary::Throughput | Summary::Latency => bench.args.read_rounds(),
    };
    let rounds = plan.count;
    if !bench.args.paths.is_empty() {
        paths.retain(|(name, _)| bench.args.paths.iter().any(|p| name.contains(p.as_str())));
    }
    // One short untimed pass first: pools grow to the thread count, statement caches and page
    // caches fill, so no path pays its set-up inside a measured round.
    for (name, run) in &paths {
        run(WARM_UP).with_context(|| format!("{scenario} / {name} (warm-up)"))?;
    }
    let mut all: Vec<Vec<Measured>> = vec![Vec::with_capacity(rounds); paths.len()];
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let (name, run) = &paths[i];
            let m = run(plan.each).with_context(|| format!("{scenario} / {name}"))?;
            if bench.args.verbose {
                eprintln!(
                    "  round {round}: {scenario} / {name} / {threads}: {:.0} ops/s, p50 {} ns",
                    m.ops_per_sec, m.p50_ns
                );
            }
            all[i].push(m);
        }
    }
    for ((name, _), runs) in paths.iter().zip(&all) {
        bench.rounds.push((
            (scenario, *name, threads),
            runs.iter().map(|m| m.ops_per_sec).collect(),
        ));
    }
    for ((name, _), mut runs) in paths.iter().zip(all) {
        let worst_max = runs.iter().map(|m| m.max_ns).max().unwrap_or(0);
        let errors: u64 = runs.iter().map(|m| m.errors).sum();
        let first_error = runs.iter().find_map(|m| m.first_error.clone());
        match summary {
            Summary::Latency => runs.sort_by_key(|m| m.p50_ns),
            Summary::Throughput | Summary::Tail => {
                runs.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            }
        }
        let mut m = runs.swap_remove(runs.len() / 2);
        if summary == Summary::Tail {
            m.max_ns = worst_max;
            m.errors = errors;
            m.first_error = first_error;
        }
        bench.push(scenario, name, threads, m);
    }
    Ok(())
}

/// A path whose operation keeps no state of its own in each thread.
pub(super) fn stateless<'a, E, F>(
    name: &'static str,
    threads: usize,
    timing: Timing,
    op: F,
) -> Candidate<'a>
where
    E: std::fmt::Display,
    F: Fn(&mut Rng) -> Result<(), E> + Sync + 'a,
{
    (
        name,
        Box::new(move |d| run(threads, d, timing, |_| Ok(()), |_, rng| op(rng))),
    )
}

/// Point reads on connections from `get`, which checks one out of some pool.
pub(super) fn pooled_reads<'a, C, G>(
    name: &'static str,
    threads: usize,
    rows: u64,
    get: G,
) -> Candidate<'a>
where
    C: std::ops::Deref<Target = Connection>,
    G: Fn() -> anyhow::Result<C> + Sync + 'a,
{
    (
        name,
        Box::new(move |d| {
            run(
                threads,
                d,
                Timing::None,
                |_| Ok(()),
                |_, rng| -> anyhow::Result<()> {
                    let conn = get()?;
                    Ok(point_read(&conn, rng, rows)?)
                },
            )
        }),
    )
}

pub(super) fn print_header() {
    println!(
        "{:<17} {:<22} {:>3} {:>12} {:>10} {:>10} {:>10} {:>11} {:>7}",
        "scenario", "path", "thr", "ops/s", "p50", "p99", "p99.9", "max", "errors"
    );
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0 => "-".to_owned(),
        n if n < 10_000 => format!("{n} ns"),
        n if n < 10_000_000 => format!("{:.1} us", n as f64 / 1e3),
        n => format!("{:.1} ms", n as f64 / 1e6),
    }
}

fn print_row(scenario: &str, path: &str, threads: usize, m: &Measured) {
    println!(
        "{:<17} {:<22} {:>3} {:>12.0} {:>10} {:>10} {:>10} {:>11} {:>7}",
        scenario,
        path,
        threads,
        m.ops_per_sec,
        fmt_ns(m.p50_ns),
        fmt_ns(m.p99_ns),
        fmt_ns(m.p999_ns),
        fmt_ns(m.max_ns),
        m.errors
    );
    if let Some(e) = &m.first_error {
        println!("{:<17} first error: {e}", "");
    }
}
