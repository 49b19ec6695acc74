//! The `many_dbs` bench scenario: one registry with 1, 10, 100 and 1,000 databases
//! (`min_idle` 1 each), and what each step costs: threads, memory and register time per
//! database, the time of `stats()` and `health()` over all of them, and a point read on a
//! random one through the registry against a raw connection.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use hive_db_core::rusqlite::Connection;
use hive_db_core::{DbConfig, DbName, HealthReport, Registry, open_connection};

use crate::procfs;

/// The steps: databases registered in all after each.
pub(crate) const STEPS: [usize; 4] = [1, 10, 100, 1000];

/// Rows in each database's table.
const ROWS: i64 = 100;

/// Rounds of the point-read comparison at each step (each path reads in turn).
const ROUNDS: usize = 9;

/// One step's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Step {
    /// Databases registered.
    pub(crate) databases: usize,
    /// The process's threads after registering them.
    pub(crate) threads: u64,
    /// Threads more than before the registry existed.
    pub(crate) threads_added: i64,
    /// Resident memory over the process's before the registry, per database, in bytes.
    pub(crate) rss_per_db_bytes: i64,
    /// Mean time of one `register` at this step, in nanoseconds.
    pub(crate) register_ns_per_db: u64,
    /// Time of one `stats()` over every database (median of 5), in nanoseconds.
    pub(crate) stats_ns: u64,
    /// Time of one `health()` over every database, in nanoseconds.
    pub(crate) health_ns: u64,
    /// True when `health()` said healthy for all.
    pub(crate) healthy: bool,
    /// The process's thread count peak seen while `health()` ran.
    pub(crate) threads_during_health: u64,
    /// Point reads per second on a random database, registry `get` over a raw connection
    /// (median of the rounds' ratios).
    pub(crate) point_read_ratio: f64,
}

fn config() -> DbConfig {
    DbConfig {
        create_if_missing: true,
        min_idle: 1,
        ..DbConfig::default()
    }
}

