//! The `async` scenario of `cargo xtask bench`: the registry's async API against
//! deadpool-sqlite, tokio-rusqlite, async-sqlite and sqlx, on tokio's multi-thread and
//! current-thread runtimes: point reads at 1, 8 and 64 tasks, single-row write transactions
//! at 1, 4, 16 and 64 tasks, 80/20 reads and writes at 8 and 64 tasks, and a cancellation
//! storm of writes at 16 tasks. Each cell is the median of rotating rounds (every client in
//! turn, each round) and the busy threads of that round, with the medians of the rounds'
//! p50 and p99 latencies: one round caught in a slow stretch of a shared machine, short or
//! long, sets none of the three figures.
//!
//! - `clients`: the clients, opened on the same file with the same PRAGMAs.
//! - `ratios`: the ratios the targets are stated in, and the targets.
//! - `storm`: abandoning calls, and counting lost and duplicated writes afterwards.

mod clients;
mod ratios;
mod storm;

pub(crate) use ratios::AsyncRatios;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clients::{Clients, Kind};
use hive_db_core::{AsyncHandle, DbConfig, DbName, Registry, open_connection, prepare_database};

use crate::measure::{Rng, percentile};

/// What a cell's tasks do, call after call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    /// A point read by primary key.
    Read,
    /// A single-row write transaction.
    Write,
    /// A write one call in five, else a read.
    Mixed,
    /// Writes, every other one abandoned after one to three polls.
    Storm,
}

