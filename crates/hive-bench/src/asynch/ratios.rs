//! The ratios the async targets are stated in, and the targets' lines for the report.

use super::clients::Kind;
use super::{Cell, Flavor, Op};

/// The ratios the async targets are stated in, from `cells`.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct AsyncRatios {
    pub(crate) async_point_read_vs_deadpool_8t: Option<f64>,
    pub(crate) async_point_read_vs_sqlx_8t: Option<f64>,
    pub(crate) async_point_read_inline_vs_deadpool_8t: Option<f64>,
    pub(crate) async_point_read_inline_vs_sqlx_8t: Option<f64>,
    pub(crate) async_write_vs_best_other_16t: Option<f64>,
    pub(crate) async_write_vs_best_other_64t: Option<f64>,
    pub(crate) async_point_read_vs_deadpool_8t_current_thread: Option<f64>,
    pub(crate) async_write_vs_best_other_16t_current_thread: Option<f64>,
    /// Cells where the registry's async calls (reader threads and writer) have a p99 no
    /// worse than every other client's, of the cells measured.
    pub(crate) async_p99_no_worse_cells: usize,
    pub(crate) async_p99_cells: usize,
    /// The cells where it is worse: "runtime op tasks (hive p99 vs best other's p99)".
    pub(crate) async_p99_worse: Vec<String>,
    /// The registry's lost and duplicated writes in the cancellation storm (None: not run).
    pub(crate) async_storm_lost_or_duplicated: Option<u64>,
}

impl AsyncRatios {
    pub(crate) fn of(cells: &[Cell]) -> Self {
        let find = |client: &str, op: Op, flavor: Flavor, tasks: usize| {
            cells
                .iter()
                .find(|c| {
                    c.client == client && c.op == op && c.runtime == flavor && c.tasks == tasks
                })
                .map(|c| c.ops_per_sec)
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let read = |client: &str, other: &str, flavor: Flavor| {
            ratio(
                find(client, Op::Read, flavor, 8),
                find(other, Op::Read, flavor, 8),
            )
        };
        let write = |tasks: usize, flavor: Flavor| {
            let best_other = [
                Kind::Deadpool,
                Kind::TokioRusqlite,
                Kind::AsyncSqlite,
                Kind::Sqlx,
            ]
            .into_iter()
            .filter_map(|k| find(k.name(), Op::Write, flavor, tasks))
            .reduce(f64::max);
            ratio(
                find(Kind::Hive.name(), Op::Write, flavor, tasks),
                best_other,
            )
        };
        let (hive, inline) = (Kind::Hive.name(), Kind::HiveInline.name());
        let (deadpool, sqlx) = (Kind::Deadpool.name(), Kind::Sqlx.name());
        let (mt, ct) = (Flavor::MultiThread, Flavor::CurrentThread);
        Self {
            async_point_read_vs_deadpool_8t: read(hive, deadpool, mt),
            async_point_read_vs_sqlx_8t: read(hive, sqlx, mt),
            async_point_read_inline_vs_deadpool_8t: read(inline, deadpool, mt),
            async_point_read_inline_vs_sqlx_8t: read(inline, sqlx, mt),
            async_write_vs_best_other_16t: write(16, mt),
            async_write_vs_best_other_64t: write(64, mt),
            async_point_read_vs_deadpool_8t_current_thread: read(hive, deadpool, ct),
            async_write_vs_best_other_16t_current_thread: write(16, ct),
            ..p99_and_storm(cells)
        }
    }

    /// The async targets, as the report's lines: (text, met).
    pub(crate) fn targets(&self) -> Vec<(String, bool)> {
        let at_least = |label: &str, value: Option<f64>, min: f64| {
            value.map(|v| (format!("{label} {v:.2} >= {min}"), v >= min))
        };
        [
            at_least(
                "async point_read hive/deadpool 8 tasks",
                self.async_point_read_vs_deadpool_8t,
                5.0,
            ),
            at_least(
                "async point_read hive/sqlx 8 tasks",
                self.async_point_read_vs_sqlx_8t,
                2.0,
            ),
            at_least(
                "async write hive/best other 16 tasks",
                self.async_write_vs_best_other_16t,
                1.5,
            ),
            at_least(
                "async write hive/best other 64 tasks",
                self.async_write_vs_best_other_64t,
                1.5,
            ),
            (self.async_p99_cells > 0).then(|| {
                let worse = if self.async_p99_worse.is_empty() {
                    String::new()
                } else {
                    format!("; worse: {}", self.async_p99_worse.join(", "))
                };
                (
                    format!(
                        "async p99 hive no worse than every other client in {} of {} cells{worse}",
                        self.async_p99_no_worse_cells, self.async_p99_cells
                    ),
                    self.async_p99_no_worse_cells == self.async_p99_cells,
                )
            }),
            self.async_storm_lost_or_duplicated.map(|n| {
                (
                    format!("async storm: hive writes lost or duplicated {n} == 0"),
                    n == 0,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The p99 comparison per cell, and the storm's verdict, of `cells`.
fn p99_and_storm(cells: &[Cell]) -> AsyncRatios {
    let hive = Kind::Hive.name();
    let others = [
        Kind::Deadpool,
        Kind::TokioRusqlite,
        Kind::AsyncSqlite,
        Kind::Sqlx,
    ]
    .map(Kind::name);
    let mut out = AsyncRatios::default();
    for mine in cells.iter().filter(|c| c.client == hive) {
        let best_other = cells
            .iter()
            .filter(|c| {
                others.contains(&c.client)
                    && c.op == mine.op
                    && c.runtime == mine.runtime
                    && c.tasks == mine.tasks
            })
            .map(|c| c.p99_ns)
            .min();
        let Some(best_other) = best_other else {
            continue;
        };
        out.async_p99_cells += 1;
        if mine.p99_ns <= best_other {
            out.async_p99_no_worse_cells += 1;
        } else {
            out.async_p99_worse.push(format!(
                "{} {} {} ({:.0} us vs {:.0} us)",
                mine.runtime.name(),
                mine.op.name(),
                mine.tasks,
                mine.p99_ns as f64 / 1000.0,
                best_other as f64 / 1000.0
            ));
        }
    }
    out.async_storm_lost_or_duplicated = cells
        .iter()
        .filter(|c| c.client == hive && c.op == Op::Storm)
        .map(|c| c.lost + c.duplicated)
        .reduce(|a, b| a + b);
    out
}
