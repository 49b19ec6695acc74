//! The report: each database's pool state, counters, latencies, rates, SQLite facts, health
//! and findings, with the overall status. Tables and JSON are both rendered from it.

use std::path::PathBuf;
use std::time::Duration;

use hive_db_core::{DbSnapshot, HealthStatus, LatencySummary, Totals};
use serde::{Deserialize, Serialize};

use crate::checks::assess;
use crate::file::{FileFacts, HealthFacts};
use crate::finding::Finding;
use crate::probe::ProbeResult;
use crate::rates::{self, Rates};
use crate::sample::{DbRead, Sample};
use crate::status;

/// The version of the report's JSON shape.
pub(crate) const REPORT_VERSION: u32 = 1;

/// Everything one report says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) report_version: u32,
    /// When the (last) read started, in ms since the Unix epoch.
    pub(crate) taken_at_unix_ms: u64,
    /// The worst status of any database.
    pub(crate) status: HealthStatus,
    /// The exit code that status gives (0, 1 or 2).
    pub(crate) exit_code: u8,
    pub(crate) databases: Vec<DbReport>,
    /// Every pool added up (`maxwait_ms` the largest); `None` without pools.
    pub(crate) total: Option<Total>,
}

/// The pools of every database added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Total {
    /// Databases with a pool.
    pub(crate) pools: u32,
    pub(crate) live: u32,
    pub(crate) max: u32,
    pub(crate) active: u32,
    pub(crate) idle: u32,
    pub(crate) waiting: u32,
    /// The largest maxwait of any pool, in milliseconds.
    pub(crate) maxwait_ms: f64,
    pub(crate) writer_queue: u32,
    /// Rates summed over the pools that have them.
    pub(crate) acquires_per_s: f64,
    pub(crate) waits_per_s: f64,
    pub(crate) timeouts_per_s: f64,
    pub(crate) busy_per_s: f64,
    pub(crate) tx_per_s: f64,
}

fn total_of(databases: &[DbReport]) -> Option<Total> {
    let mut t = Total::default();
    for d in databases {
        let Some(p) = &d.pool else { continue };
        t.pools += 1;
        t.live += p.live;
        t.max += p.max;
        t.active += p.active;
        t.idle += p.idle;
        t.waiting += p.waiting;
        t.maxwait_ms = t.maxwait_ms.max(p.maxwait_ms);
        t.writer_queue += p.writer_queue;
        if let Some(r) = &d.rates {
            t.acquires_per_s += r.acquires_per_s;
            t.waits_per_s += r.waits_per_s;
            t.timeouts_per_s += r.timeouts_per_s;
            t.busy_per_s += r.busy_per_s;
            t.tx_per_s += r.tx_per_s;
        }
    }
    (t.pools > 0).then_some(t)
}

/// One database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DbReport {
    /// `http://host:port` of its endpoint, or `file`.
    pub(crate) source: String,
    pub(crate) name: String,
    pub(crate) path: Option<PathBuf>,
    pub(crate) status: HealthStatus,
    /// Why the status is not healthy, worst first.
    pub(crate) findings: Vec<Finding>,
    /// The pool (endpoints only: a pool lives in its application's process).
    pub(crate) pool: Option<Pool>,
    /// Cumulative counters since the application started (endpoints only).
    pub(crate) totals: Option<Totals>,
    /// Latencies since the application started (endpoints only).
    pub(crate) latency: Option<Latencies>,
    /// Rates between the last two reads (endpoints only, from the second read on).
    pub(crate) rates: Option<Rates>,
    pub(crate) health: Option<HealthFacts>,
    pub(crate) sqlite: Option<FileFacts>,
    pub(crate) probe: Option<ProbeResult>,
}

/// A pool's state now, in pgbouncer's and HikariCP's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pool {
    /// Registered and open.
    pub(crate) open: bool,
    pub(crate) live: u32,
    pub(crate) max: u32,
    pub(crate) min_idle: u32,
    pub(crate) active: u32,
    pub(crate) idle: u32,
    pub(crate) waiting: u32,
    /// Age of the oldest waiter, in milliseconds.
    pub(crate) maxwait_ms: f64,
    pub(crate) writer_queue: u32,
    /// Connections checked out longer than the leak threshold now.
    #[serde(default)]
    pub(crate) held_past_leak_threshold: u32,
}

/// Latency summaries, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latencies {
    pub(crate) acquire_wait: Percentiles,
    pub(crate) hold_time: Percentiles,
    pub(crate) writer_wait: Percentiles,
}

/// One histogram's count and percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl From<&LatencySummary> for Percentiles {
    fn from(s: &LatencySummary) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: s.count,
            mean_ms: ms(s.mean_ns()),
            p50_ms: ms(s.p50_ns),
            p99_ms: ms(s.p99_ns),
            p999_ms: ms(s.p999_ns),
            max_ms: ms(s.max_ns),
        }
    }
}

/// The report of `cur`, with rates and the checks that need two reads when `prev` is given.
/// `slow` is the acquire wait above which a database is degraded.
pub(crate) fn build(prev: Option<&Sample>, cur: &Sample, slow: Duration) -> Report {
    let databases: Vec<DbReport> = cur
        .dbs
        .iter()
        .map(|read| {
            let before = prev.and_then(|p| p.dbs.iter().find(|d| d.key() == read.key()));
            db_report(before, read, slow)
        })
        .collect();
    let status = databases
        .iter()
        .map(|d| d.status)
        .max()
        .unwrap_or(HealthStatus::Healthy);
    Report {
        report_version: REPORT_VERSION,
        taken_at_unix_ms: cur.taken_at_unix_ms,
        status,
        exit_code: status::exit_code(status),
        total: total_of(&databases),
        databases,
    }
}

