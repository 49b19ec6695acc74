//! What a bench run concludes: the ratios the targets are stated in, the [`TARGETS`] table,
//! and the summary (a table for people, or one JSON object).

use super::harness::Bench;
use super::{pg, scenarios};
use crate::measure::peak_rss_bytes;

/// The ratios the targets are stated in.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct Ratios {
    point_read_ratio_1t: Option<f64>,
    point_read_ratio_8t: Option<f64>,
    checkout_p50_ns: Option<u64>,
    checkout_ratio_vs_r2d2_nocheck: Option<f64>,
    write_throughput_ratio: Option<f64>,
    write_throughput_ratio_one_per_tx: Option<f64>,
    /// The registry's writers over one thread writing serially on a raw connection.
    write_vs_serial_raw: Option<f64>,
    /// Writes per committed transaction through the registry (group commit's batch size).
    write_writers_per_batch: Option<f64>,
    write_max_latency_ratio: Option<f64>,
    write_errors: Option<u64>,
    write_wal_bytes_registry: Option<u64>,
    write_wal_bytes_r2d2: Option<u64>,
    vs_deadpool_ratio: Option<f64>,
    vs_connect_per_op_ratio: Option<f64>,
    multi_db_ratio: Option<f64>,
    mixed_throughput_ratio: Option<f64>,
    pg_point_read_ratio_1t: Option<f64>,
    pg_point_read_ratio_8t: Option<f64>,
    pg_vs_r2d2_postgres: Option<f64>,
    pg_vs_deadpool_postgres: Option<f64>,
    /// Against a client per thread that also resets its session after each read, as the
    /// registry does on every return: what the pool itself costs.
    pg_vs_raw_reset: Option<f64>,
    peak_rss_bytes: u64,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Ratios {
    /// The ratios of `bench`'s cells.
    fn of(bench: &Bench) -> Self {
        let t = bench.args.threads;
        let write_reg = bench.find("write_contention", "registry write", t);
        let write_r2d2 = bench.find("write_contention", "r2d2 + busy_timeout", t);
        let checkout = bench.find("checkout", "registry get", 1);
        Self {
            point_read_ratio_1t: bench.paired_ratio(
                "point_read",
                "registry get",
                "raw connection",
                1,
            ),
            point_read_ratio_8t: bench.paired_ratio(
                "point_read",
                "registry get",
                "raw connection",
                t,
            ),
            checkout_p50_ns: checkout.map(|m| m.p50_ns),
            checkout_ratio_vs_r2d2_nocheck: ratio(
                checkout.map(|m| m.p50_ns as f64),
                bench
                    .find("checkout", "r2d2 no check", 1)
                    .map(|m| m.p50_ns as f64),
            ),
            write_throughput_ratio: bench.paired_ratio(
                "write_contention",
                "registry write",
                "r2d2 + busy_timeout",
                t,
            ),
            write_throughput_ratio_one_per_tx: bench.paired_ratio(
                "write_contention",
                "registry, 1 per tx",
                "r2d2 + busy_timeout",
                t,
            ),
            write_vs_serial_raw: bench.paired_ratio(
                "write_contention",
                "registry write",
                scenarios::SERIAL_RAW,
                t,
            ),
            write_writers_per_batch: bench.writers_per_batch,
            write_max_latency_ratio: ratio(
                write_reg.map(|m| m.max_ns as f64),
                write_r2d2.map(|m| m.max_ns as f64),
            ),
            write_errors: write_reg.map(|m| m.errors),
            write_wal_bytes_registry: bench.write_wal_bytes.map(|w| w.0),
            write_wal_bytes_r2d2: bench.write_wal_bytes.map(|w| w.1),
            vs_deadpool_ratio: bench.paired_ratio(
                "point_read",
                "registry get",
                "deadpool-sqlite",
                1,
            ),
            vs_connect_per_op_ratio: bench.paired_ratio(
                "point_read",
                "registry get",
                "connect per op",
                1,
            ),
            multi_db_ratio: bench.paired_ratio("multi_db", "registry get", "raw connection", t),
            mixed_throughput_ratio: bench.paired_ratio(
                "mixed",
                "registry",
                "r2d2 + busy_timeout",
                t,
            ),
            pg_point_read_ratio_1t: bench.paired_ratio(pg::SCENARIO, pg::REGISTRY, pg::RAW, 1),
            pg_point_read_ratio_8t: bench.paired_ratio(pg::SCENARIO, pg::REGISTRY, pg::RAW, t),
            pg_vs_r2d2_postgres: bench.paired_ratio(pg::SCENARIO, pg::REGISTRY, pg::R2D2, 1),
            pg_vs_deadpool_postgres: bench.paired_ratio(
                pg::SCENARIO,
                pg::REGISTRY,
                pg::DEADPOOL,
                1,
            ),
            pg_vs_raw_reset: bench.paired_ratio(pg::SCENARIO, pg::REGISTRY, pg::RAW_RESET, 1),
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// Which side of its bound a target's value must be on.
#[derive(Debug, Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// One performance target: a ratio of [`Ratios`] and its bound.
#[derive(Debug)]
struct Target {
    /// What is measured; `{threads}` is replaced by the thread count.
    label: &'static str,
    value: fn(&Ratios) -> Option<f64>,
    /// Decimals printed.
    digits: usize,
    bound: Bound,
}

/// The targets of the registry against its baselines (docs/PERFORMANCE.md explains them).
const TARGETS: &[Target] = &[
    Target {
        label: "point_read registry/raw 1 thread",
        value: |r| r.point_read_ratio_1t,
        digits: 2,
        bound: Bound::AtLeast(0.97),
    },
    Target {
        label: "point_read registry/raw {threads} threads",
        value: |r| r.point_read_ratio_8t,
        digits: 2,
        bound: Bound::AtLeast(0.97),
    },
    Target {
        label: "checkout p50 registry/r2d2-no-check",
        value: |r| r.checkout_ratio_vs_r2d2_nocheck,
        digits: 2,
        bound: Bound::AtMost(0.6),
    },
    Target {
        label: "checkout p50 ns",
        value: |r| r.checkout_p50_ns.map(|v| v as f64),
        digits: 0,
        bound: Bound::AtMost(1000.0),
    },
    Target {
        label: "write_contention registry errors",
        value: |r| r.write_errors.map(|v| v as f64),
        digits: 0,
        bound: Bound::AtMost(0.0),
    },
    Target {
        label: "write throughput registry/r2d2",
        value: |r| r.write_throughput_ratio,
        digits: 2,
        bound: Bound::AtLeast(0.9),
    },
    Target {
        label: "write throughput registry ({threads} writers)/serial raw",
        value: |r| r.write_vs_serial_raw,
        digits: 2,
        bound: Bound::AtLeast(1.3),
    },
    Target {
        label: "write max latency registry/r2d2",
        value: |r| r.write_max_latency_ratio,
        digits: 3,
        bound: Bound::AtMost(0.1),
    },
    Target {
        label: "point_read registry/deadpool",
        value: |r| r.vs_deadpool_ratio,
        digits: 1,
        bound: Bound::AtLeast(5.0),
    },
    Target {
        label: "point_read registry/connect-per-op",
        value: |r| r.vs_connect_per_op_ratio,
        digits: 0,
        bound: Bound::AtLeast(50.0),
    },
    Target {
        label: "pg point_read registry/raw 1 thread",
        value: |r| r.pg_point_read_ratio_1t,
        digits: 2,
        bound: Bound::AtLeast(0.95),
    },
    Target {
        label: "pg point_read registry/raw {threads} threads",
        value: |r| r.pg_point_read_ratio_8t,
        digits: 2,
        bound: Bound::AtLeast(0.95),
    },
    Target {
        label: "pg point_read registry/r2d2_postgres",
        value: |r| r.pg_vs_r2d2_postgres,
        digits: 2,
        bound: Bound::AtLeast(1.2),
    },
];

impl Target {
    /// The report's line for this target and whether it is met; `None` if its scenario did
    /// not run.
    fn check(&self, ratios: &Ratios, threads: usize) -> Option<(String, bool)> {
        let v = (self.value)(ratios)?;
        let label = self.label.replace("{threads}", &threads.to_string());
        let digits = self.digits;
        Some(match self.bound {
            Bound::AtLeast(min) => (format!("{label} {v:.digits$} >= {min}"), v >= min),
            Bound::AtMost(max) => (format!("{label} {v:.digits$} <= {max}"), v <= max),
        })
    }
}

/// Prints the ratios and targets of `bench`: a summary for people, or one JSON object.
pub(super) fn report(bench: &Bench) -> anyhow::Result<()> {
    let r = Ratios::of(bench);
    let async_ratios = crate::asynch::AsyncRatios::of(&bench.asynch);
    let mut targets: Vec<(String, bool)> = TARGETS
        .iter()
        .filter_map(|t| t.check(&r, bench.args.threads))
        .collect();
    targets.extend(async_ratios.targets());
    let met = targets.iter().filter(|(_, ok)| *ok).count();
    if bench.args.json {
        let mut value = serde_json::to_value(&r)?;
        value["rows"] = serde_json::to_value(&bench.rows)?;
        value["many_dbs"] = serde_json::to_value(&bench.many_dbs)?;
        if let (Some(value), serde_json::Value::Object(ratios)) =
            (value.as_object_mut(), serde_json::to_value(&async_ratios)?)
        {
            value.extend(ratios);
        }
        value["async"] = serde_json::to_value(&bench.asynch)?;
        value["targets_met"] = met.into();
        value["targets_total"] = targets.len().into();
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!();
        println!(
            "peak RSS {:.1} MiB",
            r.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
        for (text, ok) in &targets {
            println!("{} {text}", if *ok { "met   " } else { "MISSED" });
        }
        println!("{met} of {} targets met", targets.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Ratios;

    /// Bug caught: a ratio that scripts and docs/PERFORMANCE.md read from `--json` renamed
    /// or dropped (the PostgreSQL ones among them), so a comparison silently reads nothing.
    #[test]
    fn the_json_carries_the_documented_keys() -> anyhow::Result<()> {
        let value = serde_json::to_value(Ratios::default())?;
        for key in [
            "point_read_ratio_1t",
            "point_read_ratio_8t",
            "vs_deadpool_ratio",
            "pg_point_read_ratio_1t",
            "pg_point_read_ratio_8t",
            "pg_vs_r2d2_postgres",
            "pg_vs_deadpool_postgres",
            "pg_vs_raw_reset",
            "write_vs_serial_raw",
            "checkout_ratio_vs_r2d2_nocheck",
        ] {
            assert!(value.get(key).is_some(), "no {key} in {value}");
        }
        Ok(())
    }
}