impl Op {
    const ALL: [Op; 4] = [Op::Read, Op::Write, Op::Mixed, Op::Storm];

    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Mixed => "mixed",
            Op::Storm => "storm",
        }
    }

    /// The task counts measured.
    fn tasks(self) -> &'static [usize] {
        match self {
            Op::Read => &[1, 8, 64],
            Op::Write => &[1, 4, 16, 64],
            Op::Mixed => &[8, 64],
            Op::Storm => &[16],
        }
    }

    /// Whether `kind` takes part: the inline mode is for reads only.
    fn measures(self, kind: Kind) -> bool {
        self == Op::Read || kind.writes()
    }
}

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
    pub(crate) op: Op,
    pub(crate) runtime: Flavor,
    pub(crate) tasks: usize,
    /// Calls finished per second (a storm: acknowledged writes).
    pub(crate) ops_per_sec: f64,
    /// Latencies of the finished calls.
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    /// Threads of the process that ran during the round (the client's and the runtime's).
    pub(crate) threads: usize,
    pub(crate) errors: u64,
    /// A storm's abandoned calls, and its lost and duplicated writes, over every round.
    pub(crate) abandoned: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
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
            "{:<15} {:<6} {:<21} {:>5} {:>11} {:>10} {:>10} {:>7} {:>6}  storm",
            "runtime", "op", "client", "tasks", "ops/s", "p50", "p99", "threads", "errors"
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
    for op in Op::ALL {
        for &tasks in op.tasks() {
            let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|&k| op.measures(k)).collect();
            let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); kinds.len()];
            for _ in 0..plan.rounds.max(1) {
                for (i, &kind) in kinds.iter().enumerate() {
                    let round = drive(&clients, kind, op, tasks, plan).await?;
                    rounds[i].push(round);
                }
            }
            for (kind, mut rounds) in kinds.into_iter().zip(rounds) {
                let sum = |f: fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
                let (errors, abandoned) = (sum(|r| r.errors), sum(|r| r.abandoned));
                let (lost, duplicated) = (sum(|r| r.lost), sum(|r| r.duplicated));
                let median_of = |f: fn(&Round) -> u64| {
                    let mut v: Vec<u64> = rounds.iter().map(f).collect();
                    v.sort_unstable();
                    v[v.len() / 2]
                };
                let (p50_ns, p99_ns) = (median_of(|r| r.p50_ns), median_of(|r| r.p99_ns));
                rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
                let median = &rounds[rounds.len() / 2];
                let cell = Cell {
                    client: kind.name(),
                    op,
                    runtime: flavor,
                    tasks,
                    ops_per_sec: median.ops_per_sec,
                    p50_ns,
                    p99_ns,
                    threads: median.threads,
                    errors,
                    abandoned,
                    lost,
                    duplicated,
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
    let storm = if c.op == Op::Storm {
        format!(
            "{} abandoned, {} lost, {} duplicated",
            c.abandoned, c.lost, c.duplicated
        )
    } else {
        String::new()
    };
    println!(
        "{:<15} {:<6} {:<21} {:>5} {:>11.0} {:>10} {:>10} {:>7} {:>6}  {storm}",
        c.runtime.name(),
        c.op.name(),
        c.client,
        c.tasks,
        c.ops_per_sec,
        us(c.p50_ns),
        us(c.p99_ns),
        c.threads,
        c.errors
    );
}

#[derive(Debug, Clone)]
struct Round {
    ops_per_sec: f64,
    /// Of the calls that finished.
    p50_ns: u64,
    p99_ns: u64,
    threads: usize,
    errors: u64,
    abandoned: u64,
    lost: u64,
    duplicated: u64,
}

/// What one task of a round did.
#[derive(Default)]
struct TaskLog {
    /// Latencies of the calls that finished.
    latencies: Vec<u64>,
    errors: u64,
    abandoned: u64,
    /// The (task, seq) of every acknowledged storm write.
    acked: Vec<(i64, i64)>,
}

/// One task of a round: what it calls and what happened.
struct Task {
    clients: Clients,
    kind: Kind,
    op: Op,
    id: i64,
    seq: i64,
    rng: Rng,
    rows: u64,
    log: TaskLog,
}

impl Task {
    /// The task's next call.
    async fn call(&mut self) {
        self.seq += 1;
        let (kind, id, seq) = (self.kind, self.id, self.seq);
        let t0 = Instant::now();
        let write = match self.op {
            Op::Read => false,
            Op::Write | Op::Storm => true,
            Op::Mixed => self.rng.below(5) == 0,
        };
        let done = if !write {
            let row = self.rng.below(self.rows);
            Some(self.clients.read(kind, row).await.map(drop))
        } else if self.op == Op::Storm && seq % 2 == 0 {
            let polls = 1 + u32::try_from(self.rng.below(3)).unwrap_or(0);
            storm::abandon(self.clients.write(kind, id, seq), polls).await
        } else {
            Some(self.clients.write(kind, id, seq).await)
        };
        let log = &mut self.log;
        match done {
            Some(Ok(())) => {
                log.latencies
                    .push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                if self.op == Op::Storm {
                    log.acked.push((id, seq));
                }
            }
            Some(Err(_)) => log.errors += 1,
            None => log.abandoned += 1,
        }
    }
}

/// One round: `tasks` tasks run `op` through `kind` for `plan.each`.
async fn drive(
    clients: &Clients,
    kind: Kind,
    op: Op,
    tasks: usize,
    plan: Plan,
) -> anyhow::Result<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let ids = if op == Op::Storm {
        storm::task_ids(tasks)
    } else {
        0..i64::try_from(tasks)?
    };
    let cpu = crate::procfs::CpuTimes::now();
    let start = Instant::now();
    let handles: Vec<_> = ids
        .clone()
        .map(|task| {
            let (clients, stop) = (clients.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut task = Task {
                    clients,
                    kind,
                    op,
                    id: task,
                    seq: 0,
                    rng: Rng::new(task.unsigned_abs() + 1),
                    rows: plan.rows,
                    log: TaskLog {
                        latencies: Vec::with_capacity(4096),
                        ..TaskLog::default()
                    },
                };
                while !stop.load(Relaxed) {
                    task.call().await;
                }
                task.log
            })
        })
        .collect();
    tokio::time::sleep(plan.each).await;
    let threads = cpu
        .busy_until(&crate::procfs::CpuTimes::now(), plan.each)
        .len();
    stop.store(true, Relaxed);
    let mut all = TaskLog::default();
    for h in handles {
        if let Ok(log) = h.await {
            all.latencies.extend(log.latencies);
            all.errors += log.errors;
            all.abandoned += log.abandoned;
            all.acked.extend(log.acked);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let outcome = if op == Op::Storm {
        storm::verify(&clients.hive, ids, &all.acked).await?
    } else {
        storm::Outcome::default()
    };
    let latencies = &mut all.latencies;
    latencies.sort_unstable();
    Ok(Round {
        ops_per_sec: latencies.len() as f64 / elapsed,
        p50_ns: percentile(latencies, 0.50),
        p99_ns: percentile(latencies, 0.99),
        threads,
        errors: all.errors,
        abandoned: all.abandoned,
        lost: outcome.lost,
        duplicated: outcome.duplicated,
    })
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