fn point_read(conn: &Connection, id: i64) -> anyhow::Result<()> {
    let v: String = conn
        .prepare_cached("SELECT v FROM kv WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    std::hint::black_box(v);
    Ok(())
}

/// Reads for `round`, returns reads per second.
fn reads_for(
    round: Duration,
    mut read: impl FnMut(i64) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0i64;
    while start.elapsed() < round {
        for _ in 0..64 {
            read(1 + n % ROWS)?;
            n += 1;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The scenario as `cargo xtask bench` runs it: [`STEPS`] in a temporary folder, point-read
/// rounds of `round` (a short first pair of steps under `cargo test`), printed unless `json`.
///
/// # Errors
///
/// As [`run`].
pub(crate) fn bench(round: Duration, json: bool) -> anyhow::Result<Vec<Step>> {
    let dir = tempfile::tempdir()?;
    let steps: &[usize] = if cfg!(test) { &STEPS[..2] } else { &STEPS };
    let figures = run(dir.path(), steps, round)?;
    if !json {
        print(&figures);
    }
    Ok(figures)
}

/// Runs the steps in `dir`, each round of the point-read comparison lasting `round`.
///
/// # Errors
///
/// When a database cannot be created or read.
pub(crate) fn run(dir: &Path, steps: &[usize], round: Duration) -> anyhow::Result<Vec<Step>> {
    let threads_before = procfs::thread_count();
    let rss_before = procfs::rss_bytes();
    let registry = Registry::new();
    let mut names = Vec::new();
    let mut out = Vec::new();
    let mut seed = 0x5EED_u64;
    for &target in steps {
        let added = target.saturating_sub(names.len());
        let register_time = grow(&registry, dir, &mut names, target)?;
        let threads = procfs::thread_count();
        let rss = procfs::rss_bytes();
        let mut stats_times: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(registry.stats());
                t0.elapsed().as_nanos() as f64
            })
            .collect();
        stats_times.sort_by(f64::total_cmp);
        let (health, health_ns, threads_during_health) = timed_health(&registry);
        // xorshift: a random database, the same one for both paths.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (name, path) = &names[(seed % names.len() as u64) as usize];
        let handle = registry.handle(name)?;
        let raw = open_connection(name, handle.path(), &config())
            .with_context(|| format!("raw connection to {}", path.display()))?;
        let mut ratios = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let reg = reads_for(round, |id| point_read(&*handle.get()?, id))?;
            let raw = reads_for(round, |id| point_read(&raw, id))?;
            ratios.push(reg / raw.max(1e-9));
        }
        out.push(Step {
            databases: target,
            threads,
            threads_added: threads as i64 - threads_before as i64,
            rss_per_db_bytes: (rss as i64 - rss_before as i64) / target.max(1) as i64,
            register_ns_per_db: (register_time.as_nanos() / added.max(1) as u128) as u64,
            stats_ns: stats_times[stats_times.len() / 2] as u64,
            health_ns,
            healthy: health.status == hive_db_core::HealthStatus::Healthy,
            threads_during_health,
            point_read_ratio: median(ratios),
        });
    }
    registry.close_all(Duration::from_secs(5));
    Ok(out)
}

/// Registers and fills databases in `dir` until `names` has `target` of them; the time
/// spent registering.
fn grow(
    registry: &Registry,
    dir: &Path,
    names: &mut Vec<(DbName, PathBuf)>,
    target: usize,
) -> anyhow::Result<Duration> {
    let mut register_time = Duration::ZERO;
    while names.len() < target {
        let name = DbName::new(&format!("db-{}", names.len()))?;
        let path = dir.join(format!("{name}.db"));
        let t0 = Instant::now();
        registry.register(&name, &path, config())?;
        register_time += t0.elapsed();
        registry.write(&name, |tx| {
            tx.execute_batch("CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
            let mut insert = tx.prepare("INSERT INTO kv (id, v) VALUES (?1, ?2)")?;
            for id in 1..=ROWS {
                insert.execute((id, format!("value {id}")))?;
            }
            Ok(())
        })?;
        names.push((name, path));
    }
    Ok(register_time)
}

/// One health check of every database: the report, its time in nanoseconds, and the most
/// threads the process had meanwhile.
fn timed_health(registry: &Registry) -> (HealthReport, u64, u64) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut peak = 0;
            while !done.load(Relaxed) {
                peak = peak.max(procfs::thread_count());
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        });
        let t0 = Instant::now();
        let health = registry.health(Duration::from_secs(5));
        let ns = t0.elapsed().as_nanos() as u64;
        done.store(true, Relaxed);
        (health, ns, watcher.join().unwrap_or(0))
    })
}

/// Prints the steps as a table.
pub(crate) fn print(steps: &[Step]) {
    println!();
    println!(
        "many_dbs: one registry, min_idle 1 each ({} rounds per point-read ratio)",
        ROUNDS
    );
    println!(
        "{:>9} {:>8} {:>8} {:>12} {:>12} {:>10} {:>10} {:>13} {:>9}",
        "databases",
        "threads",
        "+threads",
        "RSS/db",
        "register/db",
        "stats()",
        "health()",
        "health thr.",
        "read r/raw"
    );
    for s in steps {
        println!(
            "{:>9} {:>8} {:>8} {:>9.1} KiB {:>9.1} us {:>7.1} us {:>7.1} ms {:>13} {:>9.2}",
            s.databases,
            s.threads,
            s.threads_added,
            s.rss_per_db_bytes as f64 / 1024.0,
            s.register_ns_per_db as f64 / 1e3,
            s.stats_ns as f64 / 1e3,
            s.health_ns as f64 / 1e6,
            s.threads_during_health,
            s.point_read_ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a step that fails to register, read or check its databases, or figures
    /// that do not describe the step (wrong count, a registry that reports unhealthy).
    #[test]
    fn every_step_runs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let steps = run(dir.path(), &[1, 3], Duration::from_millis(2))?;
        assert_eq!(
            steps.iter().map(|s| s.databases).collect::<Vec<_>>(),
            [1, 3]
        );
        for s in &steps {
            assert!(s.healthy, "{s:?}");
            assert!(s.point_read_ratio > 0.0 && s.threads > 0, "{s:?}");
        }
        Ok(())
    }
}