fn db_report(before: Option<&DbRead>, read: &DbRead, slow: Duration) -> DbReport {
    let snap = read.snapshot.as_ref();
    let restarted = before
        .and_then(|b| b.uptime_ms)
        .zip(read.uptime_ms)
        .is_some_and(|(was, now)| now < was);
    let rates = match (before.and_then(|b| b.snapshot.as_ref()), snap) {
        (Some(p), Some(c)) if !restarted => {
            let ms = |r: &DbRead| r.taken_at_unix_ms.unwrap_or(0);
            let seconds = before.map_or(0.0, |b| ms(read).saturating_sub(ms(b)) as f64 / 1e3);
            rates::between(p, c, seconds)
        }
        _ => None,
    };
    let mut findings = assess(read, rates.as_ref(), slow);
    findings.sort_by_key(|f| std::cmp::Reverse(f.status));
    DbReport {
        source: read.source.clone(),
        name: read.name.clone(),
        path: read.path.clone(),
        status: findings.first().map_or(HealthStatus::Healthy, |f| f.status),
        findings,
        pool: snap.map(pool_of),
        totals: snap.map(|s| s.totals),
        latency: snap.map(|s| Latencies {
            acquire_wait: (&s.acquire_wait).into(),
            hold_time: (&s.hold_time).into(),
            writer_wait: (&s.writer_wait).into(),
        }),
        rates,
        health: read.health.clone(),
        sqlite: read.facts.clone().or_else(|| {
            snap.map(|s| FileFacts {
                file_bytes: s.sqlite.file_bytes,
                wal_bytes: s.sqlite.wal_bytes,
                ..FileFacts::default()
            })
        }),
        probe: read.probe.clone(),
    }
}

fn pool_of(s: &DbSnapshot) -> Pool {
    Pool {
        open: s.open,
        live: s.live,
        max: s.max_size,
        min_idle: s.min_idle,
        active: s.active(),
        idle: s.idle,
        waiting: s.waiting,
        maxwait_ms: s.maxwait_ns as f64 / 1e6,
        writer_queue: s.writer_queue,
        held_past_leak_threshold: s.held_past_leak_threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::FindingKind;
    use hive_db_core::{DbConfig, DbName, Registry};

    fn read_of(snapshot: hive_db_core::RegistrySnapshot, uptime_ms: u64) -> Sample {
        let db = snapshot.databases[0].clone();
        Sample {
            taken_at_unix_ms: snapshot.taken_at_unix_ms,
            dbs: vec![DbRead {
                source: "http://127.0.0.1:1".to_owned(),
                name: db.name.as_str().to_owned(),
                path: None,
                taken_at_unix_ms: Some(snapshot.taken_at_unix_ms),
                uptime_ms: Some(uptime_ms),
                snapshot: Some(db),
                health: Some(HealthFacts {
                    status: HealthStatus::Healthy,
                    latency_ms: 1.0,
                    error: None,
                }),
                facts: None,
                probe: None,
                error: None,
            }],
            endpoint_errors: Vec::new(),
        }
    }

    /// Bug caught: rates across an application restart (counters back at zero and grown
    /// again) taken as the interval's, or no rates at all between two ordinary reads.
    #[test]
    fn no_rates_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let name = DbName::new("inventory").unwrap();
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        registry
            .register(&name, dir.path().join("i.db"), config)
            .unwrap();
        let before = registry.stats();
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..3 {
            drop(registry.get(&name).unwrap());
        }
        let after = registry.stats();
        let slow = Duration::from_secs(1);
        let ordinary = build(
            Some(&read_of(before.clone(), 1000)),
            &read_of(after.clone(), 2000),
            slow,
        );
        let rates = ordinary.databases[0]
            .rates
            .as_ref()
            .expect("rates between two reads");
        assert!(rates.acquires_per_s > 0.0);
        let restarted = build(Some(&read_of(before, 5000)), &read_of(after, 10), slow);
        assert!(restarted.databases[0].rates.is_none());
    }

    /// Bug caught: the leak check's "more live connections than the maximum" never firing
    /// (it cannot happen in a healthy pool, so only a crafted snapshot shows it).
    #[test]
    fn more_live_than_max_is_degraded() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let name = DbName::new("inventory").unwrap();
        let config = DbConfig {
            create_if_missing: true,
            ..DbConfig::default()
        };
        registry
            .register(&name, dir.path().join("i.db"), config)
            .unwrap();
        let snapshot = registry.stats();
        let fine = build(None, &read_of(snapshot.clone(), 1), Duration::from_secs(1));
        assert!(
            fine.databases[0]
                .findings
                .iter()
                .all(|f| f.kind != FindingKind::OverMax)
        );
        let mut value = serde_json::to_value(&snapshot).unwrap();
        value["databases"][0]["live"] = serde_json::json!(11);
        value["databases"][0]["max_size"] = serde_json::json!(10);
        let over: hive_db_core::RegistrySnapshot = serde_json::from_value(value).unwrap();
        let report = build(None, &read_of(over, 1), Duration::from_secs(1));
        let d = &report.databases[0];
        assert!(
            d.findings.iter().any(|f| f.kind == FindingKind::OverMax),
            "{:?}",
            d.findings
        );
        assert_eq!(d.status, HealthStatus::Degraded);
        assert_eq!(report.exit_code, 1);
    }
}
