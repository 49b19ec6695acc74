//! The `async` scenario of `cargo xtask bench`: the registry's async API against
//! deadpool-sqlite, tokio-rusqlite, async-sqlite and sqlx, on tokio's multi-thread and
//! current-thread runtimes: point reads at 1, 8 and 64 tasks, single-row write transactions
//! at 1, 4, 16 and 64 tasks. Each cell is the median of rotating rounds (every client in
//! turn, each round), with p50 and p99 latencies of that round.
//!
//! - `clients`: the clients, opened on the same file with the same PRAGMAs.

mod clients;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clients::{Clients, Kind};
use hive_db_core::{AsyncHandle, DbConfig, DbName, Registry, open_connection, prepare_database};

use crate::measure::Rng;

/// Task counts of the read cells.
const READ_TASKS: [usize; 3] = [1, 8, 64];
/// Task counts of the write cells.
const WRITE_TASKS: [usize; 4] = [1, 4, 16, 64];

/// The runtimes measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Flavor {
    MultiThread,
    CurrentThread,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::MultiThread => "multi-thread",
            Flavor::CurrentThread => "current-thread",
        }
    }

    fn runtime(self) -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(match self {
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        }
        .enable_all()
        .build()?)
    }
}

/// One measured cell: a client, an operation, a runtime and a task count.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Cell {
    pub(crate) client: &'static str,
    pub(crate) op: &'static str,
    pub(crate) runtime: Flavor,
    pub(crate) tasks: usize,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) errors: u64,
}

/// How long the async scenario's rounds are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) rounds: usize,
    pub(crate) each: Duration,
    pub(crate) rows: u64,
}

/// Every cell of the async scenario, printed as measured unless `json`.
pub(crate) fn bench(plan: Plan, json: bool) -> anyhow::Result<Vec<Cell>> {
    let dir = tempfile::tempdir()?;
    let config = DbConfig {
        create_if_missing: true,
        max_size: 10,
        ..DbConfig::default()
    };
    let name = DbName::new("async_bench")?;
    let path = fill(&dir, &name, &config, plan.rows)?;
    let registry = Registry::new();
    registry.register(&name, &path, config.clone())?;
    let hive = registry.async_handle(&name)?;
    if !json {
        println!();
        println!(
            "async: each cell the median of {} rounds of {:.2} s; {} rows; max_size {}",
            plan.rounds,
            plan.each.as_secs_f64(),
            plan.rows,
            config.max_size
        );
        println!(
            "{:<15} {:<6} {:<21} {:>5} {:>11} {:>10} {:>10} {:>6}",
            "runtime", "op", "client", "tasks", "ops/s", "p50", "p99", "errors"
        );
    }
    let mut cells = Vec::new();
    for flavor in [Flavor::MultiThread, Flavor::CurrentThread] {
        let rt = flavor.runtime()?;
        rt.block_on(run_flavor(
            flavor,
            hive.clone(),
            &path,
            &config,
            plan,
            json,
            &mut cells,
        ))?;
    }
    registry.close_all(Duration::from_secs(5));
    Ok(cells)
}

/// The cells of one runtime.
async fn run_flavor(
    flavor: Flavor,
    hive: AsyncHandle,
    path: &std::path::Path,
    config: &DbConfig,
    plan: Plan,
    json: bool,
    cells: &mut Vec<Cell>,
) -> anyhow::Result<()> {
    let clients = Clients::open(hive, path, config).await?;
    for (op, counts) in [("read", &READ_TASKS[..]), ("write", &WRITE_TASKS[..])] {
        for &tasks in counts {
            let kinds: Vec<Kind> = Kind::ALL
                .into_iter()
                .filter(|k| op == "read" || k.writes())
                .collect();
            let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); kinds.len()];
            for _ in 0..plan.rounds.max(1) {
                for (i, &kind) in kinds.iter().enumerate() {
                    let round = drive(&clients, kind, op, tasks, plan).await;
                    rounds[i].push(round);
                }
            }
            for (kind, mut rounds) in kinds.into_iter().zip(rounds) {
                rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
                let median = &rounds[rounds.len() / 2];
                let cell = Cell {
                    client: kind.name(),
                    op,
                    runtime: flavor,
                    tasks,
                    ops_per_sec: median.ops_per_sec,
                    p50_ns: median.p50_ns,
                    p99_ns: median.p99_ns,
                    errors: rounds.iter().map(|r| r.errors).sum(),
                };
                if !json {
                    print_cell(&cell);
                }
                cells.push(cell);
            }
        }
    }
    clients.close().await;
    Ok(())
}

fn print_cell(c: &Cell) {
    let us = |ns: u64| format!("{:.1} us", ns as f64 / 1000.0);
    println!(
        "{:<15} {:<6} {:<21} {:>5} {:>11.0} {:>10} {:>10} {:>6}",
        c.runtime.name(),
        c.op,
        c.client,
        c.tasks,
        c.ops_per_sec,
        us(c.p50_ns),
        us(c.p99_ns),
        c.errors
    );
}

#[derive(Debug, Clone)]
struct Round {
    ops_per_sec: f64,
    p50_ns: u64,
    p99_ns: u64,
    errors: u64,
}

/// One round: `tasks` tasks run `op` through `kind` for `plan.each`.
async fn drive(clients: &Clients, kind: Kind, op: &'static str, tasks: usize, plan: Plan) -> Round {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (clients, stop, errors) = (clients.clone(), Arc::clone(&stop), Arc::clone(&errors));
            tokio::spawn(async move {
                let mut rng = Rng::new(t as u64 + 1);
                let mut latencies = Vec::with_capacity(4096);
                let mut seq = 0_i64;
                while !stop.load(Relaxed) {
                    let t0 = Instant::now();
                    let done = if op == "read" {
                        let id = rng.below(plan.rows);
                        clients.read(kind, id).await.map(drop)
                    } else {
                        seq += 1;
                        clients.write(kind, t as i64, seq).await
                    };
                    latencies.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    if done.is_err() {
                        errors.fetch_add(1, Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(plan.each).await;
    stop.store(true, Relaxed);
    let mut all = Vec::new();
    for h in handles {
        if let Ok(latencies) = h.await {
            all.extend(latencies);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)));
    Round {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_ns: at(0.50).copied().unwrap_or(0),
        p99_ns: at(0.99).copied().unwrap_or(0),
        errors: errors.load(Relaxed),
    }
}

/// Creates the file with `rows` rows in `kv` and an empty `events` table.
fn fill(
    dir: &tempfile::TempDir,
    name: &DbName,
    config: &DbConfig,
    rows: u64,
) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.path().join("async.db");
    let prepared = prepare_database(name, &path, config)?;
    let mut conn = open_connection(name, &prepared.path, config)?;
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         CREATE TABLE events (id INTEGER PRIMARY KEY, thread INTEGER, seq INTEGER, payload TEXT);",
    )?;
    {
        let mut insert = tx.prepare("INSERT INTO kv (id, v) VALUES (?1, ?2)")?;
        for id in 1..=rows {
            insert.execute((id as i64, format!("value-{id:08}")))?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(prepared.path)
}

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
}

impl AsyncRatios {
    pub(crate) fn of(cells: &[Cell]) -> Self {
        let find = |client: &str, op: &str, flavor: Flavor, tasks: usize| {
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
                find(client, "read", flavor, 8),
                find(other, "read", flavor, 8),
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
            .filter_map(|k| find(k.name(), "write", flavor, tasks))
            .reduce(f64::max);
            ratio(find(Kind::Hive.name(), "write", flavor, tasks), best_other)
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
        }
    }
}

impl AsyncRatios {
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
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
